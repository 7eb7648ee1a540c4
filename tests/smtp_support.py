"""Helpers for the front-end tests: a running front end on loopback, a raw SMTP client.

The front end runs with the real pieces behind it — a WorkerPool of one process and a
Spool in a temporary directory — but no delivery, so what it accepted stays in the
spool for the test to read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.schema import SmtpSection, SpoolSection, WorkersSection
from gateway.config.types import HostPort
from gateway.smtp import Acceptor, FrontEnd
from gateway.spool import Spool
from gateway.workers import IDENTITY, WorkerPool


@dataclass
class Running:
    front: FrontEnd
    spool: Spool
    pool: WorkerPool

    @property
    def port(self) -> int:
        return self.front.address[1]

    async def queued(self) -> list[tuple[Any, bytes]]:
        """(envelope, data) of everything in the spool."""
        return [(e.envelope, await self.spool.read(e)) for e in self.spool.entries()]


@asynccontextmanager
async def front_end(tmp: Path, *, job: str = IDENTITY, max_messages: int = 1000,
                    max_pending: int = 64, max_batch: int = 32,
                    **smtp: Any) -> AsyncIterator[Running]:
    smtp.setdefault("local_domains", ("local.test",))
    smtp.setdefault("hostname", "gw.local.test")
    config = dataclasses.replace(SmtpSection(listen=HostPort("127.0.0.1", 0)), **smtp)
    spool = await Spool.open(SpoolSection(directory=tmp / "spool", max_messages=max_messages))
    pool = WorkerPool(WorkersSection(processes=1, max_pending=max_pending,
                                     max_batch=max_batch), job_function=job)
    try:
        await pool.start()
        front = FrontEnd(config, Acceptor(pool, spool, hostname=config.hostname))
        await front.start()
        try:
            yield Running(front, spool, pool)
        finally:
            await front.stop(grace=5.0)
    finally:
        await pool.stop()
        await spool.close()


class Client:
    """A bare SMTP client: writes exactly what it is told, returns replies as text."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, ehlo: bool = True) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        greeting = await client.reply()
        assert greeting.startswith("220 "), greeting
        if ehlo:
            await client.cmd("EHLO client.test")
        return client

    async def reply(self, timeout: float = 10.0) -> str:
        """One reply, its lines joined by newlines ("" at EOF)."""
        lines: list[str] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                return "\n".join(lines)
            text = line.decode("ascii", "replace").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\n".join(lines)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def cmd(self, line: str | bytes) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def message(self, mail_from: str, rcpts: list[str], data: bytes) -> str:
        """A whole transaction; returns the final reply (or the first refusal)."""
        reply = await self.cmd(f"MAIL FROM:<{mail_from}>")
        if not reply.startswith("250"):
            return reply
        accepted = 0
        for rcpt in rcpts:
            reply = await self.cmd(f"RCPT TO:<{rcpt}>")
            accepted += reply.startswith("250")
        if not accepted:
            return reply
        reply = await self.cmd("DATA")
        if not reply.startswith("354"):
            return reply
        self.send(data + b".\r\n")
        return await self.reply()

    async def starttls(self) -> None:
        assert (await self.cmd("STARTTLS")).startswith("220")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        await self.writer.start_tls(context)

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()
