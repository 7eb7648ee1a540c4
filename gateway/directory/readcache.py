"""A short-lived in-process cache of lookup answers, per name.

Public reads are cacheable for minutes anyway (Cache-Control), so reusing what was read
from the database for a second or two changes nothing a client can rely on, and takes
the database round trip, row decoding, JSON encoding and hashing off most lookups. A
write through this process clears the cache at once, so a client never sees its own
publish or revocation undone; other replicas' writes show within the TTL.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

V = TypeVar("V")
MAX_ENTRIES = 100_000


class ReadCache(Generic[V]):
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, V]] = {}
        self.generation = 0  # bumped by clear(): a read begun before a write is not kept
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def put(self, key: str, value: V, generation: int) -> None:
        """Keep value, read when the cache was at generation, unless a write came since."""
        if self.ttl <= 0 or generation != self.generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
