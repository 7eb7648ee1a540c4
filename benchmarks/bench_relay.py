"""Relay throughput: smimegate against Postfix, side by side, through the same sink.

Owns the issue's "Prove it" benchmark: the same load (benchmarks.loadgen, and Postfix's
`smtp-source` as a second client) through `smimegate run` (temp spool, `--transport` to
the sink) and through a private Postfix instance configured as a plain relay to the same
sink, all on 127.0.0.1; a direct client → sink run gives the tools' own ceiling. Each
(size, sessions) case runs every target back to back, so the machine's drift hits them
alike. Both relays fsync before their 250 (Postfix by default; smimegate by design).

    python -m benchmarks.bench_relay            # --quick: 10 KB at 20 and 100 sessions
    python -m benchmarks.bench_relay --full     # 2, 10, 100 KB × 20, 100 sessions

Prints a table, the ratios smimegate / Postfix of end-to-end msgs/s, and writes JSON
(versions, machine, every figure) to benchmarks/results/. CPU is counted per process
tree: the relay (Postfix master and its daemons; smimegate and its workers), the load
generator and the sink (they share the machine's cores with the relay).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._loadgen_stats import children_cpu_s, machine_facts, system_cpu_s
from benchmarks._postfix import (
    PostfixError,
    PostfixRelay,
    ensure_installed,
    system_instance_running,
)
from benchmarks._smimegate_proc import Smimegate, free_port, smimegate_command
from benchmarks.loadgen import (
    RESULTS,
    LoadConfig,
    SinkProcess,
    delivery_figures,
    drain,
    query_stats,
    run_async,
    run_load,
)

SENDER_DOMAIN = "alpha.test"
RCPT_DOMAIN = "beta.test"
QUICK_CASES = ((10 * 1024, 20), (10 * 1024, 100))
FULL_CASES = tuple((s, n) for s in (2 * 1024, 10 * 1024, 100 * 1024) for n in (20, 100))


# -- one measurement --------------------------------------------------------------------

@dataclass
class Target:
    name: str  # "direct", "postfix", "smimegate"
    port: int
    relay: PostfixRelay | Smimegate | None = None

    def cpu_s(self) -> float:
        return self.relay.cpu_s() if self.relay is not None else 0.0

    def write_syscalls(self) -> int:
        """The relay's write syscalls so far (smimegate's main process; 0 for others)."""
        return self.relay.write_syscalls() if isinstance(self.relay, Smimegate) else 0


async def run_loadgen(target: Target, sink: SinkProcess, size: int, sessions: int,
                      total: int, drain_timeout: float, rate: float = 0.0) -> dict[str, Any]:
    per_session = max(1, total // sessions)
    cfg = LoadConfig(port=target.port, sessions=sessions, messages=per_session,
                     sizes=((size, 1),), domains=((RCPT_DOMAIN, 1),),
                     sender=f"loadgen@{SENDER_DOMAIN}", deadline=600.0, rate=rate)
    sink0, relay0, sys0 = (await sink.stats())["cpu_s"], target.cpu_s(), system_cpu_s()
    writes0 = target.write_syscalls()
    load = await run_load(cfg)
    st = await drain(sink.host, sink.port, load.run_id, load.accepted,
                     idle_timeout=drain_timeout, max_wait=600.0)
    summary = load.summary()
    out = {
        "accepted": load.accepted,
        "attempted": load.attempted,
        "accepted_per_s": summary["accepted_per_s"],
        "accept_latency": summary["accept_latency"],
        "errors": summary["errors"],
        **delivery_figures(load, st["group"]),
        "cpu_s": {"client": round(load.cpu_s, 3), "sink": round(st["cpu_s"] - sink0, 3),
                  "relay": round(target.cpu_s() - relay0, 3),
                  "machine": round(system_cpu_s() - sys0, 3)},
        # Socket, spool and pipe writes of smimegate's main process per accepted message
        # (replies, delivery, spool): fewer is less of the event loop's time in the kernel.
        "relay_writes_per_msg": round((target.write_syscalls() - writes0)
                                      / max(1, load.accepted), 2),
    }
    missing = load.accepted - out["delivered_distinct"]
    if missing:
        out["errors"]["lost (accepted, not delivered)"] = missing
    if out["duplicates"]:
        out["errors"]["delivered twice"] = out["duplicates"]
    if out["bare_lf_messages"]:
        out["errors"]["delivered with bare LF"] = out["bare_lf_messages"]
    return out


async def run_smtp_source(target: Target, sink: SinkProcess, size: int, sessions: int,
                          total: int, drain_timeout: float) -> dict[str, Any]:
    tag = f"ss{time.time_ns() % 10**12}"
    sender = f"{tag}@{SENDER_DOMAIN}"
    # smtp-source's -l counts the body only; its own headers add about 150 bytes.
    cmd = ["smtp-source", "-s", str(sessions), "-m", str(total), "-l", str(max(size - 150, 1)),
           "-f", sender, "-t", f"user@{RCPT_DOMAIN}", "-M", "loadgen.alpha.test",
           f"127.0.0.1:{target.port}"]
    sink0, relay0, sys0 = (await sink.stats())["cpu_s"], target.cpu_s(), system_cpu_s()
    child0 = children_cpu_s()
    started_ns = time.time_ns()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out_b, _ = await asyncio.wait_for(proc.communicate(), 600)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        out_b = b"timed out after 600 s"
    done_ns = time.time_ns()
    client_cpu = children_cpu_s() - child0
    key = f"from:{sender}"
    accepted = total if proc.returncode == 0 else 0
    group: dict[str, Any] = {}
    st: dict[str, Any] = {"cpu_s": sink0}
    deadline = time.monotonic() + 600
    seen, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:  # drain: smtp-source mail has no stamp to wait on
        st = await query_stats(sink.host, sink.port, key)
        group = st["group"]
        if group["messages"] != seen:
            seen, last_change = group["messages"], time.monotonic()
        if seen >= total or time.monotonic() - last_change > drain_timeout:
            break
        await asyncio.sleep(0.05)
    delivered = int(group.get("messages", 0))
    span = (int(group.get("last_ns", 0)) - started_ns) / 1e9
    errors: dict[str, int] = {}
    if proc.returncode != 0:
        why = " ".join(out_b.decode(errors="replace").split())[-120:]
        errors[f"smtp-source exit {proc.returncode}: {why}"] = 1
    if delivered < accepted:
        errors["lost (accepted, not delivered)"] = accepted - delivered
    return {
        "accepted": accepted,
        "attempted": total,
        "accepted_per_s": round(accepted / ((done_ns - started_ns) / 1e9), 1),
        "accept_latency": None,
        "errors": errors,
        "delivered": delivered,
        "delivered_per_s": round(delivered / span, 1) if delivered and span > 0 else 0.0,
        "span_s": round(span, 3),
        "e2e_latency": None,
        "cpu_s": {"client": round(client_cpu, 3), "sink": round(st["cpu_s"] - sink0, 3),
                  "relay": round(target.cpu_s() - relay0, 3),
                  "machine": round(system_cpu_s() - sys0, 3)},
    }


async def settle(target: Target, timeout: float = 60.0) -> None:
    """Wait until a Postfix relay's queue is empty, so one case does not bleed into the next."""
    if not isinstance(target.relay, PostfixRelay):
        return
    deadline = time.monotonic() + timeout
    while target.relay.queue_size() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


# -- the whole run ------------------------------------------------------------------------

async def bench(args: argparse.Namespace, targets: list[Target], sink: SinkProcess,
                cases: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    clients = ["loadgen"] if args.no_smtp_source else ["loadgen", "smtp-source"]
    for size, sessions in cases:
        total = args.messages or (1000 if size >= 100 * 1024 else 2000 if args.quick else 3000)
        # Rounds alternate the targets within a case: the machine drifts by tens of
        # percent within minutes, so only figures taken side by side compare.
        for rnd in range(args.rounds):
            for client in clients:
                for target in targets:
                    await settle(target)
                    gw = target.relay if isinstance(target.relay, Smimegate) else None
                    before = gw.metrics() if gw is not None else {}
                    if client == "loadgen":
                        row = await run_loadgen(target, sink, size, sessions, total,
                                                args.drain_timeout, args.rate)
                    else:
                        row = await run_smtp_source(target, sink, size, sessions, total,
                                                    args.drain_timeout)
                    row.update(target=target.name, client=client, size=size,
                               sessions=sessions, messages=total, round=rnd)
                    add_other_load(row)
                    if gw is not None:
                        if not gw.alive():
                            row["errors"]["smimegate exited"] = 1
                        after = gw.metrics()
                        row["relay_metrics"] = {k: round(v - before.get(k, 0.0), 6)
                                                for k, v in after.items()}
                    rows.append(row)
                    print_row(row)
                    if gw is not None:
                        print_gateway_internals(row["relay_metrics"])
    return rows


def add_other_load(row: dict[str, Any]) -> None:
    """CPU the machine spent on anything but this case's relay, client and sink: other
    people's work on a shared machine, which skews a run (reported, not subtracted)."""
    cpu = row["cpu_s"]
    other = cpu["machine"] - cpu["relay"] - cpu["client"] - cpu["sink"]
    cpu["other"] = round(max(0.0, other), 3)
    row["other_load_cores"] = round(cpu["other"] / row["span_s"], 2) if row["span_s"] else None
    row["relay_cpu_ms_per_msg"] = (round(cpu["relay"] * 1000 / row["delivered"], 3)
                                   if row["delivered"] and row["target"] != "direct" else None)


def _ms(lat: dict[str, Any] | None) -> str:
    if not lat or lat.get("p50_ms") is None:
        return "-"
    return f"{lat['p50_ms']:.0f}/{lat['p99_ms']:.0f}"


HEADER = (f"{'size':>5} {'sess':>4} {'client':<11} {'target':<9} {'acc/s':>7} {'e2e/s':>7} "
          f"{'acc ms p50/p99':>14} {'e2e ms p50/p99':>14} {'relay ms/msg':>12} "
          f"{'client s':>8} {'sink s':>6} {'others':>6}  errors")


def print_row(r: dict[str, Any]) -> None:
    cpu = r["cpu_s"]
    per_msg = "-" if r["relay_cpu_ms_per_msg"] is None else f"{r['relay_cpu_ms_per_msg']:.2f}"
    others = "-" if r["other_load_cores"] is None else f"{r['other_load_cores']:.2f}"
    errs = ", ".join(f"{k}×{v}" for k, v in r["errors"].items()) or "-"
    print(f"{r['size'] // 1024:>4}K {r['sessions']:>4} {r['client']:<11} {r['target']:<9} "
          f"{r['accepted_per_s']:>7.0f} {r['delivered_per_s']:>7.0f} "
          f"{_ms(r['accept_latency']):>14} {_ms(r['e2e_latency']):>14} {per_msg:>12} "
          f"{cpu['client']:>8.2f} {cpu['sink']:>6.2f} {others:>6}  {errs}", flush=True)


def print_gateway_internals(m: dict[str, float]) -> None:
    """One line of the gateway's own figures for a case: where its time went."""
    def mean(name: str, scale: float = 1.0) -> str:
        n = m.get(f"{name}_count", 0.0)
        return f"{m.get(f'{name}_sum', 0.0) / n * scale:.1f}" if n else "-"

    print(f"{'':>22}smimegate: fsync rounds {m.get('smimegate_spool_fsync_seconds_count', 0):.0f}"
          f" mean {mean('smimegate_spool_fsync_seconds', 1000)} ms, group"
          f" {mean('smimegate_spool_group_size')}, worker batch"
          f" {mean('smimegate_worker_batch_size')}, accept"
          f" {mean('smimegate_smtp_accept_seconds', 1000)} ms, delivery"
          f" {mean('smimegate_delivery_latency_seconds', 1000)} ms (means)", flush=True)


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """smimegate / Postfix per (client, size, sessions): end-to-end msgs/s (the median of
    the per-round ratios, and each side's median rate) and relay CPU per message."""
    rate: dict[tuple[str, int, int], dict[str, dict[int, float]]] = {}
    cpu: dict[tuple[str, int, int], dict[str, list[float]]] = {}
    for r in rows:
        key = (r["client"], r["size"], r["sessions"])
        rate.setdefault(key, {}).setdefault(r["target"], {})[r["round"]] = r["delivered_per_s"]
        if r.get("relay_cpu_ms_per_msg"):
            cpu.setdefault(key, {}).setdefault(r["target"], []).append(r["relay_cpu_ms_per_msg"])
    out = []
    for key, targets in rate.items():
        sg, pf = targets.get("smimegate", {}), targets.get("postfix", {})
        per_round = [sg[k] / pf[k] for k in sg if pf.get(k)]
        if not per_round:
            continue
        sg_cpu = round(statistics.median(cpu.get(key, {}).get("smimegate", [0.0])), 3)
        pf_cpu = round(statistics.median(cpu.get(key, {}).get("postfix", [0.0])), 3)
        out.append({"client": key[0], "size": key[1], "sessions": key[2],
                    "smimegate_e2e_per_s": statistics.median(sg.values()),
                    "postfix_e2e_per_s": statistics.median(pf.values()),
                    "ratio": round(statistics.median(per_round), 2),
                    "rounds": len(per_round),
                    "smimegate_cpu_ms_per_msg": sg_cpu, "postfix_cpu_ms_per_msg": pf_cpu,
                    # > 1: smimegate spends less CPU per message than Postfix
                    "cpu_ratio": round(pf_cpu / sg_cpu, 2) if sg_cpu else None})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_relay", description=__doc__
                                .split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", default=True,
                      help="10 KB at 20 and 100 sessions, 2,000 messages each (default)")
    mode.add_argument("--full", action="store_true",
                      help="2, 10 and 100 KB × 20 and 100 sessions, 3,000 messages each")
    p.add_argument("--messages", type=int, default=0, help="messages per case")
    p.add_argument("--rounds", type=int, default=1,
                   help="alternating rounds per case; figures are medians (1)")
    p.add_argument("--rate", type=float, default=0.0, metavar="MSGS_PER_S",
                   help="pace the load generator (latency at equal load); default flat out")
    p.add_argument("--no-smimegate", action="store_true")
    p.add_argument("--no-postfix", action="store_true")
    p.add_argument("--no-direct", action="store_true", help="skip client → sink baselines")
    p.add_argument("--no-smtp-source", action="store_true")
    p.add_argument("--drain-timeout", type=float, default=20.0,
                   help="stop waiting for delivery after this long without progress, s")
    p.add_argument("--spool-sync", choices=("fsync", "syncfs"), default="fsync",
                   help="smimegate's spool.sync: fsync every file (default) or one syncfs(2) "
                        "per commit round")
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)
    args.quick = not args.full
    if not 1 <= args.rounds <= 100 or args.messages < 0:
        p.error("--rounds must be 1..100 and --messages not negative")
    cases = FULL_CASES if args.full else QUICK_CASES
    notes: list[str] = []

    smimegate_cmd, why = (None, "skipped (--no-smimegate)") if args.no_smimegate \
        else smimegate_command()
    if smimegate_cmd is None:
        notes.append(f"smimegate side NOT measured: {why}")
        print(f"*** smimegate side NOT measured: {why}", flush=True)
    system_was_running = system_instance_running()

    sink = SinkProcess().start()
    targets: list[Target] = []
    try:
        if not args.no_direct:
            targets.append(Target("direct", sink.port))
        if not args.no_postfix:
            try:
                ensure_installed(notes)
                pf = PostfixRelay(free_port(), sink.host, sink.port)
                targets.append(Target("postfix", pf.port, pf))
                pf.start()
            except PostfixError as e:
                notes.append(f"Postfix side NOT measured: {e}")
                print(f"*** Postfix side NOT measured: {e}", flush=True)
                for t in targets:
                    if t.name == "postfix" and t.relay is not None:
                        t.relay.stop()
                targets = [t for t in targets if t.name != "postfix"]
        if smimegate_cmd is not None:
            sg = Smimegate(smimegate_cmd, free_port(), sink.port, (RCPT_DOMAIN, SENDER_DOMAIN),
                           extra_config=f'[spool]\nsync = "{args.spool_sync}"\n')
            targets.append(Target("smimegate", sg.port, sg))
            try:
                sg.start()
            except RuntimeError as e:
                notes.append(f"smimegate side NOT measured: {e}")
                print(f"*** smimegate side NOT measured: {e}", flush=True)
                targets.pop()
                sg.stop()
        print(HEADER, flush=True)
        rows = run_async(bench(args, targets, sink, cases))
    finally:
        for t in targets:
            if t.relay is not None:
                t.relay.stop()
        sink.stop()
        if not system_was_running and system_instance_running():
            subprocess.run(["postfix", "stop"], capture_output=True, timeout=60, check=False)
            notes.append("stopped a system-wide Postfix instance that was not running before")

    rat = ratios(rows)
    for r in rat:
        print(f"smimegate / Postfix end to end, {r['client']}, {r['size'] // 1024} KB, "
              f"{r['sessions']} sessions: {r['smimegate_e2e_per_s']:.0f} / "
              f"{r['postfix_e2e_per_s']:.0f} msgs/s = {r['ratio']}× "
              f"(median of {r['rounds']} round(s)); relay CPU per message "
              f"{r['smimegate_cpu_ms_per_msg']} / {r['postfix_cpu_ms_per_msg']} ms")
    if not rat:
        print("no smimegate / Postfix ratio: one side was not measured")
    others = [r["other_load_cores"] for r in rows if r.get("other_load_cores") is not None]
    if others and statistics.median(others) > 0.25:
        note = (f"other processes kept {statistics.median(others):.2f} of the machine's "
                f"{os.cpu_count()} cores busy (median over cases): rates are skewed by "
                f"contention; relay CPU per message is the steadier comparison")
        notes.append(note)
        print(f"*** {note}")
    report = {"benchmark": "bench_relay", "mode": "full" if args.full else "quick",
              "machine": machine_facts(), "notes": notes, "results": rows, "ratios": rat,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = Path(args.json) if args.json else RESULTS / f"bench_relay-{int(time.time())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
