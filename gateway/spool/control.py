"""`smimegate queue` commands for a spool that a running gateway owns.

Only the process holding the spool's lock changes its files; everyone else asks it. The
CLI writes a command file atomically (write to `control/.NAME.tmp`, fsync, rename to
`control/NAME.cmd`); the owner polls `control/` every `spool.control_poll` seconds, applies
each command in name order (names start with a timestamp) and deletes the file, so the
CLI can tell it was applied by watching the file disappear. Without a running gateway
the CLI takes the lock itself and applies the command directly, through the same code.

"adopt" brings a message in from outside the queue (`smimegate quarantine release`): the
CLI first writes the whole spool message file (envelope + data, gateway.spool.format) to
`control/NAME.msg`, then the command naming it and the queue ID it chose; the owner
enqueues it under that ID (a repeat after a crash is a no-op: the ID exists) and deletes
the file. `first_attempt` (a reply text) records the recipients' first attempt as made,
due at once: for a refused original, whose next step is the crypto job.

The owner answers every command before deleting it: `control/NAME.answer` (JSON: ok and
what was done or why not), which the waiting CLI reads and deletes; answers nobody
collected are deleted after ANSWER_TTL.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.spool.commit import write_durably
from gateway.spool.format import is_queue_id

OPS = ("retry", "delete", "hold", "release", "adopt")
ANSWER_TTL = 3600.0  # seconds an uncollected answer file is kept


class CommandError(ValueError):
    """A queue command that cannot be applied (unknown ID, unreadable file)."""


@dataclass(frozen=True, slots=True)
class Command:
    op: str
    queue_id: str | None  # None: every message (retry only)
    message: str = ""  # adopt: the file name under control/ holding the message
    first_attempt: str = ""  # adopt: the reply recorded as the recipients' first attempt

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise CommandError(f"unknown queue command {self.op!r}; known: {', '.join(OPS)}")
        if self.queue_id is None and self.op != "retry":
            raise CommandError(f"queue {self.op} needs a queue ID")
        if self.queue_id is not None and not is_queue_id(self.queue_id):
            raise CommandError(f"{self.queue_id!r} is not a queue ID")
        if (self.op == "adopt") != bool(self.message):
            raise CommandError("a message file goes with adopt, and only with it")
        if self.message and not _MESSAGE_NAME.fullmatch(self.message):
            raise CommandError(f"{self.message!r} is not a message file name")

    def encode(self) -> bytes:
        return json.dumps({"op": self.op, "id": self.queue_id, "message": self.message,
                           "first_attempt": self.first_attempt}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Command:
        try:
            obj = json.loads(raw)
            return cls(str(obj["op"]), None if obj["id"] is None else str(obj["id"]),
                       str(obj.get("message", "")), str(obj.get("first_attempt", "")))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CommandError(f"unreadable command file: {e}") from None


_MESSAGE_NAME = re.compile(r"[0-9]{20}-[0-9a-f]{8}\.msg")


def stage_message(control_dir: Path, message_file: bytes) -> str:
    """Write a spool message file for an adopt command durably; returns its name."""
    name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.msg"
    _write_durably(control_dir, name, message_file)
    return name


def submit(control_dir: Path, command: Command) -> Path:
    """Write the command file for the running owner; returns its path."""
    name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.cmd"
    _write_durably(control_dir, name, command.encode())
    return control_dir / name


def _write_durably(control_dir: Path, name: str, data: bytes) -> None:
    write_durably(control_dir / f".{name}.tmp", control_dir / name, data)


def pending(control_dir: Path) -> list[Path]:
    """Command files waiting, oldest first."""
    try:
        names = sorted(n for n in os.listdir(control_dir) if n.endswith(".cmd"))
    except FileNotFoundError:
        return []
    return [control_dir / n for n in names]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The owner's answer to one command."""

    ok: bool
    text: str


def answer(command_path: Path, outcome: Outcome) -> None:
    """Leave the answer next to the command (before the command is deleted); also drop
    answers nobody collected within ANSWER_TTL."""
    directory = command_path.parent
    _write_durably(directory, command_path.stem + ".answer",
                   json.dumps({"ok": outcome.ok, "text": outcome.text}).encode())
    now = time.time()
    for name in os.listdir(directory):
        if name.endswith(".answer"):
            try:
                if now - os.stat(directory / name).st_mtime > ANSWER_TTL:
                    os.unlink(directory / name)
            except FileNotFoundError:
                pass


def collect(command_path: Path) -> Outcome | None:
    """The owner's answer to a command it no longer lists (deleted once read); None when
    there is none (an owner from before answers existed, or it was already collected)."""
    path = command_path.with_suffix(".answer")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    try:
        obj = json.loads(raw)
        return Outcome(bool(obj["ok"]), str(obj["text"]))
    except (ValueError, KeyError, TypeError):
        return Outcome(False, "unreadable answer file")
