"""Which clients may send the trace context and sampling decision the gateway honours."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Clients come back, and parsing an address costs more than the rest of the check: remember the answers.
_CACHE_SIZE = 4096


class TrustedNetworks:
    """Membership of the client's address in the trusted networks, as uvicorn's ``_TrustedHosts`` does.

    An IPv4-mapped IPv6 client (``::ffff:10.1.2.3``, from a dual-stack socket) is matched against the
    IPv4 networks as well as the IPv6 ones. A host that is not an IP address (None, a Unix socket path,
    garbage) is not trusted.
    """

    def __init__(self, trust_all: bool, networks: Sequence[Network]) -> None:
        self.trust_all = trust_all
        self.networks = tuple(networks)
        self._ipv4 = tuple(net for net in self.networks if isinstance(net, ipaddress.IPv4Network))
        self._ipv6 = tuple(net for net in self.networks if isinstance(net, ipaddress.IPv6Network))
        self._trusts_address = lru_cache(maxsize=_CACHE_SIZE)(self._in_networks)

    def trusts(self, client_host: str | None) -> bool:
        if self.trust_all:
            return True
        if not self.networks or not client_host:
            return False
        return self._trusts_address(client_host)

    def _in_networks(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv4Address):
            return any(address in net for net in self._ipv4)
        mapped = address.ipv4_mapped
        if mapped is not None and any(mapped in net for net in self._ipv4):
            return True
        return any(address in net for net in self._ipv6)
