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

Prints msgs/s accepted and delivered (end to end) and the ratios of delivered msgs/s;
writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from benchmarks._loadgen_stats import machine_facts
from benchmarks._smimegate_proc import Smimegate, free_port, smimegate_command
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_outbound",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=2000, help="measured messages per target")
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--warmup", type=int, default=1000,
                   help="messages sent first to each target (fills the certificate cache)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: per core)")
    p.add_argument("--postfix", action="store_true", help="also measure Postfix (plain)")
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)
    cmd, why = smimegate_command()
    if cmd is None:
        print(f"smimegate cannot run: {why}")
        return 1
    cores = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
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
            configs = {"smimegate plain": "",
                       "sign+encrypt RSA-2048": outbound_config(
                           pki, "domain-rsa", directory.url, f"bench-outbound-{os.getpid()}-r"),
                       "sign+encrypt P-256": outbound_config(
                           pki, "domain-ec", directory.url, f"bench-outbound-{os.getpid()}-e")}
            for name, extra in configs.items():
                gw = Smimegate(cmd, free_port(), sink.port, (RCPT_DOMAIN, SENDER_DOMAIN),
                               extra_config=extra, workers=args.workers)
                gw.start()
                targets.append((name, Target("smimegate", gw.port, gw)))
            for name, target in targets:
                if args.warmup:
                    run_async(run_loadgen(target, sink, SIZE, args.sessions, args.warmup, 20.0))
                row = run_async(run_loadgen(target, sink, SIZE, args.sessions, args.messages,
                                            20.0))
                row["target"] = name
                rows.append(row)
                relay_cpu = row["cpu_s"]["relay"]
                print(f"{name:<24} {row['accepted_per_s']:>8.0f} msgs/s accepted, "
                      f"{row.get('delivered_per_s', 0):>8.0f} delivered/s, relay CPU "
                      f"{1000 * relay_cpu / max(1, row['accepted']):.2f} ms/msg, "
                      f"errors {row['errors'] or 'none'}", flush=True)
        finally:
            for _, t in targets:
                if t.relay is not None:
                    t.relay.stop()
            sink.stop()
            directory.stop()
    by = {r["target"]: r for r in rows}
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
    report = {"benchmark": "bench_outbound", "machine": machine_facts(), "notes": notes,
              "size": SIZE, "sessions": args.sessions, "messages": args.messages,
              "raw_signatures_per_s": raw, "results": rows, "ratios": ratios,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = Path(args.json) if args.json else RESULTS / f"bench_outbound-{int(time.time())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
