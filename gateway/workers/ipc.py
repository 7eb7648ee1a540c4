"""The parent's side of the worker wire: multiprocessing.connection frames on asyncio.

A frame is a signed 32-bit big-endian size followed by that many bytes, or -1 followed
by an unsigned 64-bit size for frames past 2 GiB: exactly what
multiprocessing.connection.Connection.send_bytes writes, so the worker uses the stdlib
blocking Connection and the parent never blocks its event loop on a read.
"""

from __future__ import annotations

import asyncio
import struct

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")


def frame(payload: bytes) -> list[bytes]:
    """The pieces to write for one frame (header, payload) without copying the payload."""
    n = len(payload)
    if n > 0x7FFFFFFF:
        return [_SHORT.pack(-1) + _LONG.pack(n), payload]
    return [_SHORT.pack(n), payload]


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One frame's payload; IncompleteReadError at EOF (the worker is gone)."""
    (n,) = _SHORT.unpack(await reader.readexactly(4))
    if n == -1:
        (n,) = _LONG.unpack(await reader.readexactly(8))
    elif n < 0:
        raise ValueError(f"bad frame size {n} from worker")
    return await reader.readexactly(n)
