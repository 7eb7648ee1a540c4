"""End to end: a message signed with the demo PKI, verified with the OCSP client plugged in
through the strict / soft / off policy, before and after revocation in a real directory,
and with the verification server down; the RFC 7281 verdict and header for each."""

from __future__ import annotations

import email.parser
import email.policy

import pytest

from gateway.revocation import (
    OcspClient,
    RevocationPolicy,
    authentication_results,
    inbound_verdict,
    smime_resinfo,
)
from gateway.smime import SMIMEError, sign, verify
from tests.directory_support import DirectoryServer
from tests.directory_world import (  # noqa: F401 - fixtures are used by name
    World,
    alpha_fixture,
    fp,
    publish,
    revoke,
    server_fixture,
    world_fixture,
)
from tests.revocation_support import closed_port_url, counter, identity, leaf

MESSAGE = (b"From: Kim <kim@alpha.test>\r\nTo: bob@beta.test\r\nSubject: hi\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n")


def _policy(world: World, mode: str, url: str) -> RevocationPolicy:
    return RevocationPolicy(mode, OcspClient({fp(world.inter.certificate): url}))


def _header(policy: RevocationPolicy, message: bytes, world: World) -> tuple[str, str]:
    result = verify(message, anchors=[world.root], revocation=policy.check)
    verdict = policy.verdict(result)
    field = authentication_results("beta.test", smime_resinfo(
        verdict, from_address="kim@alpha.test"))
    return verdict.result, field


def test_signed_message_before_and_after_revocation(world: World, server: DirectoryServer,
                                                    alpha: str) -> None:
    item = leaf(world.inter, "kim@alpha.test")
    assert publish(server, alpha, item.certificate, (world.inter.certificate,)).status == 201
    signed = sign(MESSAGE, identity(item, world.inter))
    for mode in ("strict", "soft"):
        policy = _policy(world, mode, server.url + "/ocsp")
        result = verify(signed, anchors=[world.root], revocation=policy.check)
        assert result.ok
        assert result.signers[0].revocation == "good"
        verdict = policy.verdict(result)
        assert (verdict.result, verdict.reason) == ("pass", "")
    _, field = _header(_policy(world, "strict", server.url + "/ocsp"), signed, world)
    assert field.startswith("Authentication-Results: beta.test; smime=pass")
    assert "body.smime-identifier=kim@alpha.test" in field
    assert f"body.smime-serial={item.certificate.serial_number:X}" in field

    assert revoke(server, alpha, fp(item.certificate), "keyCompromise").status == 200
    for mode in ("strict", "soft"):
        policy = _policy(world, mode, server.url + "/ocsp")  # a fresh cache
        result = verify(signed, anchors=[world.root], revocation=policy.check)
        assert not result.ok
        assert result.code == "revoked"
        verdict = policy.verdict(result)
        assert verdict.result == "fail"
        assert "keyCompromise" in verdict.reason
        assert verdict.revocation == "revoked"
    off = RevocationPolicy("off", None)
    result = verify(signed, anchors=[world.root], revocation=off.check)
    assert result.ok
    assert result.signers[0].revocation == "not-checked"
    verdict = off.verdict(result)
    assert verdict.result == "pass"
    assert "not checked" in verdict.reason


@pytest.mark.parametrize(("mode", "expected", "revocation"), [
    ("strict", "temperror", "unknown"),
    ("soft", "pass", "unknown"),
    ("off", "pass", "not-checked"),
])
def test_verification_server_down(world: World, mode: str, expected: str,
                                  revocation: str) -> None:
    item = leaf(world.inter, "lou@alpha.test")
    signed = sign(MESSAGE, identity(item, world.inter))
    policy = _policy(world, mode, closed_port_url()) if mode != "off" else \
        RevocationPolicy("off", None)
    before = counter("smimegate_revocation_verdicts", {"mode": mode, "status": revocation})
    result = verify(signed, anchors=[world.root], revocation=policy.check)
    assert result.ok
    assert result.signers[0].revocation == revocation
    verdict = policy.verdict(result)
    assert (verdict.result, verdict.revocation) == (expected, revocation)
    if mode != "off":
        assert "revocation status unknown" in verdict.reason
        assert "cannot connect" in verdict.reason  # the precise cause, not just "unknown"
    else:
        assert "off by policy" in verdict.reason
    assert counter("smimegate_revocation_verdicts",
                   {"mode": mode, "status": revocation}) == before + 1
    field = authentication_results("beta.test", smime_resinfo(verdict))
    assert f"smime={expected} reason=" in field


def test_unsigned_garbage_and_broken_signatures(world: World) -> None:
    assert inbound_verdict(None, mode="strict").result == "none"
    with pytest.raises(SMIMEError) as info:
        verify(MESSAGE, anchors=[world.root])
    assert inbound_verdict(None, mode="soft", error=info.value).result == "none"  # not-smime
    garbage = (b"From: a@alpha.test\r\nMIME-Version: 1.0\r\nContent-Type: application/"
               b"pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n"
               b"\r\nMIIBAAAA\r\n")
    with pytest.raises(SMIMEError) as info:
        verify(garbage, anchors=[world.root])
    verdict = inbound_verdict(None, mode="soft", error=info.value)
    assert verdict.result == "neutral"
    assert verdict.reason.startswith("unreadable S/MIME")
    item = leaf(world.inter, "max@alpha.test")
    signed = sign(MESSAGE, identity(item, world.inter))
    tampered = signed.replace(b"hello", b"HELLO")
    verdict = inbound_verdict(verify(tampered, anchors=[world.root]), mode="soft")
    assert verdict.result == "fail"
    assert verdict.reason.startswith("digest-mismatch")
    verdict = inbound_verdict(verify(signed, anchors=[world.other_root.certificate]),
                              mode="soft")
    assert verdict.result == "fail"  # a chain to no anchor of ours
    verdict = inbound_verdict(verify(signed, anchors=[world.root]), mode="strict")
    assert verdict.result == "temperror"  # strict, and no check was plugged in


def test_policy_rejects_bad_modes_and_survives_a_crashing_check(world: World) -> None:
    with pytest.raises(ValueError, match="not one of"):
        RevocationPolicy("lenient", None)
    with pytest.raises(ValueError, match="needs a revocation check"):
        RevocationPolicy("strict", None)

    def crash(cert: object, issuer: object) -> object:
        raise RuntimeError("boom")

    policy = RevocationPolicy("soft", crash)  # type: ignore[arg-type]
    item = leaf(world.inter, "ned@alpha.test")
    status = policy(item.certificate, world.inter.certificate)
    assert status.status == "unknown"
    assert "boom" in status.reason


def test_header_of_a_real_verdict_parses_as_one_field(world: World) -> None:
    item = leaf(world.inter, "ola@alpha.test")
    signed = sign(MESSAGE, identity(item, world.inter))
    policy = _policy(world, "soft", closed_port_url())
    _, field = _header(policy, signed, world)
    assert all(len(line) <= 78 for line in field.split("\r\n"))
    parsed = email.parser.BytesParser(policy=email.policy.SMTP).parsebytes(
        field.encode() + signed)
    assert len(parsed.get_all("Authentication-Results") or []) == 1
    assert parsed["From"] == "Kim <kim@alpha.test>"


def test_worker_counts_drain_once_and_apply_in_the_front_end() -> None:
    from prometheus_client import REGISTRY

    from gateway.revocation import metrics as m

    m.drain()  # forget what earlier tests counted in this process
    m.VERDICTS.labels("strict", "good").inc(2)
    m.OCSP_REQUESTS.labels("timeout").inc()
    drained = dict(((name, labels), n) for name, labels, n in m.drain())
    assert drained == {("revocation_verdicts", ("strict", "good")): 2.0,
                       ("revocation_ocsp_requests", ("timeout",)): 1.0}
    assert m.drain() == ()
    def soft_unknown() -> float:
        labels = {"mode": "soft", "status": "unknown"}
        return REGISTRY.get_sample_value("smimegate_revocation_verdicts_total", labels) or 0.0

    before = soft_unknown()
    rest = m.apply((("revocation_verdicts", ("soft", "unknown"), 3.0),
                    ("outbound_signed", ("domain",), 1.0)))
    assert rest == (("outbound_signed", ("domain",), 1.0),)
    assert soft_unknown() == before + 3
