"""Reading one DATA body (RFC 5321 §4.1.1.4, §4.5.2) in large chunks instead of lines.

aiosmtpd reads DATA one line at a time, a Python loop iteration per line; this reads
whatever the socket delivered up to the next ".\\r\\n" with StreamReader.readuntil and
checks each chunk with bytes methods that run in C: the end-of-data mark, transparency
(dot-unstuffing), line length, bare LF and the size limit. The work per message is a
few passes over its bytes, so a large message does not hold the event loop.

Only CRLF "." CRLF ends the data: a bare LF anywhere makes the whole message a
554 5.6.11 refusal after its end (the SMTP smuggling attacks of 2023 hide a second
message behind "\\n.\\r\\n" or "\\r\\n.\\n"). After a limit is passed the rest is read
and dropped, so memory stays at most max_size per session, and the refusal comes after
the end of data where the client listens for it (RFC 5321 §4.2.5). All sessions share
one MemoryBudget: a message that would take memory past it is 452 4.3.1.
"""

from __future__ import annotations

import asyncio

from gateway.envelope import (
    BARE_LF,
    INSUFFICIENT_STORAGE,
    LINE_TOO_LONG,
    MESSAGE_TOO_BIG,
    Reply,
)

_END = b".\r\n"


class MemoryBudget:
    """Bytes of message data all sessions may hold at once (smtp.max_data_memory).

    Past it a message is refused with 452 4.3.1 after its end of data, so memory stays
    bounded whatever the number of sessions and their sizes.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def release(self, n: int) -> None:
        self.used -= n


class DataBody:
    """Accumulates one DATA body from wire chunks; `error` says why it is refused."""

    def __init__(self, max_size: int, max_line: int,
                 memory: MemoryBudget | None = None) -> None:
        self.max_size = max_size
        self.memory = memory
        self.reserved = 0  # bytes of the budget this body holds
        # A wire line may be one octet longer than the limit: the transparency dot.
        self._line_room = max_line + 1
        self._parts: list[bytes] = []
        self._tail = b""  # the unfinished last line of the chunks fed so far
        self.size = 0
        self.error: Reply | None = None

    def feed(self, chunk: bytes) -> None:
        """Take the next wire bytes (the end-of-data mark already removed)."""
        buf = self._tail + chunk if self._tail else chunk
        cut = buf.rfind(b"\n") + 1
        lines, self._tail = buf[:cut], buf[cut:]
        if len(self._tail) > self._line_room + 1:
            self._fail(LINE_TOO_LONG)
            self._tail = self._tail[-1:]  # keep a trailing CR: it may start CRLF
        if lines and self.error is None:
            self._take(lines)

    def _take(self, lines: bytes) -> None:
        if lines.count(b"\n") != lines.count(b"\r\n"):
            self._fail(BARE_LF)
        elif len(lines) > self._line_room + 2 and \
                max(map(len, lines.split(b"\n"))) > self._line_room + 1:
            # (split + max runs in C; a regex for "a long line" was 7 times slower)
            self._fail(LINE_TOO_LONG)
        else:
            # Transparency (§4.5.2): a leading dot on any line is removed. `lines` always
            # starts at the start of a line.
            body = lines.replace(b"\r\n.", b"\r\n")
            if body[:1] == b".":
                body = body[1:]
            self.size += len(body)
            if self.size > self.max_size:
                self._fail(MESSAGE_TOO_BIG)
            elif self.memory is not None and not self.memory.reserve(len(body)):
                self._fail(INSUFFICIENT_STORAGE)
            else:
                self.reserved += len(body)
                self._parts.append(body)

    def _fail(self, reply: Reply) -> None:
        if self.error is None:
            self.error = reply
        self._parts.clear()
        self.release()

    def release(self) -> None:
        """Give back this body's share of the memory budget (when its data is gone)."""
        if self.memory is not None and self.reserved:
            self.memory.release(self.reserved)
        self.reserved = 0

    def finish(self, prefix: bytes = b"") -> bytes:
        """`prefix` + the message (one copy); call after the end-of-data mark."""
        if self._tail:
            # Data ending without CRLF before the final dot cannot happen on the wire
            # (the mark starts with CRLF), but be exact about what we return.
            self.feed(b"\r\n")
        data = b"".join([prefix, *self._parts])
        self._parts.clear()
        return data


async def read_data(reader: asyncio.StreamReader, body: DataBody) -> None:
    """Read up to and including CRLF "." CRLF, feeding `body`; leaves pipelined commands.

    readuntil(".\\r\\n") returns at every line that ends in a dot; it is the end only if
    CRLF comes before it, which may lie in the previous chunk (or be the DATA command's
    own CRLF when the message is empty). Chunks past the reader's limit come back through
    LimitOverrunError and are read as they are.
    """
    last = b"\r\n"  # the two octets before the next chunk
    while True:
        try:
            chunk = await reader.readuntil(_END)
            tail = chunk[-5:] if len(chunk) >= 5 else (last + chunk)[-5:]  # no big copy
            ended = tail == b"\r\n.\r\n"
        except asyncio.LimitOverrunError as e:
            chunk = await reader.read(max(e.consumed, 1))
            ended = False
        if not chunk:
            raise asyncio.IncompleteReadError(b"", None)
        if ended:
            body.feed(chunk[:-3])
            return
        body.feed(chunk)
        last = chunk[-2:] if len(chunk) >= 2 else (last + chunk)[-2:]
