"""The counting sink's SMTP session: an asyncio Protocol, one per connection.

Owns the wire side of `benchmarks._loadgen_sink.Sink`: ESMTP per RFC 5321 with
PIPELINING (RFC 2920: replies to everything parsed from one read go out in one write),
SIZE (RFC 1870), STARTTLS (RFC 3207), ENHANCEDSTATUSCODES (RFC 2034/3463), dot-stuffing
(§4.5.2), and the loadgen verb `XSTATS [RUN-ID]`. What to answer to a message and what
to count is the Sink's business; this module only speaks the protocol.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from benchmarks._loadgen_sink import Sink

MAX_LINE = 4096  # RFC 5321 §4.5.3.1.4 allows 512; be generous, but bounded
_SIZE = re.compile(rb"\sSIZE=(\d{1,20})", re.IGNORECASE)
_ADDR = re.compile(rb"^(?:FROM|TO):\s*<([^>]*)>", re.IGNORECASE)


class SinkProtocol(asyncio.Protocol):
    """One SMTP session. Replies to everything parsed from one read go out in one write."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.in_data = False
        self.too_big = False
        self.scan_from = 0
        self.mail_from: str | None = None
        self.rcpts: list[str] = []
        self.closing = False
        self.tls = False
        self.paused = False  # between STARTTLS's 220 and the end of the handshake

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.sink.sessions += 1
        self.sink.connections.add(self)
        self.transport.write(b"220 sink.loadgen.invalid ESMTP loadgen sink\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.connections.discard(self)
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
            self.transport = None  # nothing more is written to an aborted connection

    def data_received(self, data: bytes) -> None:
        self.buf += data
        out: list[bytes] = []
        # Each pass consumes a command line or a whole message, so this ends.
        while not self.closing and not self.paused:
            if self.in_data:
                if not self._take_data(out):
                    break
                continue
            i = self.buf.find(b"\r\n")
            if i < 0:
                if len(self.buf) > MAX_LINE:
                    out.append(b"500 5.5.2 Line too long\r\n")
                    self.closing = True
                break
            line = bytes(self.buf[:i])
            del self.buf[: i + 2]
            out.append(self._command(line))
        if out and self.transport is not None:
            for reply in out:
                self.sink.count_reply(reply)
            self.transport.write(b"".join(out))
        if self.closing and self.transport is not None:
            self.transport.close()

    async def _start_tls(self, ctx: ssl.SSLContext) -> None:
        transport = self.transport
        if transport is None:
            return
        try:
            new = await asyncio.get_running_loop().start_tls(
                transport, self, ctx, server_side=True, ssl_handshake_timeout=30)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            self.abort()
            return
        if new is None:
            self.abort()
            return
        self.transport = new
        self.tls, self.paused = True, False
        self.mail_from, self.rcpts = None, []  # RFC 3207 §4.2: forget the earlier session
        self.sink.tls_sessions += 1

    def _take_data(self, out: list[bytes]) -> bool:
        buf = self.buf
        if self.scan_from == 0 and buf[:3] == b".\r\n":
            raw, consumed = b"", 3  # an empty message
        else:
            i = buf.find(b"\r\n.\r\n", max(0, self.scan_from - 4))
            if i < 0:
                self.scan_from = len(buf)
                if len(buf) > self.sink.max_message_size:
                    # Too big: forget the content, keep looking for the end (RFC 5321
                    # §4.5.3.1.7 wants the whole DATA read before the 552).
                    self.too_big = True
                    del buf[:-4]
                    self.scan_from = len(buf)
                return False
            raw, consumed = bytes(buf[: i + 2]), i + 5
            self.too_big = self.too_big or len(raw) > self.sink.max_message_size
        del buf[:consumed]
        self.scan_from = 0
        self.in_data = False
        if self.too_big:
            self.too_big = False
            out.append(b"552 5.3.4 Sink: message too big\r\n")
        else:
            reply = self.sink.take(self.mail_from or "", self.rcpts, raw)
            if reply is None:
                self.abort()
                return False
            out.append(reply)
        self.mail_from, self.rcpts = None, []
        return True

    def _command(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        if verb == b"MAIL":
            m = _ADDR.match(line[5:])
            if m is None:
                return b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
            if self.mail_from is not None:
                return b"503 5.5.1 Error: nested MAIL command\r\n"
            size = _SIZE.search(line)
            if size is not None and int(size.group(1)) > self.sink.max_message_size:
                # RFC 1870 §6.1: refuse a declared size above the limit at MAIL.
                return b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
            refusal = self.sink.refuse_at("mail")
            if refusal is not None:
                return refusal
            self.mail_from = m.group(1).decode("utf-8", "replace")
            return b"250 2.1.0 Ok\r\n"
        if verb == b"RCPT":
            if self.mail_from is None:
                return b"503 5.5.1 Error: need MAIL command\r\n"
            m = _ADDR.match(line[5:])
            if m is None:
                return b"501 5.5.4 Syntax: RCPT TO:<address>\r\n"
            refusal = self.sink.refuse_at("rcpt")
            if refusal is not None:
                return refusal
            self.rcpts.append(m.group(1).decode("utf-8", "replace"))
            return b"250 2.1.5 Ok\r\n"
        if verb == b"DATA":
            if not self.rcpts:
                return b"554 5.5.1 Error: no valid recipients\r\n"
            self.in_data = True
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        if verb == b"EHLO":
            self.mail_from, self.rcpts = None, []
            tls = b"250-STARTTLS\r\n" if self.sink.tls_context and not self.tls else b""
            return (b"250-sink.loadgen.invalid\r\n250-PIPELINING\r\n" + tls +
                    b"250-SIZE %d\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
                    b"250 SMTPUTF8\r\n" % self.sink.max_message_size)
        if line.upper() == b"STARTTLS" and self.sink.tls_context and not self.tls:
            # RFC 3207 §4.2 (and the STARTTLS injection CVEs): anything the client sent
            # after STARTTLS in the clear is thrown away, not read as commands.
            self.buf.clear()
            self.paused = True
            asyncio.get_running_loop().create_task(self._start_tls(self.sink.tls_context))
            return b"220 2.0.0 Ready to start TLS\r\n"
        if verb == b"HELO":
            self.mail_from, self.rcpts = None, []
            return b"250 sink.loadgen.invalid\r\n"
        if verb == b"RSET":
            self.mail_from, self.rcpts = None, []
            return b"250 2.0.0 Ok\r\n"
        if verb == b"NOOP":
            return b"250 2.0.0 Ok\r\n"
        if verb == b"QUIT":
            self.closing = True
            return b"221 2.0.0 Bye\r\n"
        if verb == b"VRFY":
            return b"252 2.0.0 Cannot VRFY, but will accept\r\n"
        if line[:6].upper() == b"XSTATS":
            run_id = line[7:].decode("ascii", "replace").strip() or None
            return b"250 " + json.dumps(self.sink.stats(run_id)).encode() + b"\r\n"
        return b"502 5.5.2 Error: command not recognized\r\n"
