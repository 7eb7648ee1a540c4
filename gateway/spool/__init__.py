"""The durable spool: accepted mail on disk until delivery is done with it.

Owns `spool.directory` (layout in gateway.spool.layout, file formats in
gateway.spool.format). Guarantees:

- Nothing half-written is ever visible or acknowledged: every file is written under
  tmp/, fdatasync'd, renamed into place and its directory fsync'd (gateway.spool.commit).
- Group commit: concurrent changes share one fsync round (one round covers all that
  arrived while the previous round ran), off the event loop in a dedicated thread.
- Per-recipient state (pending / delivered / failed, attempts, next attempt, last reply)
  is recorded durably before delivery moves on, so a delivered recipient is never
  delivered again after a restart.
- Crash recovery at open; one owner per directory (flock on DIR/lock); operators'
  `smimegate queue` commands reach a running owner as command files (gateway.spool.control).

API for the front end:

    spool = await Spool.open(config.spool)          # creates dirs, takes the lock (waits
                                                     # up to lock_wait=10 s), recovers
    queue_id = await spool.enqueue(envelope, data)   # returns once durable (OSError if not)
    spool.has_room() -> bool                         # False at spool.max_messages (451 4.3.2)
    spool.stats() -> dict[str, int]                  # active, deferred, hold, total
    await spool.close()                              # after delivery has stopped

API for delivery (gateway.delivery): add_listener(callback), take_ready() -> [ID],
get(ID) -> QueueEntry | None, entries(), await read(entry) -> bytes,
await set_rcpts(ID, {index: RecipientState}), await remove(ID), and
await enqueue(..., queue_id=dsn_queue_id(ID)) for bounces (idempotent). Operators:
await apply(Command(op, ID)) (gateway.spool.cli, gateway.spool.control).
"""

from gateway.spool.control import Command, CommandError
from gateway.spool.format import (
    DELIVERED,
    FAILED,
    PENDING,
    MessageState,
    RecipientState,
    SpoolFormatError,
    dsn_queue_id,
    is_queue_id,
)
from gateway.spool.layout import QueueEntry
from gateway.spool.store import Spool, SpoolLocked

__all__ = [
    "DELIVERED",
    "FAILED",
    "PENDING",
    "Command",
    "CommandError",
    "MessageState",
    "QueueEntry",
    "RecipientState",
    "Spool",
    "SpoolFormatError",
    "SpoolLocked",
    "dsn_queue_id",
    "is_queue_id",
]
