"""What is wrong with the TLS settings, one line per problem naming the variable: `ingress-gateway` exits 2 on any
at startup (and `ingress-gateway check` reports them). Reads the certificate files; opens no socket."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

from gateway.certificates import (
    CERT_FILE_NAME,
    KEY_FILE_NAME,
    CertificateError,
    directory_entries,
    load_pair,
)
from gateway.settings import Settings
from gateway.tls import server_context

CERT_FILE = "GATEWAY_TLS_CERT_FILE"
KEY_FILE = "GATEWAY_TLS_KEY_FILE"
CERTS_DIR = "GATEWAY_TLS_CERTS_DIR"
REDIRECT_PORT = "GATEWAY_HTTP_REDIRECT_PORT"


def tls_configured(settings: Settings) -> bool:
    return settings.tls_cert_file is not None and settings.tls_key_file is not None


def tls_problems(settings: Settings, now: float | None = None) -> list[str]:
    """Every problem with the TLS settings and the files they name; empty when TLS is off or ready to serve."""
    at = time.time() if now is None else now
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None and key is None:
        return _needs_tls(settings)
    if cert is None:
        return [f"{CERT_FILE}: required when {KEY_FILE} is set"]
    if key is None:
        return [f"{KEY_FILE}: required when {CERT_FILE} is set"]
    problems = _pair_problems(cert, key, at)
    if settings.tls_certs_dir is not None:
        problems += _directory_problems(settings.tls_certs_dir, at)
    return problems + _redirect_problems(settings)


def _needs_tls(settings: Settings) -> list[str]:
    both = f"set {CERT_FILE} and {KEY_FILE}"
    problems = []
    if settings.tls_certs_dir is not None:
        problems.append(f"{CERTS_DIR}: needs the default certificate: {both} (got '{settings.tls_certs_dir}')")
    if settings.http_redirect_port:
        port = settings.http_redirect_port
        problems.append(f"{REDIRECT_PORT}: redirects to https, which needs TLS: {both} (got '{port}')")
    return problems


def _pair_problems(cert: Path, key: Path, now: float) -> list[str]:
    try:
        server_context(load_pair(cert, key, now, CERT_FILE))
    except CertificateError as exc:
        return [f"{CERT_FILE if exc.role == 'cert' else KEY_FILE}: {exc.reason} (got '{exc.path}')"]
    except ssl.SSLError as exc:
        return [f"{CERT_FILE}: OpenSSL cannot load the pair: {exc} (got '{cert}')"]
    return []


def _directory_problems(certs_dir: Path, now: float) -> list[str]:
    if not certs_dir.is_dir():
        return [f"{CERTS_DIR}: not a directory (got '{certs_dir}')"]
    try:
        entries = directory_entries(certs_dir)
    except OSError as exc:
        return [f"{CERTS_DIR}: cannot be listed: {exc.strerror or exc} (got '{certs_dir}')"]
    problems = []
    for entry in entries:
        problem = _entry_problem(certs_dir / entry, now)
        if problem is not None:
            problems.append(f"{CERTS_DIR}: {entry}/{problem} (got '{certs_dir}')")
    return problems


def _entry_problem(entry: Path, now: float) -> str | None:
    try:
        certificate = load_pair(entry / CERT_FILE_NAME, entry / KEY_FILE_NAME, now, f"its {CERT_FILE_NAME}")
        server_context(certificate)
    except CertificateError as exc:
        return f"{exc.path.name}: {exc.reason}"
    except ssl.SSLError as exc:
        return f"{CERT_FILE_NAME}: OpenSSL cannot load the pair: {exc}"
    if not certificate.dns_names:
        return f"{CERT_FILE_NAME}: has no DNS names in its subjectAltName to choose it by"
    return None


def _redirect_problems(settings: Settings) -> list[str]:
    port = settings.http_redirect_port
    if port and port in (settings.port, settings.admin_port):
        return [f"{REDIRECT_PORT}: must differ from GATEWAY_PORT and GATEWAY_ADMIN_PORT (got '{port}')"]
    return []
