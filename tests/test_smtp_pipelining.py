"""The front end's replies to pipelined commands (RFC 2920 §3.2), counted at the socket.

A blocking client on its own thread talks to a real front end on loopback; the event
loop's thread runs only the front end, so its write syscalls are the replies' writes.
A pipelined group must come back in one write, in order; a client that does not
pipeline, or whose next command is not complete yet, must get each reply at once (the
client's socket times out, failing the test, if a reply were held back).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import uvloop

from tests.smtp_support import front_end
from tests.write_count import LineSocket, loop_thread_id, thread_writes

MESSAGE = b"From: a@alpha.test\r\nSubject: pipelined\r\n\r\nbody\r\n"


def talk(tmp: Path, peer: Callable[[LineSocket, Callable[[], int]], None]) -> None:
    """Run `peer` on a thread against a front end; it gets a session past EHLO (whose
    multi-line reply must come in one write) and a function giving the loop thread's
    write syscalls so far."""
    async def go() -> None:
        async with front_end(tmp) as gw:
            loop_id = loop_thread_id()

            def session() -> None:
                s = LineSocket.connect(gw.port)
                try:
                    assert s.reply().startswith("220 ")
                    before = thread_writes(loop_id)
                    s.send(b"EHLO client.test\r\n")
                    assert "PIPELINING" in s.reply()
                    assert thread_writes(loop_id) - before == 1  # its lines go together
                    peer(s, lambda: thread_writes(loop_id))
                    s.send(b"QUIT\r\n")
                    assert s.reply().startswith("221 ")
                finally:
                    s.close()

            await asyncio.to_thread(session)

    uvloop.run(go())


def test_a_pipelined_group_is_answered_in_one_write(tmp_path: Path) -> None:
    def peer(s: LineSocket, writes: Callable[[], int]) -> None:
        before = writes()
        s.send(b"MAIL FROM:<a@alpha.test>\r\nRCPT TO:<b@local.test>\r\n"
               b"RCPT TO:<x@far.test>\r\nRCPT TO:<c@local.test>\r\nDATA\r\n")
        replies = [s.reply()[:9] for _ in range(5)]
        assert replies == ["250 2.1.0", "250 2.1.5", "554 5.7.1", "250 2.1.5", "354 End d"]
        assert writes() - before == 1
        s.send(MESSAGE + b".\r\n")
        assert s.reply().startswith("250 2.0.0 Ok: queued as ")

    talk(tmp_path, peer)


def test_replies_that_may_not_wait_end_the_group(tmp_path: Path) -> None:
    # RFC 2920 §3.2 (4): the replies to NOOP and VRFY are never buffered, so the replies
    # held before them go out with them, still in order.
    def peer(s: LineSocket, writes: Callable[[], int]) -> None:
        before = writes()
        s.send(b"MAIL FROM:<a@alpha.test>\r\nRCPT TO:<b@local.test>\r\nNOOP\r\n"
               b"RCPT TO:<c@local.test>\r\nRSET\r\nVRFY <e@local.test>\r\n"
               b"MAIL FROM:<a@alpha.test>\r\nRCPT TO:<d@local.test>\r\nDATA\r\n")
        replies = [s.reply()[:3] for _ in range(9)]
        assert replies == ["250", "250", "250", "250", "250", "252", "250", "250", "354"]
        assert writes() - before == 3
        s.send(MESSAGE + b".\r\n")
        assert s.reply().startswith("250 2.0.0 Ok: queued as ")

    talk(tmp_path, peer)


def test_a_client_that_does_not_pipeline_gets_each_reply_at_once(tmp_path: Path) -> None:
    def peer(s: LineSocket, writes: Callable[[], int]) -> None:
        for command, code in ((b"MAIL FROM:<a@alpha.test>", "250 2.1.0"),
                              (b"RCPT TO:<b@local.test>", "250 2.1.5"),
                              (b"RSET", "250 2.0.0"),
                              (b"MAIL FROM:<a@alpha.test>", "250 2.1.0"),
                              (b"RCPT TO:<b@local.test>", "250 2.1.5")):
            before = writes()
            s.send(command + b"\r\n")
            assert s.reply().startswith(code)
            assert writes() - before == 1

    talk(tmp_path, peer)


def test_a_half_sent_next_command_does_not_hold_the_reply(tmp_path: Path) -> None:
    # RFC 2920 §3.2 (6): the reply goes out once no complete command line is buffered,
    # even if part of the next one is; the server must not wait for the rest of it.
    def peer(s: LineSocket, writes: Callable[[], int]) -> None:
        s.send(b"MAIL FROM:<a@alpha.test>\r\nRCPT TO:<b@loc")
        assert s.reply().startswith("250 2.1.0")
        s.send(b"al.test>\r\nRCPT TO:<c@local.test>\r\nRCPT TO:<d@lo")
        assert [s.reply()[:9] for _ in range(2)] == ["250 2.1.5", "250 2.1.5"]
        s.send(b"cal.test>\r\n")
        assert s.reply().startswith("250 2.1.5")
        assert s.buffered() == b""

    talk(tmp_path, peer)


def test_content_sent_before_the_354_still_gets_every_reply(tmp_path: Path) -> None:
    # A client that does not wait for 354 (not allowed, but seen): DATA's reply is never
    # held, and the end-of-data reply follows once the message is queued. (No count of
    # writes here: the spool and the worker pool write on the loop's thread too.)
    def peer(s: LineSocket, writes: Callable[[], int]) -> None:
        s.send(b"MAIL FROM:<a@alpha.test>\r\nRCPT TO:<b@local.test>\r\nDATA\r\n"
               + MESSAGE + b".\r\n")
        assert [s.reply()[:3] for _ in range(3)] == ["250", "250", "354"]
        assert s.reply().startswith("250 2.0.0 Ok: queued as ")

    talk(tmp_path, peer)
