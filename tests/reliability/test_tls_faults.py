"""TLS held to its promises with the real `ingress-gateway`: renewals swapped on disk as the kubelet does, during
load; a renewal that does not load; a client that never finishes its handshake."""

from __future__ import annotations

import http.client
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Gateway, wait_for
from tests.support import LOOPBACK
from tests.tls_support import CertificateFactory, mount_secret, names_of, swap_secret

pytestmark = pytest.mark.e2e

NAME = "localhost"
RELOAD_INTERVAL = 0.2
MAX_REQUESTS = 4000
LOAD_SECONDS = 60.0


@pytest.fixture(scope="module")
def certs() -> CertificateFactory:
    return CertificateFactory()


@pytest.fixture
def tls_gateway(tmp_path: Path, certs: CertificateFactory, start_gateway) -> Callable[..., tuple[Gateway, Path]]:
    started = itertools.count()

    def start(**overrides: object) -> tuple[Gateway, Path]:
        secret = tmp_path / f"secret-{next(started)}"
        cert, key = mount_secret(secret, certs.issue(NAME, "before.test"))
        settings = {"tls_cert_file": cert, "tls_key_file": key, "tls_reload_interval": RELOAD_INTERVAL, **overrides}
        return start_gateway(**settings), secret

    return start


def served_names(gateway: Gateway, certs: CertificateFactory) -> list[str]:
    context = certs.client_context()
    with socket.create_connection((LOOPBACK, gateway.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=NAME) as tls:
            return names_of(tls.getpeercert(binary_form=True))


class LoadLoop:
    """Requests over kept-alive connections and over new ones (each a new handshake), bounded in count and time."""

    def __init__(self, url: str, context: ssl.SSLContext) -> None:
        self.url = url
        self.context = context
        self.done = 0
        self.failures: list[str] = []
        self.names_seen: set[tuple[str, ...]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(LOAD_SECONDS)

    def _run(self) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        with httpx.Client(verify=self.context, timeout=10) as kept:
            while not self._stop.is_set() and self.done < MAX_REQUESTS and time.monotonic() < deadline:
                fresh = self.done % 4 == 0
                try:
                    if fresh:
                        with httpx.Client(verify=self.context, timeout=10) as client:
                            response = client.get(self.url)
                    else:
                        response = kept.get(self.url)
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code} {response.text[:100]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.done += 1


def test_a_certificate_renewed_during_load_fails_no_request_and_reaches_new_handshakes(tls_gateway, certs):
    gateway, secret = tls_gateway(client_keepalive_timeout=120)
    context = certs.client_context()
    # A connection opened before the renewal, used again after it.
    established = http.client.HTTPSConnection(NAME, gateway.port, context=context, timeout=10)
    established.request("GET", "/echo")
    assert established.getresponse().read() and established.sock is not None
    socket_before = established.sock
    with LoadLoop(f"https://{NAME}:{gateway.port}/echo", context) as load:
        assert wait_for(lambda: load.done >= 50, 30)
        swap_secret(secret, certs.issue(NAME, "after.test"))
        assert wait_for(lambda: served_names(gateway, certs) == [NAME, "after.test"]), served_names(gateway, certs)
        renewed_at = load.done
        assert wait_for(lambda: load.done >= renewed_at + 50, 30)
    assert load.failures == []
    established.request("GET", "/echo")
    response = established.getresponse()
    assert (response.status, established.sock) == (200, socket_before)  # the same connection, still open
    response.read()
    assert isinstance(socket_before, ssl.SSLSocket)
    assert names_of(socket_before.getpeercert(binary_form=True)) == [NAME, "before.test"]
    established.close()
    assert gateway.metrics().value("gateway_tls_reloads_total", certificate="default", outcome="ok") == 1


@pytest.mark.parametrize("kind", ["mismatched", "expired", "half_written"])
def test_a_bad_renewal_is_refused_counted_and_the_certificate_in_force_stays(tls_gateway, certs, kind):
    gateway, secret = tls_gateway()
    renewal = certs.issue(NAME, "bad.test")
    bad = {
        "mismatched": renewal.mismatched(certs.issue(NAME)),
        "expired": certs.expired(NAME, "bad.test"),
        "half_written": type(renewal)(renewal.cert[: len(renewal.cert) // 2], renewal.key),
    }[kind]
    swap_secret(secret, bad)
    metrics = gateway.metrics
    assert wait_for(lambda: metrics().value("gateway_tls_reloads_total", outcome="rejected") == 1)
    # several more checks pass over the same bad files: still one line, one count
    time.sleep(RELOAD_INTERVAL * 10)
    assert metrics().value("gateway_tls_reloads_total", outcome="rejected") == 1
    refused = [line for line in gateway.output().splitlines() if "TLS certificate default refused" in line]
    assert len(refused) == 1, gateway.output()
    assert served_names(gateway, certs) == [NAME, "before.test"]
    with httpx.Client(verify=certs.client_context()) as client:
        assert client.get(f"https://{NAME}:{gateway.port}/echo").status_code == 200
    # the next good renewal is taken
    swap_secret(secret, certs.issue(NAME, "fixed.test"))
    assert wait_for(lambda: served_names(gateway, certs) == [NAME, "fixed.test"])


def test_a_client_silent_in_the_handshake_is_cut_off_while_others_are_served(tls_gateway, certs):
    gateway, _ = tls_gateway(tls_handshake_timeout=1)
    silent = socket.create_connection((LOOPBACK, gateway.port), timeout=20)
    with httpx.Client(verify=certs.client_context()) as client:
        assert client.get(f"https://{NAME}:{gateway.port}/echo").status_code == 200
    try:
        closed = silent.recv(1024) == b""
    except ConnectionResetError:
        closed = True
    finally:
        silent.close()
    assert closed
    assert wait_for(lambda: gateway.metrics().value("gateway_tls_handshakes_total", outcome="timeout") == 1)


def test_a_certificate_added_to_the_directory_is_served_without_restart(tls_gateway, certs, tmp_path):
    certs_dir = tmp_path / "certs"
    certs_dir.mkdir()
    gateway, _ = tls_gateway(tls_certs_dir=certs_dir)
    mount_secret(certs_dir / "shop", certs.issue("shop.example.com"))

    def shop_served() -> bool:
        context = certs.client_context()
        with socket.create_connection((LOOPBACK, gateway.port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="shop.example.com") as tls:
                return names_of(tls.getpeercert(binary_form=True)) == ["shop.example.com"]

    def handshake_fails_or_shop() -> bool:
        try:
            return shop_served()
        except ssl.SSLCertVerificationError:
            return False  # the default certificate, until the new one is picked up

    assert wait_for(handshake_fails_or_shop)
    metrics = gateway.metrics()
    assert metrics.value("gateway_tls_certificate_expiry_timestamp_seconds", certificate="shop") > time.time()
