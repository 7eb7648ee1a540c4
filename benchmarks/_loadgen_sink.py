"""The counting sink: a fast SMTP server on loopback that accepts (or refuses) everything.

Owns the receiving end of a load test: take mail from any client (the wire protocol,
RFC 5321 with PIPELINING, SIZE and STARTTLS, is `_loadgen_smtpd`), record each
message's Message-ID, and measure end-to-end latency from the load generator's
`X-Loadgen-Stamp` header. It can refuse on command: 4xx for a while (a next hop that is
down), 5xx for a fraction of messages (recipients that bounce), or drop the connection
at the end of DATA without a reply.

Built on an asyncio Protocol rather than streams because it must cost far less CPU than
the relay it measures (they share the machine). The loadgen verb `XSTATS [RUN-ID]`
answers `250 {json}` so a sink in another process can be read by the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from benchmarks._loadgen_smtpd import SinkProtocol
from benchmarks._loadgen_stats import latency_summary_ms, process_cpu_s

DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
FAIL_STAGES = ("mail", "rcpt", "data")

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)
_STAMP = re.compile(rb"^x-loadgen-stamp:[ \t]*(\S+) (\d+) (\d+)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message as the sink took it (kept only with `keep_data=True`)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message_id: str | None
    data: bytes  # without dot-stuffing, CRLF line ends as sent
    received_ns: int


@dataclass(slots=True)
class GroupStats:
    """Counts for one run-id (or, for unstamped mail, one envelope sender)."""

    messages: int = 0
    duplicates: int = 0
    bytes: int = 0
    bare_lf_messages: int = 0
    first_ns: int = 0
    last_ns: int = 0
    ids: set[str] = field(default_factory=set)
    latencies_ns: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "distinct_ids": len(self.ids),
            "duplicates": self.duplicates,
            "bytes": self.bytes,
            "bare_lf_messages": self.bare_lf_messages,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "e2e_latency": latency_summary_ms(self.latencies_ns),
        }


class Sink:
    """The counting sink server. See benchmarks.loadgen's docstring for the API."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        fail_4xx_for: float = 0.0,
        fail_5xx_rate: float = 0.0,
        drop_rate: float = 0.0,
        fail_stage: str = "data",
        keep_data: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        seed: int = 1,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if fail_stage not in FAIL_STAGES:
            raise ValueError(f"fail_stage must be one of {FAIL_STAGES}, not {fail_stage!r}")
        for name, rate in (("fail_5xx_rate", fail_5xx_rate), ("drop_rate", drop_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {rate}")
        self.host = host
        self.port = port
        self.fail_5xx_rate = fail_5xx_rate
        self.drop_rate = drop_rate
        self.fail_stage = fail_stage
        self.keep_data = keep_data
        self.tls_context = tls_context  # offers STARTTLS (RFC 3207) when set
        self.tls_sessions = 0
        self.max_message_size = max_message_size
        self.received_ids: set[str] = set()  # every Message-ID accepted with 250
        self.rejected_ids: set[str] = set()  # refused with 5xx at end of DATA
        self.deferred_ids: set[str] = set()  # refused with 4xx at end of DATA
        self.dropped_ids: set[str] = set()  # connection dropped instead of a reply
        self.messages: list[ReceivedMessage] = []
        self.groups: dict[str, GroupStats] = {}
        self.replies: dict[str, int] = {}  # reply code + enhanced status → count
        self.sessions = 0
        self.started_ns = 0
        self._rng = random.Random(seed)
        self._fail_until = 0.0
        self._initial_fail = fail_4xx_for
        self._server: asyncio.Server | None = None
        self.connections: set[SinkProtocol] = set()
        self._queue_id = 0

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> Sink:
        require_loopback(self.host)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SinkProtocol(self), self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        self.started_ns = time.time_ns()
        if self._initial_fail > 0:
            self.fail_4xx(self._initial_fail)
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for conn in list(self.connections):
            conn.abort()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Sink:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- failure modes -----------------------------------------------------------------
    def fail_4xx(self, seconds: float) -> None:
        """Answer 451 4.3.0 (at the fail stage) for the next `seconds` seconds."""
        self._fail_until = time.monotonic() + max(0.0, seconds)

    @property
    def failing_4xx(self) -> bool:
        return time.monotonic() < self._fail_until

    # -- reading results ---------------------------------------------------------------
    def stats(self, run_id: str | None = None) -> dict[str, Any]:
        """Counts and latency for one run-id (or every group), plus the sink's own CPU."""
        out: dict[str, Any] = {
            "cpu_s": round(process_cpu_s(), 3),
            "sessions": self.sessions,
            "received": len(self.received_ids),
            "rejected_5xx": len(self.rejected_ids),
            "deferred_4xx": len(self.deferred_ids),
            "dropped": len(self.dropped_ids),
            "replies": dict(self.replies),
        }
        if run_id is None:
            out["groups"] = {k: g.as_dict() for k, g in self.groups.items()}
        else:
            out["group"] = self.groups.get(run_id, GroupStats()).as_dict()
        return out

    def group(self, key: str) -> GroupStats:
        return self.groups.get(key, GroupStats())

    async def wait_for_ids(self, ids: Iterable[str], timeout: float) -> set[str]:
        """Wait until every Message-ID in `ids` arrived; returns those still missing."""
        want = set(ids)
        deadline = time.monotonic() + timeout
        while True:
            missing = want - self.received_ids
            if not missing or time.monotonic() >= deadline:
                return missing
            await asyncio.sleep(0.02)

    async def wait_for_count(self, count: int, timeout: float, key: str | None = None) -> int:
        """Wait until `count` distinct messages arrived (in group `key`, or at all)."""
        deadline = time.monotonic() + timeout
        while True:
            have = len(self.received_ids) if key is None else self.group(key).messages
            if have >= count or time.monotonic() >= deadline:
                return have
            await asyncio.sleep(0.02)

    # -- called by the protocol --------------------------------------------------------
    def count_reply(self, reply: bytes) -> None:
        key = reply[:9].decode("ascii", "replace").strip()
        self.replies[key] = self.replies.get(key, 0) + 1

    def refuse_at(self, stage: str) -> bytes | None:
        """The refusal for a command at `stage`, or None to go on normally."""
        if stage != self.fail_stage:
            return None
        if self.failing_4xx:
            return b"451 4.3.0 Sink: temporary failure on purpose\r\n"
        if self.fail_5xx_rate and self._rng.random() < self.fail_5xx_rate:
            if stage == "rcpt":
                return b"550 5.1.1 Sink: recipient refused on purpose\r\n"
            return b"554 5.7.0 Sink: refused on purpose\r\n"
        return None

    def take(self, mail_from: str, rcpts: list[str], raw: bytes) -> bytes | None:
        """Judge and record a complete message; the reply, or None to drop the line."""
        now = time.time_ns()
        end = raw.find(b"\r\n\r\n")
        head = raw if end < 0 else raw[: end + 2]
        m = _MESSAGE_ID.search(head)
        mid = m.group(1).decode("ascii", "replace") if m else None
        if self.drop_rate and self._rng.random() < self.drop_rate:
            if mid:
                self.dropped_ids.add(mid)
            return None
        refusal = self.refuse_at("data")
        if refusal is not None:
            if mid:
                (self.deferred_ids if refusal[:1] == b"4" else self.rejected_ids).add(mid)
            return refusal
        s = _STAMP.search(head)
        key = s.group(1).decode("ascii", "replace") if s else f"from:{mail_from}"
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = GroupStats(first_ns=now)
        g.messages += 1
        g.bytes += len(raw)
        g.last_ns = now
        if raw.count(b"\n") != raw.count(b"\r\n"):
            g.bare_lf_messages += 1
        if mid is not None:
            if mid in self.received_ids:
                g.duplicates += 1
            self.received_ids.add(mid)
            g.ids.add(mid)
        if s is not None:
            g.latencies_ns.append(now - int(s.group(3)))
        if self.keep_data:
            data = raw.replace(b"\r\n..", b"\r\n.")
            if data.startswith(b".."):
                data = data[1:]
            self.messages.append(ReceivedMessage(mail_from, tuple(rcpts), mid, data, now))
        self._queue_id += 1
        return b"250 2.0.0 Ok: queued as S%d\r\n" % self._queue_id


def require_loopback(host: str) -> None:
    """The load generator and sink talk to loopback only; anything else is refused."""
    import ipaddress

    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"{host!r} is not a loopback address: the load tools run on loopback only")


async def query_stats(host: str, port: int, run_id: str | None = None,
                      timeout: float = 10.0) -> dict[str, Any]:
    """Ask a sink (usually in another process) for its stats with `XSTATS`."""
    require_loopback(host)

    async def ask() -> dict[str, Any]:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
        try:
            await reader.readline()  # banner
            writer.write(f"XSTATS {run_id or ''}\r\nQUIT\r\n".encode())
            line = await reader.readline()
            if not line.startswith(b"250 "):
                raise ConnectionError(f"sink at {host}:{port} answered {line[:80]!r} to XSTATS")
            result: dict[str, Any] = json.loads(line[4:])
            return result
        finally:
            writer.close()

    return await asyncio.wait_for(ask(), timeout)
