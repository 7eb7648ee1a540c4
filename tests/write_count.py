"""Counting a thread's write system calls, for the tests of reply and command batching.

Linux counts every write(2)/writev(2) a thread makes in /proc/PID/task/TID/io
("syscw"); libuv and asyncio send on TCP sockets with exactly these calls. A test runs
the side it measures on the event loop's thread and its peer on another thread with a
blocking socket, so the loop thread's count is the measured side's writes alone.
"""

from __future__ import annotations

import os
import socket
import threading


def thread_writes(native_id: int) -> int:
    """Write syscalls made so far by the thread with this native id."""
    with open(f"/proc/{os.getpid()}/task/{native_id}/io", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "syscw":
                return int(value)
    raise AssertionError("no syscw in /proc/.../io")


def loop_thread_id() -> int:
    """The native id of the calling (event loop) thread."""
    return threading.get_native_id()


class LineSocket:
    """A blocking SMTP peer: sends exactly what it is told, reads replies by line."""

    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        sock.settimeout(timeout)  # a reply held back fails the test, never hangs it
        self.sock = sock
        self._buffer = b""

    @classmethod
    def connect(cls, port: int) -> LineSocket:
        return cls(socket.create_connection(("127.0.0.1", port)))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed; had {self._buffer!r}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def reply(self) -> str:
        """One reply, its lines joined by newlines."""
        lines = []
        while True:
            text = self.line().decode("ascii").rstrip("\r\n")
            lines.append(text)
            if text[3:4] != "-":
                return "\n".join(lines)

    def buffered(self) -> bytes:
        """What has arrived and not yet been read as a line."""
        return self._buffer

    def close(self) -> None:
        self.sock.close()

