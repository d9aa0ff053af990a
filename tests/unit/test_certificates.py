from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from gateway.certificates import (
    CertificateError,
    NameIndex,
    PemPair,
    check_pair,
    directory_entries,
    load_pair,
    name_matches,
)
from gateway.reload import file_signature
from tests.tls_support import CertificateFactory, mount_secret, swap_secret, write_plain


@pytest.fixture(scope="module")
def certs() -> CertificateFactory:
    return CertificateFactory()


def pair_of(pem) -> PemPair:
    return PemPair(Path("/m/tls.crt"), Path("/m/tls.key"), pem.cert, pem.key)


def test_a_good_pair_gives_its_names_and_expiry(certs):
    checked = check_pair(pair_of(certs.issue("Shop.Example.com", "*.api.example.com")), time.time())
    assert checked.dns_names == ("shop.example.com", "*.api.example.com")
    assert checked.not_after > time.time() + 86400


def test_a_key_of_another_certificate_is_blamed_on_the_key_file(certs):
    pem = certs.issue("a.test").mismatched(certs.issue("b.test"))
    with pytest.raises(CertificateError) as info:
        check_pair(pair_of(pem), time.time(), "GATEWAY_TLS_CERT_FILE")
    assert (info.value.role, info.value.reason) == ("key", "does not match the certificate in GATEWAY_TLS_CERT_FILE")


def test_an_expired_certificate_is_blamed_on_the_certificate_file(certs):
    with pytest.raises(CertificateError) as info:
        check_pair(pair_of(certs.expired("a.test")), time.time())
    assert info.value.role == "cert"
    assert info.value.reason.startswith("expired at ")


def test_expiry_is_judged_by_the_clock_given(certs):
    pem = certs.issue("a.test")
    checked = check_pair(pair_of(pem), 0.0)
    with pytest.raises(CertificateError, match="expired"):
        check_pair(pair_of(pem), checked.not_after)


@pytest.mark.parametrize(
    ("cert", "key", "role", "reason"),
    [
        (b"not pem", None, "cert", "holds no PEM certificate"),
        (b"", None, "cert", "holds no PEM certificate"),
        (None, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "key", "holds no usable PEM"),
        (None, b"garbage", "key", "holds no usable PEM"),
    ],
)
def test_files_without_pem_are_named(certs, cert, key, role, reason):
    good = certs.issue("a.test")
    cert = good.cert if cert is None else cert
    key = good.key if key is None else key
    pair = PemPair(pair_of(good).cert_path, pair_of(good).key_path, cert, key)
    with pytest.raises(CertificateError) as info:
        check_pair(pair, time.time())
    assert info.value.role == role
    assert info.value.reason.startswith(reason)


def test_an_encrypted_key_is_refused_with_what_to_do(certs):
    good = certs.issue("a.test")
    key = serialization.load_pem_private_key(good.key, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(CertificateError, match="without a passphrase"):
        check_pair(PemPair(pair_of(good).cert_path, pair_of(good).key_path, good.cert, encrypted), time.time())


def test_missing_and_directory_paths_are_named(certs, tmp_path):
    cert, key = write_plain(tmp_path / "m", certs.issue("a.test"))
    with pytest.raises(CertificateError) as info:
        load_pair(tmp_path / "nope.crt", key, time.time())
    assert (info.value.role, info.value.reason) == ("cert", "no such file")
    with pytest.raises(CertificateError) as info:
        load_pair(cert, tmp_path, time.time())
    assert (info.value.role, info.value.reason) == ("key", "is a directory, not a PEM file")


def test_a_path_that_cannot_be_read_says_why(certs, tmp_path):
    cert, _ = write_plain(tmp_path / "m", certs.issue("a.test"))
    with pytest.raises(CertificateError) as info:
        load_pair(cert, cert / "tls.key", time.time())  # a file where a directory should be
    assert info.value.role == "key"
    assert info.value.reason == "cannot be read: Not a directory"


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("shop.example.com", "shop.example.com", True),
        ("shop.example.com", "SHOP.Example.COM.", True),
        ("shop.example.com", "example.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "A.EXAMPLE.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "aexample.com", False),
    ],
)
def test_name_matching_follows_rfc_6125(pattern, name, matches):
    assert name_matches(pattern, name) is matches


INDEX = NameIndex.build(
    "default",
    [
        (["shop.example.com", "*.example.com"], "first"),
        (["*.example.com", "api.example.com"], "second"),
        (["f*.example.org", "*"], "partial"),
    ],
)


@pytest.mark.parametrize(
    ("server_name", "chosen"),
    [
        (None, "default"),
        ("", "default"),
        ("shop.example.com", "first"),
        ("Shop.Example.Com.", "first"),
        ("api.example.com", "second"),  # an exact name wins over a wildcard
        ("other.example.com", "first"),  # the first entry keeps a name claimed twice
        ("a.b.example.com", "default"),
        ("example.com", "default"),
        ("foo.example.org", "default"),  # partial wildcards are not honoured
        ("unknown.test", "default"),
        ("localhost", "default"),
    ],
)
def test_sni_choice(server_name, chosen):
    assert INDEX.choose(server_name) == chosen


@given(st.one_of(st.none(), st.text()))
def test_sni_choice_never_raises(server_name):
    assert INDEX.choose(server_name) in ("default", "first", "second")


def test_directory_entries_are_the_visible_subdirectories_sorted(tmp_path):
    for name in ("b", "a", "..data", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "file").write_text("x")
    assert directory_entries(tmp_path) == ["a", "b"]


def test_a_kubelet_swap_changes_the_signature_seen_through_the_symlink(certs, tmp_path):
    cert, _ = mount_secret(tmp_path / "m", certs.issue("a.test"))
    before = file_signature(cert)
    swap_secret(tmp_path / "m", certs.issue("a.test"))
    after = file_signature(cert)
    assert before is not None and after is not None and before != after
    assert file_signature(tmp_path / "absent") is None
