from __future__ import annotations

from typing import Any

import pytest

from gateway.settings import Settings
from gateway.tls_checks import tls_configured, tls_problems
from tests.tls_support import CertificateFactory, mount_secret, write_plain


@pytest.fixture(scope="module")
def certs() -> CertificateFactory:
    return CertificateFactory()


def settings(**values: Any) -> Settings:
    return Settings(upstream_url="http://127.0.0.1:1", **values)


@pytest.fixture
def good_pair(tmp_path, certs):
    return mount_secret(tmp_path / "default", certs.issue("default.test"))


def test_no_tls_settings_no_problems():
    assert tls_problems(settings()) == []
    assert not tls_configured(settings())


def test_a_good_pair_and_directory_have_no_problems(tmp_path, certs, good_pair):
    mount_secret(tmp_path / "certs" / "shop", certs.issue("shop.example.com"))
    cert, key = good_pair
    assert tls_problems(settings(tls_cert_file=cert, tls_key_file=key, tls_certs_dir=tmp_path / "certs")) == []


def test_only_one_of_the_pair_is_named(good_pair):
    cert, key = good_pair
    assert tls_problems(settings(tls_cert_file=cert)) == [
        "GATEWAY_TLS_KEY_FILE: required when GATEWAY_TLS_CERT_FILE is set"
    ]
    assert tls_problems(settings(tls_key_file=key)) == [
        "GATEWAY_TLS_CERT_FILE: required when GATEWAY_TLS_KEY_FILE is set"
    ]


def test_a_bad_path_names_its_variable(tmp_path, good_pair):
    cert, key = good_pair
    assert tls_problems(settings(tls_cert_file=tmp_path / "nope.crt", tls_key_file=key)) == [
        f"GATEWAY_TLS_CERT_FILE: no such file (got '{tmp_path / 'nope.crt'}')"
    ]


def test_a_key_that_does_not_match(tmp_path, certs):
    cert, key = write_plain(tmp_path / "x", certs.issue("a.test").mismatched(certs.issue("b.test")))
    assert tls_problems(settings(tls_cert_file=cert, tls_key_file=key)) == [
        f"GATEWAY_TLS_KEY_FILE: does not match the certificate in GATEWAY_TLS_CERT_FILE (got '{key}')"
    ]


def test_an_expired_certificate(tmp_path, certs):
    cert, key = write_plain(tmp_path / "x", certs.expired("a.test"))
    [problem] = tls_problems(settings(tls_cert_file=cert, tls_key_file=key))
    assert problem.startswith("GATEWAY_TLS_CERT_FILE: expired at ")
    assert problem.endswith(f"(got '{cert}')")


def test_broken_directory_entries_are_each_named(tmp_path, certs, good_pair):
    cert, key = good_pair
    certs_dir = tmp_path / "certs"
    mount_secret(certs_dir / "good", certs.issue("good.test"))
    mount_secret(certs_dir / "mismatched", certs.issue("a.test").mismatched(certs.issue("b.test")))
    (certs_dir / "empty").mkdir()
    problems = tls_problems(settings(tls_cert_file=cert, tls_key_file=key, tls_certs_dir=certs_dir))
    assert problems == [
        f"GATEWAY_TLS_CERTS_DIR: empty/tls.crt: no such file (got '{certs_dir}')",
        f"GATEWAY_TLS_CERTS_DIR: mismatched/tls.key: does not match the certificate in its tls.crt (got '{certs_dir}')",
    ]


def test_a_directory_entry_without_dns_names(tmp_path, certs, good_pair):
    cert, key = good_pair
    mount_secret(tmp_path / "certs" / "ip", certs.issue("127.0.0.1"))
    assert tls_problems(settings(tls_cert_file=cert, tls_key_file=key, tls_certs_dir=tmp_path / "certs")) == [
        "GATEWAY_TLS_CERTS_DIR: ip/tls.crt: has no DNS names in its subjectAltName to choose it by"
        f" (got '{tmp_path / 'certs'}')"
    ]


def test_a_certs_dir_that_is_not_a_directory(tmp_path, good_pair):
    cert, key = good_pair
    assert tls_problems(settings(tls_cert_file=cert, tls_key_file=key, tls_certs_dir=cert)) == [
        f"GATEWAY_TLS_CERTS_DIR: not a directory (got '{cert}')"
    ]


def test_settings_that_need_tls(tmp_path):
    assert tls_problems(settings(tls_certs_dir=tmp_path, http_redirect_port=8081)) == [
        "GATEWAY_TLS_CERTS_DIR: needs the default certificate: set GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE"
        f" (got '{tmp_path}')",
        "GATEWAY_HTTP_REDIRECT_PORT: redirects to https, which needs TLS: set GATEWAY_TLS_CERT_FILE and"
        " GATEWAY_TLS_KEY_FILE (got '8081')",
    ]


def test_the_redirect_port_must_be_its_own(good_pair):
    cert, key = good_pair
    assert tls_problems(settings(tls_cert_file=cert, tls_key_file=key, port=8443, http_redirect_port=8443)) == [
        "GATEWAY_HTTP_REDIRECT_PORT: must differ from GATEWAY_PORT and GATEWAY_ADMIN_PORT (got '8443')"
    ]


def test_an_empty_variable_is_unset(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEWAY_TLS_CERT_FILE", "")
    monkeypatch.setenv("GATEWAY_UPSTREAM_URL", "http://127.0.0.1:1")
    assert Settings().tls_cert_file is None
