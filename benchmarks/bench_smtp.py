"""The SMTP front end alone: smimegate's Session against stock aiosmtpd, DATA-heavy.

`python -m benchmarks.bench_smtp [--sessions N] [--mb MB] [--rounds R]`

aiosmtpd reads DATA one line per loop iteration; gateway.smtp.data reads it in chunks
with C-speed checks. Both servers run on uvloop in a child process (its own core) and
answer 250 without storing anything: stock = aiosmtpd's SMTP with a handle_DATA that
returns "250 OK"; smimegate = gateway.smtp.FrontEnd whose workers and spool are
replaced by no-ops (only here: the point is the front end's own cost). The client sends
the same pipelined transactions to both, alternating rounds, for 10 KB, 100 KB and 1 MB
messages, and prints messages/s, MB/s, the server's CPU per message and the ratio.
JSON with versions and machine goes to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks._loadgen_stats import machine_facts

RESULTS = Path(__file__).parent / "results"
SIZES = (10 * 1024, 100 * 1024, 1024 * 1024)


# -- the servers (child process) ------------------------------------------------------------

class _Discard:
    """Processor and Store at once: accepts everything, keeps nothing."""

    def has_room(self) -> bool:
        return True

    async def run(self, job: Any) -> Any:
        from gateway.workers.jobs import identity

        return identity(job)

    async def enqueue(self, envelope: Any, data: bytes, *, queue_id: str | None = None,
                      fresh: bool = False) -> str:
        return "BENCH"


async def _serve(kind: str, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    if kind == "stock":
        from aiosmtpd.smtp import SMTP

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                return "250 OK"

        handler = Handler()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="bench", data_size_limit=64 * 1024**2,
                         loop=loop), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    else:
        from gateway.config.schema import SmtpSection
        from gateway.config.types import HostPort
        from gateway.smtp import Acceptor, FrontEnd

        discard = _Discard()
        front = FrontEnd(SmtpSection(listen=HostPort("127.0.0.1", 0), hostname="bench",
                                     local_domains=("bench.test",),
                                     max_message_size=64 * 1024**2, max_sessions=10_000,
                                     max_connections_per_client=10_000),
                         Acceptor(discard, discard, hostname="bench"))
        await front.start()
        port = front.address[1]
    conn.send(port)
    await loop.run_in_executor(None, conn.recv)  # told to stop


def _server_main(kind: str, conn: Connection) -> None:
    import logging

    import uvloop

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    uvloop.run(_serve(kind, conn))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the client -------------------------------------------------------------------------------

def _message(size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghijklmnop\r\n"
    return b"Subject: bench\r\n\r\n" + line * max(1, size // len(line))


async def _session(port: int, count: int, data: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    await reader.readline()
    writer.write(b"EHLO client\r\n")
    while (await reader.readline())[3:4] != b" ":
        pass
    group = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@bench.test>\r\nDATA\r\n"
    for _ in range(count):
        writer.write(group)
        for _ in range(3):
            reply = await reader.readline()
        if not reply.startswith(b"354"):
            raise RuntimeError(f"unexpected reply {reply!r}")
        writer.write(data + b".\r\n")
        reply = await reader.readline()
        if not reply.startswith(b"250"):
            raise RuntimeError(f"unexpected reply {reply!r}")
    writer.write(b"QUIT\r\n")
    await reader.readline()
    writer.close()
    await writer.wait_closed()


def _round(kind: str, size: int, sessions: int, per_session: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_server_main, args=(kind, child), daemon=True)
    proc.start()
    try:
        port = parent.recv()
        data = _message(size)
        assert proc.pid is not None
        cpu0, t0 = _cpu_seconds(proc.pid), time.perf_counter()
        asyncio.run(_gather(port, sessions, per_session, data))
        wall, cpu = time.perf_counter() - t0, _cpu_seconds(proc.pid) - cpu0
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    n = sessions * per_session
    return {"msgs_per_s": n / wall, "mb_per_s": n * size / wall / 1e6,
            "server_cpu_ms_per_msg": cpu / n * 1000}


async def _gather(port: int, sessions: int, per_session: int, data: bytes) -> None:
    await asyncio.gather(*(_session(port, per_session, data) for _ in range(sessions)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--mb", type=float, default=40.0,
                        help="megabytes sent per server, size and round (default 40)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    for size in SIZES:
        per_session = max(1, int(args.mb * 1e6 / size / args.sessions))
        runs: dict[str, list[dict[str, float]]] = {"stock": [], "smimegate": []}
        for _ in range(args.rounds):
            for kind in runs:  # alternate: the machine drifts
                runs[kind].append(_round(kind, size, args.sessions, per_session))
        row: dict[str, Any] = {"size": size, "messages": args.sessions * per_session}
        for kind, results in runs.items():
            row[kind] = {k: statistics.median(r[k] for r in results) for k in results[0]}
        row["ratio_msgs_per_s"] = row["smimegate"]["msgs_per_s"] / row["stock"]["msgs_per_s"]
        row["ratio_server_cpu"] = (row["stock"]["server_cpu_ms_per_msg"]
                                   / row["smimegate"]["server_cpu_ms_per_msg"])
        rows.append(row)
        s, g = row["stock"], row["smimegate"]
        print(f"{size // 1024:>5} KB  stock {s['msgs_per_s']:8.0f} msg/s {s['mb_per_s']:7.1f} MB/s "
              f"{s['server_cpu_ms_per_msg']:6.2f} ms CPU/msg | smimegate {g['msgs_per_s']:8.0f} "
              f"msg/s {g['mb_per_s']:7.1f} MB/s {g['server_cpu_ms_per_msg']:6.2f} ms CPU/msg | "
              f"x{row['ratio_msgs_per_s']:.2f} throughput, x{row['ratio_server_cpu']:.2f} "
              f"less CPU")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_smtp-{int(time.time())}.json"
    out.write_text(json.dumps({"benchmark": "bench_smtp", "machine": machine_facts(),
                               "sessions": args.sessions, "rounds": args.rounds,
                               "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
