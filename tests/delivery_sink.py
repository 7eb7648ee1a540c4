"""A small scriptable SMTP server on loopback for the delivery tests (real sockets).

It advertises exactly the extensions a test asks for (aiosmtpd always offers 8BITMIME,
so a next hop without it needs this), answers per a script, and records every session,
command and message (dot-unstuffed) so tests can check what really went over the wire.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Received:
    mail_from: str
    mail_params: str
    rcpts: list[str]
    data: bytes
    tls: bool


@dataclass
class Sink:
    extensions: tuple[str, ...] = ("PIPELINING", "8BITMIME", "SIZE 10000000")
    tls_context: ssl.SSLContext | None = None  # offers STARTTLS when set
    # Each returns a reply line, or None for the default 250.
    on_rcpt: Callable[[str], str | None] = lambda rcpt: None
    on_data: Callable[[Received], str | None] = lambda msg: None
    messages: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> Sink:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def delivered_to(self, rcpt: str) -> list[Received]:
        return [m for m in self.messages if rcpt in m.rcpts]

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        tls = False
        mail_from, params = "", ""
        rcpts: list[str] = []
        try:
            writer.write(b"220 sink.test ESMTP\r\n")
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                line = raw.decode().rstrip("\r\n")
                self.commands.append(line)
                verb = line.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    exts = list(self.extensions)
                    if self.tls_context is not None and not tls:
                        exts.append("STARTTLS")
                    lines = ["sink.test", *exts]
                    writer.write("".join(f"250{'-' if i < len(lines) - 1 else ' '}{t}\r\n"
                                         for i, t in enumerate(lines)).encode())
                elif verb == "HELO":
                    writer.write(b"250 sink.test\r\n")
                elif verb == "STARTTLS" and self.tls_context is not None:
                    writer.write(b"220 2.0.0 go ahead\r\n")
                    await writer.drain()
                    await writer.start_tls(self.tls_context)
                    tls = True
                elif verb == "MAIL":
                    addr, _, params = line[10:].partition(" ")
                    mail_from, rcpts = addr.strip("<>"), []
                    writer.write(b"250 2.1.0 ok\r\n")
                elif verb == "RCPT":
                    rcpt = line[8:].strip("<>")
                    reply = self.on_rcpt(rcpt)
                    if reply is None:
                        rcpts.append(rcpt)
                        reply = "250 2.1.5 ok"
                    writer.write(reply.encode() + b"\r\n")
                elif verb == "DATA":
                    if not rcpts:
                        writer.write(b"554 5.5.1 no valid recipients\r\n")
                        continue
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    chunks = []
                    while (chunk := await reader.readline()) != b".\r\n":
                        if not chunk:
                            return
                        chunks.append(chunk[1:] if chunk.startswith(b".") else chunk)
                    msg = Received(mail_from, params, rcpts, b"".join(chunks), tls)
                    reply = self.on_data(msg)
                    if reply is None:
                        self.messages.append(msg)
                        reply = "250 2.0.0 queued"
                    writer.write(reply.encode() + b"\r\n")
                    rcpts = []
                elif verb == "RSET":
                    rcpts = []
                    writer.write(b"250 2.0.0 ok\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"502 5.5.2 unknown command\r\n")
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()
