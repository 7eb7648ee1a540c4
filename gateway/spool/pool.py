"""Removed message files kept for new mail to overwrite: no inode made and freed per message.

Why: every message costs the filesystem a file creation at enqueue and a removal at
delivery. On ext4 without a journal (the benchmark VMs' disks) each creation also steps
over every inode freed in the last minutes (fs/ext4/ialloc.c, recently_deleted()); under
load that scan was the front end's largest kernel cost, and it grows the longer the load
runs. The group committer (gateway.spool.commit) uses the pool; nothing else needs to
know of it but readers of message files (gateway.spool.layout.still_queued).
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path


class FilePool:
    """Removed message files kept under tmp/ for later writes to overwrite.

    A file to remove is renamed out of queue/ instead of unlinked (set_aside); the queue
    directory's fsync makes the removal durable exactly as before, and only then does
    the file join the pool (add). A later write takes it, overwrites it from offset 0,
    truncates it to the new length, and goes through the same fdatasync and rename as a
    new file.

    Safe: a reader that opened a message file just before its removal (delivery,
    `smimegate queue`) checks after reading that the file is still queued under its
    name (gateway.spool.layout.still_queued), so it never takes new mail for the old;
    a file may also be made to wait `delay` seconds before reuse. Pooled files live
    under tmp/, which recovery empties, and are never acknowledged. Bounded: at most
    `limit` files of at most `max_size` bytes; files unused for `idle` seconds are
    deleted at the next commit round. Used from both of a spool's committer threads,
    hence the lock.
    """

    def __init__(self, directory: Path, *, limit: int = 1024, max_size: int = 256 * 1024,
                 delay: float = 0.0, idle: float = 60.0) -> None:
        self.directory = directory
        self.limit = limit
        self.max_size = max_size
        self.delay = delay
        self.idle = idle
        self._files: collections.deque[tuple[float, Path, int]] = collections.deque()
        self._lock = threading.Lock()
        self._serial = 0
        self._aside = 0  # set aside, not yet added: counted against the limit

    def __len__(self) -> int:
        return len(self._files)

    def set_aside(self, path: Path) -> tuple[Path, int] | None:
        """Move a file to be removed under tmp/ for the pool: (its new path, its size),
        or None if it is not kept (too big, pool full, already gone): unlink it then.
        The caller hands it to add() only once the removal is durable."""
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return None
        with self._lock:
            if size > self.max_size or len(self._files) + self._aside >= self.limit:
                return None
            self._serial += 1
            self._aside += 1
            pooled = self.directory / f"pooled.{os.getpid()}.{id(self):x}.{self._serial}"
        try:
            os.rename(path, pooled)
        except FileNotFoundError:
            with self._lock:
                self._aside -= 1
            return None
        return pooled, size

    def add(self, files: Sequence[tuple[Path, int]]) -> None:
        """Offer files set aside for reuse. Only after their directory's fsync: a file
        overwritten while its old queue entry could still come back after a crash
        would bring that message back with new mail's content."""
        ready = time.monotonic() + self.delay
        with self._lock:
            self._aside -= len(files)
            self._files.extend((ready, path, size) for path, size in files)

    def discard(self, files: Sequence[tuple[Path, int]]) -> None:
        """Delete files set aside whose removal could not be made durable."""
        with self._lock:
            self._aside -= len(files)
        for path, _ in files:
            _unlink_quietly(path)

    def take(self) -> tuple[Path, int] | None:
        """A pooled file that has waited its delay, and its size; None if there is none."""
        now = time.monotonic()
        with self._lock:
            if self._files and self._files[0][0] <= now:
                _, path, size = self._files.popleft()
                return path, size
        return None

    def trim(self) -> None:
        """Delete the files nobody has reused for `idle` seconds (the load is gone)."""
        cutoff = time.monotonic() - self.delay - self.idle
        stale = []
        with self._lock:
            while self._files and self._files[0][0] <= cutoff:
                stale.append(self._files.popleft()[1])
        for path in stale:
            _unlink_quietly(path)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
