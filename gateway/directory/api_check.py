"""The verification server's endpoints: OCSP (RFC 6960 Appendix A.1, GET and POST),
`POST /v1/verify`, and the operator's `/metrics` and `/healthz`."""

from __future__ import annotations

import base64
import binascii
import time
import urllib.parse

from aiohttp import web
from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.directory.api_read import read_json
from gateway.directory.app import DIRECTORY, json_response
from gateway.directory.errors import ApiError, StorageError
from gateway.directory.verify import parse_request, verdict

OCSP_RESPONSE = "application/ocsp-response"
MAX_OCSP_REQUEST = 16 * 1024  # a one-certificate request is a few hundred bytes


async def _ocsp_answer(request: web.Request, der: bytes) -> web.Response:
    d = request.app[DIRECTORY]

    async def reload() -> list[x509.Certificate]:
        return [x509.load_der_x509_certificate(b) for b in await d.storage.all_issuers()]

    body, status = await d.responder.respond(der, d.storage.find_by_serial, reload)
    d.metrics.ocsp.labels(status).inc()
    headers = {}
    if request.method == "GET" and status in ("good", "revoked", "unknown"):
        # RFC 5019 §6: GET answers may be cached, but not past nextUpdate.
        headers["Cache-Control"] = f"public, max-age={int(min(d.responder.validity, 300))}"
    else:
        headers["Cache-Control"] = "no-store"
    return web.Response(body=body, content_type=OCSP_RESPONSE, headers=headers)


async def ocsp_post(request: web.Request) -> web.Response:
    if request.content_type != "application/ocsp-request":
        raise ApiError(415, "unsupported-media-type",
                       "OCSP requests are POSTed as application/ocsp-request")
    if request.content_length is not None and request.content_length > MAX_OCSP_REQUEST:
        raise ApiError(413, "too-large", f"an OCSP request is at most {MAX_OCSP_REQUEST} bytes")
    der = await request.read()
    if len(der) > MAX_OCSP_REQUEST:
        raise ApiError(413, "too-large", f"an OCSP request is at most {MAX_OCSP_REQUEST} bytes")
    return await _ocsp_answer(request, der)


async def ocsp_get(request: web.Request) -> web.Response:
    # The request is base64 (then URL-encoded) in the path: RFC 6960 Appendix A.1.
    raw = request.match_info["request"]
    text = urllib.parse.unquote(raw)
    if len(text) > MAX_OCSP_REQUEST:
        raise ApiError(414, "too-large", "the OCSP request in the URL is too long")
    try:
        der = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad-ocsp-request",
                       "the path after /ocsp/ is not a base64 OCSP request") from None
    return await _ocsp_answer(request, der)


async def verify(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY]
    certs, address = parse_request(await read_json(request))
    if address is not None:
        from gateway.directory.api_read import check_address

        address = check_address(address)
    out = await verdict(d, certs, address)
    d.metrics.verdicts.labels(str(out["verdict"])).inc()
    return json_response(out, headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY]
    for state, n in (await d.storage.counts()).items():
        d.metrics.certificates.labels(state).set(n)
    for name, cache in (("names", d.lists), ("bodies", d.bodies)):
        d.metrics.cache.labels(name, "hit").set(cache.hits)
        d.metrics.cache.labels(name, "miss").set(cache.misses)
    return web.Response(body=generate_latest(d.metrics.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY]
    start = time.perf_counter()
    try:
        version = await d.storage.schema_version()
    except StorageError as e:
        return json_response({"status": "unavailable", "reason": str(e)}, 503)
    return json_response({"status": "ok", "storage": d.storage.kind, "schema": version,
                          "storage_ms": round((time.perf_counter() - start) * 1000, 3)},
                         headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/ocsp", ocsp_post)
    app.router.add_post("/ocsp/", ocsp_post)
    app.router.add_get("/ocsp/{request:.+}", ocsp_get)
    app.router.add_post("/v1/verify", verify)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
