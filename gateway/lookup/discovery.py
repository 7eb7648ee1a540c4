"""Which directory serves a domain: per-domain configuration, then DNS, then defaults.

Implements the discovery of DESIGN.md ("identify the remote certificate server"):

1. `[lookup] directories` names a base URL for the domain: only that is used.
2. DNS: the PKI repository locator of RFC 4386 §2, an SRV record
   `_PKIXREP._http.<domain>` (the access protocol is the SRV proto label). SRV carries
   no scheme or path, so a target is `https://host` on port 443 and `http://host:port`
   on any other port, as `smimegate directory dns-record` publishes it. Records are
   ordered as RFC 2782 says: lowest priority first, and within one priority a weighted
   random order. A lone target of "." means the domain says it has no repository
   (RFC 2782); like no record at all, that leaves the defaults.
3. `[lookup] default_directories`: directories the operator asks for everyone else.

Answers are cached per domain for the DNS TTL (an absent record for `negative_ttl`, a
DNS failure briefly), and concurrent asks for one domain share one DNS query.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.SRV import SRV

from gateway.config.schema import LookupSection
from gateway.config.types import HostPort

log = logging.getLogger(__name__)

SRV_PREFIX = "_PKIXREP._http."  # RFC 4386 §2
DNS_FAILURE_TTL = 30.0  # a SERVFAIL or timeout is retried after this, not per message


@dataclass(frozen=True, slots=True)
class Directories:
    """Where to ask about a domain: base URLs in the order to try them, and which
    discovery step found them ("config", "srv", "default" or "none")."""

    urls: tuple[str, ...]
    source: str


@dataclass(frozen=True, slots=True)
class SrvTarget:
    priority: int
    weight: int
    port: int
    target: str  # without the trailing dot; "" for "."


def srv_url(host: str, port: int) -> str:
    """The base URL an SRV target stands for (https on 443, http elsewhere)."""
    host = host.rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}" if port == 443 else f"http://{host}:{port}"


def order_srv(records: Sequence[SrvTarget], rng: random.Random | None = None) -> list[SrvTarget]:
    """RFC 2782's order: by priority; within a priority, repeatedly pick a record with
    probability proportional to its weight (weight 0 records first in the running sum,
    so they are picked only when the draw is 0 or nothing else is left)."""
    rng = rng or random.Random()  # noqa: S311 - load spreading, not security
    out: list[SrvTarget] = []
    for prio in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == prio), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            draw = rng.randint(0, total)
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= draw:
                    out.append(group.pop(i))
                    break
    return out


def make_resolver(servers: Sequence[HostPort], timeout: float) -> dns.asyncresolver.Resolver:
    """A dnspython resolver: the given servers, else /etc/resolv.conf."""
    if servers:
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = [s.host for s in servers]
        r.nameserver_ports = {s.host: s.port for s in servers}
    else:
        try:
            r = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:  # no /etc/resolv.conf (containers)
            log.warning("no /etc/resolv.conf and no lookup.dns_servers: asking 127.0.0.1")
            r = dns.asyncresolver.Resolver(configure=False)
            r.nameservers = ["127.0.0.1"]
    r.lifetime = timeout
    r.timeout = timeout
    return r


class Discovery:
    """`await discovery.directories(domain)` → Directories; cached, coalesced."""

    def __init__(self, config: LookupSection, resolver: dns.asyncresolver.Resolver | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.per_domain = {d.lower().rstrip("."): u for d, u in config.directories}
        self.resolver = resolver or make_resolver(config.dns_servers, config.dns_timeout)
        self.clock = clock
        self.rng = rng
        self.srv_queries = 0  # DNS queries made (for tests and stats)
        self._cache: dict[str, tuple[float, tuple[SrvTarget, ...]]] = {}
        self._inflight: dict[str, asyncio.Task[tuple[SrvTarget, ...]]] = {}

    async def directories(self, domain: str) -> Directories:
        domain = domain.lower().rstrip(".")
        configured = self.per_domain.get(domain)
        if configured is not None:
            return Directories((configured,), "config")
        if self.config.srv:
            records = await self.srv(domain)
            usable = [r for r in records if r.target]
            if usable:
                urls = tuple(dict.fromkeys(srv_url(r.target, r.port)
                                           for r in order_srv(usable, self.rng)))
                return Directories(urls, "srv")
        if self.config.default_directories:
            return Directories(tuple(self.config.default_directories), "default")
        return Directories((), "none")

    async def srv(self, domain: str) -> tuple[SrvTarget, ...]:
        """The domain's _PKIXREP SRV records (cached for their TTL); () when none."""
        hit = self._cache.get(domain)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        task = self._inflight.get(domain)
        if task is None:
            # One query per domain however many ask; a task (not the first asker's own
            # await) so that one asker being cancelled does not fail the others.
            task = asyncio.ensure_future(self._fetch(domain))
            self._inflight[domain] = task
            task.add_done_callback(lambda _: self._inflight.pop(domain, None))
        return await asyncio.shield(task)

    async def _fetch(self, domain: str) -> tuple[SrvTarget, ...]:
        records, ttl = await self._query(domain)
        if len(self._cache) >= 100_000:  # bound memory against many one-off domains
            self._cache.clear()
        self._cache[domain] = (self.clock() + ttl, records)
        return records

    async def _query(self, domain: str) -> tuple[tuple[SrvTarget, ...], float]:
        self.srv_queries += 1
        qname = SRV_PREFIX + domain + "."
        try:
            answer = await self.resolver.resolve(qname, "SRV")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return (), self.config.negative_ttl
        except (dns.exception.DNSException, OSError) as e:
            log.warning("SRV lookup of %s failed, using default directories: %s", qname, e)
            return (), DNS_FAILURE_TTL
        records = tuple(
            SrvTarget(r.priority, r.weight, r.port,
                      "" if r.target == dns.name.root else r.target.to_text().rstrip("."))
            for r in answer if isinstance(r, SRV))
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else self.config.negative_ttl
        return records, max(ttl, 1.0)
