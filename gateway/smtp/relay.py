"""Relay control at RCPT time: who may send where (RFC 5321 §3.6.2, RFC 5068 §3).

Clients in `trusted_networks` may relay to any domain (the organisation's own mail
servers sending outbound); anyone may send to `local_domains` (inbound); every other
recipient is `554 5.7.1`, so the gateway is never an open relay. A leading dot in a
local domain (".example.org") also covers its subdomains.

Untrusted clients also may not route through a local domain: a local part holding
"@", "%" or "!" ("victim%elsewhere@local.test", the old source-routing tricks) is
refused like a foreign domain, since a mail server behind the gateway may honour it.
"""

from __future__ import annotations

import ipaddress

from gateway.config.types import Network
from gateway.envelope import RELAY_DENIED, Reply


class RelayPolicy:
    def __init__(self, trusted_networks: tuple[Network, ...],
                 local_domains: tuple[str, ...]) -> None:
        self._networks = trusted_networks
        self._exact = frozenset(d.lower().rstrip(".") for d in local_domains
                                if not d.startswith("."))
        self._suffixes = tuple(d.lower().rstrip(".") for d in local_domains
                               if d.startswith("."))

    def is_trusted(self, client_address: str) -> bool:
        """Whether a client (by IP address text) may relay anywhere."""
        try:
            ip = ipaddress.ip_address(client_address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._networks)

    def is_local(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        return domain in self._exact or any(
            domain.endswith(s) for s in self._suffixes)

    def check(self, trusted: bool, recipient: str) -> Reply | None:
        """None if the recipient may be accepted from this client, else the refusal."""
        if trusted:
            return None
        local_part, at, domain = recipient.rpartition("@")
        if not at or not self.is_local(domain):
            return RELAY_DENIED
        if any(c in local_part for c in "@%!"):
            return RELAY_DENIED
        return None
