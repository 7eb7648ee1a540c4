"""RCPT-time refusal: encrypt = "required" + fallback "reject" (or "defer") and the
directory says the recipient has no certificate → 550 5.7.1 (451 4.7.0) at RCPT, when
the envelope alone decides.

Over real SMTP on loopback: a FrontEnd with the real CertificateReadiness, a real
CertificateResolver asking a scripted directory on 127.0.0.1 (bob@beta.test has a
certificate, nobody else does), the real shared-memory cache, spool and worker pool.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

from gateway.config.schema import PolicySection, SmtpSection, SpoolSection, WorkersSection
from gateway.config.types import HostPort
from gateway.lookup._cache_py import CertCache
from gateway.lookup.resolver import CertificateResolver
from gateway.outbound.readiness import CertificateReadiness
from gateway.policy.engine import Defaults, envelope_decision
from gateway.policy.rules import compile_rules
from gateway.smtp import Acceptor, FrontEnd
from gateway.spool import Spool
from gateway.workers import IDENTITY, WorkerPool
from tests.lookup_support import Pki, Scripted, entry, lookup_config, run
from tests.lookup_support import cache_fixture as cache_fixture
from tests.lookup_support import pki_fixture as pki_fixture
from tests.smtp_support import Client

RULES: list[dict[str, Any]] = [
    {"name": "gamma", "recipient_domain": "gamma.test", "sender_domain": "alpha.test",
     "encrypt": "required", "fallback": "reject"},
    {"name": "content", "recipient_domain": "delta.test", "body_keyword": "secret",
     "encrypt": "required", "fallback": "reject"},
    {"name": "delta", "recipient_domain": "delta.test", "encrypt": "required",
     "fallback": "reject"},
    {"name": "later", "recipient_domain": "eps.test", "encrypt": "required",
     "fallback": "defer"},
    {"name": "beta", "recipient_domain": "beta.test", "encrypt": "required",
     "fallback": "reject"},
]


def decision(rcpt: str, sender: str = "alice@alpha.test") -> tuple[str, str] | None:
    d = envelope_decision(compile_rules(RULES), Defaults(), sender=sender, recipient=rcpt)
    return None if d is None else (d.encrypt, d.fallback)


def test_envelope_decision_only_when_no_matching_rule_tests_the_message() -> None:
    assert decision("dave@gamma.test") == ("required", "reject")
    assert decision("dave@gamma.test", sender="x@other.test") == ("opportunistic", "plain")
    assert decision("dave@gamma.test", sender="") == ("opportunistic", "plain")
    assert decision("dave@delta.test") is None  # "content" matches the envelope
    assert decision("dave@eps.test") == ("required", "defer")
    # a content rule that does not match the envelope does not stop the decision
    assert decision("dave@zeta.test") == ("opportunistic", "plain")


def test_required_reject_or_defer_without_certificate_is_refused_at_rcpt(
        pki: Pki, cache: CertCache, tmp_path: Path) -> None:
    async def body() -> None:
        directory = await Scripted({"bob@beta.test": [
            entry(pki.bob, (pki.inter.certificate,))]}).start()
        resolver = CertificateResolver(lookup_config(default_directories=(directory.url,)),
                                       anchors=[pki.root], cache=cache)
        policy = dataclasses.replace(PolicySection(), rules=compile_rules(RULES))
        readiness = CertificateReadiness(resolver, 5.0, policy)
        config = SmtpSection(listen=HostPort("127.0.0.1", 0), local_domains=("alpha.test",),
                             trusted_networks=(ipaddress.ip_network("127.0.0.0/8"),))
        spool = await Spool.open(SpoolSection(directory=tmp_path / "spool"))
        pool = WorkerPool(WorkersSection(processes=1), job_function=IDENTITY)
        front = FrontEnd(config, Acceptor(pool, spool, hostname="gw.alpha.test"),
                         outbound_check=readiness.check)
        try:
            await pool.start()
            await front.start()
            client = await Client.connect(front.address[1])
            try:
                assert (await client.cmd("MAIL FROM:<alice@alpha.test>")).startswith("250")
                refused = await client.cmd("RCPT TO:<dave@gamma.test>")
                assert refused.startswith("550 5.7.1"), refused
                deferred = await client.cmd("RCPT TO:<dave@eps.test>")  # fallback defer
                assert deferred.startswith("451 4.7.0"), deferred
                for ok in ("bob@beta.test",  # has a certificate
                           "dave@delta.test",  # decided after DATA (content rule)
                           "ann@alpha.test"):  # local: inbound
                    reply = await client.cmd(f"RCPT TO:<{ok}>")
                    assert reply.startswith("250"), (ok, reply)
                assert (await client.cmd("RSET")).startswith("250")
                # another sender: rule "gamma" does not apply, opportunistic → accepted
                assert (await client.cmd("MAIL FROM:<x@other.test>")).startswith("250")
                reply = await client.cmd("RCPT TO:<dave@gamma.test>")
                assert reply.startswith("250"), reply
                await client.cmd("QUIT")
            finally:
                await client.close()
        finally:
            await front.stop(grace=5.0)
            await pool.stop()
            await spool.close()
            await resolver.close()
            await directory.stop()
    run(body)
