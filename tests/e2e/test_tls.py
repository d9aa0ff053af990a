"""HTTPS from the real `ingress-gateway`: curl and httpx over TLS, SNI, ALPN, handshake metrics, startup checks that
exit 2, and the cleartext listener that redirects to https. Certificates are made in the test (trustme)."""

from __future__ import annotations

import itertools
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.e2e.conftest import GATEWAY_BIN, Gateway, GatewayFactory, gateway_env
from tests.support import LOOPBACK, free_port, running_process
from tests.tls_support import CertificateFactory, Pem, mount_secret, names_of, write_plain

pytestmark = pytest.mark.e2e

DEFAULT_NAME = "gateway.test"


@pytest.fixture(scope="module")
def certs() -> CertificateFactory:
    return CertificateFactory()


@pytest.fixture
def start_tls_gateway(
    tmp_path: Path, certs: CertificateFactory, start_gateway: GatewayFactory
) -> Callable[..., Gateway]:
    """A gateway with TLS on its main port: the default certificate for DEFAULT_NAME, mounted as a Secret."""

    started = itertools.count()

    def start(**overrides: object) -> Gateway:
        folder = tmp_path / f"default-{next(started)}"
        cert, key = mount_secret(folder, certs.issue(DEFAULT_NAME, "localhost"))
        settings: dict[str, object] = {"tls_cert_file": cert, "tls_key_file": key, **overrides}
        return start_gateway(**settings)

    return start


def https(gateway: Gateway, path: str = "/", host: str = "localhost") -> str:
    return f"https://{host}:{gateway.port}{path}"


def served(gateway: Gateway, certs: CertificateFactory, server_name: str | None, alpn: list[str] | None = None):
    """(the SAN names of the certificate served, the ALPN protocol chosen) for one handshake."""
    context = certs.client_context()
    context.check_hostname = False
    if alpn:
        context.set_alpn_protocols(alpn)
    with socket.create_connection((LOOPBACK, gateway.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return names_of(tls.getpeercert(binary_form=True)), tls.selected_alpn_protocol()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=20)


def test_https_serves_http11_and_h2_to_curl_and_httpx(start_tls_gateway, certs, tmp_path):
    gateway = start_tls_gateway()
    ca = str(certs.ca_file(tmp_path))
    resolve = f"localhost:{gateway.port}:{LOOPBACK}"
    for flag, version in (("--http2", "2"), ("--http1.1", "1.1")):
        result = curl(
            flag,
            "--cacert",
            ca,
            "--resolve",
            resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            https(gateway, "/echo"),
        )
        assert result.stdout == f"{version} 200", result.stderr
    context = certs.client_context()
    for http2, version in ((True, "HTTP/2"), (False, "HTTP/1.1")):
        with httpx.Client(verify=context, http2=http2) as client:
            response = client.get(https(gateway, "/echo"))
        assert (response.status_code, response.http_version) == (200, version)
        assert response.headers["traceresponse"].startswith("00-")
    # cleartext to the TLS port gets no HTTP answer
    with pytest.raises(httpx.HTTPError):
        httpx.get(gateway.url + "/echo", timeout=5)


def test_sni_picks_the_certificate_of_the_name_and_the_default_otherwise(start_tls_gateway, certs, tmp_path):
    certs_dir = tmp_path / "certs"
    mount_secret(certs_dir / "shop", certs.issue("shop.example.com"))
    mount_secret(certs_dir / "api", certs.issue("*.api.example.com"))
    gateway = start_tls_gateway(tls_certs_dir=certs_dir)
    assert served(gateway, certs, "shop.example.com")[0] == ["shop.example.com"]
    assert served(gateway, certs, "v2.api.example.com")[0] == ["*.api.example.com"]
    assert served(gateway, certs, "unknown.example.com")[0] == [DEFAULT_NAME, "localhost"]
    assert served(gateway, certs, None)[0] == [DEFAULT_NAME, "localhost"]
    # curl verifies the name it asked for against the certificate it got
    ca = str(certs.ca_file(tmp_path))
    result = curl(
        "--cacert",
        ca,
        "--resolve",
        f"shop.example.com:{gateway.port}:{LOOPBACK}",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        f"https://shop.example.com:{gateway.port}/echo",
    )
    assert result.stdout == "200", result.stderr


def test_every_handshake_completes_and_is_counted(start_tls_gateway, certs):
    # uvloop reads a ClientHello sent at once before start_tls takes the connection: each must still complete.
    gateway = start_tls_gateway()
    for _ in range(40):
        assert served(gateway, certs, "localhost", ["http/1.1"]) == ([DEFAULT_NAME, "localhost"], "http/1.1")
    assert gateway.metrics().value("gateway_tls_handshakes_total", outcome="ok", protocol="http/1.1") == 40


@pytest.mark.parametrize(("offered", "chosen"), [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"), (None, None)])
def test_alpn_offers_h2_and_http11(start_tls_gateway, certs, offered, chosen):
    gateway = start_tls_gateway()
    assert served(gateway, certs, "localhost", offered)[1] == chosen


def test_handshakes_and_certificate_expiry_are_in_the_metrics(start_tls_gateway, certs):
    gateway = start_tls_gateway()
    served(gateway, certs, "localhost", ["h2", "http/1.1"])
    served(gateway, certs, "localhost", ["http/1.1"])
    with socket.create_connection((LOOPBACK, gateway.port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.recv(1024)
    metrics = gateway.metrics()
    assert metrics.value("gateway_tls_handshakes_total", outcome="ok", protocol="h2") == 1
    assert metrics.value("gateway_tls_handshakes_total", outcome="ok", protocol="http/1.1") == 1
    assert metrics.value("gateway_tls_handshakes_total", outcome="http_request") == 1
    expiry = metrics.value("gateway_tls_certificate_expiry_timestamp_seconds", certificate="default")
    cert_path = Path(gateway.env["GATEWAY_TLS_CERT_FILE"])
    assert expiry == x509.load_pem_x509_certificate(cert_path.read_bytes()).not_valid_after_utc.timestamp()


def test_old_protocols_and_cleartext_are_refused_and_counted(start_tls_gateway, certs):
    gateway = start_tls_gateway()
    result = curl("-k", "--tlsv1.1", "--tls-max", "1.1", "-o", "/dev/null", https(gateway))
    assert result.returncode != 0
    result = curl("-o", "/dev/null", "-w", "%{http_code}", gateway.url + "/")
    assert result.stdout != "200"
    metrics = gateway.metrics()
    assert metrics.value("gateway_tls_handshakes_total", outcome="ok") == 0
    assert metrics.value("gateway_tls_handshakes_total", outcome="http_request") == 1


def test_two_workers_serve_tls(start_tls_gateway, certs):
    gateway = start_tls_gateway(workers=2)
    context = certs.client_context()
    with httpx.Client(verify=context) as client:
        for _ in range(10):
            assert client.get(https(gateway, "/echo")).status_code == 200
    metrics = gateway.metrics()
    assert metrics.value("gateway_tls_handshakes_total", outcome="ok") >= 1
    # each worker's gauge, read as the earliest expiry among the live workers
    assert metrics.value("gateway_tls_certificate_expiry_timestamp_seconds", certificate="default") > time.time()


def bad_pair(folder: Path, pem: Pem) -> tuple[str, str]:
    cert, key = write_plain(folder, pem)
    return str(cert), str(key)


@pytest.mark.parametrize(
    ("case", "variable", "shown"),
    [
        ("missing-cert-file", "GATEWAY_TLS_CERT_FILE", "no such file"),
        ("directory-as-key", "GATEWAY_TLS_KEY_FILE", "is a directory"),
        ("mismatched-key", "GATEWAY_TLS_KEY_FILE", "does not match the certificate in GATEWAY_TLS_CERT_FILE"),
        ("expired", "GATEWAY_TLS_CERT_FILE", "expired at"),
        ("not-pem", "GATEWAY_TLS_CERT_FILE", "holds no PEM certificate"),
        ("only-cert", "GATEWAY_TLS_KEY_FILE", "required when GATEWAY_TLS_CERT_FILE is set"),
        ("only-key", "GATEWAY_TLS_CERT_FILE", "required when GATEWAY_TLS_KEY_FILE is set"),
        ("broken-dir-entry", "GATEWAY_TLS_CERTS_DIR", "shop/tls.key: does not match"),
        ("certs-dir-without-pair", "GATEWAY_TLS_CERTS_DIR", "needs the default certificate"),
        ("redirect-without-tls", "GATEWAY_HTTP_REDIRECT_PORT", "needs TLS"),
    ],
)
def test_bad_tls_settings_exit_2_naming_the_variable(tmp_path, certs, case, variable, shown):
    good = certs.issue(DEFAULT_NAME)
    cert, key = bad_pair(tmp_path / "good", good)
    settings: dict[str, object] = {"tls_cert_file": cert, "tls_key_file": key}
    if case == "missing-cert-file":
        settings["tls_cert_file"] = str(tmp_path / "absent.crt")
    elif case == "directory-as-key":
        settings["tls_key_file"] = str(tmp_path)
    elif case == "mismatched-key":
        settings["tls_cert_file"], settings["tls_key_file"] = bad_pair(
            tmp_path / "b", good.mismatched(certs.issue("x.test"))
        )
    elif case == "expired":
        settings["tls_cert_file"], settings["tls_key_file"] = bad_pair(tmp_path / "b", certs.expired(DEFAULT_NAME))
    elif case == "not-pem":
        (tmp_path / "junk.crt").write_text("not a certificate")
        settings["tls_cert_file"] = str(tmp_path / "junk.crt")
    elif case == "only-cert":
        settings["tls_key_file"] = None
    elif case == "only-key":
        settings["tls_cert_file"] = None
    elif case == "broken-dir-entry":
        mount_secret(tmp_path / "certs" / "shop", certs.issue("shop.test").mismatched(good))
        settings["tls_certs_dir"] = str(tmp_path / "certs")
    elif case == "certs-dir-without-pair":
        settings = {"tls_certs_dir": str(tmp_path)}
    elif case == "redirect-without-tls":
        settings = {"http_redirect_port": 18080}
    env = gateway_env(None, None, upstream_url="http://127.0.0.1:9", **settings)
    with running_process([GATEWAY_BIN], tmp_path / "gateway.log", env=env) as process:
        code = process.popen.wait(20)
        output = process.output()
    assert code == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "GATEWAY_" in line]
    assert len(lines) == 1, output
    assert lines[0].startswith(f"{variable}: ") and shown in lines[0], lines[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_redirect_listener_answers_308_to_https(start_tls_gateway, workers):
    redirect_port = free_port()
    start_tls_gateway(workers=workers, http_redirect_port=redirect_port, http_redirect_https_port=443)
    base = f"http://{LOOPBACK}:{redirect_port}"
    with httpx.Client(follow_redirects=False) as client:
        response = client.post(f"{base}/cart/items?id=7&x=%20y", headers={"host": "Shop.Example.com:80"}, content=b"{}")
        assert response.status_code == 308
        assert response.headers["location"] == "https://shop.example.com/cart/items?id=7&x=%20y"
        assert client.get(f"{base}/", headers={"host": "evil.example/x"}).status_code == 400
    # without the Service port override, the location names GATEWAY_PORT
    gateway2 = start_tls_gateway(http_redirect_port=free_port())
    port2 = gateway2.env["GATEWAY_HTTP_REDIRECT_PORT"]
    response = httpx.get(f"http://{LOOPBACK}:{port2}/a", headers={"host": "localhost"})
    assert response.headers["location"] == f"https://localhost:{gateway2.port}/a"
