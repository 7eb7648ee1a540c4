"""A blocking OCSP client (RFC 6960) with an in-process cache, for crypto workers.

One request per certificate: a CertID with SHA-1 hashes (RFC 6960 §4.1.1; what deployed
responders, RFC 5019 §2.1.1 included, expect) and a random nonce (RFC 8954), POSTed
(RFC 6960 Appendix A.1) with urllib to the verification server configured for the
issuing CA (by its subject or its certificate's SHA-256 fingerprint), or else to the
certificate's own AIA OCSP URL. Only http:// URLs are used: OCSP answers are signed, and
an https:// responder would need its own revocation check first (RFC 5019 §5).

An answer counts only when all of these hold, otherwise the status is "unknown" with the
precise reason, never "good":
- signed by the issuing CA itself, or by a responder certificate the CA issued with the
  id-kp-OCSPSigning EKU, valid now and named by the response's ResponderID
  (§4.2.2.2); the delegated responder's own revocation is not checked (§4.2.2.2.1);
- a SingleResponse about exactly our CertID (§4.2.2.3 / §3.2 items 1-2);
- thisUpdate not in the future and nextUpdate not past, both within clock_skew
  (§3.2 items 4-5; §4.2.2.1); without nextUpdate, thisUpdate no older than cache_max;
- the nonce equal to ours when the responder echoes one (§4.4.1; RFC 5019 responders
  pre-produce answers without it, so its absence is accepted).

Answers are cached per CertID until their nextUpdate (at most cache_max); failures and
"unknown" answers for failure_cache seconds, so a down server costs one timeout, not one
per message. The cache lives in the calling process; a worker pool has one per worker.
For a certificate no OCSP server answers for, the CRL source (gateway.revocation.
crlsource, `[revocation] crl`) reads the CRL its distribution points name. A CA
certificate (not the signer) with neither is reported "good" with a reason saying it was
not asked: nobody can answer for it, and its trust is the anchor's (see README:
Revocation); a leaf with neither is "unknown".
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from gateway.revocation import metrics
from gateway.revocation.crl import is_ca
from gateway.revocation.crlsource import CrlSource
from gateway.revocation.fetch import FetchFailure, fetch, opener
from gateway.revocation.outcome import Outcome, iso
from gateway.smime.verify import RevocationStatus

if TYPE_CHECKING:
    from gateway.config.schema import InboundRevocationSection

MAX_RESPONSE = 256 * 1024  # no OCSP answer we accept is larger
NONCE_BYTES = 32  # RFC 8954 §2.1: 1 to 32 octets
MAX_ENTRIES = 100_000  # cache entries before the cache is cleared

CertId = tuple[bytes, bytes, int]  # SHA-1 issuer name hash, issuer key hash, serial


class OcspFailure(Exception):
    """A lookup that produced no usable answer; kind is the metrics label."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


OcspOutcome = Outcome  # the name this module has always exported


def _http_url(url: str, where: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{where}: {url!r} is not an http:// URL (OCSP is asked over http)")
    return url


def _name_key(rfc4514: str) -> str:
    """A subject compared case-insensitively, spaces around , and = ignored (the config
    loader lowercases map keys; RFC 5280 §7.1 compares names ignoring case anyway)."""
    return re.sub(r"\s*([,=+])\s*", r"\1", rfc4514.strip()).lower()


def _issuer_key(key: str) -> tuple[str, str]:
    """A servers key: ("fp", SHA-256 hex; colons allowed) or ("name", RFC 4514 subject)."""
    hexed = key.replace(":", "").strip().lower()
    if len(hexed) == 64 and all(c in "0123456789abcdef" for c in hexed):
        return "fp", hexed
    if re.fullmatch(r"\s*[A-Za-z0-9.]+\s*=.*", key):
        return "name", _name_key(key)
    raise ValueError(f"revocation.servers: {key!r} is neither a SHA-256 fingerprint nor "
                     "an RFC 4514 name such as \"CN=Example CA,O=Example\"")


def aia_ocsp_urls(cert: x509.Certificate) -> list[str]:
    """The certificate's http:// OCSP URLs (RFC 5280 §4.2.2.1), in order."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return [d.access_location.value for d in aia
            if d.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
            and d.access_location.value.lower().startswith("http://")]


class OcspClient:
    """A RevocationCheck (gateway.smime.verify) asking OCSP responders; thread-safe."""

    def __init__(self, servers: Mapping[str, str] | Iterable[tuple[str, str]] = (), *,
                 use_aia: bool = True, timeout: float = 3.0, cache_max: float = 3600.0,
                 failure_cache: float = 30.0, clock_skew: float = 300.0,
                 crl: CrlSource | None = None) -> None:
        items = servers.items() if isinstance(servers, Mapping) else servers
        self._by_fingerprint: dict[str, str] = {}
        self._by_name: dict[str, str] = {}
        for key, url in items:
            kind, issuer = _issuer_key(key)
            _http_url(url, f"revocation.servers[{key!r}]")
            (self._by_fingerprint if kind == "fp" else self._by_name)[issuer] = url
        self.use_aia = use_aia
        self.timeout = timeout
        self.cache_max = cache_max
        self.failure_cache = failure_cache
        self.clock_skew = dt.timedelta(seconds=clock_skew)
        self._cache: dict[CertId, tuple[float, OcspOutcome]] = {}
        self._issuer_hashes: dict[x509.Certificate, tuple[bytes, bytes]] = {}
        self.crl = crl  # asked when no OCSP server answers for a certificate
        self._lock = threading.Lock()
        # No proxies from the environment: the verification server is asked directly.
        self._opener = opener()

    @classmethod
    def from_config(cls, section: InboundRevocationSection) -> OcspClient:
        return cls(section.servers, use_aia=section.use_aia, timeout=section.timeout,
                   cache_max=section.cache_max, failure_cache=section.failure_cache,
                   clock_skew=section.clock_skew,
                   crl=CrlSource.from_config(section) if section.crl else None)

    def __call__(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        return self.check(cert, issuer).as_status()

    def urls_for(self, cert: x509.Certificate, issuer: x509.Certificate) -> list[str]:
        """The configured server for issuer, else the certificate's own OCSP URLs."""
        fp = issuer.fingerprint(hashes.SHA256()).hex()
        if fp in self._by_fingerprint:
            return [self._by_fingerprint[fp]]
        url = self._by_name.get(_name_key(issuer.subject.rfc4514_string()))
        if url is not None:
            return [url]
        return aia_ocsp_urls(cert) if self.use_aia else []

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
        if self.crl is not None:
            self.crl.clear()

    def cert_id(self, cert: x509.Certificate, issuer: x509.Certificate) -> CertId:
        """RFC 6960 §4.1.1 CertID with SHA-1: hash of the issuer's name (DER), hash of its
        public key's BIT STRING (the RFC 5280 §4.2.1.2 method 1 key identifier), serial.
        The issuer hashes are kept: a cache hit then costs no hashing at all."""
        hashed = self._issuer_hashes.get(issuer)
        if hashed is None:
            name = hashes.Hash(hashes.SHA1())  # noqa: S303 - RFC 6960 CertID as deployed
            name.update(issuer.subject.public_bytes())
            key_id = x509.SubjectKeyIdentifier.from_public_key(
                issuer.public_key()).digest
            hashed = (name.finalize(), key_id)
            if len(self._issuer_hashes) >= 1024:
                self._issuer_hashes.clear()
            self._issuer_hashes[issuer] = hashed
        return (*hashed, cert.serial_number)

    def check(self, cert: x509.Certificate, issuer: x509.Certificate) -> OcspOutcome:
        """Is cert, issued by issuer, revoked? From the cache, or asked of a responder."""
        if cert.issuer != issuer.subject:
            return OcspOutcome("unknown", "the given issuer did not issue this certificate")
        cert_id = self.cert_id(cert, issuer)
        hit = self._cached(cert_id)
        if hit is not None:
            metrics.CACHE_HITS.labels("failure" if hit.status == "unknown" else
                                      "answer").inc()
            return hit
        urls = self.urls_for(cert, issuer)
        if not urls:
            return self._without_ocsp(cert, issuer, cert_id)
        builder = ocsp.OCSPRequestBuilder().add_certificate(
            cert, issuer, hashes.SHA1())  # noqa: S303 - RFC 6960 CertID as deployed
        nonce = os.urandom(NONCE_BYTES)
        request = builder.add_extension(x509.OCSPNonce(nonce), critical=False).build()
        problems: list[str] = []
        for url in urls:
            try:
                outcome = self._ask(url, request, nonce, cert_id, issuer)
            except OcspFailure as f:
                metrics.OCSP_REQUESTS.labels(f.kind).inc()
                problems.append(f"{url}: {f.reason}")
                continue
            metrics.OCSP_REQUESTS.labels(outcome.status).inc()
            if outcome.status == "unknown":
                problems.append(outcome.reason)
                continue
            self._store(cert_id, outcome, self._ttl(outcome.next_update))
            return outcome
        outcome = OcspOutcome("unknown", "; ".join(problems), urls[-1])
        self._store(cert_id, outcome, self.failure_cache)
        return outcome

    def _without_ocsp(self, cert: x509.Certificate, issuer: x509.Certificate,
                      cert_id: CertId) -> OcspOutcome:
        """No OCSP server for cert: its CRL when it names one (the CRL source caches per
        URL, so its answers are not kept here), else the rule for a certificate nobody
        answers for: a CA's is "good" (not asked), a leaf's "unknown"."""
        if self.crl is None:
            no_crl = "CRL checks are off"
        else:
            outcome = self.crl.check(cert, issuer)
            if outcome.source == "crl":
                return outcome
            no_crl = outcome.reason
        if is_ca(cert):
            outcome = OcspOutcome("good", "not asked: a CA certificate with no OCSP "
                                  f"server configured or named and no CRL ({no_crl}); "
                                  "trusted with its anchor", source="none")
            self._store(cert_id, outcome, self.cache_max)
            return outcome
        metrics.OCSP_REQUESTS.labels("no-url").inc()
        outcome = OcspOutcome("unknown", "no OCSP server configured for the issuer "
                              f"{issuer.subject.rfc4514_string()} and the certificate "
                              f"names no http OCSP URL; no CRL: {no_crl}", source="none")
        self._store(cert_id, outcome, self.failure_cache)
        return outcome

    def _ttl(self, next_update: dt.datetime | None) -> float:
        if next_update is None:
            return self.cache_max
        left = (next_update - dt.datetime.now(dt.UTC)).total_seconds()
        return max(0.0, min(self.cache_max, left))

    def _cached(self, cert_id: CertId) -> OcspOutcome | None:
        with self._lock:
            hit = self._cache.get(cert_id)
            if hit is None:
                return None
            if hit[0] <= time.monotonic():
                del self._cache[cert_id]
                return None
        return replace(hit[1], cached=True)

    def _store(self, cert_id: CertId, outcome: OcspOutcome, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            if len(self._cache) >= MAX_ENTRIES:
                self._cache.clear()
            self._cache[cert_id] = (time.monotonic() + ttl, outcome)

    def _post(self, url: str, der: bytes) -> bytes:
        # url is http:// only: configured ones are checked in __init__, AIA ones filtered.
        try:
            return fetch(self._opener, url, data=der, timeout=self.timeout,
                         limit=MAX_RESPONSE, headers={
                             "Content-Type": "application/ocsp-request",
                             "Accept": "application/ocsp-response"})
        except FetchFailure as f:  # an oversized answer has always counted as malformed
            raise OcspFailure("malformed" if f.kind == "too-large" else f.kind,
                              f.reason) from None

    def _ask(self, url: str, request: ocsp.OCSPRequest, nonce: bytes, cert_id: CertId,
             issuer: x509.Certificate) -> OcspOutcome:
        body = self._post(url, request.public_bytes(serialization.Encoding.DER))
        try:
            resp = ocsp.load_der_ocsp_response(body)
        except ValueError as e:
            raise OcspFailure("malformed", f"not an OCSP response: {e}") from None
        if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise OcspFailure("unsuccessful", "the responder answered "
                              f"{resp.response_status.name} (RFC 6960 §2.3)")
        now = dt.datetime.now(dt.UTC)
        _check_signer(resp, issuer, now, self.clock_skew)
        single = _single_for(resp, cert_id)
        try:
            echoed: bytes | None = resp.extensions.get_extension_for_class(
                x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            echoed = None
        except ValueError as e:
            raise OcspFailure("malformed", f"unreadable response extensions: {e}") from None
        if echoed is not None and echoed != nonce:
            raise OcspFailure("nonce", "the answer carries another request's nonce "
                              "(replayed? RFC 6960 §4.4.1)")
        this_update, next_update = single.this_update_utc, single.next_update_utc
        if this_update > now + self.clock_skew:
            raise OcspFailure("stale", f"thisUpdate {iso(this_update)} is in the future")
        if next_update is not None and next_update < now - self.clock_skew:
            raise OcspFailure("stale", f"stale answer: nextUpdate {iso(next_update)} "
                              "has passed")
        if next_update is None and \
                this_update < now - self.clock_skew - dt.timedelta(seconds=self.cache_max):
            raise OcspFailure("stale", f"stale answer: thisUpdate {iso(this_update)} and "
                              "no nextUpdate")
        status = single.certificate_status
        if status == ocsp.OCSPCertStatus.GOOD:
            return OcspOutcome("good", f"good per {url}", url, next_update=next_update)
        if status == ocsp.OCSPCertStatus.REVOKED:
            when = single.revocation_time_utc
            why = single.revocation_reason.value if single.revocation_reason else \
                "unspecified"
            at = f" since {iso(when)}" if when is not None else ""
            return OcspOutcome("revoked", f"{why}{at} per {url}", url, when, why, next_update)
        return OcspOutcome("unknown", f"{url}: the responder does not know the certificate",
                           url, next_update=next_update)


def _single_for(resp: ocsp.OCSPResponse, cert_id: CertId) -> ocsp.OCSPSingleResponse:
    """The SingleResponse about our CertID (SHA-1 hashes), else OcspFailure."""
    for single in resp.responses:
        if isinstance(single.hash_algorithm, hashes.SHA1) and \
                (single.issuer_name_hash, single.issuer_key_hash,
                 single.serial_number) == cert_id:
            return single
    raise OcspFailure("certid", "the answer is about another certificate (CertID differs)")


def _check_signer(resp: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime,
                  skew: dt.timedelta) -> x509.Certificate:
    """RFC 6960 §4.2.2.2: the issuer, or a responder it issued with id-kp-OCSPSigning."""
    problems: list[str] = []
    for cand in [issuer, *resp.certificates]:
        if not _named_by_responder_id(resp, cand):
            continue
        if cand is not issuer:
            why = _delegation_problem(cand, issuer, now, skew)
            if why:
                problems.append(why)
                continue
        if _signature_ok(cand, resp):
            return cand
        problems.append(f"signature does not verify with {cand.subject.rfc4514_string()}")
    detail = "; ".join(problems) or "no certificate named by its ResponderID"
    raise OcspFailure("bad-signature", "not signed by the issuing CA or a responder it "
                      f"delegated to (RFC 6960 §4.2.2.2): {detail}")


def _named_by_responder_id(resp: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if resp.responder_key_hash is not None:
        key_hash = x509.SubjectKeyIdentifier.from_public_key(
            cert.public_key()).digest
        return resp.responder_key_hash == key_hash
    return resp.responder_name == cert.subject


def _delegation_problem(cand: x509.Certificate, issuer: x509.Certificate, now: dt.datetime,
                        skew: dt.timedelta) -> str:
    name = cand.subject.rfc4514_string()
    try:
        cand.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return f"{name} was not issued by the issuing CA"
    try:
        eku = cand.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return f"{name} lacks the id-kp-OCSPSigning EKU"
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        return f"{name} lacks the id-kp-OCSPSigning EKU"
    if not cand.not_valid_before_utc - skew <= now <= cand.not_valid_after_utc + skew:
        return f"{name} is not valid now"
    return ""


def _signature_ok(signer: x509.Certificate, resp: ocsp.OCSPResponse) -> bool:
    key = signer.public_key()
    try:
        algorithm = resp.signature_hash_algorithm  # raises for e.g. RSASSA-PSS params
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(resp.signature, resp.tbs_response_bytes)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True
