"""Group commit: many callers' file changes made durable by one fsync round.

A caller submits a `Change` (files to create or replace, files to remove) and waits. One
committer task takes everything submitted so far as a batch and hands it to a thread
(blocking fsync never runs on the event loop), which does, in this order:

1. write each new file under `tmp/`;
2. make their data durable: `spool.sync = "fsync"` fdatasyncs every file, all issued at
   once from a small pool so the filesystem folds them into one journal commit;
   `"syncfs"` makes one syncfs(2) call for the whole batch (best when the spool has its
   own filesystem: it flushes everything written there);
3. rename each into place (atomic: a reader sees the old file or the whole new one);
4. unlink the files whose removal must be durable (message files);
5. make the names durable: fsync each directory touched once per batch (or one more
   syncfs), whatever the batch size;
6. unlink the files whose removal may be lost in a crash (state files: recovery drops a
   state file without its message).

With a FilePool (gateway.spool.pool), step 4 moves message files aside under tmp/
instead of unlinking them, to join the pool after step 5, and step 1 overwrites a pooled
file instead of creating one: the same durability, without an inode allocated and freed
per message.

Only then are the callers' futures resolved. Changes that arrive while a round runs form
the next batch, so the fsync cost is shared by everything that arrived meanwhile. Under
load (the previous round held more than one change) a round start also waits up to the
window to gather more; a lone writer never waits. One failing change (ENOSPC on its
write) fails that caller only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from gateway.spool import metrics
from gateway.spool.pool import FilePool

# A batch is capped so one round's latency stays bounded under a flood.
MAX_BATCH = 512
SYNC_THREADS = 16  # fdatasync calls in flight at once within a round


@dataclass(slots=True)
class Change:
    """Files one caller needs durable together."""

    writes: Sequence[tuple[Path, bytes]] = ()  # final path, content
    removes: Sequence[Path] = ()  # removal fsync'd (the directory) before the reply
    removes_lazy: Sequence[Path] = ()  # removal need not survive a crash
    future: asyncio.Future[None] | None = field(default=None, repr=False)


@dataclass(slots=True)
class CommitStats:
    rounds: int = 0
    changes: int = 0
    fsyncs: int = 0  # fdatasync / fsync / syncfs calls, for the benchmark's fsyncs per message
    reused: int = 0  # files written by overwriting a pooled file instead of creating one


class GroupCommitter:
    def __init__(self, tmp_dir: Path, *, window: float = 0.0, method: str = "fsync",
                 pool: FilePool | None = None) -> None:
        if method == "syncfs" and not HAVE_SYNCFS:
            raise ValueError("spool.sync = \"syncfs\" needs Linux syncfs(2)")
        self._tmp = tmp_dir
        self._pool = pool  # shared by a spool's committers; None: create and unlink
        self._window = window
        self._method = method
        self._queue: list[Change] = []
        self._wakeup = asyncio.Event()
        self._closed = False
        self._serial = 0
        self._last_batch = 0
        self.stats = CommitStats()
        # One thread: the rounds are sequential by design (a rename order is a write order).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-commit")
        self._sync_pool = ThreadPoolExecutor(max_workers=SYNC_THREADS,
                                             thread_name_prefix="spool-fsync")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="spool-commit")

    async def commit(self, change: Change) -> None:
        """Return once the change is durable; raise OSError if it could not be made so."""
        if self._closed:
            raise RuntimeError("the spool is closed")
        change.future = asyncio.get_running_loop().create_future()
        self._queue.append(change)
        self._wakeup.set()
        await asyncio.shield(change.future)

    async def close(self) -> None:
        """Finish every submitted change, then stop the thread."""
        self._closed = True
        self._wakeup.set()
        await self._task
        self._executor.shutdown(wait=True)
        self._sync_pool.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._queue:
                if self._closed:
                    return
                continue
            if (self._window > 0 and self._last_batch > 1 and not self._closed
                    and len(self._queue) < MAX_BATCH):
                await asyncio.sleep(self._window)
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            self._last_batch = len(batch)
            if self._queue:
                self._wakeup.set()
            started = time.perf_counter()
            try:
                errors, fsyncs = await loop.run_in_executor(self._executor, self._apply, batch)
            except OSError as e:  # a directory fsync failed: nothing in the batch is durable
                errors, fsyncs = [e] * len(batch), 0
            metrics.FSYNC_SECONDS.observe(time.perf_counter() - started)
            metrics.GROUP_SIZE.observe(len(batch))
            self.stats.rounds += 1
            self.stats.changes += len(batch)
            self.stats.fsyncs += fsyncs
            for change, error in zip(batch, errors, strict=True):
                assert change.future is not None
                if change.future.done():
                    continue
                if error is None:
                    change.future.set_result(None)
                else:
                    change.future.set_exception(error)

    def _apply(self, batch: list[Change]) -> tuple[list[OSError | None], int]:
        """One round, in the committer's thread. Returns per-change errors and sync calls."""
        errors: list[OSError | None] = [None] * len(batch)
        written: list[list[tuple[int, Path, Path]]] = [[] for _ in batch]  # fd, tmp, final
        for i, change in enumerate(batch):
            try:
                for final, content in change.writes:
                    reused = self._pool.take() if self._pool is not None else None
                    if reused is not None:
                        tmp, _ = reused
                        fd = _overwrite(tmp, content)
                        if fd is not None:
                            self.stats.reused += 1
                            written[i].append((fd, tmp, final))
                            continue
                    self._serial += 1
                    # Unique across directories, committers and processes.
                    tmp = self._tmp / (f"{final.parent.name}-{final.name}.{os.getpid()}."
                                       f"{id(self):x}.{self._serial}")
                    written[i].append((_write(tmp, content), tmp, final))
            except OSError as e:
                errors[i] = e
        fds = [(i, fd) for i, files in enumerate(written) if errors[i] is None
               for fd, _, _ in files]
        syncs = self._sync_files(fds, errors)
        for i, files in enumerate(written):
            for fd, tmp, _ in files:
                os.close(fd)
                if errors[i] is not None:
                    _unlink_quietly(tmp)
        dirs: set[Path] = set()
        aside: list[tuple[Path, int]] = []  # removed files for the pool, once durable
        for i, change in enumerate(batch):
            if errors[i] is not None:
                continue
            try:
                for _, tmp, final in written[i]:
                    os.rename(tmp, final)
                    dirs.add(final.parent)
                for path in change.removes:
                    kept = self._pool.set_aside(path) if self._pool is not None else None
                    if kept is None:
                        _unlink_quietly(path)
                    else:
                        aside.append(kept)
                    dirs.add(path.parent)
            except OSError as e:
                errors[i] = e
                for _, tmp, _ in written[i]:
                    _unlink_quietly(tmp)
        try:
            if dirs and self._method == "syncfs":
                _syncfs(self._tmp)
                syncs += 1
            else:
                for d in sorted(dirs):
                    fsync_directory(d)
                    syncs += 1
        except OSError:
            if self._pool is not None:
                self._pool.discard(aside)
            raise
        if self._pool is not None:
            self._pool.add(aside)  # the directories are synced: the removals are durable
        for i, change in enumerate(batch):
            if errors[i] is None:
                for path in change.removes_lazy:
                    _unlink_quietly(path)
        if self._pool is not None:
            self._pool.trim()
        return errors, syncs

    def _sync_files(self, fds: list[tuple[int, int]], errors: list[OSError | None]) -> int:
        """Make the written files' data durable; marks the changes whose sync failed."""
        if not fds:
            return 0
        if self._method == "syncfs":
            try:
                _syncfs(self._tmp)
            except OSError as e:
                for i, _ in fds:
                    errors[i] = e
            return 1
        if len(fds) == 1:  # a lone writer: no hop to the pool
            errors[fds[0][0]] = _fdatasync(fds[0][1]) or errors[fds[0][0]]
            return 1
        # Issued together so the filesystem can fold them into one journal commit and one
        # device flush; one after the other, each would wait for its own.
        for (i, _), error in zip(fds, self._sync_pool.map(_fdatasync, [fd for _, fd in fds]),
                                 strict=True):
            if error is not None:
                errors[i] = error
        return len(fds)


def _write(path: Path, content: bytes) -> int:
    """Write a new file; returns its open descriptor (not yet synced)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        os.close(fd)
        _unlink_quietly(path)
        raise
    return fd


def _overwrite(path: Path, content: bytes) -> int | None:
    """Write `content` over a pooled file; its open descriptor (not yet synced), or None
    if the file is gone. Overwriting in place reuses its blocks; whatever lies past the
    new length is cut off. On a write error the file is deleted and the error raised."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return None
    try:
        view = memoryview(content)
        offset = 0
        while offset < len(view):
            offset += os.pwrite(fd, view[offset:], offset)
        os.ftruncate(fd, len(content))
    except OSError:
        os.close(fd)
        _unlink_quietly(path)
        raise
    return fd


def _fdatasync(fd: int) -> OSError | None:
    try:
        os.fdatasync(fd)
    except OSError as e:
        return e
    return None


_libc = ctypes.CDLL(None, use_errno=True)
HAVE_SYNCFS = hasattr(_libc, "syncfs")


def _syncfs(path: Path) -> None:
    """syncfs(2): flush everything written to the filesystem holding `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(tmp: Path, final: Path, *parts: bytes) -> None:
    """One file written alone, outside any commit round: parts to `tmp` (a new file,
    0600), fsync, renamed to `final`, final's directory fsync'd. For the spool's control
    files and the quarantine store; queued mail goes through GroupCommitter."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    fsync_directory(final.parent)
