"""The spool's on-disk formats: queue IDs, message files and per-recipient state files.

A message file (`queue/ID`) is written once and never changed:

    SMIMEGATE-SPOOL/1 <n>\\n      magic and the length n of the envelope JSON
    <n bytes of envelope JSON>\\n
    <the message, exactly as accepted>

A state file (`state/ID`) holds what delivery has learnt, one entry per recipient in the
envelope's order, and whether an operator holds the message. It is replaced atomically
(write, fsync, rename) and is absent until the first change: no state file means every
recipient is still pending and due now.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from gateway.envelope import Envelope

MAGIC = b"SMIMEGATE-SPOOL/1 "
# Upper-case hex: microseconds since the epoch (sorts by arrival), then 5 random digits.
# A DSN's ID is its message's ID with "B" appended, so enqueueing it twice is a no-op.
QUEUE_ID = re.compile(r"[0-9A-F]{14,16}[0-9A-F]{5}B?")

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"  # permanently; the sender is owed a DSN
RCPT_STATUSES = (PENDING, DELIVERED, FAILED)


class SpoolFormatError(ValueError):
    """A spool file cannot be read back; the message is quarantined, never guessed at."""


# The suffix counts up from a random start: unique within a process even within one
# microsecond, as unlikely as a random one to meet another process's, and no random-number
# syscall per message on the front end's loop.
_SUFFIX = itertools.count(secrets.randbelow(16**5))


def new_queue_id() -> str:
    return f"{time.time_ns() // 1000:014X}{next(_SUFFIX) % 16**5:05X}"


def dsn_queue_id(queue_id: str) -> str:
    return queue_id + "B"


def is_queue_id(text: str) -> bool:
    return QUEUE_ID.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class RecipientState:
    """What is known about delivery to one recipient."""

    status: str = PENDING
    attempts: int = 0
    next_attempt: float = 0.0  # Unix time; 0 means due now
    reply: str = ""  # the last reply or error, e.g. "451 4.3.0 try later"
    remote: str = ""  # the next hop that gave it

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "attempts": self.attempts, "next": self.next_attempt,
                "reply": self.reply, "remote": self.remote}

    @classmethod
    def from_json(cls, raw: object) -> RecipientState:
        if not isinstance(raw, dict) or raw.get("status") not in RCPT_STATUSES:
            raise SpoolFormatError(f"bad recipient state {raw!r}")
        try:
            return cls(status=raw["status"], attempts=int(raw["attempts"]),
                       next_attempt=float(raw["next"]), reply=str(raw["reply"]),
                       remote=str(raw["remote"]))
        except (KeyError, TypeError, ValueError) as e:
            raise SpoolFormatError(f"bad recipient state {raw!r}: {e}") from None


@dataclass(frozen=True, slots=True)
class MessageState:
    """The mutable part of a queued message: recipients' states and the hold flag."""

    rcpts: tuple[RecipientState, ...]
    hold: bool = False

    @classmethod
    def initial(cls, n_rcpts: int) -> MessageState:
        return cls(tuple(RecipientState() for _ in range(n_rcpts)))

    def with_rcpt(self, index: int, state: RecipientState) -> MessageState:
        rcpts = list(self.rcpts)
        rcpts[index] = state
        return replace(self, rcpts=tuple(rcpts))

    @property
    def pending(self) -> tuple[int, ...]:
        return tuple(i for i, r in enumerate(self.rcpts) if r.status == PENDING)

    def encode(self) -> bytes:
        return json.dumps({"v": 1, "hold": self.hold,
                           "rcpts": [r.to_json() for r in self.rcpts]}).encode()

    @classmethod
    def decode(cls, raw: bytes, n_rcpts: int) -> MessageState:
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise SpoolFormatError(f"state is not JSON: {e}") from None
        if not isinstance(obj, dict) or obj.get("v") != 1 or not isinstance(obj.get("rcpts"), list):
            raise SpoolFormatError("state lacks version 1 or its recipients")
        rcpts = tuple(RecipientState.from_json(r) for r in obj["rcpts"])
        if len(rcpts) != n_rcpts:
            raise SpoolFormatError(f"state has {len(rcpts)} recipients, envelope {n_rcpts}")
        return cls(rcpts, hold=bool(obj.get("hold", False)))


def envelope_to_json(env: Envelope) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "mail_from": env.mail_from, "rcpt_tos": list(env.rcpt_tos),
        "client_address": env.client_address, "helo": env.helo,
        "received_at": env.received_at, "esmtp": [list(p) for p in env.esmtp]}
    # Written only when set: files of plain relaying stay as before.
    if env.require_tls:
        obj["require_tls"] = True
    if env.refused:
        obj["refused"] = env.refused
    return obj


def envelope_from_json(obj: object) -> Envelope:
    if not isinstance(obj, dict):
        raise SpoolFormatError("envelope is not a JSON object")
    try:
        rcpts = obj["rcpt_tos"]
        esmtp = obj["esmtp"]
        if not isinstance(rcpts, list) or not all(isinstance(r, str) for r in rcpts):
            raise TypeError("rcpt_tos must be a list of strings")
        require_tls = obj.get("require_tls", False)
        refused = obj.get("refused", "")
        if not isinstance(require_tls, bool) or not isinstance(refused, str):
            raise TypeError("require_tls must be a boolean and refused a string")
        return Envelope(
            mail_from=str(obj["mail_from"]), rcpt_tos=tuple(rcpts),
            client_address=str(obj["client_address"]), helo=str(obj["helo"]),
            received_at=float(obj["received_at"]),
            esmtp=tuple((str(k), str(v)) for k, v in esmtp),
            require_tls=require_tls, refused=refused)
    except (KeyError, TypeError, ValueError) as e:
        raise SpoolFormatError(f"bad envelope: {e}") from None


def encode_message(env: Envelope, data: bytes) -> bytes:
    head = json.dumps(envelope_to_json(env)).encode()
    return b"".join((MAGIC, str(len(head)).encode(), b"\n", head, b"\n", data))


def decode_header(raw: bytes) -> tuple[Envelope, int]:
    """The envelope of a message file and the offset where the message data starts.

    `raw` needs only to hold the file's beginning (the envelope is small).
    """
    if not raw.startswith(MAGIC):
        raise SpoolFormatError("not a spool message file (bad magic)")
    nl = raw.find(b"\n", len(MAGIC))
    if nl < 0:
        raise SpoolFormatError("truncated header")
    try:
        n = int(raw[len(MAGIC):nl])
    except ValueError:
        raise SpoolFormatError("bad envelope length") from None
    start, end = nl + 1, nl + 1 + n
    if len(raw) < end + 1 or raw[end:end + 1] != b"\n":
        raise SpoolFormatError("truncated envelope")
    try:
        obj = json.loads(raw[start:end])
    except (ValueError, UnicodeDecodeError) as e:
        raise SpoolFormatError(f"envelope is not JSON: {e}") from None
    return envelope_from_json(obj), end + 1
