"""Where the spool keeps what, and reading it back (used by recovery and `queue list`).

    DIR/lock        flock'd by the process that owns the spool (the gateway, or the CLI
                    when no gateway runs); holds that process's pid, for operators
    DIR/tmp/        files being written, and removed message files kept for new mail
                    to overwrite (pooled.*); anything here was never acknowledged
    DIR/queue/ID    one file per message, written once (gateway.spool.format)
    DIR/state/ID    per-recipient state, replaced atomically; absent = all pending
    DIR/control/    `smimegate queue` commands waiting for the running gateway
    DIR/corrupt/    files recovery could not read, kept for a human, never delivered

Readers that do not own the spool (the CLI listing a live queue) tolerate files that
vanish between the directory listing and the read: the message was just delivered.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gateway.envelope import Envelope
from gateway.spool.format import (
    MAGIC,
    PENDING,
    MessageState,
    SpoolFormatError,
    decode_header,
    is_queue_id,
)

SUBDIRS = ("tmp", "queue", "state", "control", "corrupt")
ACTIVE, DEFERRED, HOLD = "active", "deferred", "hold"
STATES = (ACTIVE, DEFERRED, HOLD)


@dataclass(slots=True)
class QueueEntry:
    """A queued message as the spool knows it in memory: envelope, size and state."""

    queue_id: str
    envelope: Envelope
    size: int  # bytes of message data
    data_offset: int  # where the data starts in the message file
    state: MessageState

    def status(self, now: float | None = None) -> str:
        """active (due now or finishing), deferred (waiting to retry) or hold."""
        if self.state.hold:
            return HOLD
        now = time.time() if now is None else now
        waits = [r.next_attempt for r in self.state.rcpts if r.status == PENDING]
        if not waits or min(waits) <= now:
            return ACTIVE
        return DEFERRED

    def next_due(self) -> float | None:
        """When the earliest pending recipient is due; None if none is pending."""
        waits = [r.next_attempt for r in self.state.rcpts if r.status == PENDING]
        return min(waits) if waits else None


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def control(self) -> Path:
        return self.root / "control"

    @property
    def corrupt(self) -> Path:
        return self.root / "corrupt"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    def message_path(self, queue_id: str) -> Path:
        return self.queue / queue_id

    def state_path(self, queue_id: str) -> Path:
        return self.state / queue_id

    def exists(self) -> bool:
        return self.queue.is_dir()


def read_entry(layout: Layout, queue_id: str) -> QueueEntry:
    """A message's entry from its files. FileNotFoundError if it is gone;
    SpoolFormatError if a file is unreadable."""
    path = layout.message_path(queue_id)
    with open(path, "rb") as f:
        head = f.read(4096)
        nl = head.find(b"\n")
        if head.startswith(MAGIC) and nl > 0 and head[len(MAGIC):nl].isdigit():
            need = nl + 2 + int(head[len(MAGIC):nl])
            if need > len(head):
                head += f.read(need - len(head))
        file_size = still_queued(path, f)
        envelope, offset = decode_header(head)
        size = file_size - offset
    try:
        raw_state = layout.state_path(queue_id).read_bytes()
    except FileNotFoundError:
        state = MessageState.initial(len(envelope.rcpt_tos))
    else:
        state = MessageState.decode(raw_state, len(envelope.rcpt_tos))
    return QueueEntry(queue_id, envelope, size, offset, state)


def read_data(layout: Layout, entry: QueueEntry) -> bytes:
    """A message's data. FileNotFoundError if it left the queue, even while being read."""
    path = layout.message_path(entry.queue_id)
    with open(path, "rb") as f:
        f.seek(entry.data_offset)
        data = f.read()
        still_queued(path, f)
        return data


def still_queued(path: Path, f: BinaryIO) -> int:
    """The size of the open message file `f`, after checking that it is still the file
    queued at `path`; FileNotFoundError if not.

    A removed message file may be overwritten by new mail (gateway.spool.pool.FilePool),
    so what was read from an open file is that message's only if the file was still in
    queue/ under its name after the read: files are rewritten only once out of queue/.
    """
    st = os.fstat(f.fileno())
    if os.stat(path).st_ino != st.st_ino:
        raise FileNotFoundError(errno.ENOENT, "message left the queue while being read",
                                str(path))
    return st.st_size


def scan(layout: Layout) -> Iterator[QueueEntry | tuple[str, SpoolFormatError]]:
    """Every message in the queue, in arrival order; unreadable ones as (name, error)."""
    try:
        names = sorted(os.listdir(layout.queue))
    except FileNotFoundError:
        return
    for name in names:
        if not is_queue_id(name):
            yield name, SpoolFormatError("file name is not a queue ID")
            continue
        try:
            yield read_entry(layout, name)
        except FileNotFoundError:
            continue
        except SpoolFormatError as e:
            yield name, e
