"""The certificate cache's errors and the records it hands out, shared by the twin and
the native module (which imports them from the twin, `_cache_py`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple


class CacheError(Exception):
    """Base of every error the certificate cache raises."""


class CacheArgumentError(CacheError, ValueError):
    """A name, size, key, certificate list or expiry given to the cache is unusable."""


class CacheKeyError(CacheArgumentError):
    """A key is not a str, is empty, or is longer than MAX_KEY octets of UTF-8."""


class EntryTooLargeError(CacheArgumentError):
    """An entry cannot fit in the arena (or in one record)."""


class CacheFormatError(CacheError):
    """The shared-memory file is not a certificate cache of this version and layout."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class CacheNotFoundError(CacheError):
    """No shared-memory file of that name exists (the writer has not created it)."""


class CacheStateError(CacheError):
    """The handle is closed, or a reader was asked to write."""


class CacheEntry(NamedTuple):
    """What the cache holds for a key. A NamedTuple, not a dataclass: it is built on
    every hit, and a tuple is several times cheaper to make."""

    ders: tuple[bytes, ...]  # DER certificates, in the order they were put
    expires_at: float  # Unix time after which it is stale
    negative: bool  # "no certificate here", cached until expires_at


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters for metrics: writer-side ones live in the shared header (the same for
    every process), reader-side ones belong to the process that asks."""

    implementation: str  # "python" or "native"
    writer: bool  # whether this handle is the writer
    slots: int
    entries: int  # occupied slots
    arena_bytes: int
    arena_used: int  # bytes between the oldest and newest record, dead ones included
    puts: int  # writer: put() and put_negative() calls stored
    negative_puts: int  # writer: of which put_negative()
    deletes: int  # writer: delete() calls that removed an entry
    evictions_set: int  # writer: entries dropped because their set of 8 slots was full
    evictions_arena: int  # writer: entries dropped because the arena was full
    hits: int  # this process: fresh entries returned
    stale_hits: int  # this process: expired entries returned with allow_stale=True
    misses: int  # this process: None returned (absent, expired, or retries exhausted)
    expired_misses: int  # this process: misses because the entry had expired
    torn_retries: int  # this process: slot reads retried because the writer was in it
    torn_misses: int  # this process: misses because MAX_RETRIES tries all raced the writer
