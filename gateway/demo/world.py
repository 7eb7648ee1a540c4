"""The demo's world on loopback: the PKI, one directory, two internal mail servers, the
"Internet" relay and two gateways (alpha.test, beta.test), set up in that order and torn
down in reverse by close(), whatever failed in between.

Certificates point their OCSP URL (RFC 6960 AIA) at the demo directory's port, so the
receiving gateway's revocation check asks the directory the demo revokes in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from gateway.config.schema import GatewayConfig
from gateway.demo.mailboxes import Mailbox, free_port
from gateway.demo.procs import Child, DemoError, http_ok, smimegate, smtp_ok
from gateway.directory import client
from gateway.directory.storage import open_storage
from gateway.directory.tokens import new_token
from gateway.keys import load_certificates
from gateway.keys.demo import write_demo_pki

DOMAINS = ("alpha.test", "beta.test")
USERS = {"alpha.test": "alice", "beta.test": "bob"}
FRESH_OCSP = """# The demo revokes and sends again at once: never reuse an earlier OCSP answer.
cache_max = "0s"
failure_cache = "0s"
"""


class World:
    """fresh_ocsp: never reuse an OCSP answer (the demo revokes and at once sends again);
    workers: per gateway. The round-trip benchmark reuses the world with its own sinks."""

    def __init__(self, out: Path, *, fresh_ocsp: bool = True, workers: int = 1) -> None:
        self.out = out
        self.fresh_ocsp, self.workers = fresh_ocsp, workers
        self.pki = out / "pki"
        self.dir_port = free_port()
        self.directory_url = f"http://127.0.0.1:{self.dir_port}"
        self.tokens: dict[str, str] = {}
        self.children: list[Child] = []
        self.mailboxes: list[Mailbox] = []
        self.ports: dict[str, tuple[int, int]] = {}  # gateway name -> (smtp, admin)
        self.alpha_sink = Mailbox("alpha.test internal server")
        self.beta_sink = Mailbox("beta.test internal server")
        self.internet: Mailbox | None = None

    # -- set-up, in order -------------------------------------------------------------

    def write_pki(self) -> list[Path]:
        return write_demo_pki(self.pki, ocsp_url=f"{self.directory_url}/ocsp")

    def create_tokens(self) -> None:
        """One write token per domain, stored (hashed) before the directory starts."""
        async def add() -> None:
            storage = await open_storage(self.out / "directory-data")
            try:
                for domain in DOMAINS:
                    token, record = new_token(domain)
                    await storage.add_token(record)
                    self.tokens[domain] = token
            finally:
                await storage.close()
        asyncio.run(add())

    def start_directory(self) -> None:
        ca = self.pki / "ca"
        child = Child("directory", smimegate(
            "directory", "run", "--data", str(self.out / "directory-data"),
            "--listen", f"127.0.0.1:{self.dir_port}", "--trust", str(ca / "root.pem"),
            "--ocsp-signer", str(ca / "ocsp.pem"), "--ocsp-key", str(ca / "ocsp.key")),
            self.out / "directory.log")
        self.children.append(child)
        child.start(lambda: http_ok(f"{self.directory_url}/healthz"))

    def publish(self, domain: str) -> list[str]:
        """Publish the domain's RSA and EC domain certificates and its user's; lines to show."""
        shown = []
        for name in ("domain-rsa", "domain-ec", USERS[domain]):
            certs = load_certificates(self.pki / domain / f"{name}-chain.pem")
            pems = [c.public_bytes(Encoding.PEM).decode() for c in certs]
            try:
                answer = client.publish(self.directory_url, self.tokens[domain], pems[0],
                                        pems[1:])
            except client.ClientError as e:
                raise DemoError(f"publishing {domain}/{name}: {e}") from None
            cert = answer.get("certificate")
            names = cert.get("names", []) if isinstance(cert, dict) else []
            shown.append(f"{name:<11} {', '.join(map(str, names))}")
        return shown

    def start_mail_servers(self) -> None:
        for box in (self.alpha_sink, self.beta_sink):
            self.mailboxes.append(box)
            box.start()

    def start_gateways(self, *, record: bool = True, alpha_sink: int = 0,
                       beta_sink: int = 0) -> None:
        """Both gateways; record: through the recording "Internet" relay, else alpha
        delivers straight to beta. Sink ports 0: the mailboxes of start_mail_servers."""
        for name in ("alpha", "beta"):
            self.ports[name] = (free_port(), free_port())
        internet = self.ports["beta"][0]
        if record:
            self.internet = Mailbox("the Internet",
                                    forward_to=("127.0.0.1", self.ports["beta"][0]))
            self.mailboxes.append(self.internet)
            internet = self.internet.start().port
        alpha = self._gateway("alpha", "alpha.test", "domain-rsa", {
            "beta.test": internet, "alpha.test": alpha_sink or self.alpha_sink.port})
        beta = self._gateway("beta", "beta.test", "domain-rsa", {
            "beta.test": beta_sink or self.beta_sink.port}, extra_keys=("domain-ec", "bob"))
        for child in (alpha, beta):  # both start at once: half the wait
            self.children.append(child)
            child.spawn()
        alpha.wait_ready(lambda: smtp_ok(self.ports["alpha"][0]))
        beta.wait_ready(lambda: smtp_ok(self.ports["beta"][0]))

    def _gateway(self, name: str, domain: str, signing: str, transport: dict[str, int],
                 extra_keys: tuple[str, ...] = ()) -> Child:
        folder = self.out / f"gateway-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        keys = (signing, *extra_keys)
        certs = ", ".join(q(self.pki / domain / f"{k}-chain.pem") for k in keys)
        private = ", ".join(q(self.pki / domain / f"{k}.key") for k in keys)
        routes = "\n".join(f'"{d}" = "127.0.0.1:{p}"' for d, p in transport.items())
        dirs = "\n".join(f'"{d}" = "{self.directory_url}"' for d in DOMAINS)
        toml = f"""# written by `smimegate demo`: gateway {name} for {domain}
[smtp]
local_domains = ["{domain}"]
trusted_networks = ["127.0.0.0/8"]

[keys]
certificates = [{certs}]
private_keys = [{private}]
trust_anchors = [{q(self.pki / "ca/root.pem")}]

[lookup]
srv = false
timeout = "2s"

[lookup.directories]
{dirs}

[cache]
name = "smimegate-demo-{name}-{uuid.uuid4().hex[:10]}"
entries = 1024
arena = "1MB"

[revocation]
mode = "soft"
{FRESH_OCSP if self.fresh_ocsp else ""}
[delivery]
tls = "none"
retry_initial = "1s"
retry_max = "2s"

[delivery.transport]
{routes}
{inbound_section(folder / "quarantine")}"""
        (folder / "gateway.toml").write_text(toml)
        smtp_port, admin_port = self.ports[name]
        return Child(f"gateway {name}", smimegate(
            "run", "-c", str(folder / "gateway.toml"), "--listen", f"127.0.0.1:{smtp_port}",
            "--admin", f"127.0.0.1:{admin_port}", "--spool", str(folder / "spool"),
            "--hostname", f"mx.{domain}", "--workers", str(self.workers)), folder / "gateway.log")

    # -- the story's actions ----------------------------------------------------------

    def revoke(self, domain: str, name: str) -> str:
        cert = load_certificates(self.pki / domain / f"{name}.pem")[0]
        fp = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
        try:
            client.revoke(self.directory_url, self.tokens[domain], fp, "keyCompromise")
        except client.ClientError as e:
            raise DemoError(f"revoking {domain}/{name}: {e}") from None
        return fp

    def close(self) -> None:
        """Stop every gateway, the directory and the mail servers; keep their files."""
        for child in reversed(self.children):
            child.stop()
        for box in reversed(self.mailboxes):
            box.stop()


def q(path: Path) -> str:
    """A path as a TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(str(path))


def inbound_section(quarantine: Path) -> str:
    """The [inbound] policy when this build's configuration has one: verified mail is
    delivered, failed mail quarantined (the defaults, written out to be seen)."""
    if "inbound" not in {f.name for f in dataclasses.fields(GatewayConfig)}:
        return ""
    return f"""
[inbound]
on_pass = "deliver"
on_fail = "quarantine"
quarantine_dir = {q(quarantine)}
"""

