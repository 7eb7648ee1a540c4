"""DATA reading (gateway.smtp.data): end mark, transparency, bare LF, limits, chunking."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envelope import BARE_LF, INSUFFICIENT_STORAGE, LINE_TOO_LONG, MESSAGE_TOO_BIG, Reply
from gateway.smtp.data import DataBody, MemoryBudget, read_data


def read(wire: bytes, *, limit: int = 64, max_size: int = 10**6, max_line: int = 998,
         pieces: list[int] | None = None) -> tuple[Reply | None, bytes | None, bytes]:
    """(error, message, what is left in the stream) for `wire` fed in pieces."""

    async def go() -> tuple[Reply | None, bytes | None, bytes]:
        reader = asyncio.StreamReader(limit=limit)
        body = DataBody(max_size, max_line)
        pos = 0
        for n in pieces or []:
            reader.feed_data(wire[pos:pos + n])
            pos += n
        reader.feed_data(wire[pos:])
        reader.feed_eof()
        await read_data(reader, body)
        rest = await reader.read()
        return body.error, (body.finish() if body.error is None else None), rest

    return asyncio.run(go())


@pytest.mark.parametrize(("wire", "message", "rest"), [
    (b".\r\nQUIT\r\n", b"", b"QUIT\r\n"),  # empty message: the DATA line's CRLF counts
    (b"a\r\n.\r\nQUIT\r\n", b"a\r\n", b"QUIT\r\n"),
    (b"..a\r\n.b\r\n\r\n...\r\n.\r\n", b".a\r\nb\r\n\r\n..\r\n", b""),  # RFC 5321 §4.5.2
    (b"a.\r\nb .\r\n.\r\n", b"a.\r\nb .\r\n", b""),  # dots ending lines are not the end
    (b"x" * 998 + b"\r\n.\r\n", b"x" * 998 + b"\r\n", b""),  # longest line allowed
    (b"." + b"x" * 998 + b"\r\n.\r\n", b"x" * 998 + b"\r\n", b""),  # plus its stuffed dot
    (b"a\r\n.\r\nRSET\r\nMAIL FROM:<a@b.test>\r\n", b"a\r\n", b"RSET\r\nMAIL FROM:<a@b.test>\r\n"),
], ids=["empty", "one-line", "dot-stuffing", "dot-at-line-end", "998", "998-stuffed",
        "pipelined"])
def test_reads_message(wire: bytes, message: bytes, rest: bytes) -> None:
    assert read(wire) == (None, message, rest)


@pytest.mark.parametrize(("wire", "error", "rest"), [
    # SMTP smuggling (2023): only CRLF.CRLF ends the data; a bare LF refuses the message
    # and what is hidden behind "\n.\r\n" / "\r\n.\n" is never read as commands.
    (b"a\n.\r\nMAIL FROM:<x@evil.test>\r\n.\r\nQUIT\r\n", BARE_LF, b"QUIT\r\n"),
    (b"a\r\n.\nMAIL FROM:<x@evil.test>\r\n.\r\nQUIT\r\n", BARE_LF, b"QUIT\r\n"),
    (b"a\nb\r\n.\r\n", BARE_LF, b""),
    (b"x" * 1000 + b"\r\n.\r\n", LINE_TOO_LONG, b""),
    (b"y\r\n" + b"x" * 5000 + b"\r\n.\r\nNOOP\r\n", LINE_TOO_LONG, b"NOOP\r\n"),
    (b"0123456789\r\n" * 100 + b".\r\nNOOP\r\n", MESSAGE_TOO_BIG, b"NOOP\r\n"),
], ids=["smuggle-lf-dot-crlf", "smuggle-crlf-dot-lf", "bare-lf", "line-1000",
        "line-5000", "too-big"])
def test_refuses_after_the_end(wire: bytes, error: Reply, rest: bytes) -> None:
    assert read(wire, max_size=1000) == (error, None, rest)


def test_long_line_split_across_chunks_is_still_one_line() -> None:
    wire = b"x" * 600 + b"\r\n" + b"y" * 500 + b"\r\n.\r\n"
    assert read(wire, pieces=[300, 301, 2, 250]) == (None, wire[:-3], b"")
    too_long = b"x" * 2000 + b".\r\n.\r\n"  # ends in ".\r\n": must not end the data early
    assert read(too_long, pieces=[700, 700]) == (LINE_TOO_LONG, None, b"")


def test_bodies_share_one_memory_budget() -> None:
    budget = MemoryBudget(100)
    first, second = DataBody(1000, 998, budget), DataBody(1000, 998, budget)
    first.feed(b"x" * 58 + b"\r\n")
    assert (first.error, budget.used) == (None, 60)
    second.feed(b"y" * 48 + b"\r\n")  # 60 + 50 > 100
    assert (second.error, budget.used) == (INSUFFICIENT_STORAGE, 60)
    second.feed(b"more\r\n")  # refused bodies hold nothing, whatever follows
    assert budget.used == 60
    assert first.finish() == b"x" * 58 + b"\r\n"
    first.release()
    assert budget.used == 0
    third = DataBody(1000, 998, budget)
    third.feed(b"z" * 98 + b"\r\n" + b"line too long" * 100 + b"\r\n")
    assert (third.error, budget.used) == (LINE_TOO_LONG, 0)


def test_connection_closed_mid_data_raises() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        read(b"Subject: half\r\n\r\nbody that never ends\r\n")


_LINE = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(_LINE, max_size=40), cuts=st.lists(st.integers(1, 200), max_size=8),
       limit=st.sampled_from([8, 64, 4096]))
def test_any_stuffed_message_round_trips(lines: list[bytes], cuts: list[int],
                                         limit: int) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    wire = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines) + b".\r\nNEXT\r\n"
    assert read(wire, limit=limit, pieces=cuts) == (None, message, b"NEXT\r\n")
