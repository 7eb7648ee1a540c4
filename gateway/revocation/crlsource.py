"""The CRL source of the inbound revocation check: fetch, cache, answer (RFC 5280 §5, §6.3).

Used by gateway.revocation.ocsp.OcspClient for a certificate (leaf or intermediate) that
no OCSP server answers for. The certificate's http CRL distribution points are fetched
in order (gateway.revocation.fetch: timeout, no redirects, size cap), each CRL checked as
gateway.revocation.crl says; the first CRL that is usable for this certificate decides:
its serial on the list → "revoked" with date and reason, absent → "good". Anything else
is "unknown" with every reason, never "good".

Cache, per URL, in the calling process (a worker pool has one per worker): a CRL until
its nextUpdate, at most cache_max (so a CA's fresh CRL is seen within that time even
when it promises the next one days later); a failure for failure_cache, so a down CRL
server costs one timeout, not one per message. Bounded in count and in bytes; the
oldest entries go first.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from cryptography import x509

from gateway.revocation import metrics
from gateway.revocation.crl import Crl, Point, distribution_points
from gateway.revocation.fetch import FetchFailure, fetch, opener
from gateway.revocation.outcome import Outcome, iso

if TYPE_CHECKING:
    from gateway.config.schema import InboundRevocationSection

MAX_CRL = 10 * 1024 * 1024  # default largest CRL fetched
CACHE_ENTRIES = 256  # CRLs (and remembered failures) kept per process
POINTS_MEMO = 4096  # certificates whose distribution points are remembered
CACHE_BYTES = 64 * 1024 * 1024  # DER bytes of cached CRLs kept per process (at least 4 CRLs)


class CrlSource:
    """Revocation status from the CRLs a certificate names; thread-safe."""

    def __init__(self, *, timeout: float = 3.0, cache_max: float = 3600.0,
                 failure_cache: float = 30.0, clock_skew: float = 300.0,
                 max_size: int = MAX_CRL, cache_entries: int = CACHE_ENTRIES,
                 cache_bytes: int = CACHE_BYTES) -> None:
        self.timeout = timeout
        self.cache_max = cache_max
        self.failure_cache = failure_cache
        self.clock_skew = dt.timedelta(seconds=clock_skew)
        self.max_size = max_size
        self.cache_entries = max(1, cache_entries)
        self.cache_bytes = max(cache_bytes, 4 * max_size)
        self._cache: OrderedDict[str, tuple[float, Crl | FetchFailure]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._points: dict[x509.Certificate, tuple[list[Point], list[str]]] = {}
        self._opener = opener()
        self.fetches = 0  # downloads attempted, for tests and benchmarks

    @classmethod
    def from_config(cls, section: InboundRevocationSection) -> CrlSource:
        return cls(timeout=section.timeout, cache_max=section.cache_max,
                   failure_cache=section.failure_cache, clock_skew=section.clock_skew,
                   max_size=section.crl_max_size)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._bytes = 0

    def check(self, cert: x509.Certificate, issuer: x509.Certificate) -> Outcome:
        """The status of cert (issued by issuer) per its CRLs. source "none": it names no
        http CRL distribution point usable here; the reason then says what was skipped."""
        points, notes = self._points_of(cert)
        if not points:
            why = "; ".join(notes) if notes else "the certificate names no CRL " \
                "distribution point"
            return Outcome("unknown", why, source="none")
        problems: list[str] = []
        for point in points:
            try:
                crl, cached = self._crl(point.url, issuer)
            except FetchFailure as f:
                problems.append(f"CRL {point.url}: {f.reason}")
                continue
            outcome = self._answer(cert, point, crl, cached)
            if outcome.status != "unknown":
                return outcome
            problems.append(outcome.reason)
        problems += notes
        return Outcome("unknown", "; ".join(problems), points[-1].url, source="crl")

    def _points_of(self, cert: x509.Certificate) -> tuple[list[Point], list[str]]:
        """distribution_points(cert), remembered: the same signers come back."""
        known = self._points.get(cert)
        if known is None:
            known = distribution_points(cert)
            if len(self._points) >= POINTS_MEMO:
                self._points.clear()
            self._points[cert] = known
        return known

    def _answer(self, cert: x509.Certificate, point: Point, crl: Crl,
                cached: bool) -> Outcome:
        url = point.url
        scope = crl.scope_problem(cert, point)
        if scope:
            return Outcome("unknown", f"CRL {url}: not usable for this certificate: {scope}",
                           url, source="crl", cached=cached)
        listed = crl.lookup(cert.serial_number)
        if listed.problem:
            return Outcome("unknown", f"CRL {url}: {listed.problem}", url, source="crl",
                           cached=cached)
        if not listed.revoked:
            return Outcome("good", f"not on the CRL {url} of {crl.this_update_iso}", url,
                           next_update=crl.next_update, cached=cached, source="crl")
        at = f" since {iso(listed.revoked_at)}" if listed.revoked_at else ""
        return Outcome("revoked", f"{listed.reason}{at} per the CRL {url}", url,
                       listed.revoked_at, listed.reason, crl.next_update, cached, "crl")

    def _crl(self, url: str, issuer: x509.Certificate) -> tuple[Crl, bool]:
        """The CRL at url, checked for issuer, and whether it came from the cache; else
        FetchFailure."""
        now = dt.datetime.now(dt.UTC)
        hit = self._cached(url)
        if isinstance(hit, FetchFailure):
            metrics.CRL_CACHE_HITS.labels("failure").inc()
            raise FetchFailure(hit.kind, hit.reason)  # a fresh one: no traceback piles up
        if hit is not None:
            stale = hit.stale_problem(now, self.clock_skew)
            if not stale:
                metrics.CRL_CACHE_HITS.labels("crl").inc()
                kind, why = hit.issuer_problem(issuer)
                if why:
                    raise FetchFailure(kind, why)
                return hit, True
        try:
            self.fetches += 1
            body = fetch(self._opener, url, timeout=self.timeout, limit=self.max_size,
                         headers={"Accept": "application/pkix-crl"})
            crl = Crl.load(body, now, self.clock_skew)
        except FetchFailure as f:
            metrics.CRL_FETCHES.labels(f.kind).inc()
            self._store(url, FetchFailure(f.kind, f.reason), self.failure_cache)
            raise
        self._store(url, crl, self._ttl(crl.next_update, now))
        kind, why = crl.issuer_problem(issuer)
        metrics.CRL_FETCHES.labels(kind or "ok").inc()
        if why:
            raise FetchFailure(kind, why)
        return crl, False

    def _ttl(self, next_update: dt.datetime, now: dt.datetime) -> float:
        left = (next_update - now).total_seconds()
        if left <= 0:  # accepted within the clock skew only: do not fetch it per message
            return self.failure_cache
        return min(self.cache_max, left)

    def _cached(self, url: str) -> Crl | FetchFailure | None:
        with self._lock:
            hit = self._cache.get(url)
            if hit is None:
                return None
            if hit[0] <= time.monotonic():
                self._drop(url)
                return None
            return hit[1]

    def _store(self, url: str, value: Crl | FetchFailure, ttl: float) -> None:
        with self._lock:
            self._drop(url)
            if ttl <= 0:
                return
            size = value.size if isinstance(value, Crl) else 0
            if size > self.cache_bytes:
                return
            while self._cache and (len(self._cache) >= self.cache_entries or
                                   self._bytes + size > self.cache_bytes):
                self._drop(next(iter(self._cache)))
            self._cache[url] = (time.monotonic() + ttl, value)
            self._bytes += size

    def _drop(self, url: str) -> None:
        old = self._cache.pop(url, None)
        if old is not None and isinstance(old[1], Crl):
            self._bytes -= old[1].size

    def cached_bytes(self) -> int:
        with self._lock:
            return self._bytes
