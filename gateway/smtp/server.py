"""The SMTP front end: listening socket, sessions, connection limits, graceful stop.

Owns what is shared between sessions: the relay policy, the Acceptor (workers and spool),
the count of sessions per client address (`max_connections_per_client`) and in all
(`max_sessions`), the messages being accepted right now, and the STARTTLS context.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

from gateway import metrics
from gateway.config.schema import SmtpSection
from gateway.envelope import TOO_MANY_CONNECTIONS, Reply
from gateway.smtp.accept import Acceptor
from gateway.smtp.data import MemoryBudget
from gateway.smtp.handler import Handler, RcptCheck
from gateway.smtp.relay import RelayPolicy
from gateway.smtp.replies import SHUTTING_DOWN, TOO_MANY_SESSIONS
from gateway.smtp.session import Session

log = logging.getLogger(__name__)
T = TypeVar("T")


def tls_context(config: SmtpSection) -> ssl.SSLContext | None:
    """The STARTTLS server context from the configured certificate and key, if any."""
    if config.tls_certificate is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_certificate, config.tls_key)
    return context


class FrontEnd:
    def __init__(self, config: SmtpSection, acceptor: Acceptor, *,
                 outbound_check: RcptCheck | None = None) -> None:
        self.config = config
        self.acceptor = acceptor
        self.handler = Handler(self, RelayPolicy(config.trusted_networks, config.local_domains),
                               outbound_check)
        self._tls = tls_context(config)
        self.memory = MemoryBudget(config.max_data_memory)
        metrics.DATA_MEMORY.set_function(lambda: self.memory.used)
        self._per_client: collections.Counter[str] = collections.Counter()
        self._sessions: set[Session] = set()
        self._accepting: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    # -- sessions ------------------------------------------------------------------------

    def admit(self, client: str, session: Session) -> Reply | None:
        """Count a new session in; or the 421 reply of the limit that says no."""
        if self._server is None:
            return SHUTTING_DOWN
        if len(self._sessions) >= self.config.max_sessions:
            return TOO_MANY_SESSIONS
        if self._per_client[client] >= self.config.max_connections_per_client:
            return TOO_MANY_CONNECTIONS
        self._per_client[client] += 1
        self._sessions.add(session)
        return None

    def release(self, client: str, session: Session) -> None:
        self._sessions.discard(session)
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]

    def track(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run an acceptance as its own task, so stop() can wait for it to finish."""
        task = asyncio.create_task(coro)
        self._accepting.add(task)
        task.add_done_callback(self._accepting.discard)
        return task

    def _session(self) -> Session:
        return Session(self, hostname=self.config.hostname,
                       data_size_limit=self.config.max_message_size,
                       tls_context=self._tls, timeout=self.config.command_timeout,
                       loop=asyncio.get_running_loop())

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._session, self.config.listen.host, self.config.listen.port,
            reuse_address=True, reuse_port=reuse_port or None, backlog=1024)
        log.info("SMTP front end listening on %s", self.address)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually bound (useful with port 0)."""
        assert self._server is not None
        assert self._server.sockets
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    def stats(self) -> dict[str, int]:
        return {"sessions": len(self._sessions), "clients": len(self._per_client),
                "accepting": len(self._accepting), "data_memory": self.memory.used}

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening, let messages past DATA reach the spool, then close sessions."""
        if self._server is None:
            return
        self._server.close()
        if self._accepting:
            await asyncio.wait(set(self._accepting), timeout=grace)
            for _ in range(3):  # let their sessions write the 250 before we close them
                await asyncio.sleep(0)
        for session in list(self._sessions):
            transport = cast(asyncio.WriteTransport | None, session.transport)
            if transport is not None and not transport.is_closing():
                with contextlib.suppress(Exception):
                    transport.write(f"{SHUTTING_DOWN}\r\n".encode())
                transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), grace)
        self._server = None
