"""Outbound sign+encrypt relay throughput, beside the plain relay, in one run.

Owns issue 6's relay benchmark: `smimegate run` three ways through the same sink, all on
127.0.0.1 — plain (no [keys]: messages pass unchanged), sign+encrypt with an RSA-2048
domain signing key, and with a P-256 one (encrypting to bob@beta.test's RSA-2048
certificate, found in a real directory at RCPT and read by the workers from the
shared-memory cache) — plus, optionally, Postfix as a plain relay (bench_relay's
instance). Beside them: cores × the raw signature rate of each key (the ceiling of a
relay that signs every message). Each target first gets a warm-up load that looks up
every recipient address the measured load uses, so the figures are steady state.

    python -m benchmarks.bench_outbound                 # 2,000 × 10 KB, 100 sessions
    python -m benchmarks.bench_outbound --postfix --messages 5000 --sessions 20
    # before/after a change: medians of 3 alternating rounds, this tree beside another
    git worktree add /tmp/base HEAD && python -m benchmarks.bench_outbound --postfix \
        --rounds 3 --baseline /tmp/base

Prints msgs/s accepted and delivered (end to end), relay CPU per message (the gateway's
whole process tree) and the ratios of delivered msgs/s; writes JSON to
benchmarks/results/.

Reading it: the load generator, the sink, the relays and the kernel share the machine's
cores, so a relay's msgs/s is about cores / (CPU per message of everything); relay CPU
per message is the steadier figure. The machines drift by tens of percent within
minutes (and other work on them shows up here): compare only within one run, with
--rounds 3 or more, and --baseline for a change. Where the CPU goes: per thread from
/proc/PID/task/*/stat; Python stacks with `py-spy record --subprocesses --nonblocking
-r 200 -f raw -p PID` (the gateway and its workers); kernel stacks with
`perf record -g -p PID,...`. The benchmark VMs' root filesystem is ext4 without a
journal, where creating a file steps over every inode freed in the last minutes
(recently_deleted() in fs/ext4/ialloc.c): a spool that creates and deletes a file per
message pays more the longer the load runs (gateway.spool.pool.FilePool avoids it;
Postfix, which creates a queue file per message, pays it too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from benchmarks._loadgen_stats import machine_facts
from benchmarks._smimegate_proc import REPO, Smimegate, free_port, smimegate_command
from benchmarks.bench_relay import RCPT_DOMAIN, SENDER_DOMAIN, Target, run_loadgen
from benchmarks.loadgen import RESULTS, SinkProcess, run_async
from gateway.keys import load_certificates, load_private_key
from gateway.keys.demo import write_demo_pki
from gateway.keys.identity import PrivateKey

SIZE = 10 * 1024


def outbound_config(pki: Path, stem: str, directory_url: str, cache: str) -> str:
    alpha = pki / "alpha.test"
    return f"""
[keys]
certificates = ["{alpha}/{stem}-chain.pem"]
private_keys = ["{alpha}/{stem}.key"]
trust_anchors = ["{pki}/ca/root.pem"]

[lookup]
srv = false

[lookup.directories]
"{RCPT_DOMAIN}" = "{directory_url}"

[cache]
name = "{cache}"
entries = 65536
arena = "64MB"
"""


def signatures_per_s(key: PrivateKey, seconds: float = 1.0) -> float:
    data = os.urandom(32)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            key.sign(data, ec.ECDSA(hashes.SHA256()))
        else:
            key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        n += 1
    return n / (time.perf_counter() - t0)


def start_directory(pki: Path, data: Path) -> Any:
    # The directory the tests run (SQLite, in a thread); imported here only.
    from gateway.config import load_directory_config
    from tests.directory_support import DirectoryServer, http
    from tests.directory_world import pem

    config = load_directory_config(None, overrides={
        "server.data": str(data), "trust.anchors": [str(pki / "ca/root.pem")]})
    server = DirectoryServer(config).start()
    token = server.token(RCPT_DOMAIN)
    inter = load_certificates(pki / "ca/intermediate.pem")[0]
    for name in ("domain-rsa.pem", "bob.pem"):
        cert = load_certificates(pki / RCPT_DOMAIN / name)[0]
        r = http("POST", server.url + "/v1/certificates",
                 {"certificate": pem(cert), "chain": [pem(inter)]},
                 {"Authorization": f"Bearer {token}"})
        if r.status != 201:
            server.stop()
            raise RuntimeError(f"cannot publish {name}: {r.status} {r.body[:200]!r}")
    return server


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One target's figures over its rounds: medians, and every round's row."""
    row = dict(rounds[len(rounds) // 2])  # errors, latencies: a middle round's
    for key in ("accepted_per_s", "delivered_per_s"):
        row[key] = statistics.median(r.get(key, 0.0) for r in rounds)
    row["relay_cpu_ms"] = statistics.median(
        1000 * r["cpu_s"]["relay"] / max(1, r["accepted"]) for r in rounds)
    row["relay_writes_per_msg"] = statistics.median(
        r.get("relay_writes_per_msg", 0.0) for r in rounds)
    row["rounds"] = rounds
    return row


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_outbound",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=2000, help="measured messages per target")
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--warmup", type=int, default=1000,
                   help="messages sent first to each target (fills the certificate cache)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: per core)")
    p.add_argument("--postfix", action="store_true", help="also measure Postfix (plain)")
    p.add_argument("--rounds", type=int, default=1,
                   help="measured rounds; each runs every target once, in turn (medians)")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="another checkout whose smimegate runs beside this one's, each "
                        "configuration both ways (e.g. `git worktree add DIR HEAD~1`)")
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)
    cmd, why = smimegate_command()
    if cmd is None:
        print(f"smimegate cannot run: {why}")
        return 1
    if args.baseline is not None and not (args.baseline / "gateway" / "run.py").is_file():
        print(f"--baseline {args.baseline}: not a checkout of this project")
        return 1
    cores = os.cpu_count() or 1
    measured: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-outbound-") as tmp:
        pki = Path(tmp) / "pki"
        write_demo_pki(pki)
        raw = {stem: signatures_per_s(load_private_key(pki / "alpha.test" / f"{stem}.key"))
               for stem in ("domain-rsa", "domain-ec")}
        directory = start_directory(pki, Path(tmp) / "directory")
        sink = SinkProcess().start()
        targets: list[tuple[str, Target]] = []
        try:
            if args.postfix:
                from benchmarks._postfix import PostfixError, PostfixRelay, ensure_installed
                try:
                    ensure_installed(notes)
                    pf = PostfixRelay(free_port(), sink.host, sink.port)
                    pf.start()
                    targets.append(("postfix (plain)", Target("postfix", pf.port, pf)))
                except PostfixError as e:
                    notes.append(f"Postfix NOT measured: {e}")
            tag = f"bench-outbound-{os.getpid()}"
            configs = {"smimegate plain": "",
                       "sign+encrypt RSA-2048": outbound_config(
                           pki, "domain-rsa", directory.url, f"{tag}-r"),
                       "sign+encrypt P-256": outbound_config(
                           pki, "domain-ec", directory.url, f"{tag}-e")}
            trees = [("", REPO)] + ([(" [baseline]", args.baseline.resolve())]
                                    if args.baseline is not None else [])
            for name, extra in configs.items():
                for suffix, tree in trees:
                    # Each gateway its own cache name: two of them may run at once.
                    config = extra.replace(tag, f"{tag}{len(targets)}")
                    gw = Smimegate(cmd, free_port(), sink.port, (RCPT_DOMAIN, SENDER_DOMAIN),
                                   extra_config=config, workers=args.workers, tree=tree)
                    gw.start()
                    targets.append((name + suffix, Target("smimegate", gw.port, gw)))
            for _, target in targets:
                if args.warmup:
                    run_async(run_loadgen(target, sink, SIZE, args.sessions, args.warmup, 20.0))
            for r in range(args.rounds):
                for name, target in targets:
                    row = run_async(run_loadgen(target, sink, SIZE, args.sessions,
                                                args.messages, 20.0))
                    measured.setdefault(name, []).append(row)
                    relay_cpu = row["cpu_s"]["relay"]
                    print(f"{name:<36} {row['accepted_per_s']:>6.0f} msgs/s accepted, "
                          f"{row.get('delivered_per_s', 0):>6.0f} delivered/s, relay CPU "
                          f"{1000 * relay_cpu / max(1, row['accepted']):.2f} ms/msg, "
                          f"{row['relay_writes_per_msg']:.2f} writes/msg, "
                          f"errors {row['errors'] or 'none'}"
                          + (f"  (round {r + 1})" if args.rounds > 1 else ""), flush=True)
        finally:
            for _, t in targets:
                if t.relay is not None:
                    t.relay.stop()
            sink.stop()
            directory.stop()
    rows = []
    for name, rounds in measured.items():
        rows.append({"target": name, **summarise(rounds)})
    by = {r["target"]: r for r in rows}
    if args.rounds > 1:
        print(f"medians of {args.rounds} rounds:")
        for row in rows:
            print(f"{row['target']:<36} {row['accepted_per_s']:>6.0f} msgs/s accepted, "
                  f"{row['delivered_per_s']:>6.0f} delivered/s, relay CPU "
                  f"{row['relay_cpu_ms']:.2f} ms/msg, {row['relay_writes_per_msg']:.2f} writes/msg")
    ratios: dict[str, float] = {}
    for key, stem in (("sign+encrypt RSA-2048", "domain-rsa"),
                      ("sign+encrypt P-256", "domain-ec")):
        rate = by.get(key, {}).get("delivered_per_s", 0.0)
        print(f"{key}: raw signatures {raw[stem]:.0f}/s × {cores} cores = "
              f"{raw[stem] * cores:.0f}/s ceiling; relay = "
              f"{rate / (raw[stem] * cores):.2f} of it")
        ratios[f"{key} / ceiling"] = round(rate / (raw[stem] * cores), 3)
        for base in ("smimegate plain", "postfix (plain)"):
            if base in by and by[base]["delivered_per_s"]:
                ratios[f"{key} / {base}"] = round(rate / by[base]["delivered_per_s"], 3)
                print(f"  {key} / {base}: {ratios[f'{key} / {base}']}×")
    if args.baseline is not None:
        for name in configs:
            new, old = by.get(name), by.get(name + " [baseline]")
            if new and old and old["delivered_per_s"]:
                ratios[f"{name} / baseline"] = round(
                    new["delivered_per_s"] / old["delivered_per_s"], 3)
                print(f"{name}: this tree / baseline = {ratios[f'{name} / baseline']}× "
                      f"delivered/s, relay CPU {new['relay_cpu_ms']:.2f} vs "
                      f"{old['relay_cpu_ms']:.2f} ms/msg, writes "
                      f"{new['relay_writes_per_msg']:.2f} vs {old['relay_writes_per_msg']:.2f}"
                      " per msg")
    report = {"benchmark": "bench_outbound", "machine": machine_facts(), "notes": notes,
              "size": SIZE, "sessions": args.sessions, "messages": args.messages,
              "rounds": args.rounds,
              "baseline": str(args.baseline) if args.baseline is not None else None,
              "raw_signatures_per_s": raw, "results": rows, "ratios": ratios,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = Path(args.json) if args.json else RESULTS / f"bench_outbound-{int(time.time())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
