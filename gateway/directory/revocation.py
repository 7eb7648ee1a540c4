"""Revocation by the issuing CA, fetched and cached for `POST /v1/verify`.

For a CA that did not delegate OCSP to this directory we ask its own OCSP responder
(RFC 6960, the certificate's AIA URL) and else read its CRL (RFC 5280 §5, the CRL
distribution point; judged by gateway/revocation/crl.py, as the gateways judge it).
Answers are checked (signed by the issuer or by a responder it delegated to, about this
very certificate) and cached until their nextUpdate, at most max_age. Only http URLs are
fetched, only after the certificate chained to our anchors, with a timeout and a size
cap. A failure is "unknown" with the reason, never "good".
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from gateway.revocation.crl import Crl, Point, distribution_points
from gateway.revocation.fetch import FetchFailure

MAX_FETCH = 4 * 1024 * 1024  # no CRL or OCSP answer we accept is larger
CRL_CLOCK_SKEW = dt.timedelta(minutes=5)  # thisUpdate / nextUpdate tolerance


@dataclass(frozen=True)
class RevocationStatus:
    status: str  # "good" | "revoked" | "unknown"
    source: str  # "directory" | "ocsp" | "crl" | "none"
    reason: str
    revoked_at: str | None = None
    revocation_reason: str | None = None

    def json(self) -> dict[str, object]:
        return {"status": self.status, "source": self.source, "reason": self.reason,
                "revoked_at": self.revoked_at, "revocation_reason": self.revocation_reason}


class FetchError(Exception):
    pass


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _urls(cert: x509.Certificate) -> tuple[list[str], list[Point]]:
    """(OCSP URLs, CRL distribution points) of cert, http only."""
    ocsp_urls = []
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        ocsp_urls = [d.access_location.value for d in aia
                     if d.access_method == AuthorityInformationAccessOID.OCSP
                     and isinstance(d.access_location, x509.UniformResourceIdentifier)]
    except x509.ExtensionNotFound:
        pass
    points, _ = distribution_points(cert)
    return [u for u in ocsp_urls if u.startswith("http://")], points


def _signed_by(signer: x509.Certificate, signature: bytes, data: bytes,
               algorithm: hashes.HashAlgorithm | None) -> bool:
    key = signer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _ocsp_signer(resp: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate | None:
    """The issuer itself, or a responder certificate the issuer delegated to (§4.2.2.2)."""
    for cand in [issuer, *resp.certificates]:
        if cand is not issuer:
            try:
                cand.verify_directly_issued_by(issuer)
                eku = cand.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except (InvalidSignature, ValueError, TypeError, x509.ExtensionNotFound):
                continue
            if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
                continue
        if _signed_by(cand, resp.signature, resp.tbs_response_bytes,
                      resp.signature_hash_algorithm):
            return cand
    return None


class RevocationChecker:
    def __init__(self, *, timeout: float, max_age: float) -> None:
        self.timeout = timeout
        self.max_age = max_age
        self._session: aiohttp.ClientSession | None = None
        self._cache: dict[tuple[str, ...], tuple[float, object]] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _cached(self, key: tuple[str, ...]) -> object | None:
        hit = self._cache.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def _store(self, key: tuple[str, ...], value: object, next_update: dt.datetime | None) -> None:
        ttl = self.max_age
        if next_update is not None:
            ttl = min(ttl, (next_update - dt.datetime.now(dt.UTC)).total_seconds())
        if ttl > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (time.monotonic() + ttl, value)

    async def _fetch(self, url: str, body: bytes | None = None) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            if body is None:
                ctx = self._session.get(url)
            else:
                ctx = self._session.post(url, data=body,
                                         headers={"Content-Type": "application/ocsp-request"})
            async with ctx as resp:
                if resp.status != 200:
                    raise FetchError(f"{url} answered HTTP {resp.status}")
                data = await resp.content.read(MAX_FETCH + 1)
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            raise FetchError(f"{url}: {type(e).__name__} {e}".strip()) from None
        if len(data) > MAX_FETCH:
            raise FetchError(f"{url}: answer larger than {MAX_FETCH} bytes")
        return data

    async def check(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        """Ask the issuing CA: its OCSP responder first, then its CRL."""
        ocsp_urls, crl_points = _urls(cert)
        problems = []
        for url in ocsp_urls:
            try:
                return await self._ask_ocsp(url, cert, issuer)
            except FetchError as e:
                problems.append(str(e))
        for point in crl_points:
            try:
                return await self._read_crl(point, cert, issuer)
            except FetchError as e:
                problems.append(str(e))
        if not problems:
            return RevocationStatus("unknown", "none", "the certificate names no http OCSP "
                                    "responder or CRL")
        return RevocationStatus("unknown", "none", "; ".join(problems))

    async def _ask_ocsp(self, url: str, cert: x509.Certificate,
                        issuer: x509.Certificate) -> RevocationStatus:
        key = ("ocsp", url, cert.fingerprint(hashes.SHA256()).hex())
        cached = self._cached(key)
        if isinstance(cached, RevocationStatus):
            return cached
        req = ocsp.OCSPRequestBuilder().add_certificate(
            cert, issuer, hashes.SHA1()).build()  # noqa: S303 - what responders expect
        raw = await self._fetch(url, req.public_bytes(serialization.Encoding.DER))
        try:
            resp = ocsp.load_der_ocsp_response(raw)
        except ValueError as e:
            raise FetchError(f"{url}: not an OCSP response: {e}") from None
        if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise FetchError(f"{url}: OCSP status {resp.response_status.name}")
        if _ocsp_signer(resp, issuer) is None:
            raise FetchError(f"{url}: OCSP answer not signed by the issuer or its responder")
        if resp.serial_number != cert.serial_number or \
                resp.issuer_key_hash != req.issuer_key_hash:
            raise FetchError(f"{url}: OCSP answer is about another certificate")
        if resp.next_update_utc is not None and resp.next_update_utc < dt.datetime.now(dt.UTC):
            raise FetchError(f"{url}: OCSP answer is stale (nextUpdate passed)")
        if resp.certificate_status == ocsp.OCSPCertStatus.REVOKED:
            rt = resp.revocation_time_utc
            reason = resp.revocation_reason.value if resp.revocation_reason else None
            status = RevocationStatus("revoked", "ocsp", f"revoked by the CA ({url})",
                                      _iso(rt) if rt else None, reason)
        elif resp.certificate_status == ocsp.OCSPCertStatus.GOOD:
            status = RevocationStatus("good", "ocsp", f"good per the CA's responder ({url})")
        else:
            status = RevocationStatus("unknown", "ocsp", f"the CA's responder does not know "
                                      f"it ({url})")
        self._store(key, status, resp.next_update_utc)
        return status

    async def _read_crl(self, point: Point, cert: x509.Certificate,
                        issuer: x509.Certificate) -> RevocationStatus:
        """The CRL at point, judged as the gateways' revocation path judges it
        (gateway/revocation/crl.py: issuer and signature, currency, critical extensions,
        delta and scope); any problem is a FetchError (status unknown), never good."""
        url = point.url
        now = dt.datetime.now(dt.UTC)
        key = ("crl", url)
        crl = self._cached(key)
        if not isinstance(crl, Crl) or crl.stale_problem(now, CRL_CLOCK_SKEW):
            raw = await self._fetch(url)
            try:
                crl = Crl.load(raw, now, CRL_CLOCK_SKEW)
            except FetchFailure as e:
                raise FetchError(f"{url}: CRL {e.reason}") from None
            self._store(key, crl, crl.next_update)
        kind, why = crl.issuer_problem(issuer)
        if kind:
            raise FetchError(f"{url}: CRL {why}")
        scope = crl.scope_problem(cert, point)
        if scope:
            raise FetchError(f"{url}: {scope}")
        listed = crl.lookup(cert.serial_number)
        if listed.problem:
            raise FetchError(f"{url}: {listed.problem}")
        if not listed.revoked:
            return RevocationStatus("good", "crl", f"not on the CA's CRL ({url})")
        return RevocationStatus("revoked", "crl", f"on the CA's CRL ({url})",
                                _iso(listed.revoked_at) if listed.revoked_at else None,
                                listed.reason)
