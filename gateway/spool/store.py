"""The Spool: the durable queue between acceptance and delivery.

The owning process keeps every queued message's envelope and state in memory (the data
stays on disk) and changes files only through the group committer, so every change is
durable before the caller continues. Recovery at open: files under tmp/ are deleted
(never acknowledged), unreadable files move to corrupt/, state files without a message
are dropped, and every message found is handed to delivery as ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from gateway.config.schema import SpoolSection
from gateway.envelope import Envelope
from gateway.spool import control, metrics
from gateway.spool.commit import Change, GroupCommitter, fsync_directory
from gateway.spool.format import (
    PENDING,
    MessageState,
    RecipientState,
    SpoolFormatError,
    decode_header,
    encode_message,
    is_queue_id,
    new_queue_id,
)
from gateway.spool.layout import (
    STATES,
    SUBDIRS,
    Layout,
    QueueEntry,
    read_data,
    scan,
)
from gateway.spool.pool import FilePool
from gateway.spool.recent import RecentData

log = logging.getLogger("smimegate.spool")
GAUGE_INTERVAL = 5.0  # seconds between refreshes of the queue-size gauges


class SpoolLocked(RuntimeError):
    """Another process owns this spool directory."""


def _lock(layout: Layout, wait: float) -> int:
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise SpoolLocked(f"spool {layout.root} is in use by another process "
                                  f"(pid {holder})") from None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _recover(layout: Layout, lock_wait: float) -> tuple[int, list[QueueEntry]]:
    """Blocking part of open: directories, lock, cleanup, the scan. Returns the lock fd."""
    created = not layout.root.exists()
    # Mail is private: only the gateway's user may look (files are written 0600 too).
    layout.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for sub in SUBDIRS:
        (layout.root / sub).mkdir(mode=0o700, exist_ok=True)
    lock_fd = _lock(layout, lock_wait)
    try:
        for name in os.listdir(layout.tmp):
            os.unlink(layout.tmp / name)  # half-written: never acknowledged
        entries: list[QueueEntry] = []
        for item in scan(layout):
            if isinstance(item, QueueEntry):
                entries.append(item)
                continue
            name, error = item
            log.error("spool: quarantining unreadable %s: %s", name, error)
            metrics.QUARANTINED.inc()
            os.replace(layout.queue / name, layout.corrupt / name)
            with contextlib.suppress(FileNotFoundError):
                os.replace(layout.state / name, layout.corrupt / f"{name}.state")
        known = {e.queue_id for e in entries}
        for name in os.listdir(layout.state):
            if name not in known:
                os.unlink(layout.state / name)  # its message was removed before a crash
        for d in (layout.root, *(layout.root / s for s in SUBDIRS)):
            fsync_directory(d)
        if created and layout.root.parent.exists():
            fsync_directory(layout.root.parent)
    except BaseException:
        os.close(lock_fd)
        raise
    return lock_fd, entries


class Spool:
    """The durable queue. See the package docstring for the API and its guarantees."""

    def __init__(self, config: SpoolSection, layout: Layout, lock_fd: int,
                 entries: Iterable[QueueEntry]) -> None:
        self.config = config
        self.layout = layout
        self._lock_fd = lock_fd
        self._entries: dict[str, QueueEntry] = {e.queue_id: e for e in entries}
        self._reserved = 0  # enqueues under way, counted against max_messages
        self._ready: deque[str] = deque(self._entries)
        self._listeners: list[Callable[[], None]] = []
        # Two committers: new mail (what a client waits on for its 250) never queues
        # behind delivery's housekeeping (state files, removals). Order across them is
        # kept by awaiting: a message's state is only written after its enqueue returned,
        # and a bounce is enqueued before its message is removed.
        # Message files removed by delivery are overwritten by new mail (FilePool).
        pool = FilePool(layout.tmp)
        self._committer = GroupCommitter(layout.tmp, window=config.group_commit_window,
                                         method=config.sync, pool=pool)
        self._updates = GroupCommitter(layout.tmp, method=config.sync, pool=pool)
        self._recent = RecentData()  # new mail's data, for delivery's first read
        self._closed = False
        self._gauges_at = 0.0
        self._control_task = asyncio.get_running_loop().create_task(
            self._control_loop(), name="spool-control")

    @classmethod
    async def open(cls, config: SpoolSection, *, lock_wait: float = 10.0) -> Spool:
        """Create the directories, take the lock and recover after a crash."""
        layout = Layout(Path(config.directory))
        lock_fd, entries = await asyncio.to_thread(_recover, layout, lock_wait)
        spool = cls(config, layout, lock_fd, entries)
        spool._update_gauges()
        log.info("spool %s: %d messages recovered", layout.root, len(entries))
        return spool

    # -- the front end's side -------------------------------------------------------

    async def enqueue(self, envelope: Envelope, data: bytes, *,
                      queue_id: str | None = None, fresh: bool = False,
                      state: MessageState | None = None) -> str:
        """Make message and envelope durable; return the queue ID only then.

        With an explicit queue_id (a DSN's, derived from its message's) a second enqueue
        of the same ID is a no-op, so recovery can safely repeat it. fresh=True says the
        caller just made queue_id with new_queue_id() (gateway/handoff.py): it cannot
        exist yet, so the check (a stat on the event loop) is skipped. `state`, when
        given, is written in the same commit (after the message file) instead of
        "every recipient pending, due now".
        """
        if queue_id is not None:
            if not is_queue_id(queue_id):
                raise ValueError(f"{queue_id!r} is not a queue ID")
            if not fresh and (queue_id in self._entries
                              or self.layout.message_path(queue_id).exists()):
                return queue_id
        if not envelope.rcpt_tos:
            raise ValueError("an envelope without recipients cannot be queued")
        qid = queue_id or new_queue_id()
        if not envelope.received_at:  # the lifetime and delivery latency count from here
            envelope = dataclasses.replace(envelope, received_at=time.time())
        path = self.layout.message_path(qid)
        head = encode_message(envelope, b"")
        self._reserved += 1
        if state is not None and len(state.rcpts) != len(envelope.rcpt_tos):
            raise ValueError("the state must have one entry per recipient")
        writes = [(path, head + data)]
        if state is not None:
            writes.append((self.layout.state_path(qid), state.encode()))
        try:
            await self._committer.commit(Change(writes=writes))
        finally:
            self._reserved -= 1
        header_len = len(head)
        self._entries[qid] = QueueEntry(qid, envelope, len(data), header_len,
                                        state or MessageState.initial(len(envelope.rcpt_tos)))
        self._recent.put(qid, data)
        metrics.ENQUEUED.inc()
        self._make_ready(qid)
        return qid

    def has_room(self) -> bool:
        return len(self._entries) + self._reserved < self.config.max_messages

    def stats(self) -> dict[str, int]:
        """Messages by state (active, deferred, hold) and in all (total)."""
        now = time.time()
        counts = dict.fromkeys(STATES, 0)
        for entry in self._entries.values():
            counts[entry.status(now)] += 1
        counts["total"] = len(self._entries)
        return counts

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._control_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._control_task
        await self._committer.close()
        await self._updates.close()
        os.close(self._lock_fd)

    # -- delivery's side ------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever a message becomes ready (new, recovered, retried)."""
        self._listeners.append(callback)
        if self._ready:
            callback()

    def take_ready(self) -> list[str]:
        """IDs that became ready since the last call (each may have changed since)."""
        out = list(self._ready)
        self._ready.clear()
        return out

    def get(self, queue_id: str) -> QueueEntry | None:
        return self._entries.get(queue_id)

    def entries(self) -> list[QueueEntry]:
        return list(self._entries.values())

    async def read(self, entry: QueueEntry) -> bytes:
        """The message data of an entry (FileNotFoundError if deleted meanwhile)."""
        recent = self._recent.get(entry.queue_id)
        if recent is not None:
            return recent
        return await asyncio.to_thread(read_data, self.layout, entry)

    async def set_rcpts(self, queue_id: str, changes: dict[int, RecipientState]) -> bool:
        """Record recipients' new states durably. False if the message is gone."""
        entry = self._entries.get(queue_id)
        if entry is None:
            return False
        state = entry.state
        for index, rcpt in changes.items():
            state = state.with_rcpt(index, rcpt)
        await self._write_state(entry, state)
        return True

    async def remove(self, queue_id: str) -> None:
        """Forget a message for good (delivered, bounced or deleted)."""
        if self._entries.pop(queue_id, None) is None:
            return
        self._recent.drop(queue_id)
        # The message file's removal is made durable before the state file goes, so a
        # crash can never leave a message without the state that says who has it.
        await self._updates.commit(Change(
            removes=[self.layout.message_path(queue_id)],
            removes_lazy=[self.layout.state_path(queue_id)]))

    async def _write_state(self, entry: QueueEntry, state: MessageState) -> None:
        # Memory first, so changes made while this write waits build on it; the files are
        # renamed in submission order, so the last rename holds every change.
        entry.state = state
        await self._updates.commit(Change(
            writes=[(self.layout.state_path(entry.queue_id), state.encode())]))

    def _make_ready(self, queue_id: str) -> None:
        self._ready.append(queue_id)
        for callback in self._listeners:
            callback()

    # -- operator commands ----------------------------------------------------------

    async def apply(self, command: control.Command) -> str:
        """Apply a `smimegate queue` command; returns what was done, for the operator."""
        if command.op == "adopt":
            return await self._adopt(command)
        if command.queue_id is None:
            ids = [e.queue_id for e in self._entries.values() if not e.state.hold]
        else:
            if command.queue_id not in self._entries:
                raise control.CommandError(f"no message {command.queue_id} in the queue")
            ids = [command.queue_id]
        for qid in ids:
            entry = self._entries.get(qid)
            if entry is None:
                continue
            if command.op == "delete":
                await self.remove(qid)
            elif command.op == "hold":
                await self._write_state(entry, MessageState(entry.state.rcpts, hold=True))
            elif command.op == "release":
                await self._write_state(entry, MessageState(entry.state.rcpts, hold=False))
                self._make_ready(qid)
            else:  # retry: every pending recipient due now
                rcpts = tuple(RecipientState(r.status, r.attempts, 0.0, r.reply, r.remote)
                              if r.status == PENDING else r for r in entry.state.rcpts)
                await self._write_state(entry, MessageState(rcpts, hold=entry.state.hold))
                self._make_ready(qid)
        self._update_gauges()
        done = {"delete": "deleted", "hold": "held", "release": "released",
                "retry": "scheduled for retry"}[command.op]
        return f"{len(ids)} message(s) {done}"

    async def _adopt(self, command: control.Command) -> str:
        """Enqueue the message file an adopt command names (control.py), then delete it."""
        qid = command.queue_id
        assert qid is not None
        path = self.layout.control / command.message
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            if qid in self._entries:  # applied before a crash that kept the command
                return f"already queued as {qid}"
            raise control.CommandError(f"message file {command.message} is missing") from None
        try:
            envelope, offset = decode_header(raw)
        except SpoolFormatError as e:
            raise control.CommandError(f"message file {command.message}: {e}") from None
        if not envelope.rcpt_tos:
            raise control.CommandError(f"message file {command.message} has no recipients")
        state = None
        if command.first_attempt:
            first = RecipientState(PENDING, 1, 0.0, command.first_attempt, "")
            state = MessageState(tuple(first for _ in envelope.rcpt_tos))
        await self.enqueue(envelope, raw[offset:], queue_id=qid, state=state)
        await asyncio.to_thread(_unlink_quietly, path)
        return f"queued as {qid}"

    async def _control_loop(self) -> None:
        while True:
            for path in await asyncio.to_thread(control.pending, self.layout.control):
                try:
                    command = control.Command.decode(await asyncio.to_thread(path.read_bytes))
                    done = await self.apply(command)
                    log.info("spool: queue command %s %s: %s", command.op,
                             command.queue_id or "(all)", done)
                    outcome = control.Outcome(True, done)
                except control.CommandError as e:
                    log.warning("spool: ignoring command %s: %s", path.name, e)
                    outcome = control.Outcome(False, str(e))
                except FileNotFoundError:
                    continue
                except OSError as e:  # the spool's disk: try the command again next time
                    log.error("spool: command %s failed: %s", path.name, e)
                    break
                # The answer first, so the waiting CLI finds it when the command is gone.
                await asyncio.to_thread(control.answer, path, outcome)
                await asyncio.to_thread(_unlink_quietly, path)
            if time.monotonic() - self._gauges_at >= GAUGE_INTERVAL:
                self._update_gauges()  # O(queue): not on every poll of a large queue
            await asyncio.sleep(self.config.control_poll)

    def _update_gauges(self) -> None:
        self._gauges_at = time.monotonic()
        for state, n in self.stats().items():
            if state != "total":
                metrics.QUEUE_MESSAGES.labels(state).set(n)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


__all__ = ["Spool", "SpoolFormatError", "SpoolLocked"]
