"""The load generator's SMTP client: N concurrent sessions × M messages on asyncio streams.

Owns the sending end of a load test: ESMTP (RFC 5321) with PIPELINING (RFC 2920) when
the server offers it (MAIL, RCPT… and DATA go out as one group, the replies are read
back in order), SIZE (RFC 1870) declared when offered, several messages per session or a
new connection per message, and a count of every refusal by reply code and enhanced
status (RFC 3463). Every message is stamped (see `_loadgen_mail`) so a sink can measure
the end-to-end latency; the accept latency is from the first command of a transaction to
the reply to its final `.`.

Every loop is bounded: a session sends at most its M messages (a failure uses one up),
a reply has at most MAX_REPLY_LINES lines, each wait is bounded by the reply timeout and
the whole run by its deadline.
"""

from __future__ import annotations

import asyncio
import errno
import random
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks._loadgen_mail import MessageFactory, message_id
from benchmarks._loadgen_sink import require_loopback
from benchmarks._loadgen_stats import latency_summary_ms, process_cpu_s

MAX_REPLY_LINES = 100
_ENHANCED = re.compile(rb"^[245]\.\d{1,3}\.\d{1,3}")


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """What to send, where and how hard. Sizes and domains are (value, weight) lists."""

    host: str = "127.0.0.1"
    port: int = 25
    sessions: int = 10
    messages: int = 10  # per session
    sizes: tuple[tuple[int, int], ...] = ((10 * 1024, 1),)
    domains: tuple[tuple[str, int], ...] = (("beta.test", 1),)
    rcpts_per_message: int = 1
    sender: str = "loadgen@alpha.test"
    helo: str = "loadgen.alpha.test"
    new_connection_per_message: bool = False
    pipelining: bool = True  # used only when the server offers it
    run_id: str = ""  # generated when empty
    reply_timeout: float = 60.0
    deadline: float = 900.0  # the whole run, seconds
    seed: int = 1
    # Fraction of messages whose connection is dropped halfway through the DATA content:
    # the server must not deliver those (RFC 5321 §4.1.1.4). Their ids: aborted_ids.
    abort_rate: float = 0.0
    # Keep trying to connect for this long (e.g. while a relay restarts) before a
    # message counts as failed; 0 counts the first refused connection.
    connect_retry_for: float = 0.0
    # Offered load in messages/s over all sessions (0: as fast as the server answers).
    # Each session paces its sends on a fixed schedule, so latency can be compared at
    # the same load; a server slower than the rate still sets the pace.
    rate: float = 0.0

    def validate(self) -> None:
        require_loopback(self.host)
        if not 1 <= self.sessions <= 10_000:
            raise ValueError(f"sessions must be 1..10000, not {self.sessions}")
        if not 1 <= self.messages <= 10_000_000:
            raise ValueError(f"messages per session must be 1..10000000, not {self.messages}")
        if not 1 <= self.rcpts_per_message <= 1000:
            raise ValueError(f"recipients per message must be 1..1000, not "
                             f"{self.rcpts_per_message}")
        if not 0.0 <= self.abort_rate <= 1.0:
            raise ValueError(f"abort rate must be between 0 and 1, not {self.abort_rate}")
        if not 0.0 <= self.connect_retry_for <= 3600:
            raise ValueError(f"connect retry must be 0..3600 s, not {self.connect_retry_for}")
        if not 0.0 <= self.rate <= 1_000_000:
            raise ValueError(f"rate must be 0..1000000 msgs/s, not {self.rate}")
        if "@" not in self.sender:
            raise ValueError(f"sender {self.sender!r} is not an address")


@dataclass(slots=True)
class LoadResult:
    """What the client saw. `accepted_ids` are the Message-IDs that got a 250."""

    run_id: str
    attempted: int = 0
    accepted: int = 0
    accepted_ids: set[str] = field(default_factory=set)
    aborted_ids: set[str] = field(default_factory=set)  # dropped mid-DATA on purpose
    errors: dict[str, int] = field(default_factory=dict)
    accept_latencies_ns: list[int] = field(default_factory=list)
    bytes_sent: int = 0
    connections: int = 0
    started_ns: int = 0
    last_accept_ns: int = 0
    finished_ns: int = 0
    cpu_s: float = 0.0

    def error(self, key: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1

    @property
    def accepted_per_s(self) -> float:
        span = (self.last_accept_ns - self.started_ns) / 1e9
        return self.accepted / span if span > 0 and self.accepted else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "attempted": self.attempted,
            "accepted": self.accepted,
            "aborted_mid_data": len(self.aborted_ids),
            "accepted_per_s": round(self.accepted_per_s, 1),
            "accept_latency": latency_summary_ms(self.accept_latencies_ns),
            "errors": dict(sorted(self.errors.items())),
            "bytes_sent": self.bytes_sent,
            "connections": self.connections,
            "wall_s": round((self.finished_ns - self.started_ns) / 1e9, 3),
            "client_cpu_s": round(self.cpu_s, 3),
        }


class SmtpReplyError(Exception):
    """A reply that ends the session (421, or not 220 to the greeting)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _Aborted(Exception):
    """The client dropped the connection mid-DATA on purpose."""


class _Conn:
    """One client connection after the greeting and EHLO."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.extensions: set[str] = set()

    @classmethod
    async def open(cls, cfg: LoadConfig) -> _Conn:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(cfg.host, cfg.port, limit=1 << 20), cfg.reply_timeout)
        conn = cls(reader, writer, cfg.reply_timeout)
        try:
            code, key, _ = await conn.reply()
        except BaseException:  # e.g. a server killed between accept and greeting
            conn.close()
            raise
        if code != 220:
            conn.close()
            raise SmtpReplyError(f"greeting:{key}")
        writer.write(f"EHLO {cfg.helo}\r\n".encode())
        try:
            code, key, lines = await conn.reply()
        except BaseException:
            conn.close()
            raise
        if code != 250:
            conn.close()
            raise SmtpReplyError(f"ehlo:{key}")
        conn.extensions = {ln[4:].split(b" ")[0].decode("ascii", "replace").upper()
                           for ln in lines[1:]}
        return conn

    async def reply(self) -> tuple[int, str, list[bytes]]:
        """(code, "code enhanced-status", lines) of the next reply."""
        lines: list[bytes] = []
        for _ in range(MAX_REPLY_LINES):
            line = await asyncio.wait_for(self.reader.readline(), self.timeout)
            if not line:
                raise ConnectionResetError("connection closed by server")
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                break
        else:
            raise SmtpReplyError("reply:too-many-lines")
        last = lines[-1]
        if len(last) < 3 or not last[:3].isdigit():
            raise SmtpReplyError("reply:malformed")
        code = int(last[:3])
        enh = _ENHANCED.match(last[4:])
        key = f"{code} {enh.group(0).decode()}" if enh else str(code)
        if code == 421:
            raise SmtpReplyError(key)
        return code, key, lines

    async def transaction(self, cfg: LoadConfig, sender: str, rcpts: list[str],
                          data: bytes, result: LoadResult, abort: bool = False) -> bool:
        """One MAIL…DATA transaction; True when the message got a 2xx at the end."""
        size = f" SIZE={len(data)}" if "SIZE" in self.extensions else ""
        cmds = [f"MAIL FROM:<{sender}>{size}\r\n".encode()]
        cmds += [f"RCPT TO:<{r}>\r\n".encode() for r in rcpts]
        cmds.append(b"DATA\r\n")
        pipelined = cfg.pipelining and "PIPELINING" in self.extensions
        w = self.writer
        if pipelined:
            # RFC 2920 §3.1: MAIL, RCPT and DATA may go together; DATA ends the group.
            w.write(b"".join(cmds))
            await w.drain()
            replies = [await self.reply() for _ in cmds]
        else:
            replies = []
            for i, cmd in enumerate(cmds):
                if i == len(cmds) - 1 and not any(r[0] // 100 == 2 for r in replies[1:]):
                    break  # every RCPT refused: no DATA
                w.write(cmd)
                replies.append(await self.reply())
                if replies[-1][0] >= 400 and len(replies) == 1:
                    break  # MAIL refused: no point in RCPT
        mail_code, mail_key, _ = replies[0]
        rcpt_ok = [r for r in replies[1:1 + len(rcpts)] if r[0] // 100 == 2]
        for r in replies[1:1 + len(rcpts)]:
            if r[0] // 100 != 2 and mail_code // 100 == 2:
                result.error(f"rcpt:{r[1]}")
        data_reply = replies[1 + len(rcpts)] if len(replies) > 1 + len(rcpts) else None
        if data_reply is not None and data_reply[0] == 354:
            if mail_code // 100 != 2 or not rcpt_ok:
                w.write(b".\r\n")  # RFC 2920 §3.1: the server took DATA; end it empty
                await self.reply()
                await self._rset()
                result.error(f"mail:{mail_key}" if mail_code // 100 != 2 else "rcpt:none")
                return False
            if abort:
                w.write(data[: len(data) // 2])
                await w.drain()
                w.transport.abort()
                raise _Aborted
            w.write(data)
            w.write(b".\r\n")
            await w.drain()
            code, key, _ = await self.reply()
            if code // 100 == 2:
                return True
            result.error(f"data-end:{key}")
            return False
        if mail_code // 100 != 2:
            result.error(f"mail:{mail_key}")
        elif not rcpt_ok:
            pass  # counted per recipient above
        elif data_reply is not None:
            result.error(f"data:{data_reply[1]}")
        await self._rset()
        return False

    async def _rset(self) -> None:
        self.writer.write(b"RSET\r\n")
        await self.reply()

    async def quit(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reader.read(1024), min(self.timeout, 5.0))
        except (OSError, TimeoutError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.writer.close()


def _conn_error_key(exc: BaseException) -> str:
    if isinstance(exc, SmtpReplyError):
        return exc.key
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "conn:refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "conn:reset"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"conn:{errno.errorcode.get(exc.errno, exc.errno)}"
    return f"conn:{type(exc).__name__}"


async def _connect(cfg: LoadConfig, stop_at: float) -> _Conn:
    """Open a session, retrying refused connections for cfg.connect_retry_for seconds."""
    give_up = min(time.monotonic() + cfg.connect_retry_for, stop_at)
    while True:
        try:
            return await _Conn.open(cfg)
        except (ConnectionRefusedError, ConnectionResetError, SmtpReplyError):
            if time.monotonic() >= give_up:
                raise
            await asyncio.sleep(0.1)


async def run_load(cfg: LoadConfig) -> LoadResult:
    """Send cfg.sessions × cfg.messages messages; returns what was accepted and refused."""
    cfg.validate()
    run_id = cfg.run_id or secrets.token_hex(6)
    factory = MessageFactory(list(cfg.sizes), cfg.seed)
    rng = random.Random(cfg.seed + 2)
    domains = [d for d, _ in cfg.domains]
    weights = [w for _, w in cfg.domains]
    result = LoadResult(run_id=run_id)
    stop_at = time.monotonic() + cfg.deadline
    cpu0 = process_cpu_s()

    interval = cfg.sessions / cfg.rate if cfg.rate else 0.0
    t_start = time.monotonic()

    async def session(first: int) -> None:
        conn: _Conn | None = None
        # Sessions start spread over one interval, so the paced sends do not bunch up.
        offset = interval * (first // cfg.messages) / cfg.sessions
        try:
            for seq in range(first, first + cfg.messages):
                if interval:
                    due = t_start + offset + (seq - first) * interval
                    await asyncio.sleep(max(0.0, min(due, stop_at) - time.monotonic()))
                if time.monotonic() >= stop_at:
                    result.error("deadline")
                    continue
                size = factory.pick_size()
                rcpts = [f"u{(seq + k) % 997}@{d}" for k, d in
                         enumerate(rng.choices(domains, weights, k=cfg.rcpts_per_message))]
                result.attempted += 1
                abort = bool(cfg.abort_rate) and rng.random() < cfg.abort_rate
                try:
                    if conn is None:
                        conn = await _connect(cfg, stop_at)
                        result.connections += 1
                    data = factory.data(size, run_id, seq, cfg.sender, rcpts)
                    t0 = time.monotonic_ns()
                    ok = await conn.transaction(cfg, cfg.sender, rcpts, data, result, abort)
                    if ok:
                        now = time.time_ns()
                        result.accept_latencies_ns.append(time.monotonic_ns() - t0)
                        result.accepted += 1
                        result.accepted_ids.add(message_id(run_id, seq))
                        result.bytes_sent += len(data)
                        result.last_accept_ns = max(result.last_accept_ns, now)
                    if cfg.new_connection_per_message:
                        await conn.quit()
                        conn = None
                except _Aborted:
                    result.aborted_ids.add(message_id(run_id, seq))
                    conn = None
                except (OSError, TimeoutError, SmtpReplyError) as e:
                    result.error(_conn_error_key(e))
                    if conn is not None:
                        conn.close()
                        conn = None
                    await asyncio.sleep(0.05)  # don't spin on a server that is down
        finally:
            if conn is not None:
                await conn.quit()

    result.started_ns = time.time_ns()
    await asyncio.gather(*(session(i * cfg.messages) for i in range(cfg.sessions)))
    result.finished_ns = time.time_ns()
    result.cpu_s = process_cpu_s() - cpu0
    return result
