"""DANE benchmark: what authenticating a next hop by TLSA (RFC 7672) costs per session.

`python -m benchmarks.bench_dane [--duration S] [--rounds N]`

In one process, alternating rounds (each starting with the next item): (1) the check
alone, calls per CPU-second: dane.authenticate for a DANE-EE "3 1 1" record
(SubjectPublicKeyInfo hash), a "3 0 1" record (certificate hash) and a DANE-TA "2 0 1"
record (chain, validity and name checked); (2) whole SMTP session setups on loopback per
CPU-second of this process, which runs both ends (connect, greeting, EHLO, STARTTLS,
handshake, EHLO, QUIT; CPU time, so other load on a shared machine counts less), with TLS
policy opportunistic (no authentication), verify (PKIX with a CA file), dane with the
DANE-EE record and dane with the DANE-TA record. Prints medians and the ratios of each
authenticated policy to the unauthenticated one; writes JSON with versions and machine to
benchmarks/results/. The TLSA lookup itself is one DNS round trip per host and session,
not measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from benchmarks._rates import per_cpu_second
from benchmarks._results import write_results
from gateway.delivery import dane
from gateway.delivery.client import SmtpConnection, TlsContexts
from gateway.keys.demo import tls_server

HOST = "mail.bench.test"


def _pki(tmp: Path) -> tuple[Path, Path, list[bytes]]:
    """CA file, server PEM (leaf, CA, key) and the chain in DER, leaf first."""
    pki = tls_server(HOST)
    ca_file, server = pki.write(tmp)
    return ca_file, server, pki.der_chain()


async def _serve(ctx: ssl.SSLContext) -> asyncio.Server:
    """Just enough SMTP for a session setup: greeting, EHLO, STARTTLS, QUIT."""
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = False
        try:
            writer.write(b"220 bench ESMTP\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-bench\r\n250 STARTTLS\r\n" if not tls
                                 else b"250-bench\r\n250 PIPELINING\r\n")
                elif verb == b"STAR":
                    writer.write(b"220 2.0.0 go ahead\r\n")
                    await writer.drain()
                    await writer.start_tls(ctx)
                    tls = True
                    continue
                else:
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()
    return await asyncio.start_server(session, "127.0.0.1", 0)


async def _sessions_per_second(setup: Callable[[], Awaitable[None]], seconds: float) -> float:
    """Session setups per CPU-second of this process (client and server both)."""
    await setup()
    n, start = 0, time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        await setup()
        n += 1
    return n / elapsed


async def _sessions(args: argparse.Namespace, server_pem: Path, ca_file: Path,
                    ee: dane.Expected, ta: dane.Expected,
                    rates: dict[str, list[float]]) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(server_pem)
    server = await _serve(server_ctx)
    port = server.sockets[0].getsockname()[1]
    contexts = TlsContexts(ca_file)

    def setup(policy: str, expected: dane.Expected | None) -> Callable[[], Awaitable[None]]:
        async def one() -> None:
            # "verify" checks the name: the leaf names HOST, the address is loopback
            conn = await SmtpConnection.connect(
                HOST, "127.0.0.1", port, helo="bench.client", tls=policy,
                tls_context=contexts.get(policy), connect_timeout=5, command_timeout=5,
                data_timeout=5, expected=expected)
            assert conn.tls
            await conn.quit()
        return one

    work = {"session_opportunistic": setup("opportunistic", None),
            "session_verify_pkix": setup("verify", None),
            "session_dane_ee": setup("dane", ee),
            "session_dane_ta": setup("dane", ta)}
    try:
        order = list(work)
        for i in range(args.rounds):  # each round starts with the next policy: no favourite
            for name in order[i % len(order):] + order[:i % len(order)]:
                rates[name].append(await _sessions_per_second(work[name],
                                                               args.session_seconds))
    finally:
        server.close()
        await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=0.5,
                   help="CPU seconds per check measurement")
    p.add_argument("--session-seconds", type=float, default=1.5,
                   help="CPU seconds per session measurement")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    p.add_argument("--json", type=Path, help="result file (default benchmarks/results/...)")
    args = p.parse_args(argv)

    names = ("check_dane_ee_311", "check_dane_ee_301", "check_dane_ta_201",
             "session_opportunistic", "session_verify_pkix", "session_dane_ee",
             "session_dane_ta")
    rates: dict[str, list[float]] = {k: [] for k in names}
    with tempfile.TemporaryDirectory(prefix="bench-dane-") as tmp:
        ca_file, server_pem, chain = _pki(Path(tmp))
        spki = x509.load_der_x509_certificate(chain[0]).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        names_ref = (HOST, "bench.test")
        ee311 = dane.Expected((dane.TlsaRecord(3, 1, 1, hashlib.sha256(spki).digest()),),
                              names_ref)
        ee301 = dane.Expected((dane.TlsaRecord(3, 0, 1, hashlib.sha256(chain[0]).digest()),),
                              names_ref)
        ta201 = dane.Expected((dane.TlsaRecord(2, 0, 1, hashlib.sha256(chain[1]).digest()),),
                              names_ref)
        for expected in (ee311, ee301, ta201):
            assert dane.authenticate(expected, chain) is None
        checks: dict[str, Callable[[], object]] = {
            "check_dane_ee_311": lambda: dane.authenticate(ee311, chain),
            "check_dane_ee_301": lambda: dane.authenticate(ee301, chain),
            "check_dane_ta_201": lambda: dane.authenticate(ta201, chain),
        }
        for _ in range(args.rounds):
            for name, fn in checks.items():
                rates[name].append(per_cpu_second(fn, args.duration))
        asyncio.run(_sessions(args, server_pem, ca_file, ee311, ta201, rates))

    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:24s} {v:12,.0f} /s  ({1e6 / v:8.1f} µs)")
    base = med["session_opportunistic"]
    ratios = {
        "verify_pkix_over_opportunistic": med["session_verify_pkix"] / base,
        "dane_ee_over_opportunistic": med["session_dane_ee"] / base,
        "dane_ta_over_opportunistic": med["session_dane_ta"] / base,
        "dane_ee_over_verify_pkix": med["session_dane_ee"] / med["session_verify_pkix"],
        "check_ta_over_check_ee": med["check_dane_ta_201"] / med["check_dane_ee_311"],
    }
    for k, v in ratios.items():
        print(f"ratio {k:34s} {v:.3f}x (sessions/s or checks/s; 1.0 = same)")
    import cryptography
    import dns.version

    write_results("dane", {
        "settings": {"duration": args.duration, "session_seconds": args.session_seconds,
                     "rounds": args.rounds},
        "rates": rates, "medians": med, "ratios": ratios}, args.json,
        facts={"cryptography": cryptography.__version__, "dnspython": dns.version.version,
               "openssl": ssl.OPENSSL_VERSION})
    return 0


if __name__ == "__main__":
    sys.exit(main())
