from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.trust import TrustedNetworks

NETWORKS = [
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("192.168.1.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("10.1.2.3", True),
        ("10.0.0.0", True),
        ("10.255.255.255", True),
        ("11.0.0.0", False),
        ("9.255.255.255", False),
        ("192.168.1.77", True),
        ("192.168.2.1", False),
        ("::ffff:10.1.2.3", True),
        ("::ffff:192.168.1.1", True),
        ("::ffff:11.0.0.1", False),
        ("2001:db8::1", True),
        ("2001:DB8:ffff::1", True),
        ("2001:db8::1%eth0", True),
        ("2001:db9::1", False),
        ("::1", False),
        ("127.0.0.1", False),
        ("localhost", False),
        ("example.com", False),
        ("10.1.2.3:4000", False),
        ("10.1.2", False),
        (" 10.1.2.3", False),
        ("/tmp/gateway.sock", False),
        ("", False),
        (None, False),
    ],
)
def test_trusts_by_network_membership(host, expected):
    assert TrustedNetworks(False, NETWORKS).trusts(host) is expected


def test_ipv4_mapped_client_also_matches_ipv6_networks():
    trusted = TrustedNetworks(False, [ipaddress.ip_network("::ffff:0:0/96")])
    assert trusted.trusts("::ffff:203.0.113.7") is True
    assert trusted.trusts("203.0.113.7") is False


@pytest.mark.parametrize("host", ["203.0.113.7", "2001:db9::1", "not an address", "", None])
def test_trust_all_trusts_everyone(host):
    assert TrustedNetworks(True, []).trusts(host) is True
    assert TrustedNetworks(True, NETWORKS).trusts(host) is True


def test_no_networks_trusts_no_one_without_parsing(monkeypatch):
    def fail(address: object) -> None:
        raise AssertionError(f"parsed {address!r}")

    monkeypatch.setattr(ipaddress, "ip_address", fail)
    assert TrustedNetworks(False, []).trusts("10.1.2.3") is False


def test_repeated_hosts_get_the_same_answer():
    trusted = TrustedNetworks(False, NETWORKS)
    assert [trusted.trusts(host) for host in ["10.0.0.1", "11.0.0.1"] * 3] == [True, False] * 3


def test_instances_do_not_share_answers():
    assert TrustedNetworks(False, NETWORKS).trusts("10.0.0.1") is True
    assert TrustedNetworks(False, [ipaddress.ip_network("11.0.0.0/8")]).trusts("10.0.0.1") is False


@given(st.none() | st.text() | st.ip_addresses().map(str))
def test_trusts_never_raises(host):
    assert TrustedNetworks(False, NETWORKS).trusts(host) in (True, False)
