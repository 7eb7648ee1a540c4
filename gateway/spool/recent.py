"""Recently queued message data, kept in memory for delivery's first read of it.

Delivery sends a new message moments after the spool made it durable; reading it back
from the file cost a thread hop and an open/read/stat per message on the front end's
busiest path. The spool keeps the bytes it was given instead (no copy: the same object),
bounded in bytes, oldest dropped first, and forgets them when the message is removed;
anything not held here is read from its file. Never the source of truth: the file was
durable before its entry was put here, and its content never changes.
"""

from __future__ import annotations

DEFAULT_LIMIT = 32 * 1024 * 1024  # bytes held at most


class RecentData:
    """Queue ID → message data, for at most `limit` bytes in all."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.bytes = 0
        self._data: dict[str, bytes] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._data)

    def put(self, queue_id: str, data: bytes) -> None:
        # One message may take at most an eighth: a few large ones must not push out
        # everything that is about to be delivered.
        if len(data) > self.limit // 8:
            return
        self.drop(queue_id)
        self._data[queue_id] = data
        self.bytes += len(data)
        while self.bytes > self.limit:
            self.drop(next(iter(self._data)))

    def get(self, queue_id: str) -> bytes | None:
        return self._data.get(queue_id)

    def drop(self, queue_id: str) -> None:
        data = self._data.pop(queue_id, None)
        if data is not None:
            self.bytes -= len(data)
