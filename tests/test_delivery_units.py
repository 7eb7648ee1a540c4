"""Delivery's pure parts as tables (replies, dot-stuffing, backoff, DSN), and interop
with aiosmtpd as a real, independent next hop."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from gateway.config.schema import DeliverySection
from gateway.delivery import FailedRecipient, backoff, build_dsn
from gateway.delivery.client import dot_stuff, parse_reply
from gateway.envelope import Envelope, Reply
from tests.test_delivery import DATA, delivery, gateway, run, until


@pytest.mark.parametrize(
    ("lines", "reply"),
    [
        ([b"250 2.0.0 Ok: queued as X"], Reply(250, "2.0.0", "Ok: queued as X")),
        ([b"550-5.1.1 no such", b"550 5.1.1 user"], Reply(550, "5.1.1", "no such 5.1.1 user")),
        ([b"451 try later"], Reply(451, "4.0.0", "try later")),
        ([b"452 5.2.2 mismatched class"], Reply(452, "4.0.0", "5.2.2 mismatched class")),
        ([b"354 go ahead"], Reply(354, "3.0.0", "go ahead")),
        ([b"250 2.1.5"], Reply(250, "2.1.5", "")),
    ],
)
def test_parse_reply(lines: list[bytes], reply: Reply) -> None:
    assert parse_reply(lines) == reply


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b".x\r\n", b"..x\r\n.\r\n"),
        (b"a\r\n.\r\n..\r\n", b"a\r\n..\r\n...\r\n.\r\n"),
        (b"no final newline", b"no final newline\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
    ],
)
def test_dot_stuffing(data: bytes, wire: bytes) -> None:
    assert dot_stuff(data) == wire


def test_backoff_doubles_up_to_the_maximum() -> None:
    config = DeliverySection(retry_initial=60.0, retry_max=3600.0)
    assert [backoff(config, n) for n in range(1, 9)] == [
        60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert backoff(config, 10_000) == 3600


def test_dsn_is_rfc3464_and_parses() -> None:
    env = Envelope("alice@alpha.test", ("bob@beta.test", "carol@gamma.test"),
                   received_at=1_700_000_000.0)
    envelope, body = build_dsn(
        queue_id="0123456789ABCDEF01234", envelope=env, data=DATA, hostname="gw.alpha.test",
        failed=[FailedRecipient("bob@beta.test", "5.1.1", "550 5.1.1 no such user",
                                "mx.beta.test"),
                FailedRecipient("carol@gamma.test", "4.4.7", "", "")], now=1_700_100_000.0)
    assert envelope.mail_from == ""
    assert envelope.rcpt_tos == ("alice@alpha.test",)
    assert b"\n" not in body.replace(b"\r\n", b"")  # CRLF only, as SMTP needs
    msg = email.message_from_bytes(body, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert not msg.defects
    text, status, headers = msg.iter_parts()
    assert status.get_content_type() == "message/delivery-status"
    # The email package parses each block of delivery-status fields as a header set.
    blocks: list[Any] = status.get_payload()  # type: ignore[assignment]
    assert isinstance(blocks, list)
    assert len(blocks) == 3
    assert blocks[0]["Reporting-MTA"] == "dns; gw.alpha.test"
    assert blocks[1]["Final-Recipient"] == "rfc822; bob@beta.test"
    assert blocks[1]["Status"] == "5.1.1"
    assert blocks[1]["Remote-MTA"] == "dns; mx.beta.test"
    assert blocks[2]["Status"] == "4.4.7"
    assert blocks[2]["Diagnostic-Code"] is None
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Message-ID: <m1@alpha.test>" in headers.get_content()
    assert "bob@beta.test" in text.get_content()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Collect:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 Message accepted"


def test_interop_with_aiosmtpd(tmp_path: Path) -> None:
    handler = Collect()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(),
                            decode_data=False)
    controller.start()
    try:
        async def body() -> None:
            gw = await gateway(tmp_path, delivery({"beta.test": controller.port}))
            for i in range(5):
                await gw.spool.enqueue(Envelope("", (f"u{i}@beta.test",
                                                     "nobody@beta.test")), DATA)
            await until(lambda: gw.spool.stats()["total"] == 0)
            await gw.stop()
        run(body)
    finally:
        controller.stop()
    assert len(handler.envelopes) == 5
    assert all(e.content == DATA and e.rcpt_tos[1:] == [] for e in handler.envelopes)
    assert sorted(e.rcpt_tos[0] for e in handler.envelopes) == [f"u{i}@beta.test"
                                                                for i in range(5)]


def test_agent_stop_leaves_undelivered_mail_queued(tmp_path: Path) -> None:
    async def body() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # never greets
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        gw = await gateway(tmp_path, delivery(
            {"beta.test": server.sockets[0].getsockname()[1]}, command_timeout=30.0,
            shutdown_grace=0.2))
        qid = await gw.spool.enqueue(Envelope("a@alpha.test", ("b@beta.test",)), DATA)
        await asyncio.sleep(0.2)  # the connection is waiting for a greeting
        await gw.agent.stop()
        entry = gw.spool.get(qid)
        assert entry is not None
        assert entry.state.rcpts[0].attempts == 0
        await gw.spool.close()
        server.close()
        await server.wait_closed()
    run(body)
