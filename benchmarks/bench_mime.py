"""MIME scanning speed: native scanner, its pure-Python twin, and the standard library.

The same work for each: parse a multipart message and visit every part's content type.
`email.message_from_bytes` with policy.default and with policy.compat32 (the standard
library's fastest mode) are the peers. Messages are 2 KB, 10 KB, 100 KB and 1 MB,
shaped like real mail (alternative text+html, base64 attachments), made by a seeded
generator. Implementations run in alternating rounds and the best round counts, since
these machines drift by tens of percent within minutes.

    python -m benchmarks.bench_mime [--seconds 0.3] [--rounds 3] [--sizes 2k,10k,100k,1m]
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway import native
from gateway.mime import _scan_py

SIZES = {"2k": 2_000, "10k": 10_000, "100k": 100_000, "1m": 1_000_000}
RESULTS = Path(__file__).parent / "results"


def make_message(size: int, seed: int = 5) -> bytes:
    """A multipart/mixed message of about size octets, CRLF line ends."""
    rng = random.Random(seed)
    words = ["policy", "gateway", "certificate", "Grüße", "quarterly", "report", "the",
             "and", "signature", "encrypt", "meeting", "café", "invoice", "attached"]

    def text(n: int) -> str:
        out: list[str] = []
        length = 0
        while length < n:
            line = " ".join(rng.choice(words) for _ in range(10))
            out.append(line)
            length += len(line) + 2
        return "\r\n".join(out)

    plain_len = min(600, size // 4)
    head = (
        "Received: from mx.alpha.test (mx.alpha.test [192.0.2.1])\r\n"
        "\tby gw.beta.test with ESMTPS id 4F2a; Mon, 6 Nov 2023 09:12:01 +0100\r\n"
        "From: =?utf-8?q?Ren=C3=A9_M=C3=BCller?= <rene@alpha.test>\r\n"
        "To: Team <team@beta.test>, bob@beta.test\r\nCc: carol@beta.test\r\n"
        "Subject: =?utf-8?q?Quartalsbericht_f=C3=BCr_Q3?=\r\n"
        "Date: Mon, 6 Nov 2023 08:12:00 +0000\r\nMessage-ID: <bench@alpha.test>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="=_mixed_0001"\r\n\r\n'
        "--=_mixed_0001\r\n"
        'Content-Type: multipart/alternative; boundary="=_alt_0001"\r\n\r\n'
        "--=_alt_0001\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + text(plain_len) + "\r\n"
        "--=_alt_0001\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n<html><body><p>" + text(plain_len)
        + "</p></body></html>\r\n--=_alt_0001--\r\n"
    ).encode()
    parts = [head]
    total = len(head)
    n = 0
    # attachments of at most 64 KB (as documents and images are) until the size is met
    while total < size - 100:
        n += 1
        raw = rng.randbytes(min(48_000, max(16, (size - total - 300) * 3 // 4)))
        encoded = base64.encodebytes(raw).replace(b"\n", b"\r\n")
        part = (b"--=_mixed_0001\r\nContent-Type: application/pdf; name=\"doc%d.pdf\"\r\n"
                b"Content-Disposition: attachment; filename=\"doc%d.pdf\"\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n" % (n, n)) + encoded
        parts.append(part)
        total += len(part)
    parts.append(b"--=_mixed_0001--\r\n")
    return b"".join(parts)


def _scanner(scan: Callable[[bytes], Any]) -> Callable[[bytes], int]:
    def work(data: bytes) -> int:
        return sum(1 for part in scan(data).walk() if part.content_type)
    return work


def _stdlib(policy: Any) -> Callable[[bytes], int]:
    def work(data: bytes) -> int:
        msg = email.message_from_bytes(data, policy=policy)
        return sum(1 for part in msg.walk() if part.get_content_type())
    return work


def candidates() -> dict[str, Callable[[bytes], int]]:
    out: dict[str, Callable[[bytes], int]] = {}
    ext = native.load("mimescan")
    if ext is not None:
        out["native"] = _scanner(ext.scan)
    out["twin"] = _scanner(_scan_py.scan)
    out["email-default"] = _stdlib(email.policy.default)
    out["email-compat32"] = _stdlib(email.policy.compat32)
    return out


def measure(work: Callable[[bytes], int], data: bytes, seconds: float) -> float:
    """Messages per second over about `seconds` of repeated work."""
    count = 0
    start = time.perf_counter()
    while True:
        work(data)
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": sys.version.split()[0]}
    for dist in ("Cython", "smimegate"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "versions": versions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=0.3, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; best counts")
    parser.add_argument("--sizes", default="2k,10k,100k,1m")
    args = parser.parse_args(argv)
    impls = candidates()
    if "native" not in impls:
        print("note: native scanner not built or disabled; measuring the twin only")
    results: list[dict[str, Any]] = []
    print(f"{'size':>6} {'implementation':<15} {'msgs/s':>10} {'MB/s':>9} {'vs compat32':>12}")
    for label in args.sizes.split(","):
        data = make_message(SIZES[label])
        counts = {name: work(data) for name, work in impls.items()}
        if len(set(counts.values())) != 1:
            raise SystemExit(f"implementations disagree on the part count: {counts}")
        best = dict.fromkeys(impls, 0.0)
        for _ in range(args.rounds):
            for name, work in impls.items():
                best[name] = max(best[name], measure(work, data, args.seconds))
        base = best["email-compat32"]
        for name, rate in best.items():
            mbs = rate * len(data) / 1e6
            print(f"{label:>6} {name:<15} {rate:>10.0f} {mbs:>9.1f} {rate / base:>11.2f}x")
            results.append({"size": label, "octets": len(data), "parts": counts[name],
                            "implementation": name, "msgs_per_s": round(rate, 1),
                            "mb_per_s": round(mbs, 2), "vs_compat32": round(rate / base, 3)})
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_mime-{int(time.time())}.json"
    out.write_text(json.dumps({"benchmark": "bench_mime", "machine": machine(),
                               "args": vars(args), "results": results}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
