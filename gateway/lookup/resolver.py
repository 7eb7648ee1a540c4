"""The certificate resolver the front end calls at RCPT time.

`await resolver.certificates_for(address)` → LookupResult: the recipient's usable user
certificates and its domain's usable domain certificates, each with a status:
"found", "none" (every source answered; nothing usable) or "unavailable" (no source
could answer and nothing usable is cached) — so policy applies its fallback ladder and
a directory outage never looks like "no certificate".

Per name (the address, the domain):
1. The shared-memory cache (gateway.lookup.cache): a fresh entry is the answer. An entry
   past its expiry by at most `stale_bound` is served while one background refresh runs
   (stale-while-revalidate), and is what is left when the directory is down.
2. Otherwise discovery (gateway.lookup.discovery) names the directories, the client asks
   them in order (coalesced and batched), and SMIMEA (RFC 8162) is asked too if enabled.
3. Every certificate offered passes the trust gate (DESIGN.md, trust model): listed as
   active, parses, chains to our anchors, valid now, allows encryption, and names the
   address (an rfc822Name) or the domain (a dNSName). Anything else is never used; it is
   logged and counted (smimegate_lookup_rejected_certificates{reason}).
4. The answer is written to the cache: certificates until min(positive_ttl, the earliest
   expiry on their chains), "none" for negative_ttl. "unavailable" is not written (the
   old entry stays for stale use) but remembered in-process for FAILURE_MEMO seconds.

With [inbound] harvest, `offer_harvested` also fills an empty or negative user entry
with the signer certificate of verified inbound mail, through the same trust gate; a
cache hit on it says source "harvested", and the next directory answer replaces it.
With [inbound] learn_capabilities, `offer_capabilities` keeps what verified senders
announced in SMIMECapabilities (gateway/lookup/learned.py) for the workers' cipher choice.

Concurrent asks for one name share one fetch. Only this process writes the cache;
crypto workers attach to it by name and read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from prometheus_client import Counter

from gateway.config.schema import LookupSection
from gateway.keys.identity import dns_names, email_addresses
from gateway.keys.validate import validate_certificate
from gateway.lookup import learned, metrics
from gateway.lookup._cache_py import CertCache
from gateway.lookup._cache_types import CacheEntry, CacheError
from gateway.lookup.client import CertEntry, DirectoryClient, DirectoryError
from gateway.lookup.dane import DaneSource, SmimeaAnswer
from gateway.lookup.discovery import Discovery, make_resolver

log = logging.getLogger(__name__)

MAX_CERTS = 16  # usable certificates kept per name (latest expiry first)
FAILURE_MEMO = 10.0  # seconds an "unavailable" answer is reused before asking again
_MEMO_MAX = 50_000

DER = serialization.Encoding.DER


class LookupInputError(ValueError):
    """The address asked about is not an address."""


@dataclass(frozen=True, slots=True)
class NameResult:
    """The answer for one name (an address or a domain)."""

    name: str
    status: str  # "found" | "none" | "unavailable"
    certificates: tuple[x509.Certificate, ...]
    source: str  # "cache" | "harvested" | "stale" | "directory" | "dane" | "unavailable"
    reason: str = ""

    @property
    def stale(self) -> bool:
        return self.source == "stale"


@dataclass(frozen=True, slots=True)
class LookupResult:
    """User and domain certificates for one recipient address."""

    address: str
    user: NameResult
    domain: NameResult

    @property
    def status(self) -> str:
        """"found" if any certificate is usable; else "unavailable" if either name could
        not be learned; else "none"."""
        if self.user.certificates or self.domain.certificates:
            return "found"
        if "unavailable" in (self.user.status, self.domain.status):
            return "unavailable"
        return "none"


@dataclass(frozen=True, slots=True)
class _Usable:
    cert: x509.Certificate
    der: bytes
    valid_until: float  # earliest notAfter on its validated chain (Unix time)


class CertificateResolver:
    """One per front-end process, the cache's writer. `await close()` when done."""

    def __init__(self, config: LookupSection, *, anchors: Sequence[x509.Certificate],
                 cache: CertCache, intermediates: Sequence[x509.Certificate] = (),
                 discovery: Discovery | None = None, client: DirectoryClient | None = None,
                 dane: DaneSource | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.anchors = tuple(anchors)
        self.intermediates = tuple(intermediates)
        self.cache = cache
        self.clock = clock
        dns_resolver = make_resolver(config.dns_servers, config.dns_timeout)
        self.discovery = discovery or Discovery(config, dns_resolver)
        self._own_client = client is None
        self.client = client or DirectoryClient(config)
        self.dane = dane if dane is not None else (DaneSource(dns_resolver) if config.dane
                                                   else None)
        self._inflight: dict[str, asyncio.Task[NameResult]] = {}
        self._down: dict[str, tuple[float, NameResult]] = {}
        self._parsed: dict[bytes, x509.Certificate] = {}
        self._valid_until: dict[bytes, float] = {}
        self._counters: dict[tuple[str, str], Counter] = {}
        self._harvested: dict[str, tuple[bytes, ...]] = {}  # name → what offer_harvested put

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_client:
            await self.client.close()

    async def certificates_for(self, address: str) -> LookupResult:
        address = address.strip().lower()
        local, at, domain = address.rpartition("@")
        # RFC 5321 §4.5.3.1.3: at most 254 octets, which also keeps it a valid cache key
        if not at or not local or not domain or len(address.encode()) > 254:
            raise LookupInputError(f"not an e-mail address: {address[:100]!r}")
        now = self.clock()
        # The common case, both names cached, costs no task and no await.
        user, dom = self._known(address, now), self._known(domain, now)
        if user is None and dom is None:
            u, d = await asyncio.gather(self._fetched(address), self._fetched(domain))
            return LookupResult(address, u, d)
        return LookupResult(address, user or await self._fetched(address),
                            dom or await self._fetched(domain))

    async def lookup(self, name: str) -> NameResult:
        """The answer for one lower-case address or domain."""
        return self._known(name, self.clock()) or await self._fetched(name)

    def _known(self, name: str, now: float) -> NameResult | None:
        """The answer without asking anyone: a fresh entry, a stale one within its bound
        (starting a refresh), or a failure remembered; None when a fetch must decide."""
        entry = self.cache.get(name, now=now, allow_stale=True)
        if entry is not None:
            if entry.expires_at >= now:
                hit = self._from_entry(name, entry, "cache", now)
                if hit is not None:
                    return self._count(hit)
            elif now - entry.expires_at <= self.config.stale_bound:
                stale = self._from_entry(name, entry, "stale", now)
                if stale is not None:
                    self._start_fetch(name)  # one refresh, shared with any other asker
                    return self._count(stale)
        down = self._down.get(name)
        if down is not None and down[0] > now:
            return self._count(down[1])
        return None

    async def _fetched(self, name: str) -> NameResult:
        return self._count(await asyncio.shield(self._start_fetch(name)))

    def _count(self, r: NameResult) -> NameResult:
        key = (r.source, r.status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = metrics.LOOKUPS.labels(r.source, r.status)
        counter.inc()
        return r

    def _start_fetch(self, name: str) -> asyncio.Task[NameResult]:
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.ensure_future(self._fetch(name))
            self._inflight[name] = task
            task.add_done_callback(lambda _: self._inflight.pop(name, None))
        return task

    # -- from the cache ---------------------------------------------------------------

    def _parse(self, der: bytes) -> x509.Certificate:
        cert = self._parsed.get(der)
        if cert is None:
            if len(self._parsed) >= _MEMO_MAX:
                self._parsed.clear()
            cert = self._parsed[der] = x509.load_der_x509_certificate(der)
        return cert

    def _from_entry(self, name: str, entry: CacheEntry, source: str,
                    now: float) -> NameResult | None:
        if entry.negative:
            return NameResult(name, "none", (), source, "no usable certificate (cached)")
        if source == "stale":
            # Past the entry's expiry only certificates whose whole chain is still valid
            # may be used, and only this process knows that (it validated them); after a
            # restart a stale entry is not used.
            ders = [d for d in entry.ders if self._valid_until.get(d, 0.0) >= now]
            if not ders:
                return None
        else:
            ders = list(entry.ders)
            if self._harvested.get(name) == entry.ders:
                source = "harvested"
        try:
            certs = tuple(self._parse(d) for d in ders)
        except ValueError as e:  # only this process writes the cache: a bug, not input
            log.error("certificate cache entry for %s does not parse: %s", name, e)
            return None
        return NameResult(name, "found", certs, source)

    # -- from the sources -------------------------------------------------------------

    async def _fetch(self, name: str) -> NameResult:
        try:
            return await self._fetch_sources(name)
        except Exception as e:  # a bug must not become "no certificate": say unavailable
            log.exception("lookup of %s failed", name)
            return NameResult(name, "unavailable", (), "unavailable",
                              f"internal error: {type(e).__name__}: {e}")

    async def _fetch_sources(self, name: str) -> NameResult:
        domain = name.rpartition("@")[2]
        dirs = await self.discovery.directories(domain)
        want_dane = self.dane is not None and "@" in name
        directory_task = asyncio.ensure_future(self._ask_directories(name, dirs.urls))
        dane_answer = await self.dane.lookup(name) if want_dane and self.dane else None
        entries, errors = await directory_task
        now = self.clock()
        usable = self._check(name, entries or (), "directory", now)
        dane_found: list[_Usable] = []
        if dane_answer is not None:
            dane_found = self._check_dane(name, dane_answer, now)
        if entries is None and not dane_found and dirs.urls:
            reason = "; ".join(errors) or f"no answer for {name}"
            result = NameResult(name, "unavailable", (), "unavailable", reason)
            if len(self._down) >= _MEMO_MAX:
                self._down.clear()
            self._down[name] = (now + FAILURE_MEMO, result)
            return result
        self._down.pop(name, None)
        found = list({u.der: u for u in [*usable, *dane_found]}.values())
        found.sort(key=lambda u: u.valid_until, reverse=True)
        found = found[:MAX_CERTS]
        source = "directory" if usable or not dane_found else "dane"
        if not found:
            self._store(name, (), now + self.config.negative_ttl)
            why = "no directory serves this domain" if not dirs.urls else \
                "no usable certificate listed"
            return NameResult(name, "none", (), source, why)
        expires = min(now + self.config.positive_ttl, min(u.valid_until for u in found))
        if len(self._valid_until) >= _MEMO_MAX:
            self._valid_until.clear()
        for u in found:
            self._valid_until[u.der] = u.valid_until
            self._parsed.setdefault(u.der, u.cert)
        self._store(name, [u.der for u in found], expires)
        return NameResult(name, "found", tuple(u.cert for u in found), source)

    def _store(self, name: str, ders: Sequence[bytes], expires_at: float) -> None:
        self._harvested.pop(name, None)  # a directory's answer replaces a harvested one
        try:
            if ders:
                self.cache.put(name, list(ders), expires_at)
            else:
                self.cache.put_negative(name, expires_at)
        except CacheError as e:  # e.g. an entry larger than the arena: answer, uncached
            log.warning("certificate cache: %s not stored: %s", name, e)

    async def _ask_directories(self, name: str, urls: Sequence[str]
                               ) -> tuple[tuple[CertEntry, ...] | None, list[str]]:
        """The first answer among urls, in order; None and the errors if none answered."""
        errors: list[str] = []
        for url in urls:
            try:
                return await self.client.lookup(url, name), errors
            except DirectoryError as e:
                if e.status == 400:
                    # The directory refuses the name itself (e.g. a quoted local part it
                    # does not serve): it will never list a certificate for it.
                    log.info("directory %s refuses the name %s: %s", url, name, e.reason)
                    return (), errors
                log.warning("directory lookup of %s failed: %s", name, e)
                errors.append(str(e))
        return None, errors

    def _reject(self, name: str, source: str, what: str, reason: str, detail: str) -> None:
        metrics.REJECTED.labels(source, reason).inc()
        log.warning("certificate %s for %s from %s not used: %s (%s)", what, name, source,
                    reason, detail)

    def _check(self, name: str, entries: Sequence[CertEntry], source: str,
               now: float) -> list[_Usable]:
        out = []
        for i, e in enumerate(entries):
            what = e.fingerprint[:16] or f"#{i}"
            if e.state != "active":
                self._reject(name, source, what, "revoked" if e.state == "revoked"
                             else "bad-state", f"listed as {e.state[:40]!r}")
                continue
            try:
                cert = x509.load_pem_x509_certificate(e.pem.encode())
                chain = [x509.load_pem_x509_certificate(c.encode()) for c in e.chain]
            except ValueError as err:
                self._reject(name, source, what, "malformed", str(err)[:200])
                continue
            usable = self._gate(name, source, what, cert, chain, now)
            if usable is not None:
                out.append(usable)
        return out

    def _check_dane(self, name: str, answer: SmimeaAnswer, now: float) -> list[_Usable]:
        for _ in range(answer.malformed):
            self._reject(name, "dane", "SMIMEA", "malformed", "record data is not a "
                         "certificate")
        out = []
        for cert in answer.certificates:
            what = cert.fingerprint(hashes.SHA256()).hex()[:16]
            usable = self._gate(name, "dane", what, cert, list(answer.issuers), now)
            if usable is not None:
                out.append(usable)
        return out

    def _gate(self, name: str, source: str, what: str, cert: x509.Certificate,
              chain: list[x509.Certificate], now: float) -> _Usable | None:
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        verdict = validate_certificate(cert, anchors=self.anchors,
                                       intermediates=[*chain, *self.intermediates], at=at,
                                       purpose="encrypt", name=name)
        if not verdict.ok:
            self._reject(name, source, what, verdict.code, verdict.reason)
            return None
        # A user entry holds certificates for that address; a domain entry holds domain
        # certificates (a dNSName), not some user's certificate within the domain.
        named = name in email_addresses(cert) if "@" in name else name in dns_names(cert)
        if not named:
            kind = "rfc822Name" if "@" in name else "dNSName"
            self._reject(name, source, what, "wrong-name", f"has no {kind} {name}")
            return None
        try:
            valid_until = min(c.not_valid_after_utc.timestamp() for c in verdict.chain)
        except ValueError:
            valid_until = cert.not_valid_after_utc.timestamp()
        return _Usable(cert, cert.public_bytes(DER), valid_until)


    # -- learnt capabilities (gateway/lookup/learned.py) --------------------------------

    def offer_capabilities(self, name: str, oids: Sequence[str], signed_at: float, *,
                           ttl: float) -> str:
        """Keep the SMIMECapabilities of verified inbound mail from name for ttl seconds
        if signed later than what is held; see learned.offer."""
        return learned.offer(self.cache, name, oids, signed_at, now=self.clock(), ttl=ttl)

    # -- harvested (gateway/inbound/harvest.py) ----------------------------------------

    def offer_harvested(self, address: str, der_chain: Sequence[bytes]) -> str:
        """Cache the signer certificate of verified inbound mail (der_chain[0], its chain
        after it) for address, if it passes the trust gate as a directory's answer would
        (encryption to that address) and the cache holds no certificate for the address:
        only an empty or negative entry is filled, so a directory's answer always wins.
        "stored" | "rejected" | "skipped", counted (smimegate_lookup_harvested)."""
        try:
            result = self._harvest(address.strip().lower(), der_chain)
        except Exception:  # a bug here must not cost the message its 250
            log.exception("harvested certificate for %s not cached", address[:100])
            result = "rejected"
        metrics.HARVESTED.labels(result).inc()
        return result

    def _harvest(self, name: str, der_chain: Sequence[bytes]) -> str:
        local, at, domain = name.rpartition("@")
        if not at or not local or not domain or len(name.encode()) > 254 or not der_chain:
            self._reject(name[:100], "harvested", "offer", "malformed",
                         "not an address, or no certificate")
            return "rejected"
        now = self.clock()
        entry = self.cache.get(name, now=now, allow_stale=True)
        if entry is not None and not entry.negative and \
                now - entry.expires_at <= self.config.stale_bound:
            return "skipped"  # the directory's (or an earlier harvest's) certificates
        try:
            cert, *chain = [x509.load_der_x509_certificate(d) for d in der_chain]
        except ValueError as e:
            self._reject(name, "harvested", "offer", "malformed", str(e)[:200])
            return "rejected"
        what = cert.fingerprint(hashes.SHA256()).hex()[:16]
        usable = self._gate(name, "harvested", what, cert, chain, now)
        if usable is None:
            return "rejected"
        expires = min(now + self.config.positive_ttl, usable.valid_until)
        self._store(name, [usable.der], expires)
        if len(self._valid_until) >= _MEMO_MAX:
            self._valid_until.clear()
        self._valid_until[usable.der] = usable.valid_until
        self._parsed.setdefault(usable.der, usable.cert)
        if len(self._harvested) >= _MEMO_MAX:
            self._harvested.clear()
        self._harvested[name] = (usable.der,)
        self._down.pop(name, None)
        log.info("certificate %s of verified inbound mail cached for %s", what, name)
        return "stored"
