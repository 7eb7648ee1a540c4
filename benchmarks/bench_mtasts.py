"""MTA-STS benchmark: what a domain's policy costs per delivery session (RFC 8461).

`python -m benchmarks.bench_mtasts [--duration S] [--rounds N]`

In one process, alternating rounds (each starting with the next item), per CPU-second of
this process, which runs the DNS server (tests/dns_support.py) and the HTTPS policy
server (aiohttp) on loopback too: (1) parse_policy of a four-field policy; (2) a look-up
with the policy cached (what every session to an MTA-STS domain pays: one TXT query);
(3) a look-up that fetches (TXT query, then the policy over a new HTTPS connection with
a verified certificate: what each domain pays once per max_age or id change); (4) a bare
MX query through the same resolver, the routing cost every session pays already. Prints
medians and the ratios; writes JSON with versions and machine to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import dns.version
from aiohttp import web

from benchmarks._rates import per_cpu_second
from benchmarks._results import write_results
from gateway.config.schema import DeliverySection
from gateway.config.types import HostPort
from gateway.delivery import mtasts
from gateway.delivery.route import make_resolver
from gateway.keys.demo import tls_server
from tests.dns_support import DnsServer, Zone

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mail.beta.test\r\nmx: *.beta.test\r\n" \
         "max_age: 86400\r\n"


async def _per_cpu_second(op: Callable[[], Awaitable[object]], seconds: float) -> float:
    await op()
    n, start = 0, time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        await op()
        n += 1
    return n / elapsed


async def _lookups(args: argparse.Namespace, tmp: Path,
                   rates: dict[str, list[float]]) -> None:
    ca_file, server_pem = tls_server("mta-sts.beta.test").write(tmp)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(server_pem)

    async def policy(request: web.Request) -> web.Response:
        return web.Response(text=POLICY, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/.well-known/mta-sts.txt", policy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock, ssl_context=ctx).start()
    dns_server = await DnsServer(Zone(records={
        "beta.test.": {"MX": ["10 mail.beta.test."]},
        "mta-sts.beta.test.": {"A": ["127.0.0.1"]},
        "_mta-sts.beta.test.": {"TXT": ['"v=STSv1; id=1"']},
    })).start()
    resolver = make_resolver(DeliverySection(dns_servers=(HostPort("127.0.0.1",
                                                                   dns_server.port),)))
    warm = mtasts.MtaSts(resolver, ca_file=ca_file, port=port)
    assert await warm.policy("beta.test") is not None

    async def cached() -> None:
        assert await warm.policy("beta.test") is not None

    async def fetched() -> None:  # a fresh cache: every call fetches
        fresh = mtasts.MtaSts(resolver, ca_file=ca_file, port=port)
        assert await fresh.policy("beta.test") is not None

    async def mx() -> None:
        await resolver.resolve("beta.test", "MX")

    work = {"lookup_cached": cached, "lookup_fetch": fetched, "mx_query": mx}
    try:
        order = list(work)
        for i in range(args.rounds):
            for name in order[i % len(order):] + order[:i % len(order)]:
                rates[name].append(await _per_cpu_second(work[name], args.duration))
    finally:
        await runner.cleanup()
        dns_server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=1.0,
                   help="CPU seconds per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--json", type=Path, help="result file (default benchmarks/results/...)")
    args = p.parse_args(argv)

    logging.getLogger("smimegate.delivery").setLevel(logging.WARNING)  # one line a fetch
    rates: dict[str, list[float]] = {k: [] for k in (
        "parse_policy", "lookup_cached", "lookup_fetch", "mx_query")}
    for _ in range(args.rounds):
        rates["parse_policy"].append(
            per_cpu_second(lambda: mtasts.parse_policy(POLICY), args.duration))
    with tempfile.TemporaryDirectory(prefix="bench-mtasts-") as tmp:
        asyncio.run(_lookups(args, Path(tmp), rates))

    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:16s} {v:12,.0f} /s  ({1e6 / v:9.1f} µs)")
    ratios = {
        "lookup_cached_over_mx_query": med["lookup_cached"] / med["mx_query"],
        "lookup_fetch_over_lookup_cached": med["lookup_fetch"] / med["lookup_cached"],
    }
    for k, v in ratios.items():
        print(f"ratio {k:34s} {v:.3f}x (per CPU-second; 1.0 = same)")
    write_results("mtasts", {
        "settings": {"duration": args.duration, "rounds": args.rounds},
        "rates": rates, "medians": med, "ratios": ratios}, args.json,
        facts={"aiohttp": aiohttp.__version__, "dnspython": dns.version.version,
               "openssl": ssl.OPENSSL_VERSION})
    return 0


if __name__ == "__main__":
    sys.exit(main())
