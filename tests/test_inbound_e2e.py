"""The inbound path end to end: `smimegate run` for beta.test receives from a real peer.

The peer is OpenSSL: `openssl cms -sign` (alice@alpha.test's certificate) piped into
`openssl cms -encrypt` to bob@beta.test's certificate, sent over SMTP to beta.test's
gateway (a child process, beta's domain and bob's identities, the demo root as anchor,
revocation off: gateway/revocation's tests cover OCSP); a sink plays bob's internal
server. What arrives must be decrypted, still signed, and carry `smime=pass`; a message
to a key the gateway does not hold is accepted (250) into the quarantine and not
delivered; `smimegate quarantine` lists, shows, releases (with the gateway stopped) and
deletes it.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.loadgen import Sink
from gateway.keys.demo import write_demo_pki
from gateway.smime import detect
from tests.test_outbound_e2e import Gateway, Running
from tests.test_relay_e2e import REPO

pytestmark = pytest.mark.timeout(180)


@dataclass
class World(Running):
    """A beta.test gateway (inbound) and its internal sink; `arrived` from Running."""

    pki: Path = Path()
    tmp: Path = Path()

    def quarantine(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "quarantine", *args, "-c",
                               str(self.tmp / "gateway.toml")], cwd=REPO,
                              capture_output=True, text=True, timeout=60, check=False)


def toml(pki: Path, tmp: Path, sink_port: int) -> str:
    b = pki / "beta.test"
    return f"""
[smtp]
local_domains = ["beta.test"]

[spool]
directory = "{tmp}/spool"

[keys]
certificates = ["{b}/domain-rsa-chain.pem", "{b}/bob-chain.pem"]
private_keys = ["{b}/domain-rsa.key", "{b}/bob.key"]
trust_anchors = ["{pki}/ca/root.pem"]

[lookup]
srv = false

[revocation]
mode = "off"

[inbound]
quarantine_dir = "{tmp}/quarantine"

[cache]
name = "smimegate-test-inbound-{tmp.name[-12:]}"
entries = 64
arena = "64KB"

[delivery]
retry_initial = "200ms"
retry_max = "1s"
tls = "none"

[delivery.transport]
"beta.test" = "127.0.0.1:{sink_port}"
"""


def beta_world(pki: Path, tmp: Path, config_for: Callable[[int], str]) -> Iterator[World]:
    """`smimegate run` as beta.test's inbound gateway with the config config_for(sink
    port) and a sink for beta's internal server; stopped after."""
    write_demo_pki(pki)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sink = Sink(port=0, keep_data=True)
    asyncio.run_coroutine_threadsafe(sink.start(), loop).result(10)
    gateway = Gateway(tmp, config_for(sink.port))
    args = gateway.args
    args[args.index("gw.alpha.test")] = "mx.beta.test"
    args[args.index("alpha.test")] = "beta.test"  # the --local-domain value
    i = args.index("--spool")
    del args[i:i + 2]  # from the file, where `smimegate quarantine` reads it too
    try:
        gateway.start()
        yield World(gateway, sink, loop, pki, tmp)
    finally:
        gateway.stop()
        asyncio.run_coroutine_threadsafe(sink.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module", name="world")
def world_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    pki = tmp_path_factory.mktemp("inbound-e2e-pki")
    tmp = tmp_path_factory.mktemp("inbound-gw")
    yield from beta_world(pki, tmp, lambda port: toml(pki, tmp, port))


def openssl_mail(pki: Path, tmp: Path, recipient_cert: str, subject: str) -> bytes:
    """alice's message as OpenSSL would send it: signed, then encrypted."""
    entity = tmp / "entity"
    entity.write_bytes(b"Content-Type: text/plain\r\n\r\nHello Bob, from openssl.\r\n")
    a = pki / "alpha.test"
    signed = subprocess.run(
        ["openssl", "cms", "-sign", "-in", str(entity), "-signer", str(a / "alice.pem"),
         "-inkey", str(a / "alice.key"), "-certfile", str(pki / "ca/intermediate.pem"),
         "-crlfeol"], capture_output=True, timeout=30, check=True).stdout
    out = subprocess.run(
        ["openssl", "cms", "-encrypt", "-aes-128-cbc", "-from", "alice@alpha.test",
         "-to", "bob@beta.test", "-subject", subject, "-crlfeol", str(pki / recipient_cert)],
        input=signed, capture_output=True, timeout=30, check=True).stdout
    # openssl ends base64 lines in bare LF even with -crlfeol: the sending MTA's CRLF.
    return out.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def send(world: World, message: bytes, mid: str) -> None:
    with smtplib.SMTP("127.0.0.1", world.gateway.port, timeout=60) as s:
        s.sendmail("alice@alpha.test", ["bob@beta.test"],
                   f"Message-ID: <{mid}>\r\n".encode() + message)


def test_openssl_signed_and_encrypted_arrives_with_smime_pass(world: World) -> None:
    send(world, openssl_mail(world.pki, world.tmp, "beta.test/bob.pem", "Pass"),
         "pass@alpha.test")
    data = world.arrived("pass@alpha.test")
    head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ").decode()
    assert "Authentication-Results: mx.beta.test; smime=pass" in head
    assert "body.smime-identifier=alice@alpha.test" in head
    assert detect(data).layers == ("signed",)
    assert b"Hello Bob, from openssl." in data
    assert world.gateway.metric('smimegate_inbound_actions_total{action="deliver",'
                                'verdict="pass"}') >= 1


def test_wrong_key_is_quarantined_then_released_and_deleted(world: World) -> None:
    message = openssl_mail(world.pki, world.tmp, "alpha.test/alice.pem", "Wrong key")
    with smtplib.SMTP("127.0.0.1", world.gateway.port, timeout=60) as s:
        s.ehlo("alpha.test")
        s.mail("alice@alpha.test")
        s.rcpt("bob@beta.test")
        code, text = s.data(b"Message-ID: <q@alpha.test>\r\n" + message)
    assert code == 250
    assert b"quarantined" in text
    listed = world.quarantine("list", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [e for e in json.loads(listed.stdout) if e["verdict"] == "undecryptable"]
    assert entry["rcpt_tos"] == ["bob@beta.test"]
    shown = world.quarantine("show", entry["id"])
    assert shown.returncode == 0
    assert "no-recipient" in shown.stdout
    assert "Subject: Wrong key" in shown.stdout
    assert not any(b"<q@alpha.test>" in m.data for m in world.sink.messages)
    # The running gateway owns the spool: release hands it the message (adopt command).
    released = world.quarantine("release", entry["id"])
    assert released.returncode == 0, released.stderr
    assert "released" in released.stdout
    assert world.quarantine("show", entry["id"]).returncode != 0
    world.arrived("q@alpha.test")  # delivered as it was kept (still encrypted)
    gone = world.quarantine("delete", "Q" + "0" * 20)
    assert gone.returncode != 0
    assert "no quarantined message" in gone.stderr
