"""Authenticated writes: publish a certificate for a domain, revoke one by fingerprint.

The bearer token (RFC 6750 §2.1) names the domain. Missing credentials are 401 with a
WWW-Authenticate challenge; an unknown or revoked token, or a token of another domain,
is 403. Wrong tokens count against the client (ratelimit.FailureLimiter, 429 past the
limit). A certificate is accepted only if it chains to the directory's trust anchors,
is valid now and names the token's domain (gateway.keys.validate); otherwise 422 with
the validator's code and reason.
"""

from __future__ import annotations

import math
import time

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.directory.api_read import cert_json, check_fingerprint, read_json
from gateway.directory.app import DIRECTORY, json_response
from gateway.directory.errors import ApiError
from gateway.directory.records import REASONS, TokenRecord, make_record
from gateway.directory.tokens import hash_token, well_formed
from gateway.keys.validate import validate_certificate

MAX_CHAIN = 10
_CHALLENGE = 'Bearer realm="smimegate-directory"'
_PEM_TYPES = ("application/x-pem-file", "application/pem-certificate-chain")


async def authenticate(request: web.Request) -> TokenRecord:
    d = request.app[DIRECTORY]
    client = request.remote or "unknown"
    wait = d.limiter.retry_after(client)
    if wait is not None:
        seconds = str(max(1, math.ceil(wait)))
        raise ApiError(429, "rate-limited", "too many failed authentications from "
                       f"{client}; retry in {seconds} s", {"Retry-After": seconds})
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        d.metrics.auth_failures.labels("missing").inc()
        raise ApiError(401, "unauthorized", "writes need 'Authorization: Bearer TOKEN' "
                       "(smimegate directory token create)", {"WWW-Authenticate": _CHALLENGE})
    record = await d.storage.find_token(hash_token(token)) if well_formed(token) else None
    if record is None or record.revoked_at is not None:
        d.limiter.fail(client)
        d.metrics.auth_failures.labels("invalid").inc()
        raise ApiError(403, "invalid-token", "the token is unknown or revoked",
                       {"WWW-Authenticate": _CHALLENGE + ', error="invalid_token"'})
    return record


def _parse_certificates(request: web.Request, raw: bytes) -> list[x509.Certificate]:
    try:
        if request.content_type == "application/pkix-cert":
            return [x509.load_der_x509_certificate(raw)]
        return x509.load_pem_x509_certificates(raw)
    except ValueError as e:
        raise ApiError(400, "bad-certificate", f"cannot parse the certificate: {e}") from None


async def _read_publication(request: web.Request) -> tuple[list[x509.Certificate], str | None]:
    """(leaf, chain...) and the domain the body names, if any."""
    if request.content_type in (*_PEM_TYPES, "application/pkix-cert"):
        certs = _parse_certificates(request, await request.read())
        return certs, None
    body = await read_json(request)
    unknown = set(body) - {"certificate", "chain", "domain"}
    if unknown:
        raise ApiError(400, "bad-request", f"unknown fields: {', '.join(sorted(unknown))}")
    pem, chain, domain = body.get("certificate"), body.get("chain", []), body.get("domain")
    if not isinstance(pem, str):
        raise ApiError(400, "bad-request", "'certificate' (a PEM string) is required")
    if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
        raise ApiError(400, "bad-request", "'chain' must be a list of PEM strings")
    if domain is not None and not isinstance(domain, str):
        raise ApiError(400, "bad-request", "'domain' must be a string")
    certs = _parse_certificates(request, pem.encode())
    for c in chain:
        certs += _parse_certificates(request, c.encode())
    return certs, domain


async def publish(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY]
    token = await authenticate(request)
    certs, domain = await _read_publication(request)
    if not certs:
        raise ApiError(400, "bad-certificate", "no certificate in the body")
    if len(certs) > MAX_CHAIN:
        raise ApiError(400, "bad-certificate", f"at most {MAX_CHAIN} certificates in a chain")
    if domain is not None and domain.lower().rstrip(".") != token.domain:
        raise ApiError(403, "wrong-domain", f"the token is for {token.domain}, not {domain}")
    leaf = certs[0]
    stored = [x509.load_der_x509_certificate(der) for der in await d.storage.all_issuers()]
    result = validate_certificate(leaf, anchors=d.anchors, intermediates=[*certs[1:], *stored],
                                  purpose="any", name=token.domain)
    if not result.ok:
        d.metrics.rejected.labels(result.code).inc()
        raise ApiError(422, result.code, result.reason)
    now = int(time.time())
    record = make_record(leaf, result.chain[1:], token.domain, now)
    existing = await d.storage.get_certificate(record.fingerprint)
    if existing is not None and existing.state == "revoked":
        raise ApiError(409, "revoked", "this certificate was revoked; a revoked certificate "
                       "cannot be published again")
    issuers = [c.public_bytes(Encoding.DER) for c in result.chain[1:-1]]
    created = existing is None and await d.storage.put_certificate(record, issuers)
    d.written()
    d.responder.learn(result.chain[1:])
    rec = await d.storage.get_certificate(record.fingerprint) or record
    location = f"/v1/certificates/{record.fingerprint}"
    return json_response({"created": created, "certificate": await cert_json(d, rec)},
                         201 if created else 200, {"Location": location})


async def revoke(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY]
    fp = check_fingerprint(request.match_info["fingerprint"])
    token = await authenticate(request)
    body = await read_json(request) if request.can_read_body else {}
    unknown = set(body) - {"reason"}
    if unknown:
        raise ApiError(400, "bad-request", f"unknown fields: {', '.join(sorted(unknown))}")
    reason = body.get("reason", "unspecified")
    if reason not in REASONS:
        raise ApiError(400, "bad-reason", f"reason must be one of {', '.join(REASONS)}")
    record = await d.storage.get_certificate(fp)
    if record is None:
        raise ApiError(404, "not-found", f"no certificate with fingerprint {fp}")
    if record.domain != token.domain:
        raise ApiError(403, "wrong-domain", f"that certificate belongs to {record.domain}; "
                       f"the token is for {token.domain}")
    updated = await d.storage.revoke(fp, int(time.time()), str(reason))
    d.written()
    assert updated is not None
    return json_response({"certificate": await cert_json(d, updated)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/certificates", publish)
    app.router.add_post("/v1/certificates/{fingerprint}/revoke", revoke)

