"""One SMTP session: aiosmtpd's protocol with the gateway's DATA, limits and replies.

aiosmtpd (≥ 1.4.6, whose smuggling and STARTTLS-injection fixes we rely on) parses the
commands. This subclass changes only what the gateway needs to be different:

- DATA is read in chunks by gateway.smtp.data (bare LF refused, limits enforced) and
  handed to the Acceptor, shielded from the session: once the end of data is in, the
  message is either queued in full or not at all, even if the client hangs up.
- every reply carries an RFC 3463 enhanced status (RFC 2034);
- the per-address and total connection limits answer 421 before the greeting;
- a timeout says 421 4.4.2 before closing (RFC 5321 §4.5.3.2 timeouts);
- a command line ending in a bare LF is refused, like a bare LF in DATA (RFC 5321
  §2.3.8: lines end in CRLF; Postfix's smtpd_forbid_bare_newline does the same);
- an unexpected error is 451 4.3.0 and a log line, never exception text to the client;
- AUTH is not offered: relay rights come from the client's network only;
- replies to a pipelined group go out together (RFC 2920 §3.2): a reply to RSET, MAIL
  or RCPT waits while the client's next command line is already buffered, and every
  waiting reply goes out with the first reply that may not wait (EHLO, DATA's 354, the
  end of data, QUIT, anything unknown) or as soon as no complete command line is left.
  One write per group instead of one per reply, and one for EHLO's lines instead of
  one per line; the client sees the same bytes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from aiosmtpd.smtp import SMTP

from gateway import metrics
from gateway.envelope import (
    LOCAL_ERROR,
    SYSTEM_BUSY,
    TIMEOUT,
    Envelope,
    Reply,
)
from gateway.smtp.data import DataBody, read_data
from gateway.smtp.replies import BARE_LF_COMMAND, NO_AUTH, START_DATA, reason, with_status

if TYPE_CHECKING:
    from gateway.smtp.server import FrontEnd

log = logging.getLogger(__name__)

# The StreamReader's buffer limit: how much DATA one readuntil() may gather. Command
# lines are still held to 512 octets (RFC 5321 §4.5.3.1.4) by aiosmtpd's own check.
READ_CHUNK = 256 * 1024


# A MAIL FROM / RCPT TO argument in its everyday form: <dot-atom@domain>, then the
# parameters after one space. aiosmtpd parses every argument with the email package's
# RFC 5322 parser and defines a typing.Protocol class on each call (~50 µs, twice or
# more per message); this form gets the same answer from one regex, and anything else
# (quoted local parts, address literals, comments, source routes, other spacing) still
# goes to aiosmtpd. tests/test_smtp_getaddr.py holds the two to the same answers.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>"
                          r"(?: ([^\s(](?:[^\r\n]*[^\s])?))?")


class BareLineFeed(Exception):
    """A command line ended in LF without CR."""


class _CommandReader(asyncio.StreamReader):
    """The session's StreamReader, with command lines held to CRLF endings.

    `before_wait` (the session's flush of waiting replies) runs before any read that may
    have to wait for the client: RFC 2920 §3.2 (6), pending replies go out whenever the
    input buffer is empty, so a reply is never held while we wait for more input."""

    before_wait: Callable[[], None] | None = None

    def has_line(self) -> bool:
        """Whether a complete command line is already buffered."""
        return b"\n" in self._buffer  # type: ignore[attr-defined]

    async def readuntil(self, separator: Any = b"\n") -> bytes:
        if self.before_wait is not None and separator not in self._buffer:  # type: ignore[attr-defined]
            self.before_wait()
        line = await super().readuntil(separator)
        if separator == b"\n" and not line.endswith(b"\r\n"):
            raise BareLineFeed
        return line


class Session(SMTP):
    line_length_limit = READ_CHUNK

    def __init__(self, front: FrontEnd, **kwargs: Any) -> None:
        self.front = front
        self._refused_at_connect = False
        self._admitted = False
        self._client = ""
        self._in_ehlo = False
        self._grouped = False  # running RSET, MAIL or RCPT: its reply may wait
        self._held: list[bytes] = []  # replies not yet written, in order
        super().__init__(front.handler, **kwargs)

    @property
    def client_address(self) -> str:
        return self._client

    def _cb_client_connected(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        # aiosmtpd builds a plain StreamReader and reads commands with readuntil(b"\n");
        # the subclass adds the CRLF check and the flush of held replies before a read
        # that may wait (its only state, set here).
        reader.__class__ = _CommandReader
        cast(_CommandReader, reader).before_wait = self._flush
        super()._cb_client_connected(reader, writer)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, BareLineFeed):
            metrics.REFUSED.labels(reason(BARE_LF_COMMAND)).inc()
            return str(BARE_LF_COMMAND)
        log.error("SMTP session with %s failed: %r", self._client, error, exc_info=error)
        metrics.REFUSED.labels(reason(LOCAL_ERROR)).inc()
        return str(LOCAL_ERROR)

    # -- connection limits ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # a new connection, not the switch to TLS
            peer = transport.get_extra_info("peername")
            self._client = str(peer[0]) if peer else ""
            refusal = self.front.admit(self._client, self)
            if refusal is not None:
                self._refused_at_connect = True
                metrics.REFUSED.labels(reason(refusal)).inc()
                # (uvloop's transports are not asyncio.WriteTransport subclasses)
                cast(asyncio.WriteTransport, transport).write(f"{refusal}\r\n".encode())
                transport.close()
                return
            self._admitted = True
            metrics.SESSIONS.inc()
            metrics.SESSIONS_ACTIVE.inc()
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused_at_connect:
            return
        if self._admitted:
            self._admitted = False
            self.front.release(self._client, self)
            metrics.SESSIONS_ACTIVE.dec()
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._refused_at_connect:
            return False
        result: bool | None = super().eof_received()
        return result

    def _timeout_cb(self) -> None:
        transport = cast(asyncio.WriteTransport | None, self.transport)
        if transport is not None and not transport.is_closing():
            metrics.REFUSED.labels(reason(TIMEOUT)).inc()
            self._flush()
            transport.write(f"{TIMEOUT}\r\n".encode())
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    # -- replies -------------------------------------------------------------------------

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            if not self._in_ehlo and not status.startswith("220 "):
                status = with_status(status)
            status = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        self._held.append(status + b"\r\n")
        if self._in_ehlo and status[3:4] == b"-":
            return  # aiosmtpd pushes EHLO's reply line by line: send it whole
        if self._grouped and cast(_CommandReader, self._reader).has_line():
            return  # the client sent more of its group: answer it together
        self._flush()
        await self._writer.drain()

    def _flush(self) -> None:
        """Write every waiting reply, in order, in one write."""
        if self._held:
            held, self._held = self._held, []
            transport = self.transport
            if transport is not None and not transport.is_closing():
                cast(asyncio.WriteTransport, transport).write(
                    held[0] if len(held) == 1 else b"".join(held))

    # RFC 2920 §3.2 (3): the server may keep replies to RSET, MAIL and RCPT in a buffer
    # to send them as a unit; (4), (5): never those to EHLO, DATA, VRFY, EXPN, TURN, QUIT,
    # NOOP or an unrecognised command, so only these three commands mark their reply.
    async def _grouping(self, command: Any, arg: str | None) -> None:
        self._grouped = True
        try:
            await command(arg)
        finally:
            self._grouped = False

    async def smtp_RSET(self, arg: str | None) -> None:
        await self._grouping(super().smtp_RSET, arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        await self._grouping(super().smtp_MAIL, arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        await self._grouping(super().smtp_RCPT, arg)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._in_ehlo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_ehlo = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        m = _SIMPLE_PATH.fullmatch(arg)
        if m is None:
            try:
                slow: tuple[str | None, str | None] = super()._getaddr(arg)
            except Exception:
                # The email package's parser under aiosmtpd's crashes on some malformed
                # arguments ("<", '<"': IndexError; "a@[": AttributeError; "a@[ ":
                # UnboundLocalError): a malformed address (553 5.1.3), not a local
                # error (451) with a traceback in the log.
                return None, None
            return slow
        address = m.group(1)
        if self.local_part_limit and address.rfind("@") > self.local_part_limit:
            return None, None
        return address, m.group(2) or ""

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push(str(NO_AUTH))

    # -- DATA ----------------------------------------------------------------------------

    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        if not self.front.acceptor.has_room():
            await self._refuse(SYSTEM_BUSY)
            return
        await self.push(START_DATA)
        self._reset_timeout(self.front.config.data_timeout)
        body = DataBody(self.front.config.max_message_size, self.front.config.max_line_length,
                        self.front.memory)
        try:
            await read_data(self._reader, body)
        except asyncio.IncompleteReadError:  # the client hung up mid-DATA: nothing queued
            body.release()
            if self.transport is not None:
                self.transport.close()
            return
        except BaseException:
            body.release()
            raise
        if body.error is not None:
            await self._refuse(body.error)
            return
        envelope = self._our_envelope()
        data = body.finish(self.front.acceptor.received(envelope,
                                                        tls=self._tls_protocol is not None))
        # Shielded: a client that hangs up now does not cancel a half-done enqueue. The
        # memory stays reserved until the workers and the spool are done with the data.
        task = self.front.track(self.front.acceptor.accept(envelope, data))
        task.add_done_callback(lambda _: body.release())
        del data
        reply = await asyncio.shield(task)
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        self._reset_timeout()  # back from the DATA timeout to the command timeout
        await self.push(str(reply))

    async def _refuse(self, reply: Reply) -> None:
        metrics.REFUSED.labels(reason(reply)).inc()
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        self._reset_timeout()
        await self.push(str(reply))

    def _our_envelope(self) -> Envelope:
        env, session = self.envelope, self.session
        assert env is not None
        assert session is not None
        assert env.mail_from is not None
        mail_from = "" if env.mail_from == "<>" else env.mail_from
        options = []
        for opt in env.mail_options:
            key, _, value = opt.partition("=")
            options.append((key.upper(), value))
        return Envelope(mail_from=mail_from, rcpt_tos=tuple(env.rcpt_tos),
                        client_address=self._client, helo=session.host_name or "",
                        received_at=time.time(), esmtp=tuple(options))
