"""Certificates for TLS termination: read a PEM pair, check it, and pick one by SNI name. No sockets, no contexts.

A pair is what a mounted `kubernetes.io/tls` Secret holds: `tls.crt` (the certificate, then its chain) and `tls.key`.
It is refused when a file cannot be read, holds no PEM, the key is encrypted or does not match the certificate, or
the certificate has expired. Names follow RFC 6125: a SAN DNS name matches itself, case-insensitively, and a
wildcard `*.example.com` matches exactly one more label on the left (`a.example.com`, not `example.com` nor
`a.b.example.com`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

CERT_FILE_NAME = "tls.crt"
KEY_FILE_NAME = "tls.key"
WILDCARD_PREFIX = "*."

Role = Literal["cert", "key"]
T = TypeVar("T")


class CertificateError(Exception):
    """Why a pair cannot serve; `role` says which file is to blame, so the message can name its variable."""

    def __init__(self, role: Role, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.role = role
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PemPair:
    cert_path: Path
    key_path: Path
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, slots=True)
class CheckedCertificate:
    """A pair that may serve: its DNS names (lower case, as in the SAN) and when it lapses (epoch seconds)."""

    pair: PemPair
    dns_names: tuple[str, ...]
    not_after: float
    subject: str


def read_pair(cert_path: Path, key_path: Path) -> PemPair:
    return PemPair(cert_path, key_path, _read(cert_path, "cert"), _read(key_path, "key"))


def check_pair(pair: PemPair, now: float, cert_named: str | None = None) -> CheckedCertificate:
    """The pair's names and expiry, or CertificateError saying what is wrong with which file. `cert_named` is how
    a mismatched key's message names the certificate (its path unless given)."""
    try:
        chain = x509.load_pem_x509_certificates(pair.cert_pem)
    except ValueError:
        raise CertificateError("cert", pair.cert_path, "holds no PEM certificate") from None
    leaf = chain[0]
    key = _private_key(pair)
    if _public_der(leaf.public_key()) != _public_der(key.public_key()):
        certificate = cert_named or pair.cert_path
        raise CertificateError("key", pair.key_path, f"does not match the certificate in {certificate}")
    not_after = leaf.not_valid_after_utc
    if not_after.timestamp() <= now:
        raise CertificateError("cert", pair.cert_path, f"expired at {not_after.isoformat()}")
    return CheckedCertificate(pair, _dns_names(leaf), not_after.timestamp(), leaf.subject.rfc4514_string())


def load_pair(cert_path: Path, key_path: Path, now: float, cert_named: str | None = None) -> CheckedCertificate:
    return check_pair(read_pair(cert_path, key_path), now, cert_named)


def normalize_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def name_matches(pattern: str, server_name: str) -> bool:
    pattern, server_name = normalize_name(pattern), normalize_name(server_name)
    if not pattern.startswith(WILDCARD_PREFIX):
        return pattern == server_name
    first, dot, rest = server_name.partition(".")
    return bool(first) and bool(dot) and rest == pattern[len(WILDCARD_PREFIX) :]


@dataclass(frozen=True, slots=True)
class NameIndex(Generic[T]):
    """Which value serves which SNI name: an exact name first, then a wildcard one label up, else `default`."""

    default: T
    exact: Mapping[str, T] = field(default_factory=dict)
    wildcards: Mapping[str, T] = field(default_factory=dict)  # keyed by the part after "*."

    @classmethod
    def build(cls, default: T, entries: Iterable[tuple[Iterable[str], T]]) -> NameIndex[T]:
        """The first entry that names a name keeps it (callers pass entries in a stable order)."""
        exact: dict[str, T] = {}
        wildcards: dict[str, T] = {}
        for names, value in entries:
            for name in names:
                name = normalize_name(name)
                if name.startswith(WILDCARD_PREFIX):
                    wildcards.setdefault(name[len(WILDCARD_PREFIX) :], value)
                elif "*" not in name:  # partial wildcards (`f*.example.com`) are not honoured, as in browsers
                    exact.setdefault(name, value)
        return cls(default, exact, wildcards)

    def choose(self, server_name: str | None) -> T:
        if not server_name:
            return self.default
        name = normalize_name(server_name)
        found = self.exact.get(name)
        if found is not None:
            return found
        _, dot, parent = name.partition(".")
        if dot and parent:
            found = self.wildcards.get(parent)
            if found is not None:
                return found
        return self.default


def directory_entries(certs_dir: Path) -> list[str]:
    """The Secret mounts in a GATEWAY_TLS_CERTS_DIR, sorted; hidden entries (the kubelet's `..data`) are skipped."""
    return sorted(entry.name for entry in os.scandir(certs_dir) if entry.is_dir() and not entry.name.startswith("."))


def _read(path: Path, role: Role) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertificateError(role, path, "no such file") from None
    except IsADirectoryError:
        raise CertificateError(role, path, "is a directory, not a PEM file") from None
    except OSError as exc:
        raise CertificateError(role, path, f"cannot be read: {exc.strerror or exc}") from None


def _private_key(pair: PemPair) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pair.key_pem, password=None)
    except TypeError:
        raise CertificateError("key", pair.key_path, "is encrypted; give the key without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError("key", pair.key_path, f"holds no usable PEM private key ({exc})") from None


def _public_der(public_key: object) -> bytes:
    encode = getattr(public_key, "public_bytes", None)
    if encode is None:
        return b""
    der: bytes = encode(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def _dns_names(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(normalize_name(name) for name in san.get_values_for_type(x509.DNSName))
