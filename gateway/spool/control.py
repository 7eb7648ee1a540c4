"""`smimegate queue` commands for a spool that a running gateway owns.

Only the process holding the spool's lock changes its files; everyone else asks it. The
CLI writes a command file atomically (write to `control/.NAME.tmp`, fsync, rename to
`control/NAME.cmd`); the owner polls `control/` every `spool.control_poll` seconds, applies
each command in name order (names start with a timestamp) and deletes the file, so the
CLI can tell it was applied by watching the file disappear. Without a running gateway
the CLI takes the lock itself and applies the command directly, through the same code.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.spool.commit import fsync_directory
from gateway.spool.format import is_queue_id

OPS = ("retry", "delete", "hold", "release")


class CommandError(ValueError):
    """A queue command that cannot be applied (unknown ID, unreadable file)."""


@dataclass(frozen=True, slots=True)
class Command:
    op: str
    queue_id: str | None  # None: every message (retry only)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise CommandError(f"unknown queue command {self.op!r}; known: {', '.join(OPS)}")
        if self.queue_id is None and self.op != "retry":
            raise CommandError(f"queue {self.op} needs a queue ID")
        if self.queue_id is not None and not is_queue_id(self.queue_id):
            raise CommandError(f"{self.queue_id!r} is not a queue ID")

    def encode(self) -> bytes:
        return json.dumps({"op": self.op, "id": self.queue_id}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Command:
        try:
            obj = json.loads(raw)
            return cls(str(obj["op"]), None if obj["id"] is None else str(obj["id"]))
        except (ValueError, KeyError, TypeError) as e:
            raise CommandError(f"unreadable command file: {e}") from None


def submit(control_dir: Path, command: Command) -> Path:
    """Write the command file for the running owner; returns its path."""
    name = f"{time.time_ns():020d}-{secrets.token_hex(4)}"
    tmp = control_dir / f".{name}.tmp"
    final = control_dir / f"{name}.cmd"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, command.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    fsync_directory(control_dir)
    return final


def pending(control_dir: Path) -> list[Path]:
    """Command files waiting, oldest first."""
    try:
        names = sorted(n for n in os.listdir(control_dir) if n.endswith(".cmd"))
    except FileNotFoundError:
        return []
    return [control_dir / n for n in names]
