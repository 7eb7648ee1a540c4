"""The OCSP client against a real directory on loopback (good → revoked, caching counted
at the server, AIA fallback) and against a scripted responder that answers wrongly in
every way RFC 6960 §3.2 says a client must refuse: each is "unknown" with its reason."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.config import load_gateway_config
from gateway.keys import load_certificates, load_private_key
from gateway.keys.demo import Issued, issue, name_of, new_key
from gateway.revocation import OcspClient, RevocationPolicy
from tests.directory_support import DirectoryServer, http
from tests.directory_world import (  # noqa: F401 - fixtures are used by name
    World,
    alpha_fixture,
    fp,
    publish,
    revoke,
    server_fixture,
    world_fixture,
)
from tests.revocation_support import (  # noqa: F401 - fixtures are used by name
    ScriptedResponder,
    closed_port_url,
    counter,
    directory_ocsp_answers,
    leaf,
    respond,
    scripted_fixture,
    unsuccessful,
)


def client_for(world: World, url: str, **kw: float) -> OcspClient:
    return OcspClient({fp(world.inter.certificate): url}, **kw)  # type: ignore[arg-type]


def test_good_then_revoked_with_reason_and_time(world: World, server: DirectoryServer,
                                                alpha: str) -> None:
    item = leaf(world.inter, "erin@alpha.test")
    assert publish(server, alpha, item.certificate, (world.inter.certificate,)).status == 201
    client = client_for(world, server.url + "/ocsp")
    good = client.check(item.certificate, world.inter.certificate)
    assert (good.status, good.cached) == ("good", False), good.reason
    assert good.next_update is not None
    assert revoke(server, alpha, fp(item.certificate), "keyCompromise").status == 200
    client.clear()  # the cached "good" would otherwise stand until its nextUpdate
    out = client.check(item.certificate, world.inter.certificate)
    assert out.status == "revoked"
    assert out.revocation_reason == "keyCompromise"
    assert out.revoked_at is not None
    assert abs(out.revoked_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    status = client(item.certificate, world.inter.certificate)
    assert status.status == "revoked"
    assert "keyCompromise since" in status.reason


def test_second_check_is_served_from_the_cache(world: World, server: DirectoryServer,
                                               alpha: str) -> None:
    item = leaf(world.inter, "frank@alpha.test")
    assert publish(server, alpha, item.certificate, (world.inter.certificate,)).status == 201
    client = client_for(world, server.url + "/ocsp")
    before = directory_ocsp_answers(server)
    hits = counter("smimegate_revocation_cache_hits", {"kind": "answer"})
    assert client.check(item.certificate, world.inter.certificate).status == "good"
    assert directory_ocsp_answers(server) == before + 1
    again = client.check(item.certificate, world.inter.certificate)
    assert (again.status, again.cached) == ("good", True)
    assert directory_ocsp_answers(server) == before + 1  # no HTTP the second time
    assert counter("smimegate_revocation_cache_hits", {"kind": "answer"}) == hits + 1


def test_unpublished_certificate_is_unknown(world: World, server: DirectoryServer) -> None:
    item = leaf(world.inter, "nobody@alpha.test")
    out = client_for(world, server.url + "/ocsp").check(item.certificate,
                                                        world.inter.certificate)
    assert out.status == "unknown"
    assert "does not know" in out.reason


def test_aia_url_is_the_fallback(world: World, server: DirectoryServer, alpha: str) -> None:
    item = leaf(world.inter, "gina@alpha.test", ocsp_url=server.url + "/ocsp")
    assert publish(server, alpha, item.certificate, (world.inter.certificate,)).status == 201
    assert OcspClient().check(item.certificate, world.inter.certificate).status == "good"
    by_name = OcspClient({world.inter.certificate.subject.rfc4514_string(): closed_port_url()})
    assert by_name.check(item.certificate, world.inter.certificate).status == "unknown"
    off = OcspClient(use_aia=False).check(item.certificate, world.inter.certificate)
    assert off.status == "unknown"
    assert "no OCSP server configured" in off.reason


def test_ca_certificate_without_any_server_is_not_asked(world: World) -> None:
    out = OcspClient().check(world.inter.certificate, world.root)
    assert out.status == "good"
    assert out.reason.startswith("not asked")
    user = leaf(world.inter, "hank@alpha.test")  # an end entity is never "good" unasked
    assert OcspClient().check(user.certificate, world.inter.certificate).status == "unknown"


def test_responder_down_is_unknown_and_remembered(world: World,
                                                  scripted: ScriptedResponder) -> None:
    item = leaf(world.inter, "ivan@alpha.test")
    out = client_for(world, closed_port_url()).check(item.certificate,
                                                     world.inter.certificate)
    assert out.status == "unknown"
    assert "cannot connect" in out.reason
    client = client_for(world, scripted.url)
    first = client.check(item.certificate, world.inter.certificate)
    assert first.status == "unknown"
    assert "HTTP 500" in first.reason
    second = client.check(item.certificate, world.inter.certificate)
    assert (second.status, second.cached) == ("unknown", True)
    assert scripted.requests == 1  # the failure was remembered: no second request
    zero = client_for(world, scripted.url, failure_cache=0.0)
    zero.check(item.certificate, world.inter.certificate)
    zero.check(item.certificate, world.inter.certificate)
    assert scripted.requests == 3


def _responder_cert(issuer: Issued, eku: x509.ObjectIdentifier) -> Issued:
    return issue(name_of("scripted responder"), new_key("p256"), issuer, eku=(eku,))


def _demo_responder(world: World) -> Issued:
    return Issued(load_private_key(world.dir / "ca/ocsp.key"),
                  load_certificates(world.dir / "ca/ocsp.pem")[0])


def _replay(server: DirectoryServer) -> object:
    """Forward a request of our own (another nonce) to the directory, hand back its answer."""
    def answer(req: ocsp.OCSPRequest, raw: bytes) -> tuple[int, bytes]:
        other = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            req.issuer_name_hash, req.issuer_key_hash, req.serial_number,
            req.hash_algorithm).add_extension(x509.OCSPNonce(b"\x01" * 16), False).build()
        r = http("POST", server.url + "/ocsp", other.public_bytes(serialization.Encoding.DER),
                 {"Content-Type": "application/ocsp-request"})
        return r.status, r.body
    return answer


BAD = [  # (case, reason text, metrics label)
    ("wrong-key", "not signed by the issuing CA", "bad-signature"),
    ("no-ocsp-eku", "lacks the id-kp-OCSPSigning EKU", "bad-signature"),
    ("responder-certificate-missing", "no certificate named by its ResponderID",
     "bad-signature"),
    ("stale", "nextUpdate", "stale"),
    ("future", "in the future", "stale"),
    ("certid", "another certificate", "certid"),
    ("replayed-nonce", "nonce", "nonce"),
    ("unauthorized", "UNAUTHORIZED", "unsuccessful"),
    ("garbage", "not an OCSP response", "malformed"),
]


@pytest.mark.parametrize(("case", "why", "kind"), BAD, ids=[c for c, _, _ in BAD])
def test_bad_answers_are_unknown_with_reason(world: World, server: DirectoryServer,
                                             alpha: str, scripted: ScriptedResponder,
                                             case: str, why: str, kind: str) -> None:
    item = leaf(world.inter, f"{case}@alpha.test")
    assert publish(server, alpha, item.certificate, (world.inter.certificate,)).status == 201
    other_ca = world.other_root
    rogue = _responder_cert(other_ca, ExtendedKeyUsageOID.OCSP_SIGNING)
    no_eku = _responder_cert(world.inter, ExtendedKeyUsageOID.EMAIL_PROTECTION)
    demo = _demo_responder(world)
    scripts = {
        "wrong-key": lambda q, r: (200, respond(q, rogue, include=(rogue.certificate,))),
        "no-ocsp-eku": lambda q, r: (200, respond(q, no_eku, include=(no_eku.certificate,))),
        "responder-certificate-missing": lambda q, r: (200, respond(q, demo)),
        "stale": lambda q, r: (200, respond(q, world.inter, this_update=-dt.timedelta(days=2),
                                            next_update=-dt.timedelta(days=1))),
        "future": lambda q, r: (200, respond(q, world.inter,
                                             this_update=dt.timedelta(days=1))),
        "certid": lambda q, r: (200, respond(q, world.inter, serial_delta=1)),
        "replayed-nonce": _replay(server),
        "unauthorized": lambda q, r: (200, unsuccessful(
            ocsp.OCSPResponseStatus.UNAUTHORIZED)),
        "garbage": lambda q, r: (200, b"this is not DER"),
    }
    scripted.answer = scripts[case]  # type: ignore[assignment]
    before = counter("smimegate_revocation_ocsp_requests", {"result": kind})
    out = client_for(world, scripted.url).check(item.certificate, world.inter.certificate)
    assert out.status == "unknown", out
    assert why in out.reason, out.reason
    assert scripted.requests == 1
    assert counter("smimegate_revocation_ocsp_requests", {"result": kind}) == before + 1


@pytest.mark.parametrize("signer", ["issuer", "delegated"])
def test_scripted_good_answers_are_accepted(world: World, scripted: ScriptedResponder,
                                            signer: str) -> None:
    """The control of the test above: the same responder, answering correctly, counts."""
    demo = _demo_responder(world)
    if signer == "issuer":
        scripted.answer = lambda q, r: (200, respond(q, world.inter))
    else:
        scripted.answer = lambda q, r: (200, respond(q, demo, include=(demo.certificate,)))
    item = leaf(world.inter, f"{signer}-ok@alpha.test")
    out = client_for(world, scripted.url).check(item.certificate, world.inter.certificate)
    assert out.status == "good", out.reason
    scripted.answer = lambda q, r: (200, respond(q, world.inter, status="revoked",
                                                 next_update=None))
    out = client_for(world, scripted.url).check(item.certificate, world.inter.certificate)
    assert (out.status, out.revocation_reason) == ("revoked", "keyCompromise")
    assert out.next_update is None


def test_no_nonce_in_the_answer_is_accepted(world: World, scripted: ScriptedResponder) -> None:
    """RFC 5019 responders pre-produce answers: a missing nonce is fine, a wrong one not."""
    scripted.answer = lambda q, r: (200, respond(q, world.inter, nonce=False))
    item = leaf(world.inter, "prepro@alpha.test")
    assert client_for(world, scripted.url).check(item.certificate,
                                                 world.inter.certificate).status == "good"


def test_wrong_issuer_given(world: World) -> None:
    out = OcspClient().check(world.carol, world.inter.certificate)
    assert out.status == "unknown"
    assert "did not issue" in out.reason


def test_config_section_builds_the_client(world: World, tmp_path: Path) -> None:
    config = load_gateway_config(None, overrides={
        "revocation.servers": {fp(world.inter.certificate): "http://127.0.0.1:9/ocsp",
                               "CN=Other CA,O=Example": "http://127.0.0.1:9/other"},
        "revocation.timeout": 0.5, "revocation.mode": "strict"})
    assert config.revocation.mode == "strict"
    policy = RevocationPolicy.from_config(config.revocation)
    assert policy.mode == "strict"
    assert isinstance(policy.inner, OcspClient)
    assert RevocationPolicy.from_config(load_gateway_config(None).revocation).mode == "soft"
    client = OcspClient.from_config(config.revocation)
    assert client.timeout == 0.5
    item = leaf(world.inter, "cfg@alpha.test", ocsp_url="http://127.0.0.1:1/aia")
    assert client.urls_for(item.certificate, world.inter.certificate) == [
        "http://127.0.0.1:9/ocsp"]
    with pytest.raises(ValueError, match="not an http:// URL"):
        OcspClient({fp(world.inter.certificate): "https://example.test/ocsp"})
    with pytest.raises(ValueError, match="neither a SHA-256 fingerprint nor"):
        OcspClient({"not a name": "http://127.0.0.1:9/ocsp"})


def test_cert_id_is_the_one_the_request_carries(world: World) -> None:
    item = leaf(world.inter, "certid@alpha.test")
    req = ocsp.OCSPRequestBuilder().add_certificate(
        item.certificate, world.inter.certificate, hashes.SHA1()).build()  # noqa: S303
    assert OcspClient().cert_id(item.certificate, world.inter.certificate) == (
        req.issuer_name_hash, req.issuer_key_hash, req.serial_number)


def test_silent_server_times_out(world: World) -> None:
    """A server that takes the connection but never answers costs one timeout, then the
    failure is remembered."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # the kernel completes handshakes; nobody reads or answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/ocsp"
        client = client_for(world, url, timeout=0.2)
        before = counter("smimegate_revocation_ocsp_requests", {"result": "timeout"})
        item = leaf(world.inter, "slow@alpha.test")
        out = client.check(item.certificate, world.inter.certificate)
        assert out.status == "unknown"
        assert "no answer within 0.2 s" in out.reason
        assert counter("smimegate_revocation_ocsp_requests",
                       {"result": "timeout"}) == before + 1
        assert client.check(item.certificate, world.inter.certificate).cached
