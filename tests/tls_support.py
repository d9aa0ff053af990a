"""Certificates made in the test (trustme), written as a kubelet mounts a kubernetes.io/tls Secret, and swapped the
way the kubelet renews one: a new timestamped directory, then `..data` renamed onto it in one step."""

from __future__ import annotations

import datetime
import itertools
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509

DATA_LINK = "..data"
_generation = itertools.count()


@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes

    def mismatched(self, other: Pem) -> Pem:
        """This certificate with another's key: what a half-done rotation leaves behind."""
        return Pem(self.cert, other.key)


class CertificateFactory:
    def __init__(self) -> None:
        self.ca = trustme.CA()

    def issue(self, *names: str, not_after: datetime.datetime | None = None) -> Pem:
        not_before = None
        if not_after is not None and not_after < datetime.datetime.now(datetime.UTC):
            not_before = not_after - datetime.timedelta(days=30)
        leaf = self.ca.issue_cert(*names, not_before=not_before, not_after=not_after)
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        return Pem(chain, leaf.private_key_pem.bytes())

    def expired(self, *names: str) -> Pem:
        return self.issue(*names, not_after=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1))

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def ca_file(self, folder: Path) -> Path:
        path = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        return path


def write_plain(folder: Path, pem: Pem) -> tuple[Path, Path]:
    """tls.crt and tls.key as plain files (rewritten in place, as a non-Kubernetes renewal tool might)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tls.crt").write_bytes(pem.cert)
    (folder / "tls.key").write_bytes(pem.key)
    return folder / "tls.crt", folder / "tls.key"


def mount_secret(folder: Path, pem: Pem) -> tuple[Path, Path]:
    """The kubelet's layout: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/ holding the files."""
    folder.mkdir(parents=True, exist_ok=True)
    swap_secret(folder, pem)
    for name in ("tls.crt", "tls.key"):
        os.symlink(f"{DATA_LINK}/{name}", folder / name)
    return folder / "tls.crt", folder / "tls.key"


def swap_secret(folder: Path, pem: Pem) -> None:
    """Renew a mounted Secret atomically, as the kubelet's AtomicWriter does."""
    generation = folder / f"..2026_12_04_{next(_generation):06d}"
    generation.mkdir()
    (generation / "tls.crt").write_bytes(pem.cert)
    (generation / "tls.key").write_bytes(pem.key)
    old = os.readlink(folder / DATA_LINK) if (folder / DATA_LINK).is_symlink() else None
    os.symlink(generation.name, folder / "..data_tmp")
    os.rename(folder / "..data_tmp", folder / DATA_LINK)
    if old is not None:
        for child in (folder / old).iterdir():
            child.unlink()
        (folder / old).rmdir()


def names_of(der: bytes | None) -> list[str]:
    """The SAN DNS names of a DER certificate (what a client was served)."""
    assert der is not None
    certificate = x509.load_der_x509_certificate(der)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.DNSName))
