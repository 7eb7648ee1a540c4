"""Delivery end to end on loopback: spool → agent → a real SMTP server socket."""

from __future__ import annotations

import asyncio
import email
import email.policy
import sys
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway.config.schema import DeliverySection, SpoolSection
from gateway.config.types import HostPort
from gateway.delivery import DeliveryAgent
from gateway.envelope import Envelope
from gateway.spool import DELIVERED, PENDING, Spool
from gateway.spool.layout import Layout, read_entry
from tests.delivery_sink import Received, Sink

DATA = (b"From: alice@alpha.test\r\nTo: bob@beta.test\r\nSubject: hello\r\n"
        b"Message-ID: <m1@alpha.test>\r\n\r\nline one\r\n.starts with a dot\r\n..two\r\n"
        b".\r\nlast\r\n")


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for something that must happen; the timeout only stops a hang."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def delivery(transport: dict[str, int], **kw: Any) -> DeliverySection:
    settings: dict[str, Any] = dict(
        transport=tuple((d, HostPort("127.0.0.1", p)) for d, p in transport.items()),
        retry_initial=0.05, retry_max=0.2, connection_idle=0.3, connect_timeout=5.0,
        command_timeout=5.0, data_timeout=5.0, tls="none", shutdown_grace=5.0)
    settings.update(kw)
    return DeliverySection(**settings)


@dataclass
class Gateway:
    spool: Spool
    agent: DeliveryAgent

    async def stop(self) -> None:
        await self.agent.stop()
        await self.spool.close()


async def gateway(tmp_path: Path, config: DeliverySection) -> Gateway:
    spool = await Spool.open(SpoolSection(directory=tmp_path / "spool", control_poll=0.02))
    agent = DeliveryAgent(spool, config, hostname="gw.alpha.test")
    await agent.start()
    return Gateway(spool, agent)


def parse_dsn(msg: Received) -> tuple[email.message.Message, list[str], str]:
    """The DSN, its per-recipient status blocks as text, and the returned headers."""
    assert msg.mail_from == ""
    dsn = email.message_from_bytes(msg.data, policy=email.policy.compat32)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts: list[email.message.Message] = dsn.get_payload()  # type: ignore[assignment]
    assert isinstance(parts, list)
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = msg.data.split(b"Content-Type: message/delivery-status")[1].split(b"\r\n--")[0]
    blocks = status.decode().split("\r\n\r\n")[2:]
    return dsn, blocks, str(parts[2].get_payload())


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_delivers_many_messages_over_one_connection(tmp_path: Path) -> None:
    delivered = sample("smimegate_deliveries_total", result="delivered")
    rounds = sample("smimegate_spool_fsync_seconds_count")
    groups = sample("smimegate_spool_group_size_sum")

    async def body() -> None:
        sink = await Sink().start()
        gw = await gateway(tmp_path, delivery({"beta.test": sink.port},
                                              concurrency_per_destination=1))
        env = Envelope("alice@alpha.test", ("bob@beta.test", "dave@beta.test"))
        for _ in range(6):
            await gw.spool.enqueue(env, DATA)
        gw.agent.wake()
        await until(lambda: gw.spool.stats()["total"] == 0)
        await gw.stop()
        await sink.stop()
        assert len(sink.messages) == 6
        assert sink.connections == 1  # reused for all six
        assert all(m.data == DATA and m.rcpts == ["bob@beta.test", "dave@beta.test"]
                   for m in sink.messages)
        assert all(m.mail_from == "alice@alpha.test" for m in sink.messages)
        assert "RSET" not in sink.commands  # every transaction ended normally
    run(body)
    assert sample("smimegate_deliveries_total", result="delivered") == delivered + 12
    assert sample("smimegate_spool_fsync_seconds_count") > rounds
    assert sample("smimegate_spool_group_size_sum") == groups + 12  # 6 enqueues, 6 removals
    assert sample("smimegate_delivery_latency_seconds_count") >= 6


def test_concurrency_per_destination_is_a_limit(tmp_path: Path) -> None:
    async def body() -> None:
        active, peak = 0, 0

        def on_data(_: Received) -> None:
            nonlocal peak
            peak = max(peak, active)

        sink = await Sink(on_data=on_data).start()
        original = sink._session

        async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal active
            active += 1
            try:
                await original(reader, writer)
            finally:
                active -= 1

        sink._session = counting  # type: ignore[method-assign]
        sink._server.close()  # type: ignore[union-attr]
        sink._server = await asyncio.start_server(counting, "127.0.0.1", sink.port)
        gw = await gateway(tmp_path, delivery({"beta.test": sink.port},
                                              concurrency_per_destination=3))
        for i in range(40):
            await gw.spool.enqueue(Envelope("a@alpha.test", (f"u{i}@beta.test",)), DATA)
        await until(lambda: gw.spool.stats()["total"] == 0)
        await gw.stop()
        await sink.stop()
        assert len(sink.messages) == 40
        assert 1 <= peak <= 3
        assert sink.connections <= 3
    run(body)


def test_4xx_is_retried_with_backoff_until_accepted(tmp_path: Path) -> None:
    async def body() -> None:
        refusals = 3

        def on_rcpt(_: str) -> str | None:
            nonlocal refusals
            if refusals:
                refusals -= 1
                return "451 4.3.0 try again later"
            return None

        sink = await Sink(on_rcpt=on_rcpt).start()
        gw = await gateway(tmp_path, delivery({"beta.test": sink.port}))
        qid = await gw.spool.enqueue(Envelope("alice@alpha.test", ("bob@beta.test",)), DATA)
        seen: list[tuple[int, float]] = []

        def record() -> bool:
            entry = gw.spool.get(qid)
            if entry is not None:
                r = entry.state.rcpts[0]
                if r.attempts and (not seen or seen[-1][0] != r.attempts):
                    seen.append((r.attempts, r.next_attempt))
            return entry is None

        await until(record)
        await gw.stop()
        await sink.stop()
        assert len(sink.delivered_to("bob@beta.test")) == 1
        assert sum(c.startswith("RCPT") for c in sink.commands) == 4
        assert [a for a, _ in seen][:3] == [1, 2, 3]  # then delivered (4), maybe unseen
        # Attempt k+1 starts no earlier than attempt k's due time, so the due times are
        # at least the (doubling) backoff apart: 0.05 s, then 0.1 s, then 0.2 s.
        due = [n for _, n in seen[:3]]
        assert due[1] - due[0] >= 0.1 - 1e-6
        assert due[2] - due[1] >= 0.2 - 1e-6
        assert "RSET" in sink.commands  # after each refused transaction
    run(body)


def test_5xx_bounces_to_the_sender_with_an_rfc3464_dsn(tmp_path: Path) -> None:
    async def body() -> None:
        sink = await Sink(on_rcpt=lambda r: "550 5.1.1 no such user" if "bad" in r
                          else None).start()
        gw = await gateway(tmp_path, delivery({"beta.test": sink.port,
                                               "alpha.test": sink.port}))
        qid = await gw.spool.enqueue(
            Envelope("alice@alpha.test", ("bob@beta.test", "bad@beta.test")), DATA)
        await until(lambda: gw.spool.stats()["total"] == 0 and len(sink.messages) == 2)
        await gw.stop()
        await sink.stop()
        original, bounce = sink.messages
        assert original.rcpts == ["bob@beta.test"]
        assert bounce.rcpts == ["alice@alpha.test"]
        dsn, blocks, headers = parse_dsn(bounce)
        assert dsn["To"] == "<alice@alpha.test>"
        assert dsn["Auto-Submitted"] == "auto-replied"
        assert len(blocks) == 1
        assert "Final-Recipient: rfc822; bad@beta.test" in blocks[0]
        assert "Action: failed" in blocks[0]
        assert "Status: 5.1.1" in blocks[0]
        assert "Diagnostic-Code: smtp; 550 5.1.1 no such user" in blocks[0]
        assert "Remote-MTA: dns; 127.0.0.1" in blocks[0]
        assert f"X-Smimegate-Queue-ID: {qid}" in bounce.data.decode()
        assert "Subject: hello" in headers
        assert "line one" not in headers
    run(body)


def test_no_bounce_for_a_bounce(tmp_path: Path) -> None:
    async def body() -> None:
        sink = await Sink(on_rcpt=lambda r: "550 5.1.1 no such user").start()
        gw = await gateway(tmp_path, delivery({"beta.test": sink.port,
                                               "alpha.test": sink.port}))
        await gw.spool.enqueue(Envelope("", ("bad@beta.test",)), DATA)
        await until(lambda: gw.spool.stats()["total"] == 0)
        await gw.stop()
        await sink.stop()
        assert sink.messages == []
        assert sum(c.startswith("RCPT") for c in sink.commands) == 1
    run(body)


def test_past_the_queue_lifetime_it_bounces_with_4_4_7(tmp_path: Path) -> None:
    async def body() -> None:
        sink = await Sink(on_rcpt=lambda r: "452 4.2.2 mailbox full" if "bob" in r
                          else None).start()
        gw = await gateway(tmp_path, delivery({"beta.test": sink.port,
                                               "alpha.test": sink.port},
                                              max_queue_lifetime=0.5))
        await gw.spool.enqueue(Envelope("alice@alpha.test", ("bob@beta.test",)), DATA)
        await until(lambda: gw.spool.stats()["total"] == 0 and len(sink.messages) == 1)
        await gw.stop()
        await sink.stop()
        _, blocks, _ = parse_dsn(sink.messages[0])
        assert "Status: 4.4.7" in blocks[0]
        assert "452 4.2.2 mailbox full" in blocks[0]
        assert sum(c.startswith("RCPT TO:<bob") for c in sink.commands) >= 2
    run(body)


EIGHT_BIT = b"Subject: caf\xc3\xa9\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xc3\xa9\r\n"


def test_8bit_content_is_never_converted(tmp_path: Path) -> None:
    async def body() -> None:
        seven = await Sink(extensions=("PIPELINING", "SIZE 1000000")).start()
        eight = await Sink().start()
        gw = await gateway(tmp_path, delivery({"seven.test": seven.port,
                                               "eight.test": eight.port,
                                               "alpha.test": eight.port}))
        await gw.spool.enqueue(Envelope("alice@alpha.test", ("bob@seven.test",)), EIGHT_BIT)
        await gw.spool.enqueue(Envelope("alice@alpha.test", ("bob@eight.test",)), EIGHT_BIT)
        await until(lambda: gw.spool.stats()["total"] == 0 and len(eight.messages) == 2)
        await gw.stop()
        await seven.stop()
        await eight.stop()
        assert seven.messages == []
        assert not any(c.startswith("MAIL") for c in seven.commands)
        by_rcpt = {m.rcpts[0]: m for m in eight.messages}
        assert by_rcpt["bob@eight.test"].data == EIGHT_BIT
        assert "BODY=8BITMIME" in by_rcpt["bob@eight.test"].mail_params
        _, blocks, headers = parse_dsn(by_rcpt["alice@alpha.test"])
        assert "Status: 5.6.3" in blocks[0]
        assert "8BITMIME" in blocks[0]
        assert "BODY=8BITMIME" in by_rcpt["alice@alpha.test"].mail_params  # 8-bit headers
        assert "caf" in headers
    run(body)


def test_size_limit_of_the_next_hop_bounces(tmp_path: Path) -> None:
    async def body() -> None:
        small = await Sink(extensions=("PIPELINING", "8BITMIME", "SIZE 100")).start()
        sink = await Sink().start()
        gw = await gateway(tmp_path, delivery({"beta.test": small.port,
                                               "alpha.test": sink.port}))
        await gw.spool.enqueue(Envelope("alice@alpha.test", ("bob@beta.test",)), DATA)
        await until(lambda: gw.spool.stats()["total"] == 0 and len(sink.messages) == 1)
        await gw.stop()
        await sink.stop()
        await small.stop()
        assert small.messages == []
        assert not any(c.startswith("MAIL") for c in small.commands)
        assert sink.messages[0].rcpts == ["alice@alpha.test"]
        _, blocks, _ = parse_dsn(sink.messages[0])
        assert "Status: 5.3.4" in blocks[0]
    run(body)


def test_without_pipelining_commands_go_one_by_one(tmp_path: Path) -> None:
    async def body() -> None:
        sink = await Sink(extensions=("8BITMIME",),
                          on_rcpt=lambda r: "550 5.1.1 unknown" if "bad" in r else None).start()
        gw = await gateway(tmp_path, delivery({"beta.test": sink.port}))
        await gw.spool.enqueue(Envelope("", ("bad@beta.test", "bob@beta.test")), DATA)
        await gw.spool.enqueue(Envelope("", ("bad@beta.test",)), DATA)
        await until(lambda: gw.spool.stats()["total"] == 0)
        await gw.stop()
        await sink.stop()
        assert [m.rcpts for m in sink.messages] == [["bob@beta.test"]]
        assert sink.messages[0].data == DATA
    run(body)


def test_delivered_recipient_is_not_delivered_again_after_restart(tmp_path: Path) -> None:
    async def body() -> None:
        beta = await Sink().start()
        gamma = await Sink(on_rcpt=lambda r: "421 4.3.2 shutting down").start()
        config = delivery({"beta.test": beta.port, "gamma.test": gamma.port},
                          retry_initial=60.0, retry_max=60.0)
        gw = await gateway(tmp_path, config)
        qid = await gw.spool.enqueue(
            Envelope("alice@alpha.test", ("bob@beta.test", "carol@gamma.test")), DATA)

        def settled() -> bool:
            entry = gw.spool.get(qid)
            assert entry is not None
            return [r.status for r in entry.state.rcpts] == [DELIVERED, PENDING] and \
                entry.state.rcpts[1].attempts == 1

        await until(settled)
        await gw.stop()
        await gamma.stop()
        gamma = await Sink().start()
        config = delivery({"beta.test": beta.port, "gamma.test": gamma.port})
        gw = await gateway(tmp_path, config)
        entry = gw.spool.get(qid)
        assert entry is not None
        assert entry.state.rcpts[0].status == DELIVERED
        await asyncio.to_thread(_retry_now, tmp_path / "spool", qid)  # operator: retry
        await until(lambda: gw.spool.stats()["total"] == 0)
        await gw.stop()
        await beta.stop()
        await gamma.stop()
        assert len(beta.messages) == 1
        assert [m.rcpts for m in gamma.messages] == [["carol@gamma.test"]]
    run(body)


def _retry_now(spool: Path, qid: str) -> None:
    from gateway.cli import main
    assert main(["queue", "retry", qid, "--spool", str(spool)]) == 0


def test_held_mail_waits_until_released(tmp_path: Path) -> None:
    async def body() -> None:
        sink = await Sink().start()
        gw = await gateway(tmp_path, delivery({"beta.test": sink.port}))
        gw.agent.wake()
        from gateway.spool import Command
        qid = await gw.spool.enqueue(Envelope("a@alpha.test", ("b@beta.test",)), DATA)
        await gw.spool.apply(Command("hold", qid))  # before the scheduler looks at it
        await asyncio.sleep(0.3)
        assert sink.messages == []
        assert gw.spool.stats()["hold"] == 1
        await gw.spool.apply(Command("release", qid))
        await until(lambda: gw.spool.stats()["total"] == 0)
        await gw.stop()
        await sink.stop()
        assert len(sink.messages) == 1
    run(body)


CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from gateway.config.schema import DeliverySection, SpoolSection
    from gateway.config.types import HostPort
    from gateway.delivery import DeliveryAgent
    from gateway.envelope import Envelope
    from gateway.spool import Spool

    async def main():
        spool = await Spool.open(SpoolSection(directory=Path(sys.argv[1])))
        config = DeliverySection(tls="none", retry_initial=3600.0, connect_timeout=5.0,
            transport=(("beta.test", HostPort("127.0.0.1", int(sys.argv[2]))),
                       ("gamma.test", HostPort("127.0.0.1", int(sys.argv[3])))))
        qid = await spool.enqueue(Envelope("alice@alpha.test",
                                           ("bob@beta.test", "carol@gamma.test")),
                                  sys.stdin.buffer.read())
        print(qid, flush=True)
        await DeliveryAgent(spool, config, hostname="child.test").start()
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


def test_kill_9_after_a_delivery_is_recorded(tmp_path: Path) -> None:
    async def body() -> None:
        beta = await Sink().start()
        gamma_down = await Sink(on_rcpt=lambda r: "450 4.2.0 later").start()
        spool_dir = tmp_path / "spool"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(spool_dir), str(beta.port), str(gamma_down.port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parent.parent)
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(DATA)
        proc.stdin.close()
        qid = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()

        def on_disk() -> list[str]:
            try:
                return [r.status for r in read_entry(Layout(spool_dir), qid).state.rcpts]
            except FileNotFoundError:
                return []

        try:
            await until(lambda: on_disk() == [DELIVERED, PENDING]
                        and gamma_down.commands.count("QUIT") == 1)
        finally:
            proc.kill()  # SIGKILL: no cleanup of any kind
            await proc.wait()
        await gamma_down.stop()
        (spool_dir / "tmp" / f"{qid}.999.1").write_bytes(b"half-written")  # crash debris
        gamma = await Sink().start()
        gw = await gateway(tmp_path, delivery({"beta.test": beta.port,
                                               "gamma.test": gamma.port}))
        await gw.spool.apply(__import__("gateway.spool", fromlist=["Command"]).Command(
            "retry", qid))
        await until(lambda: gw.spool.stats()["total"] == 0)
        await gw.stop()
        await beta.stop()
        await gamma.stop()
        assert [m.rcpts for m in beta.messages] == [["bob@beta.test"]]
        assert [m.rcpts for m in gamma.messages] == [["carol@gamma.test"]]
        assert gamma.messages[0].data == DATA
    run(body)


@pytest.mark.parametrize("reply", ["421 4.3.2 closing", None])
def test_refused_or_dropped_connection_defers(tmp_path: Path, reply: str | None) -> None:
    async def body() -> None:
        async def greet_and_drop(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
            if reply is not None:
                writer.write(reply.encode() + b"\r\n")
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(greet_and_drop, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        gw = await gateway(tmp_path, delivery({"beta.test": port}, retry_initial=60.0))
        qid = await gw.spool.enqueue(Envelope("a@alpha.test", ("b@beta.test",)), DATA)

        def deferred() -> bool:
            entry = gw.spool.get(qid)
            return entry is not None and entry.state.rcpts[0].attempts == 1

        await until(deferred)
        entry = gw.spool.get(qid)
        assert entry is not None
        assert entry.status() == "deferred"
        assert entry.state.rcpts[0].reply.startswith("421 4.")
        await gw.stop()
        server.close()
        await server.wait_closed()
    run(body)


def test_connection_dropped_mid_data_is_retried_and_delivered_once(tmp_path: Path) -> None:
    async def body() -> None:
        drops = 1
        sink = await Sink().start()
        normal = sink._session

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal drops
            if not drops:
                await normal(reader, writer)
                return
            drops -= 1
            writer.write(b"220 flaky ESMTP\r\n")
            while line := await reader.readline():
                if line.startswith(b"EHLO"):
                    writer.write(b"250-flaky\r\n250 8BITMIME\r\n")
                elif line.startswith(b"DATA"):
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    await reader.readline()  # one line of the message, then gone
                    break
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(session, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        gw = await gateway(tmp_path, delivery({"beta.test": port}))
        await gw.spool.enqueue(Envelope("a@alpha.test", ("b@beta.test",)), DATA)
        await until(lambda: gw.spool.stats()["total"] == 0)
        await gw.stop()
        server.close()
        await server.wait_closed()
        await sink.stop()
        assert [m.data for m in sink.messages] == [DATA]
    run(body)
