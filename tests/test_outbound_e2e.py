"""The outbound path end to end, on loopback with real processes (issue 6, "Prove it").

A real directory (SQLite, in a thread of the test) holds beta.test's certificates,
published with a token; `smimegate run` for alpha.test runs as a child process with
alpha's domain identity, the demo root as trust anchor and the directory for beta.test
(and for gamma.test and delta.test, where nothing is published); a sink plays every
next hop. What arrives for bob@beta.test must open with `openssl cms -decrypt` and
beta's key and verify against the root with `openssl cms -verify`; a recipient with no
certificate under the default (opportunistic) policy gets a signed, unencrypted copy;
a rule with encrypt = "required", fallback = "reject" makes the message 550 5.7.1; a
content rule with fallback "defer" for one recipient of two accepts the message, sends
the other's copy at once and the deferred one once its certificate is published.
"""

from __future__ import annotations

import asyncio
import email.utils
import smtplib
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from benchmarks.loadgen import Sink
from gateway.config import load_directory_config
from gateway.keys import load_certificates, load_private_key
from gateway.keys.demo import Issued, issue, name_of, new_key, write_demo_pki
from gateway.smime import encrypt
from tests.directory_support import DirectoryServer, http
from tests.directory_world import pem
from tests.lookup_support import Scripted
from tests.test_relay_e2e import REPO, free_port

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class World:
    pki: Path
    directory: DirectoryServer


@pytest.fixture(scope="module", name="world")
def world_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    pki = tmp_path_factory.mktemp("outbound-pki")
    write_demo_pki(pki)
    config = load_directory_config(None, overrides={
        "server.data": str(tmp_path_factory.mktemp("outbound-dir")),
        "trust.anchors": [str(pki / "ca/root.pem")]})
    server = DirectoryServer(config).start()
    try:
        token = server.token("beta.test")
        inter = load_certificates(pki / "ca/intermediate.pem")[0]
        for name in ("bob.pem", "domain-rsa.pem"):
            cert: x509.Certificate = load_certificates(pki / "beta.test" / name)[0]
            r = http("POST", server.url + "/v1/certificates",
                     {"certificate": pem(cert), "chain": [pem(inter)]},
                     {"Authorization": f"Bearer {token}"})
            assert r.status == 201, r.body
        yield World(pki, server)
    finally:
        server.stop()


def gateway_toml(world: World, sink_port: int, silent_url: str) -> str:
    alpha = world.pki / "alpha.test"
    url = world.directory.url
    return f"""
[keys]
certificates = ["{alpha}/domain-rsa-chain.pem"]
private_keys = ["{alpha}/domain-rsa.key"]
trust_anchors = ["{world.pki}/ca/root.pem"]

[lookup]
srv = false
# RCPT waits one request's timeout (1 s); a silent directory's lookup takes two (a
# retry), so it is 451 4.4.3 at RCPT.
timeout = "1s"
retries = 1
negative_ttl = "1s"

[lookup.directories]
"beta.test" = "{url}"
"gamma.test" = "{url}"
"delta.test" = "{url}"
"epsilon.test" = "{url}"
"slow.test" = "{silent_url}"

[cache]
name = "smimegate-test-outbound-{uuid.uuid4().hex[:12]}"
entries = 1024
arena = "1MB"

[delivery]
retry_initial = "200ms"
retry_max = "1s"
tls = "none"

[delivery.transport]
"beta.test" = "127.0.0.1:{sink_port}"
"gamma.test" = "127.0.0.1:{sink_port}"
"delta.test" = "127.0.0.1:{sink_port}"
"epsilon.test" = "127.0.0.1:{sink_port}"

[[policy.rules]]
name = "epsilon confidential"
recipient_domain = ["epsilon.test"]
subject_keyword = ["[secure]"]
encrypt = "required"
fallback = "defer"
strip_subject_keyword = true

[[policy.rules]]
name = "delta needs encryption"
recipient_domain = ["delta.test"]
encrypt = "required"
fallback = "reject"
"""


class Gateway:
    def __init__(self, tmp: Path, toml: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        config = tmp / "gateway.toml"
        config.write_text(toml)
        self.log = tmp / "gateway.log"
        self.args = [sys.executable, "-m", "gateway", "run", "-c", str(config),
                     "--listen", f"127.0.0.1:{self.port}",
                     "--admin", f"127.0.0.1:{self.admin_port}",
                     "--spool", str(tmp / "spool"), "--hostname", "gw.alpha.test",
                     "--trusted-network", "127.0.0.0/8", "--local-domain", "alpha.test",
                     "--workers", "1"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as s:
                    s.noop()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("gateway did not start: " + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def send(self, rcpt: str, subject: str = "Quarterly figures",
             message: bytes | None = None) -> str:
        """Send alice's message to rcpt; its Message-ID (SMTPDataError if refused)."""
        mid = email.utils.make_msgid(domain="alpha.test")
        msg = message if message is not None else alice_message(rcpt, subject)
        msg = f"Message-ID: {mid}\r\n".encode() + msg
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as s:
            s.sendmail("alice@alpha.test", [rcpt], msg)
        return mid

    def metric(self, line_start: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def alice_message(rcpt: str, subject: str = "Quarterly figures") -> bytes:
    return (f"From: Alice <alice@alpha.test>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.formatdate()}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "The figures are attached in spirit.\r\n").encode()


def text(reply: bytes | str) -> str:
    return reply.decode() if isinstance(reply, bytes) else reply


@dataclass
class Running:
    gateway: Gateway
    sink: Sink
    loop: asyncio.AbstractEventLoop

    def arrived(self, mid: str, timeout: float = 30.0) -> bytes:
        async def wait() -> bytes:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for m in self.sink.messages:
                    if mid.encode() in m.data.split(b"\r\n\r\n", 1)[0]:
                        return m.data
                await asyncio.sleep(0.05)
            raise AssertionError(f"{mid} did not arrive; gateway log:\n"
                                 + self.gateway.log.read_text()[-3000:])
        return asyncio.run_coroutine_threadsafe(wait(), self.loop).result(timeout + 5)


@pytest.fixture(scope="module", name="running")
def running_fixture(world: World, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Running]:
    import threading
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sink = Sink(port=0, keep_data=True)
    asyncio.run_coroutine_threadsafe(sink.start(), loop).result(10)

    async def silent_directory() -> Scripted:  # answers nothing: its gate never opens
        return await Scripted(gate=asyncio.Event()).start()

    silent = asyncio.run_coroutine_threadsafe(silent_directory(), loop).result(10)
    gateway = Gateway(tmp_path_factory.mktemp("outbound-gw"),
                      gateway_toml(world, sink.port, silent.url))
    try:
        gateway.start()
        yield Running(gateway, sink, loop)
    finally:
        gateway.stop()
        asyncio.run_coroutine_threadsafe(sink.stop(), loop).result(10)
        if silent.gate is not None:
            loop.call_soon_threadsafe(silent.gate.set)
        asyncio.run_coroutine_threadsafe(silent.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def openssl(*args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", "cms", *args], input=data, capture_output=True,
                          timeout=30, check=False)


def test_encrypted_and_signed_to_beta(world: World, running: Running) -> None:
    mid = running.gateway.send("bob@beta.test")
    data = running.arrived(mid)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert b"content-type: application/pkcs7-mime" in head
    assert b"subject: quarterly figures" in head  # routing headers stay outside
    beta = world.pki / "beta.test"
    opened = openssl("-decrypt", "-recip", str(beta / "bob.pem"), "-inkey",
                     str(beta / "bob.key"), data=data)
    assert opened.returncode == 0, opened.stderr.decode()
    assert b"multipart/signed" in opened.stdout
    verified = openssl("-verify", "-CAfile", str(world.pki / "ca/root.pem"),
                       data=opened.stdout)
    assert verified.returncode == 0, verified.stderr.decode()
    assert b"The figures are attached in spirit." in verified.stdout
    # The domain key cannot open a copy encrypted to bob's own certificate.
    wrong = openssl("-decrypt", "-recip", str(beta / "domain-rsa.pem"), "-inkey",
                    str(beta / "domain-rsa.key"), data=data)
    assert wrong.returncode != 0


def test_no_certificate_opportunistic_arrives_signed_only(world: World,
                                                          running: Running) -> None:
    mid = running.gateway.send("carol@gamma.test")
    data = running.arrived(mid)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert b"multipart/signed" in head
    assert b"pkcs7-mime" not in head
    verified = openssl("-verify", "-CAfile", str(world.pki / "ca/root.pem"), data=data)
    assert verified.returncode == 0, verified.stderr.decode()
    assert "fallback plain" in running.gateway.log.read_text()


def test_required_with_reject_fallback_is_refused_at_rcpt(running: Running) -> None:
    # The envelope alone decides (no content conditions): refused at RCPT, not after
    # DATA (gateway/outbound/readiness.py); the after-DATA path: test_outbound_job.py.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        running.gateway.send("dave@delta.test")
    code, reply = e.value.recipients["dave@delta.test"]
    assert code == 550
    assert text(reply).startswith("5.7.1")
    assert "fallback reject (rules" in running.gateway.log.read_text()


def test_lookup_that_cannot_finish_in_time_is_451_at_rcpt(running: Running) -> None:
    with smtplib.SMTP("127.0.0.1", running.gateway.port, timeout=60) as s:
        s.ehlo("client.alpha.test")
        s.mail("alice@alpha.test")
        code, reply = s.rcpt("erin@slow.test")
        assert (code, text(reply)[:5]) == (451, "4.4.3")
        # Other recipients of the same transaction are unaffected.
        assert s.rcpt("bob@beta.test")[0] == 250


def test_a_deferred_recipient_gets_its_copy_once_a_certificate_is_published(
        world: World, running: Running) -> None:
    # Content decides (the subject keyword), so nothing is refused at RCPT; beta has a
    # certificate, epsilon has none yet: the message is accepted, bob's copy goes now.
    mid = email.utils.make_msgid(domain="alpha.test")
    msg = f"Message-ID: {mid}\r\n".encode() + alice_message(
        "erin@epsilon.test", "[secure] Payroll")
    with smtplib.SMTP("127.0.0.1", running.gateway.port, timeout=60) as s:
        s.sendmail("alice@alpha.test", ["bob@beta.test", "erin@epsilon.test"], msg)

    def copies() -> list[tuple[list[str], bytes]]:
        return [(list(m.rcpt_tos), m.data) for m in running.sink.messages
                if mid.encode() in m.data.split(b"\r\n\r\n", 1)[0]]

    running.arrived(mid)
    assert [r for r, _ in copies()] == [["bob@beta.test"]]
    # epsilon.test publishes a certificate; delivery finds erin's original due, asks the
    # directory again (its negative answer has expired) and runs the job again.
    pki = world.pki
    inter = Issued(load_private_key(pki / "ca/intermediate.key"),
                   load_certificates(pki / "ca/intermediate.pem")[0])
    erin = issue(name_of("erin", email="erin@epsilon.test"), new_key("rsa2048"), inter,
                 emails=("erin@epsilon.test",))
    token = world.directory.token("epsilon.test")
    r = http("POST", world.directory.url + "/v1/certificates",
             {"certificate": pem(erin.certificate), "chain": [pem(inter.certificate)]},
             {"Authorization": f"Bearer {token}"})
    assert r.status == 201, r.body
    deadline = time.monotonic() + 30
    while len(copies()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(r for r, _ in copies()) == [["bob@beta.test"], ["erin@epsilon.test"]], \
        running.gateway.log.read_text()[-3000:]
    erin_copy = next(d for r, d in copies() if r == ["erin@epsilon.test"])
    head = erin_copy.split(b"\r\n\r\n", 1)[0].lower()
    assert b"application/pkcs7-mime" in head
    assert b"subject: payroll" in head  # the keyword was removed before sending
    key = pki / "erin.key"
    key.write_bytes(erin.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                           NoEncryption()))
    cert = pki / "erin.pem"
    cert.write_bytes(erin.certificate.public_bytes(Encoding.PEM))
    opened = openssl("-decrypt", "-recip", str(cert), "-inkey", str(key), data=erin_copy)
    assert opened.returncode == 0, opened.stderr.decode()
    log = running.gateway.log.read_text()
    assert "accepted for some recipients; refused for erin@epsilon.test" in log
    assert "processed again" in log


def test_already_encrypted_input_passes_unchanged(world: World, running: Running) -> None:
    bob = load_certificates(world.pki / "beta.test/bob.pem")[0]
    sealed = encrypt(alice_message("bob@beta.test"), [bob])
    mid = running.gateway.send("bob@beta.test", message=sealed)
    data = running.arrived(mid)
    assert data.split(b"\r\n\r\n", 1)[1] == sealed.split(b"\r\n\r\n", 1)[1]
    assert "already encrypted, passed unchanged" in running.gateway.log.read_text()


def test_decisions_are_counted_in_the_front_ends_metrics(running: Running) -> None:
    mid = running.gateway.send("bob@beta.test")
    running.arrived(mid)
    encrypted = running.gateway.metric(
        'smimegate_outbound_decisions_total{encrypt="opportunistic",outcome="encrypted"}')
    assert encrypted >= 1
    # The demo certificates list no SMIMECapabilities (RFC 4262): GCM narrows to CBC.
    assert running.gateway.metric('smimegate_outbound_encrypted_total{cipher="aes128-cbc"}') >= 1
    assert running.gateway.metric('smimegate_outbound_cipher_narrowed_total'
                                  '{from="aes128-gcm",to="aes128-cbc"}') >= 1


def test_missing_key_file_is_a_precise_startup_error(world: World, tmp_path: Path) -> None:
    toml = gateway_toml(world, 1, "http://127.0.0.1:1").replace(
        "domain-rsa.key", "no-such.key")
    gw = Gateway(tmp_path, toml)
    done = subprocess.run(gw.args, cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode != 0
    assert "no-such.key" in done.stderr
    assert "no such file" in done.stderr
    assert "Traceback" not in done.stderr
