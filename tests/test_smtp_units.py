"""Tables for the front end's pure parts: relay policy, address syntax, reply text."""

from __future__ import annotations

import asyncio
import ipaddress
import json

import aiohttp
import pytest

from gateway.config.types import HostPort
from gateway.envelope import RELAY_DENIED, SYSTEM_BUSY, Reply
from gateway.metrics import SESSIONS
from gateway.metrics.server import AdminServer
from gateway.smtp.handler import is_mailbox
from gateway.smtp.relay import RelayPolicy
from gateway.smtp.replies import reason, with_status

POLICY = RelayPolicy((ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")),
                     ("local.test", ".sub.test"))


@pytest.mark.parametrize(("client", "trusted"), [
    ("10.1.2.3", True), ("11.0.0.1", False), ("::ffff:10.9.9.9", True), ("2001:db8::5", True),
    ("2001:db9::5", False), ("fe80::1%eth0", False), ("", False), ("not-an-ip", False),
])
def test_trusted_networks(client: str, trusted: bool) -> None:
    assert POLICY.is_trusted(client) is trusted


@pytest.mark.parametrize(("trusted", "rcpt", "refusal"), [
    (False, "a@local.test", None),
    (False, "a@LOCAL.TEST.", None),
    (False, "a@x.sub.test", None),
    (False, "a@sub.test", RELAY_DENIED),  # ".sub.test" covers subdomains only
    (False, "a@notlocal.test", RELAY_DENIED),
    (False, "a@local.test.evil", RELAY_DENIED),
    (False, "a%b@local.test", RELAY_DENIED),
    (False, "a!b@local.test", RELAY_DENIED),
    (False, '"a@b"@local.test', RELAY_DENIED),
    (False, "postmaster", RELAY_DENIED),
    (True, "a@anywhere.test", None),
])
def test_relay_policy(trusted: bool, rcpt: str, refusal: Reply | None) -> None:
    assert POLICY.check(trusted, rcpt) == refusal


@pytest.mark.parametrize(("address", "ok"), [
    ("a@b.test", True), ("first.last+tag@ex-ample.test", True), ('"q d"@x.test', True),
    ("a@[192.0.2.1]", True), ("a@b.test.", True), ("bad", False), ("a@", False),
    ("@b.test", False), ("a b@c.test", False), ("a@b..test", False), ("a@-b.test", False),
    ("a@b.test\r\nRCPT TO:<c@d>", False), ("x" * 250 + "@b.test", False),
])
def test_mailbox_syntax(address: str, ok: bool) -> None:
    assert is_mailbox(address) is ok


@pytest.mark.parametrize(("line", "expected"), [
    ("250 OK", "250 2.0.0 OK"),
    ("250-SIZE 10", "250-2.0.0 SIZE 10"),
    ("501 Syntax: HELO hostname", "501 5.5.4 Syntax: HELO hostname"),
    ('500 Error: command "X" not recognized', '500 5.5.2 Error: command "X" not recognized'),
    ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
    ("554 5.7.1 Relay access denied", "554 5.7.1 Relay access denied"),  # already has one
    ("421 4.7.0 too many", "421 4.7.0 too many"),
    ("599 odd", "599 5.0.0 odd"),
    ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
])
def test_enhanced_status_is_added_where_missing(line: str, expected: str) -> None:
    assert with_status(line) == expected


def test_refusal_reasons() -> None:
    assert reason(SYSTEM_BUSY) == "busy"
    assert reason(RELAY_DENIED) == "relay_denied"
    assert reason(Reply(550, "5.1.1", "unknown user")) == "other_5xx"


def test_admin_server_serves_metrics_and_health() -> None:
    healthy = {"value": True}

    async def go() -> None:
        admin = AdminServer(HostPort("127.0.0.1", 0), {
            "thing": lambda: (healthy["value"], {"detail": 7})})
        await admin.start()
        try:
            base = f"http://{admin.address_text}"
            SESSIONS.inc(0)
            async with aiohttp.ClientSession() as http:
                async with http.get(base + "/metrics") as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/plain")
                    text = await r.text()
                    assert "smimegate_smtp_sessions_total" in text
                    assert "smimegate_worker_batch_size_bucket" in text
                async with http.get(base + "/healthz") as r:
                    assert r.status == 200
                    assert json.loads(await r.text()) == {
                        "thing": {"ok": True, "detail": 7}, "status": "ok"}
                healthy["value"] = False
                async with http.get(base + "/healthz") as r:
                    assert r.status == 503
                    assert json.loads(await r.text())["status"] == "unhealthy"
                async with http.get(base + "/nothing") as r:
                    assert r.status == 404
        finally:
            await admin.stop()

    asyncio.run(go())
