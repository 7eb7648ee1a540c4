"""The whole relay, started as an operator starts it (`smimegate run`), on loopback.

Real processes and sockets: the gateway (front end, worker processes, spool, delivery)
in a child process, the load generator's client and counting sink (benchmarks.loadgen)
in the test. The central proof: under load, the gateway is killed with SIGKILL and
restarted on the same spool, and every message that got a 250 still reaches the sink
(compared by Message-ID), while no message whose connection dropped mid-DATA does.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from benchmarks.loadgen import LoadConfig, Sink, run_load
from tests.smtp_support import Client

REPO = Path(__file__).resolve().parent.parent
QUICK_RETRIES = """
[delivery]
retry_initial = "200ms"
retry_max = "1s"
tls = "none"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """`python -m gateway run ...` in a child process; same ports and spool on restart."""

    def __init__(self, tmp: Path, *, transports: dict[str, int], trusted: str = "127.0.0.0/8",
                 local_domains: tuple[str, ...] = (), workers: int = 1) -> None:
        self.port, self.admin_port = free_port(), free_port()
        config = tmp / "gateway.toml"
        config.write_text(QUICK_RETRIES)
        self.args = [sys.executable, "-m", "gateway", "run", "-c", str(config),
                     "--listen", f"127.0.0.1:{self.port}",
                     "--admin", f"127.0.0.1:{self.admin_port}",
                     "--spool", str(tmp / "spool"), "--hostname", "gw.alpha.test",
                     "--trusted-network", trusted, "--workers", str(workers)]
        for domain in local_domains:
            self.args += ["--local-domain", domain]
        for domain, port in transports.items():
            self.args += ["--transport", f"{domain}=127.0.0.1:{port}"]
        self.log = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 30.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        # The admin server starts after the SMTP listener: wait for both, or a test that
        # asks /healthz right after start races it.
        waiting = [self.port, self.admin_port]
        while waiting and time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", waiting[0])
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            waiting.pop(0)
        if waiting:
            raise AssertionError("gateway did not start: " + self.log.read_text()[-2000:])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM, as systemd does; the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def worker_pids(self) -> list[int]:
        status, health = self.get("/healthz")
        assert status == 200, health
        pids: list[int] = json.loads(health)["workers"]["pids"]
        assert pids
        return pids

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def with_gateway(tmp: Path, body: Callable[[GatewayProcess, Sink], Awaitable[None]], *,
                 sink: Sink | None = None, **options: object) -> None:
    async def go() -> None:
        async with (sink or Sink(port=0)) as s:
            gw = GatewayProcess(tmp, transports={"beta.test": s.port, "alpha.test": s.port},
                                **options)  # type: ignore[arg-type]
            try:
                await gw.start()
                await body(gw, s)
            finally:
                await asyncio.to_thread(gw.stop)

    asyncio.run(go())


async def wait_gone(pids: list[int], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            # A zombie (exited, not yet reaped by a dead parent's adopter) counts as gone.
            try:
                if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                    break
            except OSError:
                break
            assert time.monotonic() < deadline, f"process {pid} is still running"
            await asyncio.sleep(0.05)


def metric(text: bytes, name: str) -> float:
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow
def test_kill_9_under_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    async def body(gw: GatewayProcess, sink: Sink) -> None:
        config = LoadConfig(port=gw.port, sessions=20, messages=100, seed=4,
                            sizes=((2 * 1024, 5), (10 * 1024, 4), (100 * 1024, 1)),
                            domains=(("beta.test", 1),), connect_retry_for=60.0,
                            abort_rate=0.02, reply_timeout=30.0)
        load = asyncio.create_task(run_load(config))
        while len(sink.received_ids) < 400:
            assert not load.done(), load.result().summary()
            await asyncio.sleep(0.02)
        workers = gw.worker_pids()
        await asyncio.to_thread(gw.kill)  # mid-load: sessions, workers, spool writes in flight
        await wait_gone(workers)  # orphaned workers see EOF and exit
        killed_at = len(sink.received_ids)
        await gw.start()
        result = await load
        assert result.attempted == 2000
        assert result.accepted > 1500, result.errors
        missing = await sink.wait_for_ids(result.accepted_ids, timeout=120)
        assert not missing, f"{len(missing)} acknowledged messages never arrived"
        assert not result.aborted_ids & sink.received_ids  # dropped mid-DATA: never sent
        assert result.aborted_ids  # the load really did drop some
        assert killed_at < len(sink.received_ids)
        print(f"killed after {killed_at} delivered;", result.summary())
        status, health = gw.get("/healthz")
        assert status == 200, health
        assert json.loads(health)["workers"]["alive"] == 1

    with_gateway(tmp_path, body)


def test_refusals_and_relay_control_through_the_running_gateway(tmp_path: Path) -> None:
    async def body(gw: GatewayProcess, sink: Sink) -> None:
        c = await Client.connect(gw.port)
        # Untrusted (127.0.0.1 is not in 10.0.0.0/8): only the local domain is accepted.
        await c.cmd("MAIL FROM:<spammer@far.test>")
        assert (await c.cmd("RCPT TO:<victim@far.test>")).startswith("554 5.7.1")
        assert (await c.cmd("RCPT TO:<victim%far.test@beta.test>")).startswith("554 5.7.1")
        assert (await c.cmd("RCPT TO:<user@beta.test>")).startswith("250 2.1.5")
        await c.cmd("DATA")
        c.send(b"Message-ID: <ok-1@alpha.test>\r\nSubject: in\r\n\r\nhello\r\n.\r\n")
        assert (await c.reply()).startswith("250 2.0.0 Ok: queued as ")
        # Oversized lines and messages, malformed commands: precise replies, session goes on.
        assert (await c.message("a@far.test", ["user@beta.test"],
                                b"x" * 2000 + b"\r\n")).startswith("500 5.5.2")
        assert (await c.cmd("MAIL FROM:<a@far.test> SIZE=999999999")).startswith("552 5.3.4")
        assert (await c.cmd("HELLO")).startswith("500 5.5.2")
        assert (await c.cmd("RCPT TO:<user@beta.test>")).startswith("503 5.5.1")
        await c.cmd("QUIT")
        await c.close()
        assert not await sink.wait_for_ids({"<ok-1@alpha.test>"}, timeout=30)
        assert len(sink.received_ids) == 1
        status, text = gw.get("/metrics")
        assert status == 200
        assert metric(text, 'smimegate_smtp_refused_total{reason="relay_denied"}') == 2
        assert metric(text, 'smimegate_smtp_refused_total{reason="line_too_long"}') == 1
        assert metric(text, "smimegate_smtp_messages_accepted_total") == 1
        assert metric(text, "smimegate_workers") == 1

    with_gateway(tmp_path, body, trusted="10.0.0.0/8", local_domains=("beta.test",))


def test_next_hop_4xx_for_a_while_then_everything_arrives(tmp_path: Path) -> None:
    async def body(gw: GatewayProcess, sink: Sink) -> None:
        sink.fail_4xx(1.5)
        result = await run_load(LoadConfig(port=gw.port, sessions=4, messages=10, seed=2))
        assert result.accepted == 40, result.errors
        assert not await sink.wait_for_ids(result.accepted_ids, timeout=60)
        assert sink.deferred_ids  # it really did refuse for a while

    with_gateway(tmp_path, body)


def test_next_hop_5xx_sends_a_dsn_to_the_sender(tmp_path: Path) -> None:
    async def go() -> None:
        async with Sink(port=0, fail_5xx_rate=1.0) as beta, \
                Sink(port=0, keep_data=True) as alpha:
            gw = GatewayProcess(tmp_path, transports={"beta.test": beta.port,
                                                      "alpha.test": alpha.port})
            try:
                await gw.start()
                c = await Client.connect(gw.port)
                reply = await c.message("sender@alpha.test", ["nobody@beta.test"],
                                        b"Message-ID: <bounce-me@alpha.test>\r\n\r\nx\r\n")
                assert reply.startswith("250 2.0.0")
                await c.close()
                assert await alpha.wait_for_count(1, timeout=30) >= 1
                (dsn,) = alpha.messages
                assert dsn.mail_from == ""
                assert list(dsn.rcpt_tos) == ["sender@alpha.test"]
                assert b"multipart/report" in dsn.data
                assert b"report-type=delivery-status" in dsn.data
                assert "<bounce-me@alpha.test>" in beta.rejected_ids
            finally:
                await asyncio.to_thread(gw.stop)

    asyncio.run(go())


def test_sigterm_stops_cleanly_and_keeps_the_queue(tmp_path: Path) -> None:
    async def go() -> None:
        # No next hop answers: whatever is accepted stays queued across the restart.
        gw = GatewayProcess(tmp_path, transports={"beta.test": free_port()})
        await gw.start()
        try:
            c = await Client.connect(gw.port)
            for i in range(3):
                reply = await c.message("a@alpha.test", ["b@beta.test"],
                                        b"Message-ID: <q%d@alpha.test>\r\n\r\nx\r\n" % i)
                assert reply.startswith("250 2.0.0"), reply
            await c.close()
            assert await asyncio.to_thread(gw.stop) == 0
            listing = subprocess.run(
                [sys.executable, "-m", "gateway", "queue", "list", "--spool",
                 str(tmp_path / "spool"), "--json"], cwd=REPO, capture_output=True,
                check=True).stdout.decode().splitlines()
            assert len(listing) == 3
            await gw.start()
            status, health = gw.get("/healthz")
            assert status == 200
            assert json.loads(health)["spool"]["total"] == 3
            workers = gw.worker_pids()
            assert await asyncio.to_thread(gw.stop) == 0
            await wait_gone(workers)  # no worker outlives its gateway
        finally:
            await asyncio.to_thread(gw.stop)

    asyncio.run(go())
