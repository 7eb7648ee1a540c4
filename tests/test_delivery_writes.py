"""The delivery client's writes on the wire: one per pipelined group, one per body.

A blocking next hop on its own thread answers a real SmtpConnection on loopback; the
event loop's thread runs only the client, so its write syscalls are the client's writes
(tests.write_count). The bytes the next hop receives must be exactly RFC 5321's: the
batching changes how many writes carry them, never what they say.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

import uvloop
from hypothesis import given
from hypothesis import strategies as st

from gateway.delivery.client import SmtpConnection, dot_stuff, dot_stuff_parts
from tests.write_count import LineSocket, loop_thread_id, thread_writes


def reference_stuffing(data: bytes) -> bytes:
    """RFC 5321 §4.5.2 the plain way (a copy per step): the specification."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


@given(st.lists(st.sampled_from([b".", b"\r\n", b"\r", b"\n", b"a", b"..", b"\r\n."]),
                max_size=30).map(b"".join))
def test_stuffed_parts_are_the_reference_stuffing_without_a_copy(data: bytes) -> None:
    parts = dot_stuff_parts(data)
    assert b"".join(parts) == reference_stuffing(data) == dot_stuff(data)
    for part in parts:  # the body travels as views of itself; only dots and CRLFs are new
        assert (isinstance(part, memoryview) and part.obj is data) or len(part) <= 5


class NextHop:
    """A next hop on a thread: offers `extensions`, answers every command with 250
    (354 to DATA), records what arrived between its replies."""

    def __init__(self, extensions: tuple[str, ...]) -> None:
        self.extensions = extensions
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.commands: list[bytes] = []
        self.bodies: list[bytes] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            s = LineSocket(conn)
            s.send(b"220 hop.test ESMTP\r\n")
            assert s.line().startswith(b"EHLO ")
            lines = ["hop.test", *self.extensions]
            s.send(b"".join(f"250{'-' if i < len(lines) - 1 else ' '}{x}\r\n".encode()
                            for i, x in enumerate(lines)))
            while True:
                line = s.line()
                self.commands.append(line)
                if line == b"QUIT\r\n":
                    s.send(b"221 bye\r\n")
                    break
                if line != b"DATA\r\n":
                    s.send(b"250 2.0.0 ok\r\n")
                    continue
                s.send(b"354 go ahead\r\n")
                body = b""
                while not body.endswith(b"\r\n.\r\n") and body != b".\r\n":
                    body += s.line()
                self.bodies.append(body)
                s.send(b"250 2.0.0 queued\r\n")
            s.close()
        except BaseException as e:  # reported by the test, not lost on the thread
            self.error = e
        finally:
            self.listener.close()


def deliver(extensions: tuple[str, ...], messages: list[tuple[list[str], bytes]],
            check: Callable[[NextHop, list[int]], None]) -> None:
    """Send `messages` over one connection; `check` gets the hop and the loop thread's
    writes per transaction."""
    hop = NextHop(extensions)

    async def go() -> None:
        loop_id = loop_thread_id()
        conn = await SmtpConnection.connect("hop.test", "127.0.0.1", hop.port,
                                            helo="gw.test", tls="none", tls_context=None,
                                            connect_timeout=5, command_timeout=10,
                                            data_timeout=10)
        writes = []
        for rcpts, data in messages:
            before = thread_writes(loop_id)
            result = await conn.send("a@alpha.test", rcpts, data)
            writes.append(thread_writes(loop_id) - before)
            assert [r.code for r in result.replies] == [250] * len(rcpts)
        await conn.quit()
        await asyncio.to_thread(hop.thread.join, 10)
        assert hop.error is None, hop.error
        check(hop, writes)

    uvloop.run(go())


BODY = b"Subject: x\r\n\r\n" + b"line of text\r\n" * 800  # about 11 KB
DOTTED = b"Subject: y\r\n\r\n.starts with a dot\r\n" + b"text\r\n.\r\n" * 50 + b"end"


def test_with_pipelining_a_transaction_is_two_writes() -> None:
    def check(hop: NextHop, writes: list[int]) -> None:
        # MAIL, every RCPT and DATA in one write (RFC 2920 §3.1); the body with its
        # dots stuffed and its terminating dot in another.
        assert writes == [2, 2]
        assert hop.bodies == [reference_stuffing(BODY), reference_stuffing(DOTTED)]
        assert hop.commands[:4] == [b"MAIL FROM:<a@alpha.test> SIZE=%d\r\n" % len(BODY),
                                    b"RCPT TO:<b@beta.test>\r\n",
                                    b"RCPT TO:<c@beta.test>\r\n", b"DATA\r\n"]

    deliver(("PIPELINING", "SIZE 1000000"),
            [(["b@beta.test", "c@beta.test"], BODY), (["d@beta.test"], DOTTED)], check)


def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    def check(hop: NextHop, writes: list[int]) -> None:
        assert writes == [4 + 1, 3 + 1]  # MAIL, RCPT…, DATA one by one, then the body
        assert hop.bodies == [reference_stuffing(BODY), reference_stuffing(DOTTED)]

    deliver((), [(["b@beta.test", "c@beta.test"], BODY), (["d@beta.test"], DOTTED)], check)
