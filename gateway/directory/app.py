"""The directory's aiohttp application: its state, the error and metrics middleware,
the route table, and running it on uvloop.

Every answer that is not a success is JSON `{"error", "reason", "status"}` with the
right HTTP status (ApiError, aiohttp's own 404/405/413, 503 when storage fails); a
handler's bug becomes a logged 500 with no traceback sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from cryptography import x509

from gateway.config.schema import DirectoryConfig
from gateway.directory.errors import ApiError, StorageError
from gateway.directory.metrics import DirectoryMetrics
from gateway.directory.ocsp import Responder, ResponderConfigError
from gateway.directory.ratelimit import FailureLimiter
from gateway.directory.readcache import ReadCache
from gateway.directory.revocation import RevocationChecker
from gateway.directory.storage import Storage, open_storage
from gateway.keys import KeyMaterialError, load_certificates, load_private_key, load_trust_anchors

log = logging.getLogger("smimegate.directory")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SetupError(Exception):
    """The directory cannot start: a message for the operator."""


@dataclass
class Directory:
    """Everything a request handler needs."""

    config: DirectoryConfig
    storage: Storage
    anchors: tuple[x509.Certificate, ...]
    responder: Responder
    limiter: FailureLimiter
    revocation: RevocationChecker
    metrics: DirectoryMetrics = field(default_factory=DirectoryMetrics)
    json_cache: dict[tuple[str, str], dict[str, object]] = field(default_factory=dict)
    # name → its current certificates as JSON ([] when none); name → (status, body, etag)
    lists: ReadCache[list[dict[str, object]]] = field(default_factory=lambda: ReadCache(0))
    bodies: ReadCache[tuple[int, bytes, str]] = field(default_factory=lambda: ReadCache(0))

    def written(self) -> None:
        """A write went through this process: no cached read may hide it."""
        self.lists.clear()
        self.bodies.clear()
        self.responder.forget()

    @classmethod
    async def open(cls, config: DirectoryConfig) -> Directory:
        try:
            anchors = load_trust_anchors(config.trust.anchors)
            responder = _load_responder(config)
        except (KeyMaterialError, ResponderConfigError) as e:
            raise SetupError(str(e)) from None
        try:
            storage = await open_storage(config.server.data, config.server.database_url)
        except StorageError as e:
            raise SetupError(str(e)) from None
        metrics = DirectoryMetrics()
        storage.observe = metrics.observe_storage
        responder.learn(anchors)
        try:
            stored = await storage.all_issuers()
        except BaseException:
            await storage.close()
            raise
        responder.learn(x509.load_der_x509_certificate(d) for d in stored)
        for cert in responder.unresolved():
            log.warning("OCSP responder %s: its issuing CA is not known yet (give the CA "
                        "after it in the same file); it answers once a certificate of that "
                        "CA is published", cert.subject.rfc4514_string())
        revocation = RevocationChecker(timeout=config.revocation.fetch_timeout,
                                       max_age=config.revocation.cache_max)
        ttl = config.server.lookup_cache_ttl
        return cls(config, storage, anchors, responder,
                   FailureLimiter(config.ratelimit.auth_failures, config.ratelimit.auth_window),
                   revocation, metrics, lists=ReadCache(ttl), bodies=ReadCache(ttl))

    async def close(self) -> None:
        await self.revocation.close()
        await self.storage.close()


def _load_responder(config: DirectoryConfig) -> Responder:
    signers, keys = config.ocsp.signers, config.ocsp.keys
    if len(signers) != len(keys):
        raise ResponderConfigError(f"ocsp.signers has {len(signers)} certificates but "
                                   f"ocsp.keys has {len(keys)} keys; give them in pairs")
    out, extra = [], []
    for cert_path, key_path in zip(signers, keys, strict=True):
        chain = load_certificates(cert_path)
        out.append(Responder.check_signer(chain[0], load_private_key(key_path),
                                          str(cert_path)))
        extra += chain[1:]
    responder = Responder(out, validity=config.ocsp.validity)
    responder.learn(extra)
    return responder


DIRECTORY: web.AppKey[Directory] = web.AppKey("directory", Directory)


def json_response(body: object, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status,
                        content_type="application/json", headers=headers)


def _error_response(status: int, code: str, reason: str,
                    headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": code, "reason": reason, "status": status}, status, headers)


_HTTP_CODES = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
               405: "method-not-allowed", 413: "too-large", 415: "unsupported-media-type",
               429: "rate-limited"}


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    d = request.app[DIRECTORY]
    start = time.perf_counter()
    route = request.match_info.route.resource
    label = route.canonical if route is not None else "unmatched"
    try:
        response = await handler(request)
    except ApiError as e:
        response = _error_response(e.status, e.code, e.reason, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        reason = e.reason if e.status != 413 else (
            f"the request body is larger than {d.config.server.max_body} bytes")
        headers = {k: v for k, v in e.headers.items() if k.lower() == "allow"}
        response = _error_response(e.status, _HTTP_CODES.get(e.status, "error"), reason,
                                   headers)
    except StorageError as e:
        log.error("storage: %s", e)
        response = _error_response(503, "storage-unavailable", "the database is unavailable",
                                   {"Retry-After": "5"})
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        response = _error_response(500, "internal", "internal error (logged)")
    d.metrics.requests.labels(label, str(response.status)).inc()
    d.metrics.latency.labels(label).observe(time.perf_counter() - start)
    return response


def build_app(directory: Directory) -> web.Application:
    from gateway.directory import api_check, api_read, api_write, openapi, rfc4387

    app = web.Application(middlewares=[_middleware],
                          client_max_size=directory.config.server.max_body)
    app[DIRECTORY] = directory
    api_read.add_routes(app)
    api_write.add_routes(app)
    api_check.add_routes(app)
    rfc4387.add_routes(app)
    openapi.add_routes(app)

    async def _close(app: web.Application) -> None:
        await app[DIRECTORY].close()

    app.on_cleanup.append(_close)
    return app


async def serve(config: DirectoryConfig) -> None:
    """Run until SIGINT or SIGTERM, then stop cleanly (requests in flight finish)."""
    directory = await Directory.open(config)
    app = build_app(directory)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    listen = config.server.listen
    site = web.TCPSite(runner, listen.host, listen.port, reuse_port=True, backlog=1024)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise SetupError(f"cannot listen on {listen}: {e.strerror}") from None
    log.info("directory listening on http://%s (storage: %s)", listen, directory.storage.kind)
    print(f"directory listening on http://{listen} (storage: {directory.storage.kind})",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("directory stopping")
    finally:
        await runner.cleanup()

