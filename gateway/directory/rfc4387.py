"""RFC 4387 certificate store access: `GET /search.cgi?ATTRIBUTE=VALUE`.

So software that is not ours can use the directory: one certificate comes back as
`application/pkix-cert` (DER), several as `multipart/mixed` of such parts (§2.4),
none as 404. Attributes (§2.2): certHash, sHash, iHash, iAndSHash, sKIDHash (the
27-character base64 of a SHA-1, '=' dropped, §2.1), name (subject common name), email
and uri (an address). Revoked certificates are not served.
"""

from __future__ import annotations

import re
import secrets

from aiohttp import web

from gateway.directory.api_read import check_address
from gateway.directory.app import DIRECTORY
from gateway.directory.errors import ApiError

HASH_ATTRIBUTES = ("certHash", "sHash", "iHash", "iAndSHash", "sKIDHash")
ATTRIBUTES = (*HASH_ATTRIBUTES, "name", "email", "uri")
MAX_RESULTS = 100
# §2.1: only these characters; anything else MUST be rejected.
_B64_KEY = re.compile(r"[A-Za-z0-9+/]{27}")


async def search(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY]
    query = request.query
    given = [k for k in query if k in ATTRIBUTES]
    others = [k for k in query if k not in ATTRIBUTES]
    if others or len(given) != 1 or len(query.getall(given[0])) != 1:
        raise ApiError(400, "bad-query", "give exactly one of " + ", ".join(ATTRIBUTES))
    attribute = given[0]
    value = query[attribute]
    if attribute in HASH_ATTRIBUTES:
        # A '+' that was not percent-encoded arrives as a space (form encoding).
        value = value.replace(" ", "+")
        if not _B64_KEY.fullmatch(value):
            raise ApiError(400, "bad-query", f"{attribute} must be the 27-character base64 "
                           "of a SHA-1 hash without '=' (RFC 4387 §2.1)")
    elif attribute in ("email", "uri"):
        value = check_address(value.removeprefix("mailto:"))
    elif not value or len(value) > 256:
        raise ApiError(400, "bad-query", "name must be 1 to 256 characters")
    records = await d.storage.search(attribute, value, limit=MAX_RESULTS)
    headers = {"Cache-Control": f"public, max-age={int(d.config.server.cache_max_age)}"}
    if not records:
        raise ApiError(404, "not-found", f"no certificate with {attribute}={value}")
    if len(records) == 1:
        return web.Response(body=records[0].der, content_type="application/pkix-cert",
                            headers=headers)
    boundary = "smimegate-" + secrets.token_hex(12)
    parts = []
    for rec in records:
        parts.append(f"--{boundary}\r\nContent-Type: application/pkix-cert\r\n\r\n".encode()
                     + rec.der + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers["Content-Type"] = f'multipart/mixed; boundary="{boundary}"'
    return web.Response(body=body, headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/search.cgi", search)
