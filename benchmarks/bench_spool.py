"""Spool durability cost: group commit against a naive write + fsync per message.

`python -m benchmarks.bench_spool [--messages N] [--size BYTES] [--rounds R] [--dir DIR]`

For 1, 8 and 64 concurrent writers (asyncio tasks, as SMTP sessions would be), each
variant makes the same messages durable before "acknowledging" them:

- naive: per message, in a thread: write a temp file, fdatasync, rename, fsync the
  directory (what a spool without group commit does; the threads run in parallel);
- group: `Spool.enqueue` with group commit (one round for all that arrived meanwhile);
- group+window: the same with spool.group_commit_window = 2 ms;
- group+syncfs: group commit with spool.sync = "syncfs" (one syncfs(2) per round for the
  data, one for the names).

Variants alternate within each round (the machine drifts), medians are printed with
messages/s, fsync calls per message, enqueue latency p50/p99 and the ratio to naive.

Then (`--delivery N`, 0 to skip) the other half of the spool's life: N queued messages
delivered by `DeliveryAgent` over SMTP to the load generator's counting sink in its own
process, each delivery made durable (the message's removal); delivered msgs/s and this
process's CPU per message.
JSON with versions and machine goes to benchmarks/results/. The spool directory should
be on the disk a real spool would use (default: a temp dir under /tmp).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.loadgen import SinkProcess
from gateway.config.schema import DeliverySection, SpoolSection
from gateway.config.types import HostPort
from gateway.delivery import DeliveryAgent
from gateway.envelope import Envelope
from gateway.spool import Spool

RESULTS = Path(__file__).parent / "results"
WRITERS = (1, 8, 64)
ENV = Envelope("alice@alpha.test", ("bob@beta.test",), client_address="127.0.0.1")


async def _drive(n: int, writers: int,
                 one: Callable[[int], Awaitable[None]]) -> tuple[float, list[float]]:
    """Run n acknowledged writes with `writers` concurrent tasks: seconds, latencies."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def writer() -> None:
        for i in counter:
            t = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return time.perf_counter() - started, latencies


def _naive_write(directory: Path, i: int, data: bytes) -> None:
    tmp, final = directory / f"tmp-{i}", directory / f"msg-{i}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


async def naive(base: Path, n: int, writers: int, data: bytes) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(dir=base))
    seconds, lat = await _drive(
        n, writers, lambda i: asyncio.to_thread(_naive_write, directory, i, data))
    return _figures(n, seconds, lat, fsyncs=2 * n)


async def group(base: Path, n: int, writers: int, data: bytes, window: float,
                sync: str) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(dir=base))
    spool = await Spool.open(SpoolSection(directory=directory, max_messages=10 * n,
                                          group_commit_window=window, sync=sync))

    async def one(_: int) -> None:
        await spool.enqueue(ENV, data)

    seconds, lat = await _drive(n, writers, one)
    stats = spool._committer.stats
    await spool.close()
    figures = _figures(n, seconds, lat, fsyncs=stats.fsyncs)
    figures["group_mean"] = stats.changes / stats.rounds
    return figures


async def delivery(base: Path, n: int, data: bytes) -> dict[str, float]:
    sink = SinkProcess().start()
    try:
        spool = await Spool.open(SpoolSection(directory=Path(tempfile.mkdtemp(dir=base)),
                                              max_messages=10 * n))
        await asyncio.gather(*(spool.enqueue(ENV, b"Message-ID: <%d@bench.invalid>\r\n%s"
                                             % (i, data)) for i in range(n)))
        config = DeliverySection(tls="none", transport=(
            ("beta.test", HostPort(sink.host, sink.port)),))
        agent = DeliveryAgent(spool, config, hostname="bench.invalid")
        started, cpu = time.perf_counter(), time.process_time()
        await agent.start()
        while spool._updates.stats.changes < n:  # every removal (= delivery) durable
            await asyncio.sleep(0.002)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        received = (await sink.stats())["received"]
        await agent.stop()
        await spool.close()
    finally:
        sink.stop()
    if received != n:
        raise RuntimeError(f"the sink received {received} of {n} messages")
    return {"msgs_per_s": n / seconds, "cpu_us_per_msg": 1e6 * cpu / n}


def _figures(n: int, seconds: float, lat: list[float], *, fsyncs: int) -> dict[str, float]:
    lat.sort()
    return {"msgs_per_s": n / seconds, "fsyncs_per_msg": fsyncs / n,
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * 0.99)]}


def _machine(base: Path) -> dict[str, Any]:
    fs = "?"
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split() for line in f]
        best = max((m for m in mounts if str(base.resolve()).startswith(m[1])),
                   key=lambda m: len(m[1]))
        fs = f"{best[2]} on {best[0]} at {best[1]}"
    except (OSError, ValueError):
        pass
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "filesystem": fs}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    # A mail-like message: headers, then 76-column lines (as base64 ciphertext would be).
    line = os.urandom(38).hex().encode() + b"\r\n"
    data = (b"Subject: bench\r\nFrom: alice@alpha.test\r\n\r\n"
            + line * (args.size // len(line) + 1))[:args.size - 2] + b"\r\n"
    variants: dict[str, Callable[[Path, int, int], Awaitable[dict[str, float]]]] = {
        "naive": lambda b, n, w: naive(b, n, w, data),
        "group": lambda b, n, w: group(b, n, w, data, 0.0, "fsync"),
        "group+window": lambda b, n, w: group(b, n, w, data, 0.002, "fsync"),
        "group+syncfs": lambda b, n, w: group(b, n, w, data, 0.0, "syncfs"),
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_spool-") as tmp:
        base = Path(tmp)
        machine = _machine(base)
        for writers in WRITERS:
            runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
            n = args.messages if writers > 1 else max(args.messages // 3, 10)
            for _ in range(args.rounds):
                for name, variant in variants.items():
                    runs[name].append(await variant(base, n, writers))
            results[str(writers)] = {
                name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                for name, rs in runs.items()}
        delivered = await delivery(base, args.delivery, data) if args.delivery else {}
    return {"machine": machine, "messages": args.messages, "size": args.size,
            "rounds": args.rounds, "results": results, "delivery": delivered}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=600,
                   help="per run (default 600; a third of it for 1 writer)")
    p.add_argument("--size", type=int, default=10240, help="message bytes (default 10240)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--dir", default=None, help="where to write (default: the temp dir)")
    p.add_argument("--delivery", type=int, default=2000, metavar="N",
                   help="messages for the delivery figure (default 2000; 0 skips it)")
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args()
    report = asyncio.run(main_async(args))
    print(f"spool durability, {args.messages} x {args.size} B messages (1 writer: a third), "
          f"median of "
          f"{args.rounds} alternating rounds; {report['machine']['filesystem']}")
    print(f"{'writers':>7} {'variant':<13} {'msgs/s':>8} {'fsync/msg':>9} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'vs naive':>8}")
    for writers, variants in report["results"].items():
        base = variants["naive"]["msgs_per_s"]
        for name, fig in variants.items():
            print(f"{writers:>7} {name:<13} {fig['msgs_per_s']:>8.0f} "
                  f"{fig['fsyncs_per_msg']:>9.2f} {fig['p50_ms']:>7.2f} {fig['p99_ms']:>7.2f} "
                  f"{fig['msgs_per_s'] / base:>7.2f}x")
    if report["delivery"]:
        d = report["delivery"]
        print(f"delivery: {args.delivery} queued messages → SMTP → sink (own process): "
              f"{d['msgs_per_s']:.0f} msgs/s, {d['cpu_us_per_msg']:.0f} µs CPU/msg here")
    RESULTS.mkdir(exist_ok=True)
    path = Path(args.json) if args.json else RESULTS / f"bench_spool-{int(time.time())}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
