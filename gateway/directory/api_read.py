"""Public reads: certificates by domain, by address, in batches, and by fingerprint.

Unauthenticated and cacheable: every answer has a strong ETag (the SHA-256 of its body)
and Cache-Control, and `If-None-Match` gets 304 (RFC 9110 §13.1.2, RFC 9111 §5.2), so
ordinary HTTP caches and CDNs can carry the read load. A name with no current
certificate is a 404 with a JSON body, cached for a shorter time.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re

from aiohttp import web

from gateway.directory.app import DIRECTORY, Directory
from gateway.directory.errors import ApiError
from gateway.directory.records import CertRecord

MAX_LOOKUP = 100  # names in one POST /v1/lookup
NEGATIVE_MAX_AGE = 60.0  # a 404 is kept shorter: a certificate may be published any time

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")
# RFC 5321 §4.1.2 dot-atom local parts (quoted local parts are not published here).
_LOCAL_RE = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_FP_RE = re.compile(r"[0-9a-f]{64}")


def check_domain(text: str) -> str:
    domain = text.strip().lower().rstrip(".")
    if len(domain) > 253 or not _DOMAIN_RE.fullmatch(domain):
        raise ApiError(400, "bad-domain", f"not a domain name: {text[:100]!r}")
    return domain


def check_address(text: str) -> str:
    address = text.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or len(local) > 64 or not _LOCAL_RE.fullmatch(local):
        raise ApiError(400, "bad-address", f"not an e-mail address: {text[:100]!r}")
    try:
        return f"{local}@{check_domain(domain)}"
    except ApiError:
        raise ApiError(400, "bad-address", f"not an e-mail address: {text[:100]!r}") from None


def check_fingerprint(text: str) -> str:
    fp = text.strip().lower().replace(":", "")
    if not _FP_RE.fullmatch(fp):
        raise ApiError(400, "bad-fingerprint",
                       "a fingerprint is the SHA-256 of the certificate: 64 hex digits")
    return fp


def _iso(ts: int | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pem(der: bytes) -> str:
    b64 = base64.b64encode(der).decode()
    lines = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"


async def cert_json(d: Directory, rec: CertRecord) -> dict[str, object]:
    """The JSON form of a record; memoised per fingerprint and state (records are
    immutable but for revocation)."""
    key = (rec.fingerprint, rec.state)
    cached = d.json_cache.get(key)
    if cached is not None:
        return cached
    chain = []
    for fp in rec.chain:
        der = await d.storage.issuer(fp)
        if der is not None:
            chain.append(pem(der))
    out: dict[str, object] = {
        "fingerprint": rec.fingerprint,
        "pem": pem(rec.der),
        "chain": chain,
        "domain": rec.domain,
        "names": list(rec.names),
        "subject": rec.subject,
        "issuer": rec.issuer,
        "serial": rec.serial,
        "usage": list(rec.usage),
        "not_before": _iso(rec.not_before),
        "not_after": _iso(rec.not_after),
        "smime_capabilities": None if rec.capabilities is None else list(rec.capabilities),
        "state": rec.state,
        "published_at": _iso(rec.published_at),
        "revoked_at": _iso(rec.revoked_at),
        "revocation_reason": rec.revocation_reason,
    }
    if len(d.json_cache) > 50_000:
        d.json_cache.clear()
    d.json_cache[key] = out
    return out


def encode(body: object) -> tuple[bytes, str]:
    """JSON bytes and their strong ETag."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def cacheable(request: web.Request, body: object, max_age: float,
              status: int = 200) -> web.Response:
    """A JSON answer with ETag and Cache-Control; 304 when the client already has it."""
    data, etag = encode(body)
    return respond(request, data, etag, max_age, status)


def respond(request: web.Request, data: bytes, etag: str, max_age: float,
            status: int = 200) -> web.Response:
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={int(max_age)}",
               "Vary": "Accept-Encoding"}
    inm = request.headers.get("If-None-Match")
    if inm is not None and status == 200 and (
            inm.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in inm.split(",")]):
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, status=status, content_type="application/json",
                        headers=headers)


async def current(d: Directory, names: list[str]) -> dict[str, list[dict[str, object]]]:
    """The current certificates (as JSON) of each name that has some; through the
    short-lived read cache (readcache.py)."""
    out: dict[str, list[dict[str, object]]] = {}
    todo = []
    for n in names:
        hit = d.lists.get(n)
        if hit is None:
            todo.append(n)
        elif hit:
            out[n] = hit
    if todo:
        generation = d.lists.generation
        found = await d.storage.find_many(todo)
        for n in todo:
            certs = [await cert_json(d, r) for r in found.get(n, ())]
            d.lists.put(n, certs, generation)
            if certs:
                out[n] = certs
    return out


async def _answer_one(request: web.Request, name: str) -> web.Response:
    d = request.app[DIRECTORY]
    max_age = d.config.server.cache_max_age
    hit = d.bodies.get(name)
    if hit is None:
        generation = d.bodies.generation
        certs = (await current(d, [name])).get(name)
        if certs:
            status, (data, etag) = 200, encode({"name": name, "certificates": certs})
        else:
            status, (data, etag) = 404, encode({"error": "not-found", "status": 404,
                                                "reason": f"no current certificate for {name}"})
        d.bodies.put(name, (status, data, etag), generation)
    else:
        status, data, etag = hit
    return respond(request, data, etag,
                   max_age if status == 200 else min(max_age, NEGATIVE_MAX_AGE), status)


async def by_domain(request: web.Request) -> web.Response:
    return await _answer_one(request, check_domain(request.match_info["domain"]))


async def by_address(request: web.Request) -> web.Response:
    return await _answer_one(request, check_address(request.match_info["address"]))


async def read_json(request: web.Request) -> dict[str, object]:
    """The request body as a JSON object, or 400/413/415 saying what is wrong."""
    ctype = request.content_type
    if ctype not in ("application/json", "application/octet-stream", "text/plain"):
        raise ApiError(415, "unsupported-media-type",
                       f"expected Content-Type application/json, got {ctype}")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "bad-json", f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad-json", "the body must be a JSON object")
    return body


def str_list(body: dict[str, object], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "bad-request", f"{key!r} must be a list of strings")
    return value


async def lookup(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY]
    body = await read_json(request)
    unknown = set(body) - {"domains", "addresses"}
    if unknown:
        raise ApiError(400, "bad-request", f"unknown fields: {', '.join(sorted(unknown))}")
    names = [check_domain(n) for n in str_list(body, "domains")]
    names += [check_address(n) for n in str_list(body, "addresses")]
    if not names:
        raise ApiError(400, "bad-request", "give at least one of 'domains' and 'addresses'")
    if len(names) > MAX_LOOKUP:
        raise ApiError(400, "too-many-names", f"at most {MAX_LOOKUP} names per lookup; "
                       f"got {len(names)}")
    unique = list(dict.fromkeys(names))
    results = await current(d, unique)
    missing = [n for n in unique if n not in results]
    return cacheable(request, {"results": results, "missing": missing},
                     d.config.server.cache_max_age)


async def by_fingerprint(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY]
    fp = check_fingerprint(request.match_info["fingerprint"])
    rec = await d.storage.get_certificate(fp)
    if rec is None:
        raise ApiError(404, "not-found", f"no certificate with fingerprint {fp}")
    # Short max-age: this answer carries revocation state, which changes.
    return cacheable(request, await cert_json(d, rec), min(d.config.server.cache_max_age, 60))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/domains/{domain}/certificates", by_domain)
    app.router.add_get("/v1/addresses/{address}/certificates", by_address)
    app.router.add_post("/v1/lookup", lookup)
    app.router.add_get("/v1/certificates/{fingerprint}", by_fingerprint)

