"""The SMTP front end on loopback with the real worker pool and spool behind it.

Each test starts a front end (tests.smtp_support.front_end) and talks raw SMTP to it:
what is acknowledged must be in the spool, what is refused must not, and every reply
must carry the RFC code and enhanced status the limits call for.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY

from tests.smtp_support import Client, Running, front_end

QUEUED = re.compile(r"250 2\.0\.0 Ok: queued as (\S+)$")
MESSAGE = b"From: a@alpha.test\r\nSubject: test\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n"
UNSTUFFED = b"From: a@alpha.test\r\nSubject: test\r\n\r\nleading dot\r\n.two dots\r\nend\r\n"


def run(tmp: Path, body: Callable[[Running], Awaitable[None]], **options: object) -> None:
    async def go() -> None:
        async with front_end(tmp, **options) as gw:  # type: ignore[arg-type]
            await body(gw)

    uvloop.run(go())


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("smimegate_smtp_refused_total", {"reason": reason}) or 0.0


def test_ehlo_offers_the_extensions_and_no_auth(tmp_path: Path) -> None:
    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port, ehlo=False)
        lines = (await c.cmd("EHLO client.test")).splitlines()
        assert lines[0] == "250-gw.local.test"
        keywords = {line[4:] for line in lines[1:]}
        assert {"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE 1048576"} <= keywords
        assert not any(k.startswith(("AUTH", "STARTTLS")) for k in keywords)
        assert (await c.cmd("AUTH PLAIN AGFAYg==")).startswith("502 5.5.1")
        assert (await c.cmd("QUIT")).startswith("221 2.0.0")
        await c.close()

    run(tmp_path, body, max_message_size=1048576)


def test_local_mail_is_in_the_spool_when_250_comes(tmp_path: Path) -> None:
    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        reply = await c.message("a@alpha.test", ["b@local.test"], MESSAGE)
        m = QUEUED.match(reply)
        assert m, reply
        entry = gw.spool.get(m.group(1))
        assert entry is not None
        assert entry.envelope.mail_from == "a@alpha.test"
        assert entry.envelope.rcpt_tos == ("b@local.test",)
        assert entry.envelope.client_address == "127.0.0.1"
        assert entry.envelope.helo == "client.test"
        data = await gw.spool.read(entry)
        received, _, rest = data.partition(b"\r\n\t")
        assert received.startswith(b"Received: from client.test ([127.0.0.1])")
        assert b"by gw.local.test (smimegate) with ESMTP" in rest
        assert data.endswith(UNSTUFFED)  # transparency undone, nothing else changed
        # The null reverse-path (bounces) is accepted too.
        m = QUEUED.match(await c.message("", ["b@local.test"], b"Subject: dsn\r\n\r\nx\r\n"))
        assert m
        entry = gw.spool.get(m.group(1))
        assert entry is not None
        assert entry.envelope.mail_from == ""
        await c.close()

    run(tmp_path, body)


@pytest.mark.parametrize(("trusted", "rcpt", "expected"), [
    ((), "b@local.test", "250 2.1.5"),
    ((), "B@LOCAL.TEST", "250 2.1.5"),
    ((), "b@far.test", "554 5.7.1"),
    ((), "b@sub.local.test", "554 5.7.1"),
    ((), "b%far.test@local.test", "554 5.7.1"),  # % hack through a local domain
    ((), "b!far.test@local.test", "554 5.7.1"),  # bang path
    ((), '"b@far.test"@local.test', "554 5.7.1"),
    ((), "@local.test:b@far.test", "554 5.7.1"),  # source route: the mailbox is far
    ((), "b@[127.0.0.1]", "554 5.7.1"),
    (("10.0.0.0/8",), "b@far.test", "554 5.7.1"),
    (("127.0.0.0/8",), "b@far.test", "250 2.1.5"),
    (("127.0.0.1/32",), "b%c@far.test", "250 2.1.5"),
], ids=lambda v: str(v))
def test_open_relay_attempts_are_refused(tmp_path: Path, trusted: tuple[str, ...], rcpt: str,
                                         expected: str) -> None:
    before = refused("relay_denied")

    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        assert (await c.cmd("MAIL FROM:<spam@far.test>")).startswith("250 2.1.0")
        assert (await c.cmd(f"RCPT TO:<{rcpt}>")).startswith(expected)
        await c.close()

    run(tmp_path, body, trusted_networks=tuple(ipaddress.ip_network(n) for n in trusted))
    assert refused("relay_denied") - before == (1 if expected.startswith("554") else 0)


def test_pipelined_transactions(tmp_path: Path) -> None:
    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        c.send(b"MAIL FROM:<a@alpha.test>\r\nRCPT TO:<b@local.test>\r\n"
               b"RCPT TO:<x@far.test>\r\nRCPT TO:<c@local.test>\r\nDATA\r\n")
        replies = [await c.reply() for _ in range(5)]
        assert [r[:9] for r in replies] == ["250 2.1.0", "250 2.1.5", "554 5.7.1", "250 2.1.5",
                                            "354 End d"]
        c.send(MESSAGE + b".\r\nRSET\r\nMAIL FROM:<a@alpha.test>\r\nRCPT TO:<d@local.test>\r\n"
               b"DATA\r\n")
        replies = [await c.reply() for _ in range(5)]
        assert QUEUED.match(replies[0])
        assert [r[:3] for r in replies[1:]] == ["250", "250", "250", "354"]
        c.send(MESSAGE + b".\r\nQUIT\r\n")
        assert QUEUED.match(await c.reply())
        assert (await c.reply()).startswith("221")
        queued = sorted((env.rcpt_tos, data.endswith(UNSTUFFED)) for env, data in
                        await gw.queued())
        assert queued == [(("b@local.test", "c@local.test"), True), (("d@local.test",), True)]
        await c.close()

    run(tmp_path, body)


def test_size_limits_are_552_5_3_4(tmp_path: Path) -> None:
    before = refused("too_big")

    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        assert (await c.cmd("MAIL FROM:<a@alpha.test> SIZE=5000")).startswith("552 5.3.4")
        reply = await c.message("a@alpha.test", ["b@local.test"], b"0123456789\r\n" * 400)
        assert reply.startswith("552 5.3.4"), reply
        assert (await c.cmd("NOOP")).startswith("250")  # the session goes on
        assert QUEUED.match(await c.message("a@alpha.test", ["b@local.test"], MESSAGE))
        assert len(await gw.queued()) == 1
        await c.close()

    run(tmp_path, body, max_message_size=4096)
    assert refused("too_big") - before == 1  # the one after DATA (SIZE is aiosmtpd's own)


def test_too_many_recipients_is_452_4_5_3(tmp_path: Path) -> None:
    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        await c.cmd("MAIL FROM:<a@alpha.test>")
        replies = [await c.cmd(f"RCPT TO:<r{i}@local.test>") for i in range(4)]
        assert [r[:9] for r in replies] == ["250 2.1.5", "250 2.1.5", "250 2.1.5", "452 4.5.3"]
        await c.cmd("DATA")
        c.send(MESSAGE + b".\r\n")
        assert QUEUED.match(await c.reply())
        ((env, _),) = await gw.queued()
        assert env.rcpt_tos == ("r0@local.test", "r1@local.test", "r2@local.test")
        await c.close()

    run(tmp_path, body, max_recipients=3)


def test_long_lines_and_bare_lf_are_refused_and_nothing_is_smuggled(tmp_path: Path) -> None:
    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        assert (await c.cmd(b"NOOP " + b"x" * 600)).startswith("500 5.5.2")
        reply = await c.message("a@alpha.test", ["b@local.test"], b"x" * 1200 + b"\r\n")
        assert reply.startswith("500 5.5.2"), reply
        # SMTP smuggling: a second transaction hidden behind "\n.\r\n" must not run.
        smuggled = (b"Subject: outer\r\n\r\nhi\n.\r\nMAIL FROM:<evil@alpha.test>\r\n"
                    b"RCPT TO:<victim@local.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n")
        reply = await c.message("a@alpha.test", ["b@local.test"], smuggled)
        assert reply.startswith("554 5.6.11"), reply
        assert (await c.cmd("RCPT TO:<b@local.test>")).startswith("503")  # no transaction
        assert await gw.queued() == []
        await c.close()

    run(tmp_path, body, max_line_length=998)


def test_command_lines_ending_in_bare_lf_are_refused(tmp_path: Path) -> None:
    before = refused("bare_lf")

    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        c.send(b"MAIL FROM:<a@alpha.test>\nRCPT TO:<b@local.test>\r\nNOOP\r\n")
        assert (await c.reply()).startswith("500 5.5.2 Bare LF")
        assert (await c.reply()).startswith("503 5.5.1")  # the MAIL never happened
        assert (await c.reply()).startswith("250 2.0.0")
        assert QUEUED.match(await c.message("a@alpha.test", ["b@local.test"], MESSAGE))
        await c.close()

    run(tmp_path, body)
    assert refused("bare_lf") - before == 1


@pytest.mark.parametrize(("command", "expected"), [
    (b"FOO bar", "500 5.5.2"),
    (b"", "500 5.5.2"),
    (b"\xff\xfe\x00garbage", "500 5.5.2"),
    (b"MAIL FROM:<bad", "553 5.1.7"),
    (b"MAIL FROM:<a@-bad-.test>", "553 5.1.7"),
    (b"MAIL FROM:", "501 5.5.4"),
    (b"MAIL FROM:<a@alpha.test> FOO=bar", "555 5.5.4"),
    (b"MAIL FROM:<a@alpha.test> BODY=9BIT", "501 5.5.4"),
    (b"MAIL FROM:<a@alpha.test> SIZE=abc", "501 5.5.4"),
    (b"RCPT TO:<b@local.test>", "503 5.5.1"),
    (b"DATA", "503 5.5.1"),
    (b"HELO", "501 5.5.4"),
    (b"VRFY b@local.test", "252 2.5.0"),
    (b"EXPN staff", "502 5.5.1"),
], ids=lambda v: repr(v)[:30])
def test_malformed_commands_get_precise_replies(tmp_path: Path, command: bytes,
                                                 expected: str) -> None:
    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        assert (await c.cmd(command)).startswith(expected)
        # The session is still usable afterwards.
        assert QUEUED.match(await c.message("a@alpha.test", ["b@local.test"], MESSAGE))
        await c.close()

    run(tmp_path, body)


def test_every_reply_carries_an_enhanced_status(tmp_path: Path) -> None:
    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        for line in [b"NOOP", b"RSET", b"HELP", b"MAIL FROM:<a@alpha.test>", b"MAIL FROM:<x@y.z>",
                     b"RCPT TO:<b@local.test>", b"RCPT TO:<b@far.test>", b"BOGUS", b"QUIT"]:
            reply = await c.cmd(line)
            assert re.match(r"\d{3}[ -][245]\.\d+\.\d+ ", reply), (line, reply)
        await c.close()

    run(tmp_path, body)


def test_connection_dropped_mid_data_queues_nothing(tmp_path: Path) -> None:
    async def body(gw: Running) -> None:
        for cut in (b"Subject: half\r\n\r\nsome of the body\r\n", b"Subject: x\r\n\r\n.",
                    b"Subject: x\r\n\r\nline\r\n.\r"):
            c = await Client.connect(gw.port)
            await c.cmd("MAIL FROM:<a@alpha.test>")
            await c.cmd("RCPT TO:<b@local.test>")
            assert (await c.cmd("DATA")).startswith("354")
            c.send(cut)
            await c.writer.drain()
            await c.close()
        c = await Client.connect(gw.port)
        assert QUEUED.match(await c.message("a@alpha.test", ["b@local.test"], MESSAGE))
        await c.close()
        assert [data.endswith(UNSTUFFED) for _, data in await gw.queued()] == [True]
        while gw.front.stats()["sessions"]:
            await asyncio.sleep(0.01)

    run(tmp_path, body)


def test_connections_per_client_are_limited(tmp_path: Path) -> None:
    async def body(gw: Running) -> None:
        first = await Client.connect(gw.port)
        second = await Client.connect(gw.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        assert (await reader.readline()).startswith(b"421 4.7.0")
        assert await reader.read() == b""  # closed
        writer.close()
        await first.cmd("QUIT")
        await first.close()
        while gw.front.stats()["sessions"] > 1:
            await asyncio.sleep(0.01)
        third = await Client.connect(gw.port)
        assert QUEUED.match(await third.message("a@alpha.test", ["b@local.test"], MESSAGE))
        await third.close()
        await second.close()

    run(tmp_path, body, max_connections_per_client=2)


def test_idle_client_gets_421_4_4_2(tmp_path: Path) -> None:
    before = refused("timeout")

    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        assert (await c.reply(timeout=10)).startswith("421 4.4.2")
        assert await c.reader.read() == b""
        await c.close()

    run(tmp_path, body, command_timeout=1.0)
    assert refused("timeout") - before == 1


def test_stalled_data_gets_421_4_4_2_and_nothing_is_queued(tmp_path: Path) -> None:
    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        await c.cmd("MAIL FROM:<a@alpha.test>")
        await c.cmd("RCPT TO:<b@local.test>")
        assert (await c.cmd("DATA")).startswith("354")
        c.send(b"Subject: slow\r\n\r\npart of it\r\n")
        assert (await c.reply(timeout=10)).startswith("421 4.4.2")
        assert await c.reader.read() == b""
        await c.close()
        assert await gw.queued() == []

    run(tmp_path, body, data_timeout=1.0, command_timeout=30.0)


def test_total_sessions_are_limited(tmp_path: Path) -> None:
    async def body(gw: Running) -> None:
        first = await Client.connect(gw.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        assert (await reader.readline()).startswith(b"421 4.3.2 Too many sessions")
        writer.close()
        await first.close()

    run(tmp_path, body, max_sessions=1)


def test_data_memory_is_bounded_452_4_3_1(tmp_path: Path) -> None:
    big = b"Subject: big\r\n\r\n" + (b"0123456789" * 7 + b"\r\n") * 560  # 40 KB

    async def body(gw: Running) -> None:
        holder, other = await Client.connect(gw.port), await Client.connect(gw.port)
        held = asyncio.create_task(holder.message("a@alpha.test", ["b@local.test"],
                                                  b"SLEEP:1\r\n" + big))
        while gw.pool.stats()["busy"] == 0:  # the 40 KB sit in the worker stage
            await asyncio.sleep(0.01)
        assert gw.front.stats()["data_memory"] > 40_000
        reply = await other.message("a@alpha.test", ["b@local.test"], big)
        assert reply.startswith("452 4.3.1"), reply
        assert QUEUED.match(await held)
        assert gw.front.stats()["data_memory"] == 0
        assert QUEUED.match(await other.message("a@alpha.test", ["b@local.test"], big))
        assert gw.front.stats()["data_memory"] == 0
        for c in (holder, other):
            await c.close()

    run(tmp_path, body, job="tests.workers_jobs:behave", max_data_memory=64 * 1024)


def test_full_spool_is_451_4_3_2(tmp_path: Path) -> None:
    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        assert QUEUED.match(await c.message("a@alpha.test", ["b@local.test"], MESSAGE))
        assert (await c.cmd("MAIL FROM:<a@alpha.test>")).startswith("451 4.3.2")
        await c.close()

    run(tmp_path, body, max_messages=1)


def test_full_worker_queue_is_451_4_3_2(tmp_path: Path) -> None:
    async def body(gw: Running) -> None:
        slow = await Client.connect(gw.port)
        waiting = await Client.connect(gw.port)
        late = await Client.connect(gw.port)
        first = asyncio.create_task(slow.message("a@alpha.test", ["b@local.test"],
                                                 b"SLEEP:1\r\n\r\nx\r\n"))
        while gw.pool.stats()["busy"] == 0:
            await asyncio.sleep(0.01)
        second = asyncio.create_task(waiting.message("a@alpha.test", ["b@local.test"],
                                                     b"second\r\n"))
        while gw.pool.stats()["pending"] == 0:
            await asyncio.sleep(0.01)
        assert (await late.cmd("MAIL FROM:<a@alpha.test>")).startswith("451 4.3.2")
        assert QUEUED.match(await first)
        assert QUEUED.match(await second)
        assert QUEUED.match(await late.message("a@alpha.test", ["b@local.test"], MESSAGE))
        for c in (slow, waiting, late):
            await c.close()

    run(tmp_path, body, job="tests.workers_jobs:behave", max_pending=1, max_batch=1)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw.local.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_starttls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)

    async def body(gw: Running) -> None:
        c = await Client.connect(gw.port)
        await c.starttls()
        lines = (await c.cmd("EHLO client.test")).splitlines()
        assert "250-STARTTLS" not in lines
        assert "250-ENHANCEDSTATUSCODES" in lines
        m = QUEUED.match(await c.message("a@alpha.test", ["b@local.test"], MESSAGE))
        assert m
        entry = gw.spool.get(m.group(1))
        assert entry is not None
        assert b"with ESMTPS" in await gw.spool.read(entry)
        await c.cmd("QUIT")
        await c.close()

    run(tmp_path, body, tls_certificate=cert, tls_key=key)
