"""TLS termination: the server context, SNI, certificates renewed on disk, and handshakes counted.

`TlsTerminator` is what `gateway.edge` needs (its TlsHandshakes protocol). The listener gets one context whose
`sni_callback` hands each handshake the context of the certificate in force for its server name at that moment. A
renewal therefore reaches new handshakes only; an established connection keeps the session it has. A thread checks
the files every GATEWAY_TLS_RELOAD_INTERVAL seconds (a stat, off the request path) and swaps in a renewed pair that
loads; one that does not is refused with one logged line and counted, and the certificate in force stays.
"""

from __future__ import annotations

import logging
import math
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.certificates import (
    CERT_FILE_NAME,
    KEY_FILE_NAME,
    CertificateError,
    CheckedCertificate,
    NameIndex,
    directory_entries,
    load_pair,
)
from gateway.metrics import Metrics
from gateway.reload import FileSignature, file_signature
from gateway.settings import Settings

DEFAULT_CERTIFICATE = "default"
ALPN_PROTOCOLS = ("h2", "http/1.1")
NO_ALPN = "none"
# Mozilla's "intermediate" configuration (v5.7) for TLS 1.2, ECDHE only: the DHE suites need DH parameters that a
# Python context does not get. TLS 1.3 keeps OpenSSL's suites, which are all AEAD.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
RELOAD_OK = "ok"
RELOAD_REJECTED = "rejected"
RELOAD_REMOVED = "removed"

logger = logging.getLogger("gateway.tls")

Signature = tuple[FileSignature | None, FileSignature | None]


@dataclass(frozen=True, slots=True)
class CertificateSource:
    """Where one certificate is read from: the default pair, or one subdirectory of GATEWAY_TLS_CERTS_DIR."""

    name: str  # the `certificate` label: "default" or the subdirectory's name
    cert_path: Path
    key_path: Path
    cert_named: str  # how a mismatched key's message names the certificate

    @classmethod
    def in_directory(cls, certs_dir: Path, entry: str) -> CertificateSource:
        folder = certs_dir / entry
        return cls(entry, folder / CERT_FILE_NAME, folder / KEY_FILE_NAME, f"its {CERT_FILE_NAME}")

    def signature(self) -> Signature:
        return file_signature(self.cert_path), file_signature(self.key_path)


@dataclass(frozen=True, slots=True)
class Installed:
    source: CertificateSource
    certificate: CheckedCertificate
    context: ssl.SSLContext
    signature: Signature


def server_context(certificate: CheckedCertificate | None = None) -> ssl.SSLContext:
    """A server context as every handshake needs it; with `certificate` loaded when given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    # CRIME (compression) and client-initiated renegotiation (a CPU lever for the client) are off. The key exchange
    # groups stay OpenSSL's defaults (X25519, P-256, X448, P-521, P-384): set_ecdh_curve would allow only one.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if certificate is not None:
        load_certificate(context, certificate)
    return context


def load_certificate(context: ssl.SSLContext, certificate: CheckedCertificate) -> None:
    """Load exactly the bytes that were checked: read again from the paths, a pair swapped meanwhile could differ.
    OpenSSL reads only from a path, so the bytes go through an anonymous in-memory file, never onto a disk."""
    pair = certificate.pair
    if not hasattr(os, "memfd_create") or not os.path.isdir("/proc/self/fd"):
        context.load_cert_chain(pair.cert_path, pair.key_path)
        return
    descriptor = os.memfd_create("gateway-tls-pair", os.MFD_CLOEXEC)
    with open(descriptor, "wb", closefd=True) as memory_file:
        memory_file.write(pair.cert_pem.rstrip(b"\n") + b"\n" + pair.key_pem)
        memory_file.flush()
        context.load_cert_chain(f"/proc/self/fd/{descriptor}")


def handshake_outcome(error: BaseException) -> str:
    """A bounded label for why a handshake failed."""
    if isinstance(error, TimeoutError | ConnectionAbortedError):
        return "timeout"  # asyncio and uvloop abort a handshake past ssl_handshake_timeout with ConnectionAbortedError
    if isinstance(error, ssl.SSLEOFError | ConnectionError | EOFError):
        return "closed"
    if isinstance(error, ssl.SSLError):
        return _SSL_REASONS.get(str(error.reason), "error")
    return "error"


class TlsTerminator:
    """The default certificate and those of GATEWAY_TLS_CERTS_DIR, chosen by SNI; renewals picked up by a thread."""

    def __init__(self, settings: Settings, metrics: Metrics, now: Callable[[], float] = time.time) -> None:
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            raise ValueError("TLS needs GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE")
        self._default = CertificateSource(
            DEFAULT_CERTIFICATE, settings.tls_cert_file, settings.tls_key_file, "GATEWAY_TLS_CERT_FILE"
        )
        self._certs_dir = settings.tls_certs_dir
        self._interval = settings.tls_reload_interval
        self._handshake_timeout = settings.tls_handshake_timeout
        self._metrics = metrics
        self._now = now
        self._installed: dict[str, Installed] = {}
        self._refused: dict[str, Signature] = {}
        self._started = False  # certificates found at startup are loaded, not reloaded
        self._installed[DEFAULT_CERTIFICATE] = self._load(self._default, self._default.signature())
        self._index: NameIndex[ssl.SSLContext] = NameIndex(self._installed[DEFAULT_CERTIFICATE].context)
        self._context = server_context(self._installed[DEFAULT_CERTIFICATE].certificate)
        self._context.sni_callback = self._choose_context
        self.check()
        self._started = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    @property
    def handshake_timeout(self) -> float:
        return self._handshake_timeout

    def succeeded(self, ssl_object: ssl.SSLObject | None) -> None:
        protocol = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self._metrics.tls_handshakes.labels("ok", protocol if protocol in ALPN_PROTOCOLS else NO_ALPN).inc()

    def failed(self, error: BaseException) -> None:
        self._metrics.tls_handshakes.labels(handshake_outcome(error), NO_ALPN).inc()

    def certificates(self) -> dict[str, CheckedCertificate]:
        """The certificates in force, by their `certificate` label."""
        return {name: installed.certificate for name, installed in self._installed.items()}

    def start(self) -> None:
        """Check for renewed files every GATEWAY_TLS_RELOAD_INTERVAL seconds in a daemon thread (0: never)."""
        if self._interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="tls-reload", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def check(self) -> None:
        """Install what changed on disk since the last check; refuse (once per version) what does not load."""
        sources = [self._default, *self._directory_sources()]
        changed = False
        for source in sources:
            changed |= self._check_source(source)
        present = {source.name for source in sources}
        for name in [name for name in self._installed if name not in present]:
            del self._installed[name]
            self._refused.pop(name, None)
            # With several workers the series lives on in prometheus-client's files whatever remove() does: +Inf
            # there, so an expiry alert cannot fire for a certificate no longer served.
            self._metrics.tls_certificate_expiry.labels(name).set(math.inf)
            self._metrics.tls_certificate_expiry.remove(name)
            self._metrics.tls_reloads.labels(name, RELOAD_REMOVED).inc()
            logger.info("TLS certificate %s removed from GATEWAY_TLS_CERTS_DIR", name, extra={"certificate": name})
            changed = True
        if changed:
            self._index = NameIndex.build(
                self._installed[DEFAULT_CERTIFICATE].context,
                (
                    (installed.certificate.dns_names, installed.context)
                    for name, installed in sorted(self._installed.items())
                    if name != DEFAULT_CERTIFICATE
                ),
            )

    def _check_source(self, source: CertificateSource) -> bool:
        signature = source.signature()
        current = self._installed.get(source.name)
        if (current is not None and current.signature == signature) or self._refused.get(source.name) == signature:
            return False
        try:
            installed = self._load(source, signature)
        except (CertificateError, ssl.SSLError, OSError) as exc:
            # Remembered by signature, so that a bad version is reported once, not at every check until it is fixed.
            self._refused[source.name] = signature
            self._metrics.tls_reloads.labels(source.name, RELOAD_REJECTED).inc()
            kept = "the certificate in force stays" if current is not None else "it is not served"
            logger.error(
                "TLS certificate %s refused, %s: %s", source.name, kept, exc, extra={"certificate": source.name}
            )
            return False
        self._installed[source.name] = installed
        self._refused.pop(source.name, None)
        if self._started:
            self._metrics.tls_reloads.labels(source.name, RELOAD_OK).inc()
        if current is not None or source is not self._default:
            logger.info(
                "TLS certificate %s loaded: %s, names %s, expires %s",
                source.name,
                installed.certificate.subject,
                ",".join(installed.certificate.dns_names) or "-",
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(installed.certificate.not_after)),
                extra={"certificate": source.name},
            )
        return True

    def _load(self, source: CertificateSource, signature: Signature) -> Installed:
        certificate = load_pair(source.cert_path, source.key_path, self._now(), source.cert_named)
        if source is not self._default and not certificate.dns_names:
            raise CertificateError("cert", source.cert_path, "has no DNS names in its subjectAltName to choose it by")
        installed = Installed(source, certificate, server_context(certificate), signature)
        self._metrics.tls_certificate_expiry.labels(source.name).set(certificate.not_after)
        return installed

    def _directory_sources(self) -> list[CertificateSource]:
        if self._certs_dir is None:
            return []
        try:
            entries = directory_entries(self._certs_dir)
        except OSError as exc:
            # The directory itself vanished or cannot be listed: keep serving what is in force rather than drop it.
            logger.warning("GATEWAY_TLS_CERTS_DIR cannot be listed, certificates in force stay: %s", exc)
            return [installed.source for name, installed in self._installed.items() if name != DEFAULT_CERTIFICATE]
        return [CertificateSource.in_directory(self._certs_dir, entry) for entry in entries]

    def _choose_context(self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        ssl_object.context = self._index.choose(server_name)

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:  # the watch must outlive any one check
                logger.exception("checking the TLS certificates failed")


_SSL_REASONS = {
    "HTTP_REQUEST": "http_request",  # cleartext HTTP sent to the TLS port
    "WRONG_VERSION_NUMBER": "http_request",
    "UNSUPPORTED_PROTOCOL": "protocol_version",
    "NO_SHARED_CIPHER": "no_shared_cipher",
    "NO_APPLICATION_PROTOCOL": "no_shared_alpn",
    "TLSV1_ALERT_UNKNOWN_CA": "certificate_refused",
    "SSLV3_ALERT_BAD_CERTIFICATE": "certificate_refused",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate_refused",
    "TLSV1_ALERT_DECRYPT_ERROR": "certificate_refused",
}
