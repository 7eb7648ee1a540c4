"""The admin HTTP server: GET /metrics (Prometheus text format) and GET /healthz.

/healthz answers 200 with a JSON body when every check passes and 503 with the same body
naming the failing check otherwise, so a load balancer or Kubernetes probe can act on
the status alone and an operator can read why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from gateway.config.types import HostPort

log = logging.getLogger(__name__)

# A health check: (healthy?, details for the JSON body).
HealthCheck = Callable[[], tuple[bool, dict[str, object]]]


class AdminServer:
    def __init__(self, listen: HostPort, checks: dict[str, HealthCheck]) -> None:
        self.listen = listen
        self.checks = checks
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        self._site: web.TCPSite | None = None

    async def start(self) -> None:
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.listen.host, self.listen.port,
                                 reuse_address=True)
        await self._site.start()
        log.info("admin server on http://%s/", self.address_text)

    @property
    def address(self) -> tuple[str, int]:
        server = self._runner.server
        assert self._site is not None
        assert server is not None
        sockets = self._runner.addresses
        host, port = sockets[0][:2]
        return str(host), int(port)

    @property
    def address_text(self) -> str:
        host, port = self.address
        return str(HostPort(host, port))

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        body: dict[str, object] = {}
        healthy = True
        for name, check in self.checks.items():
            ok, details = check()
            body[name] = {"ok": ok, **details}
            healthy = healthy and ok
        body["status"] = "ok" if healthy else "unhealthy"
        return web.Response(status=200 if healthy else 503, text=json.dumps(body),
                            content_type="application/json")
