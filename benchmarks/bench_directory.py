"""Directory lookup benchmark: single lookups/s and batched keys/s, SQLite and PostgreSQL.

`python -m benchmarks.bench_directory [--duration S] [--names N] [--backends sqlite,postgresql]`

The directory runs as an operator starts it (`python -m gateway directory run`, one
process); the load comes from a separate process (an HTTP/1.1 keep-alive client on
uvloop). Per backend, in one run: (1) single lookups `GET /v1/domains/D/certificates`
of random names, closed loop, as fast as it answers; (2) the same at half that rate,
paced, with latency counted from each request's scheduled time (no coordinated
omission); (3) `POST /v1/lookup` with --batch names per request. Prints figures, the
issue's target (≥ 5,000 lookups/s; p99 < 10 ms at half load), ratios (batched keys/s
over single lookups/s, PostgreSQL over SQLite) and the directory's CPU use, and writes
JSON to benchmarks/results/. Both processes share the machine's 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._loadgen_stats import machine_facts, percentile, tree_cpu_s

RESULTS = Path(__file__).parent / "results"
TARGET_RATE = 5000.0
TARGET_P99_MS = 10.0


# -- the load process ----------------------------------------------------------------------

async def _conn(host: str, port: int, spec: dict[str, Any], deadline: float,
                interval: float | None, offset: float, lat: list[float],
                statuses: dict[int, int], rng: random.Random) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    names: list[str] = spec["names"]
    batch = spec.get("batch", 0)
    start = time.perf_counter()
    k = 0
    try:
        while True:
            if interval is not None:
                scheduled = start + offset + k * interval
                k += 1
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                scheduled = time.perf_counter()
            if scheduled >= deadline:
                return
            if batch:
                body = json.dumps({"domains": rng.sample(names, batch)}).encode()
                req = (b"POST /v1/lookup HTTP/1.1\r\nHost: d\r\nContent-Type: application/json"
                       b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            else:
                req = (f"GET /v1/domains/{rng.choice(names)}/certificates HTTP/1.1\r\n"
                       "Host: d\r\n\r\n").encode()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - scheduled)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    lat: list[float] = []
    statuses: dict[int, int] = {}
    conns = int(spec["connections"])
    rate = spec.get("rate")
    interval = conns / rate if rate else None
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + float(spec["duration"])
    rng = random.Random(1)
    await asyncio.gather(*(
        _conn(spec["host"], spec["port"], spec, deadline, interval,
              (i / conns) * (interval or 0), lat, statuses, random.Random(rng.random()))
        for i in range(conns)))
    elapsed = time.perf_counter() - t0
    lat.sort()
    return {"requests": len(lat), "elapsed_s": elapsed, "rate": len(lat) / elapsed,
            "p50_ms": (percentile(lat, 50) or 0) * 1000, "p99_ms": (percentile(lat, 99) or 0)
            * 1000, "statuses": {str(k): v for k, v in statuses.items()},
            "client_cpu_s": time.process_time() - cpu0}


def worker(spec_json: str) -> None:
    import uvloop

    print(json.dumps(uvloop.run(_load(json.loads(spec_json)))))


# -- the driver -----------------------------------------------------------------------------

def _populate(data: Path, url: str, pki: Path, count: int) -> list[str]:
    """count domains with one certificate each, written straight into storage."""
    from cryptography import x509

    from gateway.directory.records import make_record
    from gateway.directory.storage import open_storage
    from gateway.keys import load_certificates, load_private_key
    from gateway.keys.demo import Issued, issue, new_key

    root = load_certificates(pki / "ca/root.pem")[0]
    inter = Issued(load_private_key(pki / "ca/intermediate.key"),
                   load_certificates(pki / "ca/intermediate.pem")[0])
    from cryptography.hazmat.primitives.serialization import Encoding

    key = new_key("p256")  # one key for all: the lookup path never looks at it
    names = [f"d{i}.test" for i in range(count)]
    now = int(time.time())
    records = [make_record(issue(x509.Name([]), key, inter, dns=(n,)).certificate,
                           (inter.certificate, root), n, now) for n in names]

    async def write() -> None:
        storage = await open_storage(data, url)
        try:
            for r in records:
                await storage.put_certificate(r, [inter.certificate.public_bytes(Encoding.DER)])
        finally:
            await storage.close()

    asyncio.run(write())
    return names


def _storage_latency(data: Path, url: str, names: list[str], count: int = 3000) -> dict[str, Any]:
    """One find() after another straight on the storage, no HTTP: its own cost."""
    from gateway.directory.storage import open_storage

    async def run() -> list[float]:
        storage = await open_storage(data, url)
        rng = random.Random(2)
        lat = []
        try:
            for _ in range(count):
                t = time.perf_counter()
                await storage.find(rng.choice(names))
                lat.append(time.perf_counter() - t)
        finally:
            await storage.close()
        return sorted(lat)

    lat = asyncio.run(run())
    return {"lookups": count, "p50_us": (percentile(lat, 50) or 0) * 1e6,
            "p99_us": (percentile(lat, 99) or 0) * 1e6}


def _cache_hit_ratio(port: int) -> float | None:
    """Share of single lookups the directory answered from its in-process read cache."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = dict(re.findall(r'lookup_cache_events\{cache="bodies",result="(hit|miss)"\} (\S+)',
                            text))
    hits, misses = float(found.get("hit", 0)), float(found.get("miss", 0))
    return hits / (hits + misses) if hits + misses else None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_load(spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_directory", "--worker",
                          json.dumps(spec)], capture_output=True, text=True, check=False,
                         timeout=float(spec["duration"]) + 120)
    if out.returncode != 0:
        raise RuntimeError(f"load process failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def bench_backend(backend: str, args: argparse.Namespace, pki: Path, work: Path,
                  pg_url: str) -> dict[str, Any]:
    data = work / backend
    url = pg_url if backend == "postgresql" else ""
    names = _populate(data, url, pki, args.names)
    storage = _storage_latency(data, url, names)
    port = _free_port()
    cmd = [sys.executable, "-m", "gateway", "directory", "run", "--listen", f"127.0.0.1:{port}",
           "--data", str(data), "--trust", str(pki / "ca/root.pem")]
    if args.cache_ttl is not None:
        toml = work / "directory.toml"
        toml.write_text(f"[server]\nlookup_cache_ttl = {args.cache_ttl}\n")
        cmd += ["-c", str(toml)]
    if url:
        cmd += ["--database-url", url]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"the directory did not start: {line!r}")
        base = {"host": "127.0.0.1", "port": port, "names": names}
        _run_load({**base, "connections": 8, "duration": 1.0})  # warm up

        def phase(**spec: Any) -> dict[str, Any]:
            cpu0 = tree_cpu_s(server.pid)
            r = _run_load({**base, **spec})
            cpu = tree_cpu_s(server.pid) - cpu0
            r["server_cpu_share"] = cpu / r["elapsed_s"]
            # CPU per request does not depend on what else the machine is doing:
            # 1e6 / it is what one fully available core could answer.
            r["server_cpu_us_per_request"] = cpu / max(1, r["requests"]) * 1e6
            return r

        def paced(rate: float) -> dict[str, Any]:
            """Rounds at a fixed rate; the round with the median p99 stands for them (the
            shared machine's other load comes in bursts), every round is kept."""
            rounds = [phase(connections=args.connections, duration=args.duration / args.rounds,
                            rate=rate) for _ in range(args.rounds)]
            chosen = dict(sorted(rounds, key=lambda r: r["p99_ms"])[len(rounds) // 2])
            chosen["rounds"] = [{k: r[k] for k in ("rate", "p50_ms", "p99_ms")} for r in rounds]
            return chosen

        single = phase(connections=args.connections, duration=args.duration)
        half = paced(single["rate"] / 2)
        target = paced(TARGET_RATE / 2)
        batch = phase(connections=max(2, args.connections // 4), duration=args.duration,
                      batch=args.batch)
        batch["keys_per_s"] = batch["rate"] * args.batch
        cache = _cache_hit_ratio(port)
    finally:
        server.terminate()
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()
    return {"storage_find": storage, "lookup_cache_hit_ratio": cache, "single_max": single,
            "single_half_load": half, "single_at_2500": target, "batch": batch}


def _print(backend: str, r: dict[str, Any], batch: int) -> None:
    s, h, t, b = r["single_max"], r["single_half_load"], r["single_at_2500"], r["batch"]
    print(f"[{backend}]")
    st = r["storage_find"]
    print(f"  storage find() alone, no HTTP: p50 {st['p50_us']:.0f} µs  p99 {st['p99_us']:.0f} µs")
    ratio = r["lookup_cache_hit_ratio"]
    print("  in-process read cache: " + ("off" if ratio is None else
                                          f"{ratio:.0%} of single lookups were hits"))
    print(f"  single lookups  {s['rate']:8.0f}/s   p50 {s['p50_ms']:6.2f} ms  p99 "
          f"{s['p99_ms']:6.2f} ms   directory CPU {s['server_cpu_share']:.2f} cores, "
          f"{s['server_cpu_us_per_request']:.0f} µs/lookup "
          f"(≈ {1e6 / s['server_cpu_us_per_request']:.0f}/s per free core); load process "
          f"CPU {s['client_cpu_s'] / s['elapsed_s']:.2f} cores")
    for label, x in (("at half load", h), ("at 2,500/s", t)):
        spread = ", ".join(f"{r['p99_ms']:.1f}" for r in x["rounds"])
        print(f"  {label:14}  {x['rate']:8.0f}/s   p50 {x['p50_ms']:6.2f} ms  p99 "
              f"{x['p99_ms']:6.2f} ms (median round; p99 of each round: {spread} ms)")
    print(f"  batched ({batch}/req) {b['rate']:6.0f} req/s = {b['keys_per_s']:8.0f} keys/s   "
          f"p50 {b['p50_ms']:6.2f} ms  p99 {b['p99_ms']:6.2f} ms   "
          f"{b['server_cpu_us_per_request'] / batch:.0f} µs/key")
    print(f"  ratio batched keys/s ÷ single lookups/s: {b['keys_per_s'] / s['rate']:.1f}x")
    ok = s["rate"] >= TARGET_RATE and t["p99_ms"] < TARGET_P99_MS
    print(f"  target ≥ {TARGET_RATE:.0f}/s and p99 < {TARGET_P99_MS:.0f} ms at 2,500/s: "
          f"{'met' if ok else 'NOT met'}")
    errors = sum(v for k, v in s["statuses"].items() if k != "200")
    if errors:
        print(f"  non-200 answers: {s['statuses']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per phase")
    p.add_argument("--names", type=int, default=2000, help="domains in the directory")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--batch", type=int, default=100, help="names per POST /v1/lookup")
    p.add_argument("--rounds", type=int, default=3,
                   help="paced phases run in this many rounds of duration/rounds each")
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--cache-ttl", type=float, default=None,
                   help="server.lookup_cache_ttl for the directory (0 turns the in-process "
                        "read cache off; default: the directory's default)")
    p.add_argument("--json", type=Path, help="result file (default benchmarks/results/...)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    from gateway.keys.demo import write_demo_pki

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results: dict[str, Any] = {}
    cluster = None
    with tempfile.TemporaryDirectory(prefix="bench-directory-") as tmp:
        work = Path(tmp)
        write_demo_pki(work / "pki")
        pg_url = ""
        try:
            if "postgresql" in backends:
                from tests.directory_support import PostgresCluster

                cluster = PostgresCluster().start()
                pg_url = cluster.create_database("bench")
            for backend in backends:
                results[backend] = bench_backend(backend, args, work / "pki", work, pg_url)
                _print(backend, results[backend], args.batch)
        finally:
            if cluster is not None:
                cluster.stop()
    if "sqlite" in results and "postgresql" in results:
        sq, pg = results["sqlite"], results["postgresql"]
        single = pg["single_max"]["rate"] / sq["single_max"]["rate"]
        batched = pg["batch"]["keys_per_s"] / sq["batch"]["keys_per_s"]
        find = pg["storage_find"]["p50_us"] / sq["storage_find"]["p50_us"]
        print(f"ratio PostgreSQL ÷ SQLite: single {single:.2f}x, batched {batched:.2f}x, "
              f"storage find() latency {find:.1f}x")
    out = args.json or RESULTS / f"bench_directory-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    import sqlite3

    facts = machine_facts()
    facts["sqlite"] = sqlite3.sqlite_version
    out.write_text(json.dumps({"benchmark": "directory", "settings": {
        k: v for k, v in vars(args).items() if k not in ("worker", "json")} | {
        "json": None}, "machine": facts, "results": results}, indent=2, default=str))
    print(f"wrote {out}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
