"""The quarantine store: mail accepted (250) but kept, not delivered.

Inbound mail by its S/MIME verdict, and outbound mail the crypto job kept under the
"quarantine" fallback (verdict NO_CERTIFICATE: the original, never signed or sent).

One file per message in `[inbound] quarantine_dir`, named by its id (`Q<hex>.eml`). A
file is a JSON line (envelope, reason, verdict, time) followed by the message exactly as
it was received. Written like the spool writes (STYLE: nothing is acknowledged before it
is on disk): to `tmp/`, fsync'd, renamed into place, the directory fsync'd. Workers write
entries themselves (they hold the data) and report the id in Result.quarantined; the
`smimegate quarantine` command (gateway/inbound/cli.py) lists, shows, releases and
deletes them.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.envelope import Envelope
from gateway.spool.commit import fsync_directory, write_durably

# The verdict of an outbound message kept for want of a recipient certificate.
NO_CERTIFICATE = "no-certificate"
_ID = re.compile(r"Q[0-9a-f]{20}")
SUFFIX = ".eml"


class QuarantineError(Exception):
    """A quarantine entry that does not exist or cannot be read (the message says which)."""


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    envelope: Envelope
    reason: str
    verdict: str  # smime result, or "undecryptable"
    quarantined_at: float
    data: bytes


def quarantine_dir(configured: Path | None, spool_dir: Path) -> Path:
    """The configured directory, else "quarantine" next to the spool."""
    return configured if configured is not None and str(configured) not in ("", ".") \
        else spool_dir.parent / "quarantine"


class Quarantine:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _ready(self) -> None:
        (self.directory / "tmp").mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(self, envelope: Envelope, data: bytes, *, reason: str, verdict: str,
            key: str = "") -> str:
        """Store a message durably; returns its id. With a key (the job's queue ID and
        whose copy it is) the id is derived from it, so a job run twice (a worker
        replaced mid-batch re-runs its batch) replaces its entry instead of adding one."""
        self._ready()
        qid = "Q" + (hashlib.sha256(key.encode()).hexdigest()[:20] if key
                     else secrets.token_hex(10))
        head = {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                "client_address": envelope.client_address, "helo": envelope.helo,
                "received_at": envelope.received_at, "esmtp": [list(p) for p in envelope.esmtp],
                "reason": reason, "verdict": verdict, "quarantined_at": time.time()}
        tmp = self.directory / "tmp" / f"{qid}.{secrets.token_hex(4)}{SUFFIX}"
        write_durably(tmp, self.directory / (qid + SUFFIX), json.dumps(head).encode() + b"\n",
                      data)
        return qid

    def ids(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.name[:-len(SUFFIX)] for p in self.directory.iterdir()
                      if p.name.endswith(SUFFIX) and _ID.fullmatch(p.name[:-len(SUFFIX)]))

    def __iter__(self) -> Iterator[Entry]:
        for qid in self.ids():
            try:
                yield self.get(qid)
            except QuarantineError:
                continue  # deleted meanwhile

    def _path(self, qid: str) -> Path:
        if not _ID.fullmatch(qid):
            raise QuarantineError(f"{qid!r} is not a quarantine id (Q + 20 hex digits)")
        return self.directory / (qid + SUFFIX)

    def get(self, qid: str) -> Entry:
        path = self._path(qid)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise QuarantineError(f"no quarantined message {qid} in {self.directory}") from None
        line, _, data = raw.partition(b"\n")
        try:
            head = json.loads(line)
            env = Envelope(str(head["mail_from"]), tuple(head["rcpt_tos"]),
                           str(head["client_address"]), str(head["helo"]),
                           float(head["received_at"]),
                           tuple((str(k), str(v)) for k, v in head["esmtp"]))
            return Entry(qid, env, str(head["reason"]), str(head["verdict"]),
                         float(head["quarantined_at"]), data)
        except (ValueError, KeyError, TypeError) as e:
            raise QuarantineError(f"{path}: unreadable quarantine entry: {e!r}") from None

    def delete(self, qid: str) -> None:
        path = self._path(qid)
        try:
            path.unlink()
        except FileNotFoundError:
            raise QuarantineError(f"no quarantined message {qid} in {self.directory}") from None
        fsync_directory(self.directory)
