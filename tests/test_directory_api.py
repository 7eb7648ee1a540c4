"""The directory over real HTTP on loopback: publish → lookup → revoke → OCSP says
revoked (openssl ocsp as the client), caching headers, RFC 4387, rate limiting, and
every bad input with its status and JSON reason."""

from __future__ import annotations

import base64
import datetime as dt
import urllib.parse
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp

from gateway.directory.records import search_key
from gateway.keys.demo import issue, new_key
from tests.directory_support import DirectoryServer, http
from tests.directory_world import (  # noqa: F401 - fixtures are used by name
    World,
    _name,
    alpha_fixture,
    fp,
    openssl_ocsp,
    pem,
    publish,
    revoke,
    server_fixture,
    start_server,
    world_fixture,
)


def test_publish_lookup_revoke_then_ocsp_says_revoked(world: World, server: DirectoryServer,
                                                      alpha: str) -> None:
    r = publish(server, alpha, world.alice, (world.inter.certificate,))
    assert r.status == 201, r.body
    assert r.headers["location"] == f"/v1/certificates/{fp(world.alice)}"
    assert publish(server, alpha, world.alice).status == 200  # already there: idempotent
    r = http("GET", server.url + "/v1/addresses/Alice@Alpha.Test/certificates")
    assert r.status == 200
    cert = r.json()["certificates"][0]
    assert cert["fingerprint"] == fp(world.alice)
    assert x509.load_pem_x509_certificate(cert["pem"].encode()) == world.alice
    assert [x509.load_pem_x509_certificate(c.encode()) for c in cert["chain"]] == [
        world.inter.certificate]
    assert cert["usage"] == ["encryption", "signing"]
    assert cert["names"] == ["alice@alpha.test"]
    assert cert["not_after"].endswith("Z")
    assert cert["smime_capabilities"] is None
    assert "good" in openssl_ocsp(world, server, "alpha.test/alice.pem")

    r = revoke(server, alpha, fp(world.alice))
    assert r.status == 200
    assert r.json()["certificate"]["state"] == "revoked"
    out = openssl_ocsp(world, server, "alpha.test/alice.pem")
    assert "revoked" in out
    assert "Reason: keyCompromise" in out
    assert http("GET", server.url + "/v1/addresses/alice@alpha.test/certificates").status == 404
    r = http("GET", server.url + f"/v1/certificates/{fp(world.alice)}")
    assert r.json()["revocation_reason"] == "keyCompromise"
    # a revoked certificate stays revoked
    r = publish(server, alpha, world.alice)
    assert (r.status, r.json()["error"]) == (409, "revoked")


def test_domain_lookup_batch_and_caching(world: World, server: DirectoryServer,
                                         alpha: str) -> None:
    assert publish(server, alpha, world.domain_rsa).status in (200, 201)  # chain known now
    r = http("GET", server.url + "/v1/domains/alpha.test/certificates")
    assert r.status == 200
    assert fp(world.domain_rsa) in [c["fingerprint"] for c in r.json()["certificates"]]
    etag, cc = r.headers["etag"], r.headers["cache-control"]
    assert cc == "public, max-age=300"
    again = http("GET", server.url + "/v1/domains/alpha.test/certificates",
                 headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.body == b""
    assert publish(server, alpha, world.domain_ec).status in (200, 201)
    changed = http("GET", server.url + "/v1/domains/alpha.test/certificates",
                   headers={"If-None-Match": etag})
    assert changed.status == 200
    assert changed.headers["etag"] != etag
    r = http("POST", server.url + "/v1/lookup",
             {"domains": ["alpha.test", "nowhere.test"], "addresses": ["x@alpha.test"]})
    assert r.status == 200
    body = r.json()
    assert set(body["results"]) == {"alpha.test"}
    assert len(body["results"]["alpha.test"]) == 2
    assert body["missing"] == ["nowhere.test", "x@alpha.test"]
    miss = http("GET", server.url + "/v1/domains/nowhere.test/certificates")
    assert miss.status == 404
    assert miss.headers["cache-control"] == "public, max-age=60"


def test_ocsp_get_nonce_unknown_unauthorized_malformed(world: World,
                                                       server: DirectoryServer) -> None:
    def ask(cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OCSPResponse:
        req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()) \
            .add_extension(x509.OCSPNonce(b"0123456789abcdef"), critical=False).build()
        b64 = base64.b64encode(req.public_bytes(serialization.Encoding.DER)).decode()
        r = http("GET", server.url + "/ocsp/" + urllib.parse.quote(b64, safe=""))
        assert r.status == 200
        assert r.headers["content-type"] == "application/ocsp-response"
        return ocsp.load_der_ocsp_response(r.body)

    resp = ask(world.bob, world.inter.certificate)  # the CA is ours, bob is not published
    assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == \
        b"0123456789abcdef"
    assert resp.hash_algorithm.name == "sha256"
    responder = resp.certificates[0]
    key = responder.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256())
    # the intermediate itself is issued by the root, which delegated nothing to us
    assert ask(world.inter.certificate, world.root).response_status == \
        ocsp.OCSPResponseStatus.UNAUTHORIZED
    r = http("POST", server.url + "/ocsp", b"\x30\x03\x02\x01\x00",
             {"Content-Type": "application/ocsp-request"})
    assert ocsp.load_der_ocsp_response(r.body).response_status == \
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_rfc4387_search(world: World, server: DirectoryServer, alpha: str) -> None:
    assert publish(server, alpha, world.domain_rsa).status in (200, 201)
    key = search_key(world.domain_rsa.public_bytes(serialization.Encoding.DER))
    r = http("GET", server.url + "/search.cgi?certHash=" + urllib.parse.quote(key, safe=""))
    assert r.status == 200
    assert r.headers["content-type"] == "application/pkix-cert"
    assert x509.load_der_x509_certificate(r.body) == world.domain_rsa
    assert publish(server, alpha, world.domain_ec).status in (200, 201)
    r = http("GET", server.url + "/search.cgi?name=alpha.test")  # both domain certificates
    assert r.status == 200
    assert r.headers["content-type"].startswith("multipart/mixed")
    assert r.body.count(b"Content-Type: application/pkix-cert") == 2
    sh = search_key(world.domain_rsa.subject.public_bytes())
    assert http("GET", server.url + f"/search.cgi?sHash={sh}").status == 200


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "code"), [
    ("GET", "/v1/domains/bad_domain!/certificates", None, {}, 400, "bad-domain"),
    ("GET", "/v1/addresses/no-at-sign/certificates", None, {}, 400, "bad-address"),
    ("GET", "/v1/domains/unknown.test/certificates", None, {}, 404, "not-found"),
    ("GET", "/v1/certificates/xyz", None, {}, 400, "bad-fingerprint"),
    ("GET", "/v1/certificates/" + "0" * 64, None, {}, 404, "not-found"),
    ("POST", "/v1/lookup", "not json", {"Content-Type": "application/json"}, 400, "bad-json"),
    ("POST", "/v1/lookup", ["alpha.test"], {}, 400, "bad-json"),
    ("POST", "/v1/lookup", {"domains": "alpha.test"}, {}, 400, "bad-request"),
    ("POST", "/v1/lookup", {}, {}, 400, "bad-request"),
    ("POST", "/v1/lookup", {"domains": ["alpha.test"], "x": 1}, {}, 400, "bad-request"),
    ("POST", "/v1/lookup", {"domains": [f"d{i}.test" for i in range(101)]}, {}, 400,
     "too-many-names"),
    ("POST", "/v1/lookup", "<x/>", {"Content-Type": "text/html"}, 415,
     "unsupported-media-type"),
    ("POST", "/v1/lookup", {"domains": ["a" * 70000]}, {}, 413, "too-large"),
    ("POST", "/v1/certificates", {"certificate": "x"}, {}, 401, "unauthorized"),
    ("POST", "/v1/certificates", {"certificate": "x"}, {"Authorization": "Basic abc"}, 401,
     "unauthorized"),
    ("POST", "/v1/certificates", {"certificate": "x"},
     {"Authorization": "Bearer sgd_" + "A" * 43}, 403, "invalid-token"),
    ("POST", "/v1/certificates/" + "0" * 64 + "/revoke", {}, {}, 401, "unauthorized"),
    ("GET", "/search.cgi", None, {}, 400, "bad-query"),
    ("GET", "/search.cgi?certHash=abc&name=x", None, {}, 400, "bad-query"),
    ("GET", "/search.cgi?certHash=" + "%3D" * 27, None, {}, 400, "bad-query"),
    ("GET", "/search.cgi?email=nobody@alpha.test", None, {}, 404, "not-found"),
    ("GET", "/ocsp/!!notbase64", None, {}, 400, "bad-ocsp-request"),
    ("POST", "/ocsp", b"\x30\x00", {"Content-Type": "text/plain"}, 415,
     "unsupported-media-type"),
    ("POST", "/v1/verify", {"chain": [], "cms": ""}, {}, 400, "bad-request"),
    ("POST", "/v1/verify", {"cms": "***"}, {}, 400, "bad-cms"),
    ("POST", "/v1/verify", {"cms": base64.b64encode(b"\x30\x03\x02\x01\x00").decode()}, {},
     400, "bad-cms"),
    ("POST", "/v1/verify", {"chain": ["junk"]}, {}, 400, "bad-certificate"),
    ("GET", "/no/such/path", None, {}, 404, "not-found"),
    ("DELETE", "/v1/lookup", None, {}, 405, "method-not-allowed"),
])
def test_bad_public_input(server: DirectoryServer, method: str, path: str,
                          body: object, headers: dict[str, str], status: int,
                          code: str) -> None:
    r = http(method, server.url + path, body, headers)  # type: ignore[arg-type]
    assert r.status == status, r.body
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()
    assert (err["status"], err["error"]) == (status, code)
    assert err["reason"]


def test_bad_writes(world: World, server: DirectoryServer, alpha: str) -> None:
    auth = {"Authorization": f"Bearer {alpha}"}
    now = dt.datetime.now(dt.UTC)
    expired = issue(_name("old"), new_key("p256"), world.inter, dns=("alpha.test",),
                    not_before=now - dt.timedelta(days=30),
                    not_after=now - dt.timedelta(days=1)).certificate
    selfsigned = issue(_name("me"), new_key("p256"), None, dns=("alpha.test",)).certificate
    stranger = issue(_name("x"), new_key("p256"),
                     issue(_name("rogue CA"), new_key("p256"), None, ca=True),
                     dns=("alpha.test",)).certificate
    cases: list[tuple[object, dict[str, str], int, str]] = [
        ({"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
         auth, 400, "bad-certificate"),
        ({"certificate": pem(world.domain_ec), "extra": 1}, auth, 400, "bad-request"),
        ({"chain": []}, auth, 400, "bad-request"),
        ({"certificate": pem(world.bob)}, auth, 422, "wrong-name"),
        ({"certificate": pem(expired)}, auth, 422, "expired"),
        ({"certificate": pem(selfsigned)}, auth, 422, "untrusted"),
        ({"certificate": pem(stranger)}, auth, 422, "untrusted"),
        ({"certificate": pem(world.domain_ec), "domain": "beta.test"}, auth, 403,
         "wrong-domain"),
        ({"certificate": "x" * 70000}, auth, 413, "too-large"),
    ]
    for body, headers, status, code in cases:
        r = http("POST", server.url + "/v1/certificates", body, headers)  # type: ignore[arg-type]
        assert (r.status, r.json()["error"]) == (status, code), (code, r.body)
    # the raw PEM form is accepted too
    r = http("POST", server.url + "/v1/certificates", pem(world.domain_ec),
             {**auth, "Content-Type": "application/pem-certificate-chain"})
    assert r.status in (200, 201), r.body
    beta = server.token("beta.test")
    assert publish(server, beta, world.bob, (world.inter.certificate,)).status == 201
    for fingerprint, reason, token, status, code in (
            ("nothex", "superseded", alpha, 400, "bad-fingerprint"),
            ("ab" * 32, "superseded", alpha, 404, "not-found"),
            (fp(world.bob), "superseded", alpha, 403, "wrong-domain"),
            (fp(world.bob), "because", beta, 400, "bad-reason")):
        r = revoke(server, token, fingerprint, reason)
        assert (r.status, r.json()["error"]) == (status, code), (code, r.body)


def test_failed_auth_is_rate_limited(world: World, tmp_path: Path) -> None:
    s = start_server(world, tmp_path, **{"ratelimit.auth_failures": 3})
    try:
        good = s.token("alpha.test")
        bad = {"Authorization": "Bearer sgd_" + "B" * 43}
        for _ in range(3):
            assert http("POST", s.url + "/v1/certificates", {}, bad).status == 403
        r = http("POST", s.url + "/v1/certificates", {}, bad)
        assert r.status == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"] == "rate-limited"
        # while limited, even the right token waits: guessing must not be cheaper
        r = publish(s, good, world.domain_ec)
        assert r.status == 429
        # reads are never limited
        assert http("GET", s.url + "/healthz").status == 200
    finally:
        s.stop()


def test_openapi_health_metrics(server: DirectoryServer) -> None:
    spec = http("GET", server.url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in ("/v1/domains/{domain}/certificates", "/v1/lookup", "/ocsp", "/search.cgi",
                 "/v1/verify", "/v1/certificates/{fingerprint}/revoke"):
        assert path in spec["paths"]
    health = http("GET", server.url + "/healthz").json()
    assert health["status"] == "ok"
    assert health["storage"] == "sqlite"
    text = http("GET", server.url + "/metrics").body.decode()
    assert 'smimegate_directory_requests_total{route="/healthz",status="200"}' in text
    assert "smimegate_directory_request_seconds_bucket" in text
    assert 'smimegate_directory_storage_seconds_count{op="lookup"}' in text
    assert 'smimegate_directory_certificates{state="active"}' in text



def test_nonceless_ocsp_answers_are_reused_until_a_write(world: World, tmp_path: Path) -> None:
    s = start_server(world, tmp_path)
    try:
        token = s.token("alpha.test")
        assert publish(s, token, world.alice, (world.inter.certificate,)).status == 201
        req = ocsp.OCSPRequestBuilder().add_certificate(
            world.alice, world.inter.certificate, hashes.SHA1()).build()  # noqa: S303
        der = req.public_bytes(serialization.Encoding.DER)

        def ask() -> bytes:
            r = http("POST", s.url + "/ocsp", der, {"Content-Type": "application/ocsp-request"})
            assert r.status == 200
            return r.body

        first = ask()
        assert ask() == first  # the same signed answer, not a new signature
        assert ocsp.load_der_ocsp_response(first).certificate_status == \
            ocsp.OCSPCertStatus.GOOD
        assert revoke(s, token, fp(world.alice)).status == 200
        after = ocsp.load_der_ocsp_response(ask())
        assert after.certificate_status == ocsp.OCSPCertStatus.REVOKED
    finally:
        s.stop()
