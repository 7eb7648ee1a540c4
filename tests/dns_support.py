"""A small authoritative DNS server on 127.0.0.1 (UDP) for tests, answering from a zone
the test owns and may change while it runs; it records every question it is asked.

Same approach as tests/test_delivery_route.py's, with any record type dnspython can
read from text, a TTL per name, names that answer SERVFAIL, names whose answers carry the
AD bit (as a validating resolver's would, RFC 4035 §3.2.3), and rdata given in RFC 3597's
generic form ("\\# 5 0301 01abcd") sent as it is, however malformed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from gateway.config.types import HostPort


@dataclass
class Zone:
    # name (fully qualified, lower case) → {rdtype: [rdata text]}; absent → NXDOMAIN
    records: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    ttl: dict[str, int] = field(default_factory=dict)  # per name; 60 otherwise
    servfail: set[str] = field(default_factory=set)  # names that answer SERVFAIL
    secure: set[str] = field(default_factory=set)  # names answered with the AD bit


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        q = query.question[0]
        name, rdtype = q.name.to_text().lower(), dns.rdatatype.to_text(q.rdtype)
        zone = self.server.zone
        self.server.queries.append(f"{name} {rdtype}")
        if query.ednsflags & dns.flags.DO:
            self.server.dnssec_ok.append(f"{name} {rdtype}")
        if name in zone.secure:
            response.flags |= dns.flags.AD
        if name in zone.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in zone.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif rdtype in zone.records[name]:
            texts = zone.records[name][rdtype]
            if texts and texts[0].startswith("\\#"):  # generic rdata, not checked
                response.answer.append(dns.rrset.from_rdata_list(name, zone.ttl.get(name, 60), [
                    dns.rdata.GenericRdata(dns.rdataclass.IN, q.rdtype,
                                           bytes.fromhex("".join(t.split()[2:])))
                    for t in texts]))
            else:
                response.answer.append(dns.rrset.from_text_list(
                    name, zone.ttl.get(name, 60), "IN", rdtype, texts))
        self.transport.sendto(response.to_wire(), addr)  # type: ignore[attr-defined]


class DnsServer:
    """`server = await DnsServer(zone).start()`; `server.close()` when done."""

    def __init__(self, zone: Zone | None = None) -> None:
        self.zone = zone or Zone()
        self.queries: list[str] = []
        self.dnssec_ok: list[str] = []  # the questions asked with the DO bit (RFC 3225)
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> DnsServer:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=("127.0.0.1", 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    @property
    def hostport(self) -> HostPort:
        return HostPort("127.0.0.1", self.port)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
