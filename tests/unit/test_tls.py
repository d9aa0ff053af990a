"""TlsTerminator with real OpenSSL handshakes over memory BIOs (no sockets), files written in tmp_path."""

from __future__ import annotations

import datetime
import logging
import shutil
import ssl
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.tls import TlsTerminator, handshake_outcome, server_context
from tests.tls_support import CertificateFactory, mount_secret, names_of, swap_secret, write_plain
from tests.waiting import WAIT

DAY = datetime.timedelta(days=1)


@dataclass
class Connection:
    client: ssl.SSLObject
    server: ssl.SSLObject
    bios: tuple[ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO, ssl.MemoryBIO]

    def send(self, data: bytes) -> bytes:
        """Client -> server over the established session: what the server read."""
        c_in, c_out, s_in, s_out = self.bios
        self.client.write(data)
        s_in.write(c_out.read())
        received = self.server.read(len(data))
        c_in.write(s_out.read())
        return received


def handshake(
    server_context_: ssl.SSLContext,
    client_context: ssl.SSLContext,
    server_name: str | None,
    alpn: list[str] | None = None,
) -> Connection:
    if alpn is not None:
        client_context.set_alpn_protocols(alpn)
    if server_name is None:
        client_context.check_hostname = False
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = server_context_.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values()), "handshake did not finish"
    return Connection(client, server, (c_in, c_out, s_in, s_out))


@pytest.fixture(scope="module")
def certs() -> CertificateFactory:
    return CertificateFactory()


@pytest.fixture
def make_terminator(tmp_path, certs):
    made: list[TlsTerminator] = []

    def make(certs_dir: Path | None = None, now=time.time, **settings: Any) -> tuple[TlsTerminator, Metrics]:
        cert, key = settings.pop("pair", None) or mount_secret(tmp_path / "default", certs.issue("default.test"))
        metrics = Metrics()
        terminator = TlsTerminator(
            Settings(
                upstream_url="http://127.0.0.1:1",
                tls_cert_file=cert,
                tls_key_file=key,
                tls_certs_dir=certs_dir,
                **settings,
            ),
            metrics,
            now=now,
        )
        made.append(terminator)
        return terminator, metrics

    yield make
    for terminator in made:
        terminator.stop()


def served(terminator: TlsTerminator, certs: CertificateFactory, server_name: str | None) -> list[str]:
    connection = handshake(terminator.context, certs.client_context(), server_name)
    return names_of(connection.client.getpeercert(binary_form=True))


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_the_context_allows_tls_12_and_13_only_without_compression_or_renegotiation():
    context = server_context()
    assert (context.minimum_version, context.maximum_version) == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    tls12 = {cipher["name"] for cipher in context.get_ciphers() if cipher["protocol"] == "TLSv1.2"}
    assert tls12 and all(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name) for name in tls12)


@pytest.mark.parametrize(("offered", "negotiated"), [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")])
def test_alpn_negotiates_h2_or_http11(make_terminator, certs, offered, negotiated):
    terminator, metrics = make_terminator()
    connection = handshake(terminator.context, certs.client_context(), "default.test", offered)
    assert connection.client.selected_alpn_protocol() == negotiated
    terminator.succeeded(connection.server)
    assert value(metrics, "gateway_tls_handshakes_total", outcome="ok", protocol=negotiated) == 1


def test_a_client_that_offers_no_alpn_is_counted_as_none(make_terminator, certs):
    terminator, metrics = make_terminator()
    connection = handshake(terminator.context, certs.client_context(), "default.test")
    terminator.succeeded(connection.server)
    assert value(metrics, "gateway_tls_handshakes_total", outcome="ok", protocol="none") == 1


def test_a_tls_11_client_is_refused(make_terminator, certs):
    terminator, _ = make_terminator()
    client = certs.client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client.minimum_version = client.maximum_version = ssl.TLSVersion.TLSv1_1
    client.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as info:
        handshake(terminator.context, client, "default.test")
    assert handshake_outcome(info.value) == "protocol_version"


def test_sni_picks_the_certificate_of_the_name_and_the_default_otherwise(make_terminator, certs, tmp_path):
    certs_dir = tmp_path / "certs"
    mount_secret(certs_dir / "shop", certs.issue("shop.example.com"))
    mount_secret(certs_dir / "wild", certs.issue("*.api.example.com"))
    terminator, metrics = make_terminator(certs_dir)
    assert served(terminator, certs, "shop.example.com") == ["shop.example.com"]
    assert served(terminator, certs, "v1.api.example.com") == ["*.api.example.com"]
    assert served(terminator, certs, None) == ["default.test"]
    assert set(terminator.certificates()) == {"default", "shop", "wild"}
    for name in ("default", "shop", "wild"):
        expiry = value(metrics, "gateway_tls_certificate_expiry_timestamp_seconds", certificate=name)
        assert expiry == terminator.certificates()[name].not_after > time.time()
    # loaded at startup, not reloaded
    assert value(metrics, "gateway_tls_reloads_total", certificate="shop", outcome="ok") == 0


def test_an_unknown_name_gets_the_default_certificate(make_terminator, certs):
    terminator, _ = make_terminator()
    client = certs.client_context()
    client.check_hostname = False
    connection = handshake(terminator.context, client, "unknown.test")
    assert names_of(connection.client.getpeercert(binary_form=True)) == ["default.test"]


def test_a_kubelet_swap_reaches_new_handshakes_and_the_open_session_goes_on(make_terminator, certs, tmp_path):
    terminator, metrics = make_terminator()
    before = handshake(terminator.context, certs.client_context(), "default.test")
    swap_secret(tmp_path / "default", certs.issue("default.test", "renewed.test"))
    terminator.check()
    assert served(terminator, certs, "default.test") == ["default.test", "renewed.test"]
    assert before.send(b"still here") == b"still here"
    assert names_of(before.client.getpeercert(binary_form=True)) == ["default.test"]
    assert value(metrics, "gateway_tls_reloads_total", certificate="default", outcome="ok") == 1


def test_a_file_rewritten_in_place_is_picked_up(make_terminator, certs, tmp_path):
    pair = write_plain(tmp_path / "plain", certs.issue("default.test"))
    terminator, _ = make_terminator(pair=pair)
    write_plain(tmp_path / "plain", certs.issue("default.test", "rewritten.test"))
    terminator.check()
    assert served(terminator, certs, "default.test") == ["default.test", "rewritten.test"]


def test_nothing_changed_means_nothing_reloaded(make_terminator, certs):
    terminator, metrics = make_terminator()
    context = terminator.certificates()["default"]
    terminator.check()
    terminator.check()
    assert terminator.certificates()["default"] is context
    assert value(metrics, "gateway_tls_reloads_total", certificate="default", outcome="ok") == 0


@pytest.mark.parametrize("kind", ["mismatched", "expired", "half_written", "missing"])
def test_a_bad_renewal_is_refused_once_and_the_certificate_in_force_stays(
    make_terminator, certs, tmp_path, caplog, kind
):
    terminator, metrics = make_terminator()
    bad = {
        "mismatched": lambda: certs.issue("bad.test").mismatched(certs.issue("other.test")),
        "expired": lambda: certs.expired("bad.test"),
        "half_written": lambda: type(certs.issue("bad.test"))(certs.issue("bad.test").cert[:100], b""),
    }
    if kind == "missing":
        shutil.rmtree(tmp_path / "default")
    else:
        swap_secret(tmp_path / "default", bad[kind]())
    with caplog.at_level(logging.INFO, logger="gateway.tls"):
        for _ in range(3):
            terminator.check()
    assert served(terminator, certs, "default.test") == ["default.test"]
    refused = [record for record in caplog.records if "refused" in record.getMessage()]
    assert len(refused) == 1, caplog.text
    assert "the certificate in force stays" in refused[0].getMessage()
    assert value(metrics, "gateway_tls_reloads_total", certificate="default", outcome="rejected") == 1
    # and once fixed, the fix is taken
    if kind == "missing":
        mount_secret(tmp_path / "default", certs.issue("default.test", "fixed.test"))
    else:
        swap_secret(tmp_path / "default", certs.issue("default.test", "fixed.test"))
    terminator.check()
    assert served(terminator, certs, "default.test") == ["default.test", "fixed.test"]


def test_a_renewal_already_expired_by_the_clock_is_refused(make_terminator, certs, tmp_path):
    clock = {"now": time.time()}
    terminator, metrics = make_terminator(now=lambda: clock["now"])
    renewed = certs.issue("default.test", "later.test", not_after=datetime.datetime.now(datetime.UTC) + DAY)
    clock["now"] += 2 * DAY.total_seconds()
    swap_secret(tmp_path / "default", renewed)
    terminator.check()
    assert value(metrics, "gateway_tls_reloads_total", certificate="default", outcome="rejected") == 1


def test_certificates_added_to_and_removed_from_the_directory(make_terminator, certs, tmp_path):
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    terminator, metrics = make_terminator(certs_dir)
    client = certs.client_context()
    client.check_hostname = False
    mount_secret(certs_dir / "shop", certs.issue("shop.example.com"))
    terminator.check()
    assert served(terminator, certs, "shop.example.com") == ["shop.example.com"]
    assert value(metrics, "gateway_tls_reloads_total", certificate="shop", outcome="ok") == 1
    shutil.rmtree(certs_dir / "shop")
    terminator.check()
    connection = handshake(terminator.context, client, "shop.example.com")
    assert names_of(connection.client.getpeercert(binary_form=True)) == ["default.test"]
    assert value(metrics, "gateway_tls_reloads_total", certificate="shop", outcome="removed") == 1
    assert (
        metrics.registry.get_sample_value("gateway_tls_certificate_expiry_timestamp_seconds", {"certificate": "shop"})
        is None
    )


def test_a_broken_new_entry_is_not_served_and_counted(make_terminator, certs, tmp_path, caplog):
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    terminator, metrics = make_terminator(certs_dir)
    mount_secret(certs_dir / "broken", certs.issue("x.test").mismatched(certs.issue("y.test")))
    with caplog.at_level(logging.ERROR, logger="gateway.tls"):
        terminator.check()
        terminator.check()
    assert "broken" not in terminator.certificates()
    assert value(metrics, "gateway_tls_reloads_total", certificate="broken", outcome="rejected") == 1
    assert len(caplog.records) == 1 and "it is not served" in caplog.records[0].getMessage()


def test_the_watcher_thread_picks_up_a_swap(make_terminator, certs, tmp_path, monkeypatch):
    terminator, _ = make_terminator(tls_reload_interval=0.05)
    checked, checks = threading.Condition(), 0
    check = terminator.check

    def counted_check() -> None:
        nonlocal checks
        check()
        with checked:
            checks += 1
            checked.notify_all()

    monkeypatch.setattr(terminator, "check", counted_check)
    terminator.start()
    swap_secret(tmp_path / "default", certs.issue("default.test", "watched.test"))
    with checked:
        # A check under way during the swap may have missed it; the one after it began once the swap was done.
        swapped_at = checks
        assert checked.wait_for(lambda: checks >= swapped_at + 2, timeout=WAIT), "the watcher thread never checked"
    assert served(terminator, certs, "default.test") == ["default.test", "watched.test"]


def ssl_error(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] ...")
    error.reason = reason
    return error


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (ConnectionAbortedError("SSL handshake is taking longer than 10.0 seconds"), "timeout"),
        (TimeoutError(), "timeout"),
        (ConnectionResetError(), "closed"),
        (ssl.SSLEOFError(8, "EOF"), "closed"),
        (ssl_error("HTTP_REQUEST"), "http_request"),
        (ssl_error("UNSUPPORTED_PROTOCOL"), "protocol_version"),
        (ssl_error("NO_SHARED_CIPHER"), "no_shared_cipher"),
        (ssl_error("TLSV1_ALERT_UNKNOWN_CA"), "certificate_refused"),
        (ssl_error("SOMETHING_NEW"), "error"),
        (ValueError(), "error"),
    ],
)
def test_handshake_failures_get_a_bounded_outcome(error, outcome):
    assert handshake_outcome(error) == outcome


def test_failed_handshakes_are_counted_by_outcome(make_terminator):
    terminator, metrics = make_terminator()
    terminator.failed(ssl_error("HTTP_REQUEST"))
    assert value(metrics, "gateway_tls_handshakes_total", outcome="http_request", protocol="none") == 1
