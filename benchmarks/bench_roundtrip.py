"""The two-gateway round trip (issue 7): msgs/s from alpha.test's gateway through beta.test's
to beta's internal server, every message signed + encrypted by alpha and decrypted +
verified (with an OCSP check against the directory, answers cached as configured) by
beta, beside the ceiling of the private-key work measured in the same run.

The world is the demo's (gateway/demo/world.py: demo PKI, a directory with both domains
published, two `smimegate run`), alpha delivering straight to beta; the load generator
sends 10 KB messages from loadgen@alpha.test to beta.test addresses (encrypted to beta's
domain certificate) and a sink in its own process counts what beta delivers. Each message
costs at least two RSA-2048 private-key operations (alpha's signature, beta's key
transport decryption), so the ceiling is cores × raw RSA-2048 rate / 2.

    python -m benchmarks.bench_roundtrip                      # 1,600 × 10 KB, 16 sessions
    python -m benchmarks.bench_roundtrip --messages 3000 --workers 2

Writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from benchmarks._loadgen_stats import machine_facts
from benchmarks.loadgen import (
    RESULTS,
    LoadConfig,
    SinkProcess,
    delivery_figures,
    drain,
    run_async,
    run_load,
)
from gateway.demo.procs import fetch
from gateway.demo.world import World
from gateway.keys import load_private_key


def rsa_private_ops_per_s(key_path: Path, seconds: float = 1.0) -> float:
    key = load_private_key(key_path)
    assert isinstance(key, rsa.RSAPrivateKey)
    data, n, start = b"x" * 32, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        n += 1
    return n / (time.perf_counter() - start)


def cpu_seconds() -> float:
    """User + system CPU so far of this process and every live descendant (/proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        parent[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    me, total = os.getpid(), 0.0
    for pid, cpu in used.items():
        p = pid
        while p > 1 and p != me:
            p = parent.get(p, 0)
        if p == me:
            total += cpu
    return total


def counter(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1600, help="measured messages in all")
    p.add_argument("--sessions", type=int, default=16,
                   help="concurrent SMTP sessions (the gateway allows 20 per client)")
    p.add_argument("--workers", type=int, default=1, help="worker processes per gateway")
    args = p.parse_args(argv)
    per_session = max(1, args.messages // args.sessions)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="smimegate-roundtrip-") as tmp:
        world = World(Path(tmp), fresh_ocsp=False, workers=args.workers)
        sink = SinkProcess()
        try:
            world.write_pki()
            raw = rsa_private_ops_per_s(world.pki / "beta.test/domain-rsa.key")
            world.create_tokens()
            world.start_directory()
            for domain in ("alpha.test", "beta.test"):
                world.publish(domain)
            sink.start()
            world.mailboxes.append(world.alpha_sink)
            world.alpha_sink.start()  # alpha's own domain (DSNs, if any)
            world.start_gateways(record=False, beta_sink=sink.port)
            alpha = world.ports["alpha"][0]

            def load(run_id: str) -> dict[str, object]:
                cfg = LoadConfig(port=alpha, sessions=args.sessions, messages=per_session,
                                 domains=(("beta.test", 1),), run_id=run_id, seed=7)

                async def go() -> dict[str, object]:
                    result = await run_load(cfg)
                    st = await drain("127.0.0.1", sink.port, run_id, result.accepted,
                                     idle_timeout=30.0, max_wait=300.0)
                    figures = delivery_figures(result, st["group"])
                    figures["attempted"], figures["errors"] = result.attempted, result.errors
                    if figures["delivered"] < result.accepted:
                        raise SystemExit(f"{run_id}: {figures['delivered']} of "
                                         f"{result.accepted} accepted messages arrived")
                    return dict(figures)
                return run_async(go())

            load("warmup")  # lookups cached, OCSP answers cached, workers warm
            cpu0 = cpu_seconds()
            figures = load("measured")
            cpu_per_msg = (cpu_seconds() - cpu0) / max(1, int(str(figures["delivered"])))
            beta_metrics = fetch(f"http://127.0.0.1:{world.ports['beta'][1]}/metrics")
        finally:
            world.close()
            sink.stop()
    delivered, seconds = int(str(figures["delivered"])), float(str(figures["span_s"]))
    rate = delivered / seconds
    ceiling = cores * raw / 2
    passed = counter(beta_metrics, 'smimegate_inbound_verdicts_total{verdict="pass"}')
    print(f"two-gateway round trip: {delivered} × 10 KB in {seconds:.1f} s = {rate:.0f} msgs/s "
          f"({args.workers} worker(s) per gateway, {args.sessions} sessions); "
          f"beta verdicts pass = {passed:.0f}; not accepted: {figures['errors'] or 'none'}")
    print(f"CPU of every process (load generator, gateways, directory, sink) per message: "
          f"{cpu_per_msg * 1000:.1f} ms")
    print(f"raw RSA-2048 private-key ops {raw:.0f}/s × {cores} cores / 2 per message = "
          f"{ceiling:.0f} msgs/s ceiling; round trip = {rate / ceiling:.2f} of it")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"roundtrip-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({
        "machine": machine_facts(), "messages": delivered, "seconds": seconds,
        "msgs_per_s": rate, "rsa2048_private_ops_per_s": raw, "ceiling_msgs_per_s": ceiling,
        "ratio_to_ceiling": rate / ceiling, "workers": args.workers,
        "sessions": args.sessions, "inbound_pass": passed,
        "e2e_latency": figures["e2e_latency"], "cpu_ms_per_message": cpu_per_msg * 1000},
        indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
