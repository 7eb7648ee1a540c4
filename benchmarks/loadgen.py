"""The load generator: an async SMTP client and a counting sink, on loopback only.

Owns load testing of any SMTP relay (smimegate, Postfix): N sessions × M messages with
a size mix and a recipient domain mix, each message stamped
(`X-Loadgen-Stamp: <run-id> <seq> <unix time ns>` and `Message-ID: <run-id.seq@loadgen.invalid>`)
so the sink behind the relay measures end-to-end latency. SMTP per RFC 5321 with
PIPELINING (RFC 2920), SIZE (RFC 1870), ENHANCEDSTATUSCODES (RFC 2034/3463); MIME per
RFC 2045/2046.

Command line (`python -m benchmarks.loadgen --help`):

    # a sink on its own (until Ctrl-C or --duration), optionally failing on command
    python -m benchmarks.loadgen --sink 127.0.0.1:2526 [--fail-4xx-for 10] [--fail-5xx-rate 0.1]
    # load a relay; --sink also starts a sink in a child process and waits for delivery
    python -m benchmarks.loadgen --target 127.0.0.1:2525 --sink 127.0.0.1:2526 \\
        --sessions 20 --messages 50 --sizes 2k:50,10k:40,100k:10 --domains beta.test
    # load a relay whose sink runs elsewhere (another process or test)
    python -m benchmarks.loadgen --target 127.0.0.1:2525 --sink-stats 127.0.0.1:2526

Python API, for tests and benchmarks:

    from benchmarks.loadgen import LoadConfig, Sink, run_load

    async with Sink(port=0, keep_data=True) as sink:      # 127.0.0.1, a free port
        # sink.address == "127.0.0.1:PORT"; point the relay's transport at it
        result = await run_load(LoadConfig(port=relay_port, sessions=5, messages=10))
        missing = await sink.wait_for_ids(result.accepted_ids, timeout=30)
        assert not missing                  # every message that got a 250 arrived

- `Sink(host, port, *, fail_4xx_for=0, fail_5xx_rate=0, drop_rate=0, fail_stage="data",
  keep_data=False, max_message_size, seed, tls_context=None)`; `await start()` /
  `await stop()` or `async with`. With an `ssl.SSLContext` it offers STARTTLS (count in
  `tls_sessions`). Attributes: `port`, `address`, `received_ids` (Message-IDs answered
  250), `rejected_ids` (5xx), `deferred_ids` (4xx), `dropped_ids` (connection dropped at
  the end of DATA, no reply), `messages` (`ReceivedMessage(mail_from, rcpt_tos,
  message_id, data, received_ns)`, only with keep_data), `replies` (count by code),
  `groups` (per run-id `GroupStats`). Methods: `fail_4xx(seconds)` (answer 451 4.3.0
  from now on for that long), `fail_5xx_rate` and `drop_rate` (settable),
  `stats(run_id=None)`, `wait_for_ids(ids, timeout)` → missing ids,
  `wait_for_count(n, timeout, key=None)`. `fail_stage` says where refusals happen:
  "mail", "rcpt" (550 5.1.1) or "data" (after the message was sent; 554 5.7.0).
- `LoadConfig(host, port, sessions, messages, sizes, domains, rcpts_per_message, sender,
  helo, new_connection_per_message, pipelining, run_id, reply_timeout, deadline, seed,
  abort_rate, connect_retry_for, rate)`; `await run_load(cfg)` → `LoadResult` with
  `accepted_ids` (got a 250), `aborted_ids` (connection dropped halfway through DATA on
  purpose, `abort_rate`: must never be delivered), `accepted`, `attempted`, `errors` (by
  stage and reply, e.g. {"mail:451 4.3.2": 3, "data-end:554 5.7.0": 1, "conn:refused":
  1}), `summary()`. `rate` paces the sends (msgs/s over all sessions; 0 = flat out).
  `connect_retry_for` keeps reconnecting (every 0.1 s) that long, e.g.
  while a relay is restarted after `kill -9`, before a message counts as failed.
- `SinkProcess(host, port, args)`: the sink in a child process (its own core), with
  `start()`, `stop()` and `await stats(run_id)` read over the sink's `XSTATS` verb.
- `await query_stats(host, port, run_id)`: the same for any running sink.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from benchmarks._loadgen_client import LoadConfig, LoadResult, run_load
from benchmarks._loadgen_mail import MixError, parse_domain_mix, parse_size_mix
from benchmarks._loadgen_sink import (
    GroupStats,
    ReceivedMessage,
    Sink,
    query_stats,
    require_loopback,
)
from benchmarks._loadgen_stats import machine_facts

__all__ = [
    "GroupStats",
    "LoadConfig",
    "LoadResult",
    "ReceivedMessage",
    "Sink",
    "SinkProcess",
    "drain",
    "query_stats",
    "run_load",
]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (as the gateway does), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT")
    host = host.strip("[]")
    require_loopback(host)
    return host, int(port)


class SinkProcess:
    """A sink in a child process, so it has its own interpreter and core."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 args: Sequence[str] = ()) -> None:
        require_loopback(host)
        self.host, self.port, self.args = host, port, list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> SinkProcess:
        cmd = [sys.executable, "-m", "benchmarks.loadgen", "--sink",
               f"{self.host}:{self.port}", "--json", "", *self.args]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line.startswith(b"sink listening on "):
            self.stop()
            raise RuntimeError(f"sink did not start: {line[:200]!r}")
        self.port = int(line.split()[-1].rpartition(b":")[2])
        return self

    async def stats(self, run_id: str | None = None) -> dict[str, Any]:
        return await query_stats(self.host, self.port, run_id)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


async def drain(host: str, port: int, run_id: str, expected: int,
                idle_timeout: float = 30.0, max_wait: float = 600.0) -> dict[str, Any]:
    """Poll a sink until `expected` messages of `run_id` arrived, or nothing arrived for
    `idle_timeout` seconds, or `max_wait` passed; returns the sink's stats for the run."""
    start = last_change = time.monotonic()
    seen = -1
    while True:
        st = await query_stats(host, port, run_id)
        have = int(st["group"]["messages"])
        now = time.monotonic()
        if have != seen:
            seen, last_change = have, now
        if have >= expected or now - last_change > idle_timeout or now - start > max_wait:
            return st
        await asyncio.sleep(0.05)


def delivery_figures(load: LoadResult, group: dict[str, Any]) -> dict[str, Any]:
    """Delivered msgs/s and end-to-end latency from the sink's view of one run."""
    delivered = int(group["messages"])
    span = (int(group["last_ns"]) - load.started_ns) / 1e9 if delivered else 0.0
    return {
        "delivered": delivered,
        "delivered_distinct": int(group["distinct_ids"]),
        "duplicates": int(group["duplicates"]),
        "delivered_per_s": round(delivered / span, 1) if span > 0 else 0.0,
        "span_s": round(span, 3),  # first message sent → last one delivered
        "e2e_latency": group["e2e_latency"],
        "bare_lf_messages": int(group["bare_lf_messages"]),
    }


def print_report(report: dict[str, Any], out: Any = sys.stdout) -> None:
    load = report["load"]
    acc = load["accept_latency"]
    print(f"run {load['run_id']}: {load['accepted']}/{load['attempted']} accepted in "
          f"{load['wall_s']} s, {load['accepted_per_s']} msgs/s accepted; "
          f"accept latency p50 {acc['p50_ms']} ms p99 {acc['p99_ms']} ms", file=out)
    d = report.get("delivery")
    if d:
        e2e = d["e2e_latency"]
        print(f"  delivered {d['delivered']} ({d['duplicates']} duplicates), "
              f"{d['delivered_per_s']} msgs/s end to end; "
              f"e2e latency p50 {e2e['p50_ms']} ms p99 {e2e['p99_ms']} ms", file=out)
    cpu = report.get("cpu_s", {})
    print(f"  CPU s: client {cpu.get('client')}, sink {cpu.get('sink')}", file=out)
    errs = load["errors"]
    print("  errors: " + (", ".join(f"{k} ×{v}" for k, v in errs.items()) or "none"),
          file=out)


async def _client_main(args: argparse.Namespace) -> dict[str, Any]:
    host, port = parse_hostport(args.target)
    cfg = LoadConfig(
        host=host, port=port, sessions=args.sessions, messages=args.messages,
        sizes=tuple(parse_size_mix(args.sizes)), domains=tuple(parse_domain_mix(args.domains)),
        rcpts_per_message=args.rcpts, sender=args.sender,
        new_connection_per_message=args.new_connection_per_message,
        pipelining=not args.no_pipelining, run_id=args.run_id, deadline=args.deadline,
        abort_rate=args.abort_rate, connect_retry_for=args.connect_retry_for, rate=args.rate)
    sink_proc: SinkProcess | None = None
    sink_at: tuple[str, int] | None = None
    try:
        if args.sink:
            sink_proc = SinkProcess(*parse_hostport(args.sink)).start()
            sink_at = (sink_proc.host, sink_proc.port)
        elif args.sink_stats:
            sink_at = parse_hostport(args.sink_stats)
        sink_cpu0 = (await query_stats(*sink_at))["cpu_s"] if sink_at else None
        load = await run_load(cfg)
        report: dict[str, Any] = {"load": load.summary(), "config": {
            "target": args.target, "sessions": cfg.sessions, "messages": cfg.messages,
            "sizes": args.sizes, "domains": args.domains, "rcpts": cfg.rcpts_per_message,
            "new_connection_per_message": cfg.new_connection_per_message}}
        report["cpu_s"] = {"client": round(load.cpu_s, 3)}
        if sink_at:
            st = await drain(*sink_at, load.run_id, load.accepted,
                             idle_timeout=args.drain_timeout)
            report["delivery"] = delivery_figures(load, st["group"])
            report["cpu_s"]["sink"] = round(st["cpu_s"] - float(sink_cpu0 or 0), 3)
        return report
    finally:
        if sink_proc is not None:
            sink_proc.stop()


async def _sink_main(args: argparse.Namespace) -> dict[str, Any]:
    host, port = parse_hostport(args.sink)
    sink = Sink(host, port, fail_4xx_for=args.fail_4xx_for, fail_5xx_rate=args.fail_5xx_rate,
                drop_rate=args.drop_rate, fail_stage=args.fail_stage)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sink:
        print(f"sink listening on {sink.address}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
        return {"sink": sink.stats()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.loadgen",
        description="SMTP load generator and counting sink (loopback only)")
    p.add_argument("--target", metavar="HOST:PORT", help="the SMTP server to load")
    p.add_argument("--sink", metavar="HOST:PORT",
                   help="run a sink (alone, or in a child process alongside --target)")
    p.add_argument("--sink-stats", metavar="HOST:PORT",
                   help="with --target: a sink already running there, to count delivery")
    p.add_argument("--sessions", type=int, default=20, help="concurrent sessions (20)")
    p.add_argument("--messages", type=int, default=50, help="messages per session (50)")
    p.add_argument("--sizes", default="10k", help="size mix, e.g. 2k:50,10k:40,100k:10")
    p.add_argument("--domains", default="beta.test",
                   help="recipient domain mix, e.g. beta.test:3,gamma.test:1")
    p.add_argument("--rcpts", type=int, default=1, help="recipients per message (1)")
    p.add_argument("--sender", default="loadgen@alpha.test")
    p.add_argument("--new-connection-per-message", action="store_true")
    p.add_argument("--no-pipelining", action="store_true",
                   help="one command at a time even if the server offers PIPELINING")
    p.add_argument("--rate", type=float, default=0.0, metavar="MSGS_PER_S",
                   help="offered load over all sessions (default: as fast as possible)")
    p.add_argument("--abort-rate", type=float, default=0.0, metavar="RATE",
                   help="drop the connection halfway through DATA for this fraction")
    p.add_argument("--connect-retry-for", type=float, default=0.0, metavar="SECONDS",
                   help="keep retrying refused connections this long (relay restarts)")
    p.add_argument("--run-id", default="", help="default: random")
    p.add_argument("--deadline", type=float, default=900.0, help="bound on the run, s")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="give up waiting for delivery after this long without progress, s")
    p.add_argument("--fail-4xx-for", type=float, default=0.0, metavar="SECONDS",
                   help="sink: answer 451 4.3.0 for the first SECONDS seconds")
    p.add_argument("--fail-5xx-rate", type=float, default=0.0, metavar="RATE",
                   help="sink: refuse this fraction of messages with 5xx")
    p.add_argument("--drop-rate", type=float, default=0.0, metavar="RATE",
                   help="sink: drop the connection at the end of DATA for this fraction")
    p.add_argument("--fail-stage", choices=("mail", "rcpt", "data"), default="data",
                   help="sink: where refusals happen (data: after the message is sent)")
    p.add_argument("--duration", type=float, default=24 * 3600.0,
                   help="sink alone: stop after this many seconds")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write the report here ('' for none; default benchmarks/results/)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.target and not args.sink:
        print("loadgen: give --target HOST:PORT, --sink HOST:PORT, or both", file=sys.stderr)
        return 2
    try:
        if args.target:
            report = run_async(_client_main(args))
            print_report(report)
            kind = "loadgen"
        else:
            report = run_async(_sink_main(args))
            print(json.dumps(report["sink"], indent=1, default=str)[:4000])
            kind = "sink"
    except (ValueError, MixError, RuntimeError, OSError) as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return 2
    if args.json != "":
        report["machine"] = machine_facts()
        path = Path(args.json) if args.json else RESULTS / f"{kind}-{int(time.time())}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
