"""`POST /v1/verify` over real HTTP (our own records, the CA's CRL, the CA's own OCSP
responder) and 100 concurrent lookups while publishing."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from gateway.config import load_directory_config
from gateway.keys.demo import issue, new_key
from tests.directory_support import DirectoryServer, http
from tests.directory_world import (  # noqa: F401 - fixtures are used by name
    PEM,
    World,
    _name,
    alpha_fixture,
    fp,
    pem,
    publish,
    revoke,
    server_fixture,
    start_server,
    world_fixture,
)


def test_verify(world: World, server: DirectoryServer, alpha: str) -> None:
    def verdict(body: dict[str, object]) -> dict[str, object]:
        r = http("POST", server.url + "/v1/verify", body)
        assert r.status == 200, r.body
        out = r.json()
        assert isinstance(out, dict)
        return out

    beta = server.token("beta.test")
    assert publish(server, beta, world.bob, (world.inter.certificate,)).status in (200, 201)
    good = verdict({"chain": [pem(world.bob), pem(world.inter.certificate)],
                    "address": "bob@beta.test"})
    assert (good["verdict"], good["revocation"]["source"]) == (  # type: ignore[index]
        "good", "directory")
    wrong = verdict({"chain": [pem(world.bob)], "address": "eve@beta.test"})
    assert (wrong["verdict"], wrong["code"]) == ("invalid", "wrong-name")
    selfsigned = issue(_name("me"), new_key("p256"), None, emails=("me@x.test",)).certificate
    assert verdict({"chain": [pem(selfsigned)]})["code"] == "untrusted"
    # a whole CMS signature: the signer's certificate is picked out of it
    sig = pkcs7.PKCS7SignatureBuilder().set_data(b"hello").add_signer(
        world.bob, world.bob_key.key, hashes.SHA256()).add_certificate(
        world.inter.certificate).sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    by_cms = verdict({"cms": base64.b64encode(sig).decode()})
    assert by_cms["certificate"]["fingerprint"] == fp(world.bob)  # type: ignore[index]
    assert by_cms["verdict"] == "good"
    # withdrawn by the domain owner
    assert revoke(server, beta, fp(world.bob), "superseded").status == 200
    withdrawn = verdict({"chain": [pem(world.bob)]})
    assert (withdrawn["verdict"], withdrawn["revocation"]["revocation_reason"]) == (  # type: ignore[index]
        "revoked", "superseded")
    # a CA that did not delegate to us: its CRL is fetched and read
    carol = verdict({"chain": [pem(world.carol)]})
    assert (carol["verdict"], carol["revocation"]["source"]) == (  # type: ignore[index]
        "revoked", "crl")
    dave = verdict({"chain": [pem(world.dave)]})
    assert (dave["verdict"], dave["revocation"]["source"]) == ("good", "crl")  # type: ignore[index]
    # the delegated CA, but a certificate we do not hold: unknown, never good
    zed = issue(_name("zed"), new_key("p256"), world.inter, emails=("zed@alpha.test",))
    unknown = verdict({"chain": [pem(zed.certificate)]})
    assert (unknown["verdict"], unknown["code"]) == ("unknown", "revocation-unknown")


def test_concurrent_lookups_while_publishing_stay_consistent(world: World,
                                                             tmp_path: Path) -> None:
    s = start_server(world, tmp_path)
    leaves = [issue(_name(f"u{i}"), new_key("p256"), world.inter,
                    emails=(f"u{i}@alpha.test",)).certificate for i in range(20)]
    names = [f"u{i}@alpha.test" for i in range(20)]
    fps = {f"u{i}@alpha.test": fp(c) for i, c in enumerate(leaves)}
    auth = {"Authorization": f"Bearer {s.token('alpha.test')}"}
    published: list[int] = []  # indexes whose publish was answered

    async def publisher(session: aiohttp.ClientSession) -> None:
        for i, cert in enumerate(leaves):
            body = {"certificate": pem(cert), "chain": [pem(world.inter.certificate)]}
            async with session.post(s.url + "/v1/certificates", json=body,
                                    headers=auth) as r:
                assert r.status == 201, await r.text()
            published.append(i)
            await asyncio.sleep(0.005)

    async def looker(k: int, session: aiohttp.ClientSession) -> int:
        checked = 0
        while len(published) < len(leaves):
            before = len(published)
            if k % 2:  # a batch lookup is one snapshot: what it finds is a prefix u0..un
                async with session.post(s.url + "/v1/lookup", json={"addresses": names}) as r:
                    assert r.status == 200
                    results = (await r.json())["results"]
                after = len(published)
                seen = sorted(int(n[1:].split("@")[0]) for n in results)
                assert seen == list(range(len(seen)))
                assert before <= len(seen) <= after + 1
                for name, certs in results.items():
                    assert [c["fingerprint"] for c in certs] == [fps[name]]
            else:
                name = names[k % 20]
                async with session.get(s.url + f"/v1/addresses/{name}/certificates") as r:
                    if r.status == 200:
                        certs = (await r.json())["certificates"]
                        assert [c["fingerprint"] for c in certs] == [fps[name]]
                    else:
                        assert r.status == 404
                        assert names.index(name) >= before
            checked += 1
        return checked

    async def main() -> list[int]:
        conn = aiohttp.TCPConnector(limit=110)
        async with aiohttp.ClientSession(connector=conn) as session:
            got = await asyncio.gather(publisher(session),
                                       *(looker(k, session) for k in range(100)))
            async with session.post(s.url + "/v1/lookup", json={"addresses": names}) as r:
                assert sorted((await r.json())["results"]) == sorted(names)
        return [n for n in got if n is not None]

    try:
        counts = asyncio.run(main())
        assert len(counts) == 100
        assert min(counts) >= 1
        assert s.directory is not None
        assert s.call(s.directory.storage.check_consistency()) == []
    finally:
        s.stop()


def test_verify_asks_the_cas_own_ocsp_responder(world: World, server: DirectoryServer,
                                                tmp_path: Path) -> None:
    """A CA that delegated OCSP to another directory: /v1/verify asks that responder (the
    leaf's AIA URL), checks its signature, and reports what it says."""
    ca = issue(_name("third CA"), new_key("p256"), None, ca=True)
    responder = issue(_name("third OCSP"), new_key("p256"), ca,
                      eku=(x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING,))
    (tmp_path / "ca.pem").write_bytes(ca.certificate.public_bytes(PEM))
    (tmp_path / "ocsp.pem").write_bytes(responder.certificate.public_bytes(PEM)
                                        + ca.certificate.public_bytes(PEM))
    (tmp_path / "ocsp.key").write_bytes(responder.key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "ocsp.key").chmod(0o600)
    config = load_directory_config(None, overrides={
        "server.data": str(tmp_path / "data"), "trust.anchors": [str(tmp_path / "ca.pem")],
        "ocsp.signers": [str(tmp_path / "ocsp.pem")], "ocsp.keys": [str(tmp_path / "ocsp.key")]})
    other = DirectoryServer(config).start()
    try:
        leaves = [issue(_name(n), new_key("p256"), ca, emails=(f"{n}@alpha.test",),
                        ocsp_url=other.url + "/ocsp").certificate for n in ("erin", "fred")]
        token = other.token("alpha.test")
        for leaf in leaves:
            assert publish(other, token, leaf).status == 201
        assert revoke(other, token, fp(leaves[1]), "affiliationChanged").status == 200
        # our directory must trust the third CA for the chain to be judged at all
        assert server.directory is not None
        server.directory.anchors = (*server.directory.anchors, ca.certificate)
        for leaf, status in zip(leaves, ("good", "revoked"), strict=True):
            r = http("POST", server.url + "/v1/verify", {"chain": [pem(leaf)]})
            out = r.json()
            assert out["verdict"] == status, out
            assert out["revocation"]["source"] == "ocsp"
        assert out["revocation"]["revocation_reason"] == "affiliationChanged"
    finally:
        other.stop()
