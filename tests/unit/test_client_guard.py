from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gateway import client_guard
from gateway.client_guard import ClientLimits
from gateway.open_file_limit import raise_open_file_limit
from gateway.settings import Settings


def test_limits_come_from_the_settings() -> None:
    settings = Settings(
        upstream_url="http://web-svc:80",
        client_header_timeout=3,
        client_body_timeout=4,
        client_send_timeout=5,
        client_max_header_bytes=2048,
    )
    assert ClientLimits.from_settings(settings) == ClientLimits(3.0, 4.0, 5.0, 2048)


@pytest.mark.parametrize(
    ("timeouts", "interval"),
    [((10.0, 30.0, 30.0), 1.0), ((1.0, 30.0, 30.0), 0.25), ((30.0, 0.1, 30.0), 0.05), ((2.0, 3.0, 0.4), 0.1)],
)
def test_deadlines_are_swept_a_few_times_within_the_shortest(timeouts: tuple[float, float, float], interval: float):
    assert ClientLimits(*timeouts).sweep_interval == pytest.approx(interval)


def test_the_soft_open_files_limit_is_lifted_to_the_hard_one() -> None:
    # In a child, so that this test process keeps its own limits.
    script = textwrap.dedent(
        """
        import resource
        from gateway.open_file_limit import raise_open_file_limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
        print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], wanted)
        """
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    returned, soft, wanted = (int(field) for field in output.split())
    assert returned == soft == wanted


def test_lifting_a_limit_already_at_its_hardest_changes_nothing() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        assert raise_open_file_limit() == soft
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[1] == hard


class _FakeTransport:
    def __init__(self, peer: object = None) -> None:
        self.aborted = False
        self.peer = peer

    def get_extra_info(self, name: str) -> object:
        return self.peer if name == "peername" else None

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


def test_cut_off_aborts_the_upgraded_connection_of_that_client_only() -> None:
    mine, other = _FakeTransport(), _FakeTransport()
    client_guard._guard.upgraded.update({("127.0.0.1", 4000): mine, ("127.0.0.1", 4001): other})  # type: ignore[dict-item]
    try:
        client_guard.cut_off(("127.0.0.1", 4000))
        client_guard.cut_off(("127.0.0.1", 4000))  # a second call finds nothing: no double abort, no error
        client_guard.cut_off(None)
        assert mine.aborted and not other.aborted
    finally:
        client_guard._guard.upgraded.clear()


def test_a_tracked_upgrade_is_cut_off_by_its_client_address() -> None:
    tracked, unknown = _FakeTransport(("127.0.0.1", 4002)), _FakeTransport(None)
    try:
        client_guard.track_upgraded(tracked)  # type: ignore[arg-type]
        client_guard.track_upgraded(unknown)  # type: ignore[arg-type]  # no address: nothing to cut off by
        assert list(client_guard._guard.upgraded) == [("127.0.0.1", 4002)]
        client_guard.cut_off(("127.0.0.1", 4002))
        assert tracked.aborted
    finally:
        client_guard._guard.upgraded.clear()


def test_uvicorn_still_hands_upgrades_to_the_overridable_method() -> None:
    # GuardedHttpToolsProtocol.handle_websocket_upgrade registers the upgraded transport for cut_off; if uvicorn
    # renamed the method, sessions could no longer be cut off.
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from gateway.http1_protocol import GuardedHttpToolsProtocol

    assert "handle_websocket_upgrade" in vars(HttpToolsProtocol)
    assert "handle_websocket_upgrade" in vars(GuardedHttpToolsProtocol)
