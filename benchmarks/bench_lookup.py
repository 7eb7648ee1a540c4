"""Certificate lookup benchmark: resolver cache hits, cold lookups one by one against
batched and coalesced, and the trust gate's cost per certificate.

`python -m benchmarks.bench_lookup [--users N] [--hits N]`

A real directory (SQLite) runs on 127.0.0.1 in a thread of this process (so it shares
the GIL with the client: cold figures are a lower bound). Phases, in one run:
(1) `certificates_for` answered from the shared-memory cache, beside a bare
`CertCache.get` of the same key; (2) N new recipients asked one at a time (each a
directory round trip plus validation); (3) the same N asked at once (coalesced and
batched into POST /v1/lookup of up to 100 names), with the directory requests counted;
(4) `validate_certificate` alone. Prints figures and ratios; writes JSON to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._loadgen_stats import machine_facts

RESULTS = Path(__file__).parent / "results"


def _setup(work: Path, users: int) -> tuple[Any, Any, list[str]]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from gateway.config import load_directory_config
    from gateway.keys import load_certificates, load_private_key
    from gateway.keys.demo import Issued, issue, name_of, new_key, write_demo_pki
    from tests.directory_support import DirectoryServer, http

    write_demo_pki(work / "pki")
    inter = Issued(load_private_key(work / "pki/ca/intermediate.key"),
                   load_certificates(work / "pki/ca/intermediate.pem")[0])
    root = load_certificates(work / "pki/ca/root.pem")[0]
    config = load_directory_config(None, overrides={
        "server.data": str(work / "dir"), "trust.anchors": [str(work / "pki/ca/root.pem")]})
    server = DirectoryServer(config).start()

    def pem(c: x509.Certificate) -> str:
        return c.public_bytes(serialization.Encoding.PEM).decode()

    token = server.token("bench.test")
    addresses = [f"user{i}@bench.test" for i in range(users)]
    certs = [issue(name_of("bench.test"), new_key("p256"), inter, dns=("bench.test",))
             .certificate]
    certs += [issue(name_of(a.split("@")[0], "Bench", a), new_key("p256"), inter,
                    emails=(a,)).certificate for a in addresses]
    for c in certs:
        r = http("POST", server.url + "/v1/certificates",
                 {"certificate": pem(c), "chain": [pem(inter.certificate)]},
                 {"Authorization": f"Bearer {token}"})
        assert r.status == 201, r.body
    return server, (root, certs[1], inter.certificate), addresses


def _lookup_requests(server: Any) -> float:
    v = server.directory.metrics.registry.get_sample_value(
        "smimegate_directory_requests_total", {"route": "/v1/lookup", "status": "200"})
    return float(v or 0.0)


async def _bench(server: Any, root: Any, addresses: list[str], hits: int) -> dict[str, Any]:
    from gateway.config.schema import LookupSection
    from gateway.lookup.cache import CertCache
    from gateway.lookup.resolver import CertificateResolver

    config = LookupSection(srv=False, default_directories=(server.url,))
    out: dict[str, Any] = {}

    def new_cache() -> Any:
        return CertCache.create(f"bench-lookup-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                                4096, 16 * 1024 * 1024)

    # (2) one at a time
    cache = new_cache()
    resolver = CertificateResolver(config, anchors=[root], cache=cache)
    before = _lookup_requests(server)
    t0 = time.perf_counter()
    for a in addresses:
        r = await resolver.certificates_for(a)
        assert r.status == "found", r
    seq_s = time.perf_counter() - t0
    out["sequential"] = {"lookups": len(addresses), "per_s": len(addresses) / seq_s,
                         "requests": _lookup_requests(server) - before}
    # (1) hits, on the warm cache of (2)
    a0 = addresses[0]
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(hits):
            await resolver.certificates_for(a0)
        samples.append((time.perf_counter() - t0) / hits * 1e6)
    raw = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(hits):
            cache.get(a0)
            cache.get("bench.test")
        raw.append((time.perf_counter() - t0) / hits * 1e6)
    out["hit"] = {"resolver_us": statistics.median(samples),
                  "two_cache_gets_us": statistics.median(raw)}
    await resolver.close()
    cache.unlink()
    cache.close()
    # (3) all at once
    cache = new_cache()
    resolver = CertificateResolver(config, anchors=[root], cache=cache)
    before = _lookup_requests(server)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(resolver.certificates_for(a) for a in addresses))
    con_s = time.perf_counter() - t0
    assert all(r.status == "found" for r in results)
    out["concurrent"] = {"lookups": len(addresses), "per_s": len(addresses) / con_s,
                         "requests": _lookup_requests(server) - before}
    await resolver.close()
    cache.unlink()
    cache.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--users", type=int, default=300, help="recipients with a certificate")
    p.add_argument("--hits", type=int, default=20000, help="cache hits timed per round")
    p.add_argument("--json", type=Path, help="result file (default benchmarks/results/...)")
    args = p.parse_args(argv)
    from gateway.keys.validate import validate_certificate
    from gateway.lookup.cache import IMPLEMENTATION

    with tempfile.TemporaryDirectory(prefix="bench-lookup-") as tmp:
        server, (root, user_cert, inter), addresses = _setup(Path(tmp), args.users)
        try:
            res = asyncio.run(_bench(server, root, addresses, args.hits))
        finally:
            server.stop()
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        validate_certificate(user_cert, anchors=[root], intermediates=[inter],
                             purpose="encrypt", name=addresses[0])
    res["trust_gate_us"] = (time.perf_counter() - t0) / n * 1e6
    res["cache_implementation"] = IMPLEMENTATION

    h, s, c = res["hit"], res["sequential"], res["concurrent"]
    print(f"cache ({IMPLEMENTATION}) hit through certificates_for: {h['resolver_us']:.1f} µs "
          f"(address + domain); two bare CertCache.get: {h['two_cache_gets_us']:.2f} µs; "
          f"ratio {h['resolver_us'] / h['two_cache_gets_us']:.1f}x")
    print(f"cold, one at a time: {s['per_s']:.0f} recipients/s, "
          f"{s['requests']:.0f} directory requests for {s['lookups']}")
    print(f"cold, all at once:   {c['per_s']:.0f} recipients/s, "
          f"{c['requests']:.0f} directory requests for {c['lookups']}")
    print(f"ratio all-at-once ÷ one-at-a-time: {c['per_s'] / s['per_s']:.1f}x; "
          f"trust gate alone {res['trust_gate_us']:.0f} µs per certificate "
          f"(= {1e6 / res['trust_gate_us']:.0f}/s)")
    out = args.json or RESULTS / f"bench_lookup-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "lookup", "settings": {
        "users": args.users, "hits": args.hits}, "machine": machine_facts(),
        "results": res}, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
