"""Outbound SMTP client on asyncio streams: one connection, many transactions.

RFC 5321 (replies, RSET, QUIT, dot-stuffing §4.5.2), RFC 1869 ESMTP (EHLO, HELO
fallback), RFC 2920 PIPELINING (MAIL, every RCPT and DATA in one write), RFC 6152
8BITMIME, RFC 1870 SIZE, RFC 3207 STARTTLS, RFC 2034 enhanced status codes; RFC 7672
§3.1 (policy "dane": STARTTLS is mandatory and the peer's certificates must satisfy one
of the host's usable TLSA records, gateway.delivery.dane, instead of PKIX checks).

Content is never rewritten: a message with 8-bit data for a next hop without 8BITMIME
fails for its recipients (5.6.3) rather than being converted, because conversion would
break a signature over the content.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from gateway.delivery import dane
from gateway.envelope import Reply

_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])(.*)")
_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)(.*)", re.DOTALL)
MAX_REPLY_LINES = 100


class TlsContexts:
    """The SSL contexts of the TLS policies, made once: "verify" checks the chain (against
    delivery.tls_ca_file or the system's CAs) and the host name; "opportunistic" and
    "required" encrypt without authenticating (RFC 7435: better than plaintext), and so
    does "dane", whose authentication is the TLSA match after the handshake."""

    def __init__(self, ca_file: Path | None) -> None:
        self._ca_file = ca_file
        self._made: dict[str, ssl.SSLContext] = {}

    def get(self, policy: str) -> ssl.SSLContext | None:
        if policy == "none":
            return None
        kind = "verify" if policy == "verify" else "encrypt"
        if kind not in self._made:
            if kind == "verify":
                ctx = ssl.create_default_context(
                    cafile=str(self._ca_file) if self._ca_file else None)
            else:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._made[kind] = ctx
        return self._made[kind]


class SmtpError(Exception):
    """The connection or session failed; `reply` says how (4xx: try again later)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def local_reply(code: int, status: str, text: str) -> Reply:
    """A reply made up here (not sent by the peer), e.g. for a connection failure."""
    return Reply(code, status, text)


def parse_reply(lines: list[bytes]) -> Reply:
    """RFC 5321 §4.2: the code of the last line; enhanced status from its text if any."""
    code = int(lines[-1][:3])
    text = " ".join(line[4:].decode("utf-8", "replace").strip() for line in lines)
    m = _ENHANCED.match(text)
    if m and m.group(1)[0] == str(code)[0]:
        return Reply(code, m.group(1), m.group(2))
    return Reply(code, f"{code // 100}.0.0", text)


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """What the next hop said to each recipient, in order: the RCPT reply if it refused,
    else the reply to the message data (or the MAIL / DATA reply that ended it)."""

    replies: tuple[Reply, ...]
    completed: bool  # the transaction ended normally; no RSET needed before the next


def dot_stuff_parts(data: bytes) -> list[bytes | memoryview]:
    """RFC 5321 §4.5.2 dot-stuffing, with the terminating CRLF.CRLF, as pieces to write
    in one go (writelines: one writev): views of `data` with the stuffed dots between
    them, so the body is not copied (a stuffed copy of 10 KB per message costs more on
    the event loop than the write itself)."""
    view = memoryview(data)
    parts: list[bytes | memoryview] = [b"."] if data.startswith(b".") else []
    start = 0
    at = data.find(b"\r\n.")
    while at >= 0:
        parts.append(view[start:at + 2])
        parts.append(b".")
        start = at + 2
        at = data.find(b"\r\n.", start)
    if start < len(data):
        parts.append(view[start:])
    parts.append(b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n")
    return parts


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 §4.5.2, with the terminating CRLF.CRLF appended, as one string."""
    return b"".join(dot_stuff_parts(data))


class SmtpConnection:
    """A session with one next hop. Use `connect`, then `send` repeatedly, then `quit`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 peer: str, command_timeout: float, data_timeout: float) -> None:
        self._reader = reader
        self._writer = writer
        self.peer = peer  # for state and DSN Remote-MTA, e.g. "mx.beta.test[127.0.0.1]"
        self.extensions: dict[str, str] = {}
        self.tls = False
        self._command_timeout = command_timeout
        self._data_timeout = data_timeout

    @classmethod
    async def connect(cls, host: str, address: str, port: int, *, helo: str, tls: str,
                      tls_context: ssl.SSLContext | None, connect_timeout: float,
                      command_timeout: float, data_timeout: float,
                      expected: dane.Expected | None = None) -> SmtpConnection:
        """Open a session: greeting, EHLO, STARTTLS as the TLS policy says, EHLO again.

        tls: none | opportunistic | required | verify | dane (with `expected`, what the
        host's usable TLSA records ask for). Raises SmtpError.
        """
        peer = f"{host}[{address}]:{port}" if host != address else f"[{address}]:{port}"
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(address, port)
        except (OSError, TimeoutError) as e:
            raise SmtpError(local_reply(421, "4.4.1", f"connect to {peer} failed: "
                                        f"{e.strerror or e.__class__.__name__}")) from None
        conn = cls(reader, writer, peer=peer, command_timeout=command_timeout,
                   data_timeout=data_timeout)
        try:
            await conn._open(helo, tls, tls_context, host, expected)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _open(self, helo: str, tls: str, tls_context: ssl.SSLContext | None,
                    host: str, expected: dane.Expected | None) -> None:
        greeting = await self._read_reply()
        if greeting.code != 220:
            raise SmtpError(self._session_failure(greeting, "greeting"))
        await self._ehlo(helo)
        if tls == "none":
            return
        mandatory = tls in ("required", "verify", "dane")
        if "STARTTLS" not in self.extensions:
            if mandatory:
                raise SmtpError(local_reply(
                    421, "4.7.5", f"TLS is required for {self.peer} but it offers no STARTTLS"))
            return
        reply = await self._command(b"STARTTLS")
        if reply.code != 220:
            if mandatory:
                raise SmtpError(self._session_failure(reply, "STARTTLS"))
            return
        assert tls_context is not None
        try:
            async with asyncio.timeout(self._command_timeout):
                await self._writer.start_tls(tls_context, server_hostname=host)
        except (ssl.SSLError, OSError, TimeoutError) as e:
            raise SmtpError(local_reply(421, "4.7.5", f"TLS with {self.peer} failed: {e}")) \
                from None
        if tls == "dane":
            self._dane_check(expected or dane.Expected((), ()))
        self.tls = True
        await self._ehlo(helo)  # RFC 3207 §4.2: forget what was learnt before TLS

    def _dane_check(self, expected: dane.Expected) -> None:
        """RFC 7672 §3.1: the peer must satisfy a usable TLSA record; nothing is sent
        else (the caller closes the connection)."""
        ssl_object = self._writer.get_extra_info("ssl_object")
        chain = dane.peer_chain(ssl_object) if ssl_object is not None else []
        problem = dane.authenticate(expected, chain)
        if problem is not None:
            raise SmtpError(local_reply(421, "4.7.5", f"DANE authentication of {self.peer} "
                                        f"failed: {problem} (RFC 7672)"))

    async def _ehlo(self, helo: str) -> None:
        reply, lines = await self._command_lines(b"EHLO " + helo.encode())
        if reply.code == 250:
            self.extensions = {}
            for line in lines[1:]:
                word, _, arg = line[4:].decode("ascii", "replace").strip().partition(" ")
                self.extensions[word.upper()] = arg
            return
        reply = await self._command(b"HELO " + helo.encode())
        if reply.code != 250:
            raise SmtpError(self._session_failure(reply, "HELO"))
        self.extensions = {}

    def _session_failure(self, reply: Reply, what: str) -> Reply:
        # A session-level refusal says nothing sure about the recipients: keep 5xx only
        # where the peer meant it for every message (greeting, HELO), else try later.
        return Reply(reply.code, reply.status, f"{self.peer} refused {what}: {reply.text}")

    @property
    def max_size(self) -> int:
        arg = self.extensions.get("SIZE", "")
        return int(arg) if arg.isdigit() else 0

    async def send(self, mail_from: str, rcpts: list[str], data: bytes) -> TransactionResult:
        """One mail transaction. Per-recipient replies; raises SmtpError if the session
        broke (the outcome for the recipients is then unknown: retry)."""
        eightbit = not data.isascii()
        if eightbit and "8BITMIME" not in self.extensions:
            reply = local_reply(554, "5.6.3", f"message has 8-bit content and {self.peer} "
                                "does not offer 8BITMIME; it is not converted (that would "
                                "break a signature)")
            return TransactionResult((reply,) * len(rcpts), completed=True)
        if self.max_size and len(data) > self.max_size:
            reply = local_reply(552, "5.3.4", f"message of {len(data)} bytes exceeds the "
                                f"{self.max_size} bytes {self.peer} accepts")
            return TransactionResult((reply,) * len(rcpts), completed=True)
        mail = b"MAIL FROM:<" + mail_from.encode() + b">"
        if "SIZE" in self.extensions:
            mail += b" SIZE=%d" % len(data)
        if eightbit:
            mail += b" BODY=8BITMIME"
        commands = [mail] + [b"RCPT TO:<" + r.encode() + b">" for r in rcpts] + [b"DATA"]
        replies: list[Reply] = []
        if "PIPELINING" in self.extensions:
            self._writer.write(b"".join(c + b"\r\n" for c in commands))
            for _ in commands:
                replies.append(await self._read_reply())
        else:
            for c in commands:
                reply = await self._command(c)
                replies.append(reply)
                if c is mail and reply.code != 250:
                    return TransactionResult((reply,) * len(rcpts), completed=False)
                if c is commands[-2] and not any(r.code in (250, 251) for r in replies[1:]):
                    return TransactionResult(tuple(replies[1:]), completed=False)
        mail_reply, rcpt_replies, data_reply = replies[0], replies[1:len(rcpts) + 1], \
            replies[-1] if len(replies) == len(commands) else None
        if mail_reply.code != 250:
            if data_reply is not None and data_reply.code == 354:
                await self._finish_data(b".\r\n")
            return TransactionResult((mail_reply,) * len(rcpts), completed=False)
        accepted = [r.code in (250, 251) for r in rcpt_replies]
        assert data_reply is not None
        if data_reply.code != 354:
            return TransactionResult(tuple(
                data_reply if ok else r for ok, r in zip(accepted, rcpt_replies, strict=True)),
                completed=False)
        if not any(accepted):
            # RFC 2920 §3.1: DATA was accepted though no recipient was: end it empty.
            await self._finish_data(b".\r\n")
            return TransactionResult(tuple(rcpt_replies), completed=True)
        final = await self._finish_data(*dot_stuff_parts(data))
        return TransactionResult(tuple(
            final if ok else r for ok, r in zip(accepted, rcpt_replies, strict=True)),
            completed=True)

    async def _finish_data(self, *payload: bytes | memoryview) -> Reply:
        self._writer.writelines(payload)
        return await self._read_reply(self._data_timeout)

    async def rset(self) -> None:
        reply = await self._command(b"RSET")
        if reply.code != 250:
            raise SmtpError(self._session_failure(reply, "RSET"))

    async def quit(self) -> None:
        """Say goodbye politely; errors here change nothing, the mail is delivered."""
        with contextlib.suppress(SmtpError, OSError):
            await self._command(b"QUIT")
        self.close()

    def close(self) -> None:
        self._writer.close()

    async def _command(self, line: bytes) -> Reply:
        return (await self._command_lines(line))[0]

    async def _command_lines(self, line: bytes) -> tuple[Reply, list[bytes]]:
        self._writer.write(line + b"\r\n")
        return await self._read_reply_lines(self._command_timeout)

    async def _read_reply(self, timeout: float | None = None) -> Reply:
        return (await self._read_reply_lines(timeout or self._command_timeout))[0]

    async def _read_reply_lines(self, timeout: float) -> tuple[Reply, list[bytes]]:
        lines: list[bytes] = []
        try:
            async with asyncio.timeout(timeout):
                await self._writer.drain()
                while len(lines) < MAX_REPLY_LINES:
                    raw = await self._reader.readline()
                    if not raw.endswith(b"\n"):
                        raise SmtpError(local_reply(421, "4.4.2",
                                                    f"{self.peer} closed the connection"))
                    m = _REPLY_LINE.fullmatch(raw.rstrip(b"\r\n"))
                    if m is None:
                        raise SmtpError(local_reply(
                            421, "4.5.0", f"{self.peer} sent a malformed reply {raw[:80]!r}"))
                    lines.append(raw.rstrip(b"\r\n"))
                    if m.group(2) == b" ":
                        reply = parse_reply(lines)
                        if reply.code == 421:  # RFC 5321 §3.8: the server is closing
                            raise SmtpError(reply)
                        return reply, lines
        except TimeoutError:
            raise SmtpError(local_reply(421, "4.4.2", f"{self.peer} timed out")) from None
        except (OSError, ValueError) as e:  # ValueError: a line past the reader's limit
            raise SmtpError(local_reply(421, "4.4.2", f"connection to {self.peer} failed: "
                                        f"{e}")) from None
        raise SmtpError(local_reply(421, "4.5.0", f"{self.peer} sent an endless reply"))
