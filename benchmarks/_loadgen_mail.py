"""Messages for the load generator: realistic MIME of a chosen size, stamped per send.

Owns the message text the load generator sends: multipart/alternative (text/plain and
text/html, RFC 2046 §5.1.4) for small messages, multipart/mixed with a base64
attachment (RFC 2045 §6.8) for larger ones, CRLF line ends and dot-stuffing for DATA
(RFC 5321 §4.5.2) done once per body, so the per-message work is only the header block
with the stamp and a unique Message-ID (RFC 5322 §3.6.4).

Also parses the mixes given on the command line: sizes (`2k:50,10k:40,100k:10`) and
recipient domains (`beta.test:3,gamma.test:1`).
"""

from __future__ import annotations

import base64
import datetime
import random
import time
from dataclasses import dataclass
from email.utils import format_datetime

# Above this size a message carries an attachment, as real large mail does.
ATTACHMENT_THRESHOLD = 20_000
STAMP_HEADER = "X-Loadgen-Stamp"
HEADER_ESTIMATE = 230  # bytes of the per-message header block
# Distinct bodies built per size class: enough that a relay cannot lean on one cached
# body, few enough that building them costs nothing next to the run.
VARIANTS_PER_SIZE = 4

_WORDS = (
    "the", "quarterly", "report", "attached", "covers", "revenue", "forecast", "meeting",
    "agenda", "please", "review", "contract", "draft", "before", "friday", "thanks",
    "regards", "invoice", "shipment", "delivery", "schedule", "project", "milestone",
    "budget", "approval", "team", "update", "customer", "feedback", "release", "notes",
    "security", "audit", "certificate", "renewal",
)


class MixError(ValueError):
    """A size or domain mix on the command line that does not parse."""


def parse_size(text: str) -> int:
    """`2k` → 2048, `100K` → 102400, `1m` → 1048576, `500` → 500."""
    t = text.strip().lower()
    mult = 1
    if t.endswith("k"):
        mult, t = 1024, t[:-1]
    elif t.endswith("m"):
        mult, t = 1024 * 1024, t[:-1]
    if not t.isdigit():
        raise MixError(f"bad size {text!r}: expected a number with optional k or m suffix")
    size = int(t) * mult
    if not 200 <= size <= 64 * 1024 * 1024:
        raise MixError(f"bad size {text!r}: must be between 200 bytes and 64m")
    return size


def _parse_weighted(text: str, what: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, weight = item.partition(":")
        if not sep:
            weight = "1"
        if not weight.strip().isdigit() or int(weight) <= 0:
            raise MixError(f"bad {what} mix item {item!r}: weight must be a positive integer")
        out.append((name.strip(), int(weight)))
    if not out:
        raise MixError(f"empty {what} mix")
    return out


def parse_size_mix(text: str) -> list[tuple[int, int]]:
    """`2k:50,10k:40,100k:10` → [(2048, 50), (10240, 40), (102400, 10)]."""
    return [(parse_size(name), w) for name, w in _parse_weighted(text, "size")]


def parse_domain_mix(text: str) -> list[tuple[str, int]]:
    """`beta.test:3,gamma.test:1` → [("beta.test", 3), ("gamma.test", 1)]."""
    mix = _parse_weighted(text, "domain")
    for name, _ in mix:
        if not name or "@" in name or " " in name or "." not in name:
            raise MixError(f"bad domain {name!r} in domain mix")
    return mix


def _text(rng: random.Random, size: int) -> str:
    lines: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 11)))
        lines.append(line)
        total += len(line) + 2
    return "\r\n".join(lines)


def _html(text: str) -> str:
    paras = "\r\n".join(f"<p>{line}</p>" for line in text.split("\r\n"))
    return f"<html><body>\r\n{paras}\r\n</body></html>"


def build_body(size: int, rng: random.Random, boundary_tag: str) -> bytes:
    """MIME headers (after the envelope-specific ones) and body of about `size` bytes.

    The per-message header block (From, To, Date, Message-ID, stamp: about 230 bytes)
    is counted in `size`, so the message on the wire comes out near the nominal size:
    a first build measures the markup's overhead, a second corrects for it.
    """
    target = max(size - HEADER_ESTIMATE, 100)
    state = rng.getstate()
    first = _build(target, rng, boundary_tag)
    rng.setstate(state)
    return _build(max(target * target // max(len(first), 1), 100), rng, boundary_tag)


def _build(budget: int, rng: random.Random, boundary_tag: str) -> bytes:
    alt = f"=_alt_{boundary_tag}"
    if budget < ATTACHMENT_THRESHOLD:
        text = _text(rng, budget * 45 // 100)
        html = _html(_text(rng, budget * 40 // 100))
        parts = [
            "MIME-Version: 1.0",
            f'Content-Type: multipart/alternative; boundary="{alt}"',
            "",
            "This is a multi-part message in MIME format.",
            f"--{alt}",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 7bit",
            "",
            text,
            f"--{alt}",
            "Content-Type: text/html; charset=utf-8",
            "Content-Transfer-Encoding: 7bit",
            "",
            html,
            f"--{alt}--",
            "",
        ]
    else:
        mixed = f"=_mix_{boundary_tag}"
        text = _text(rng, 1500)
        html = _html(_text(rng, 1500))
        raw_len = max((budget - 3600) * 76 * 3 // (78 * 4), 100)
        blob = rng.randbytes(raw_len)
        b64 = base64.encodebytes(blob).decode("ascii").replace("\n", "\r\n").rstrip("\r\n")
        parts = [
            "MIME-Version: 1.0",
            f'Content-Type: multipart/mixed; boundary="{mixed}"',
            "",
            "This is a multi-part message in MIME format.",
            f"--{mixed}",
            f'Content-Type: multipart/alternative; boundary="{alt}"',
            "",
            f"--{alt}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            text,
            f"--{alt}",
            "Content-Type: text/html; charset=utf-8",
            "",
            html,
            f"--{alt}--",
            f"--{mixed}",
            'Content-Type: application/octet-stream; name="report.bin"',
            'Content-Disposition: attachment; filename="report.bin"',
            "Content-Transfer-Encoding: base64",
            "",
            b64,
            f"--{mixed}--",
            "",
        ]
    body = "\r\n".join(parts).encode("ascii")
    # Dot-stuffing (RFC 5321 §4.5.2), once per body rather than once per send.
    return body.replace(b"\r\n.", b"\r\n..")


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the sink reads back from a message: the run, the sequence and the send time."""

    run_id: str
    seq: int
    sent_ns: int


class MessageFactory:
    """Builds each message's DATA bytes: fresh header block over a pre-built body."""

    def __init__(self, size_mix: list[tuple[int, int]], seed: int = 1) -> None:
        rng = random.Random(seed)
        self._rng = random.Random(seed + 1)
        self._sizes = [s for s, _ in size_mix]
        self._weights = [w for _, w in size_mix]
        self._bodies = {
            s: [build_body(s, rng, f"{s}_{v}") for v in range(VARIANTS_PER_SIZE)]
            for s in self._sizes
        }

    def pick_size(self) -> int:
        return self._rng.choices(self._sizes, self._weights)[0]

    def data(self, size: int, run_id: str, seq: int, sender: str, rcpts: list[str]) -> bytes:
        """DATA payload, dot-stuffed, ending in CRLF, without the final `.` line."""
        body = self._bodies[size][seq % VARIANTS_PER_SIZE]
        now_ns = time.time_ns()
        head = (
            f"From: <{sender}>\r\n"
            f"To: {', '.join(f'<{r}>' for r in rcpts)}\r\n"
            f"Subject: loadgen {run_id} {seq}\r\n"
            f"Date: {format_datetime_now()}\r\n"
            f"{message_id_header(run_id, seq)}\r\n"
            f"{STAMP_HEADER}: {run_id} {seq} {now_ns}\r\n"
        )
        return head.encode("ascii") + body + b"\r\n"


def message_id(run_id: str, seq: int) -> str:
    """The Message-ID the load generator gives message `seq` of run `run_id`."""
    return f"<{run_id}.{seq}@loadgen.invalid>"


def message_id_header(run_id: str, seq: int) -> str:
    return f"Message-ID: {message_id(run_id, seq)}"


_date_cache: tuple[int, str] = (0, "")


def format_datetime_now() -> str:
    """RFC 5322 date of now, cached per second (formatting costs more than the rest)."""
    global _date_cache
    sec = int(time.time())
    if _date_cache[0] != sec:
        _date_cache = (sec, format_datetime(_utc(sec)))
    return _date_cache[1]


def _utc(sec: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(sec, tz=datetime.UTC)
