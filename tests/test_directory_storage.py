"""The directory storage contract, run against SQLite and PostgreSQL alike.

Each test body runs once per backend (ids sqlite / postgresql) and ends with
check_consistency() (the Hagrid habit). PostgreSQL runs in a throwaway cluster in a
temp folder; without its binaries these tests fail with the reason, unless
SMIMEGATE_SKIP_POSTGRES=1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gateway.directory.errors import Conflict, StorageError
from gateway.directory.records import CertRecord, TokenRecord, make_record
from gateway.directory.storage import Storage, open_storage
from gateway.directory.storage.schema import CURRENT_VERSION
from gateway.keys import load_certificates, load_private_key
from gateway.keys.demo import Issued, issue, new_key, write_demo_pki
from tests.directory_support import SKIP_ENV, PostgresCluster, PostgresUnavailable

NOW = int(dt.datetime.now(dt.UTC).timestamp())
_db_numbers = itertools.count()


@dataclass(frozen=True)
class Pki:
    root: x509.Certificate
    inter: Issued
    alice: x509.Certificate
    domain: x509.Certificate

    def record(self, cert: x509.Certificate, domain: str = "alpha.test") -> CertRecord:
        return make_record(cert, (self.inter.certificate, self.root), domain, NOW)

    @property
    def issuers(self) -> list[bytes]:
        return [self.inter.certificate.public_bytes(serialization.Encoding.DER)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    write_demo_pki(d)
    inter = Issued(load_private_key(d / "ca/intermediate.key"),
                   load_certificates(d / "ca/intermediate.pem")[0])
    return Pki(load_certificates(d / "ca/root.pem")[0], inter,
               load_certificates(d / "alpha.test/alice.pem")[0],
               load_certificates(d / "alpha.test/domain-ec.pem")[0])


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PostgresCluster]:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1")
    try:
        cluster = PostgresCluster().start()
    except PostgresUnavailable as e:
        pytest.fail(str(e))
    yield cluster
    cluster.stop()


@dataclass
class Backend:
    name: str
    data: Path
    url: str

    def run(self, body: Callable[[Storage], Awaitable[None]], *,
            check: bool = True) -> None:
        async def main() -> None:
            storage = await open_storage(self.data, self.url)
            try:
                await body(storage)
                if check:
                    assert await storage.check_consistency() == []
            finally:
                await storage.close()

        asyncio.run(main())


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path, "")
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return Backend("postgresql", tmp_path, cluster.create_database(f"t{next(_db_numbers)}"))


def _leaf(pki: Pki, *, emails: tuple[str, ...] = (), dns: tuple[str, ...] = (),
          days: tuple[int, int] = (-1, 30)) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return issue(x509.Name([]), new_key("p256"), pki.inter, emails=emails, dns=dns,
                 not_before=now + dt.timedelta(days=days[0]),
                 not_after=now + dt.timedelta(days=days[1])).certificate


def test_migrations_reach_current_and_are_idempotent(backend: Backend) -> None:
    async def body(s: Storage) -> None:
        assert await s.schema_version() == CURRENT_VERSION
        assert await s.migrate() == CURRENT_VERSION
    backend.run(body)


def test_newer_schema_is_refused(backend: Backend) -> None:
    async def body(s: Storage) -> None:
        await s._transaction([("INSERT INTO schema_migrations (version, description, "
                               "applied_at) VALUES (?, ?, ?)", (CURRENT_VERSION + 1, "x", 0))])
        with pytest.raises(StorageError, match="newer than"):
            await s.migrate()
    backend.run(body)


def test_put_get_roundtrip_and_duplicate(backend: Backend, pki: Pki) -> None:
    async def body(s: Storage) -> None:
        rec = pki.record(pki.alice)
        assert await s.put_certificate(rec, pki.issuers) is True
        assert await s.put_certificate(rec, pki.issuers) is False
        assert await s.get_certificate(rec.fingerprint) == rec
        assert await s.get_certificate("00" * 32) is None
        assert await s.issuer(rec.chain[0]) == pki.issuers[0]
        assert await s.all_issuers() == pki.issuers
    backend.run(body)


def test_find_by_domain_address_and_batch(backend: Backend, pki: Pki) -> None:
    async def body(s: Storage) -> None:
        alice, dom = pki.record(pki.alice), pki.record(pki.domain)
        assert alice.names == ("alice@alpha.test",)
        assert dom.names == ("alpha.test",)
        for r in (alice, dom):
            await s.put_certificate(r, pki.issuers)
        assert await s.find("alpha.test") == [dom]
        assert await s.find("alice@alpha.test") == [alice]
        assert await s.find("nobody@alpha.test") == []
        many = await s.find_many(["alpha.test", "alice@alpha.test", "beta.test"])
        assert many == {"alpha.test": [dom], "alice@alpha.test": [alice]}
        with pytest.raises(ValueError, match="at most"):
            await s.find_many(["x.test"] * 1001)
    backend.run(body)


def test_expired_and_future_certificates_are_not_current(backend: Backend, pki: Pki) -> None:
    async def body(s: Storage) -> None:
        old = pki.record(_leaf(pki, dns=("alpha.test",), days=(-30, -1)))
        new = pki.record(_leaf(pki, dns=("alpha.test",), days=(2, 30)))
        cur = pki.record(_leaf(pki, dns=("alpha.test",)))
        for r in (old, new, cur):
            await s.put_certificate(r, pki.issuers)
        assert [r.fingerprint for r in await s.find("alpha.test")] == [cur.fingerprint]
        later = NOW + 3 * 86400
        found = {r.fingerprint for r in await s.find("alpha.test", at=later)}
        assert found == {cur.fingerprint, new.fingerprint}
        assert (await s.counts())["expired"] == 1
    backend.run(body)


def test_revoke_keeps_first_time_and_reason(backend: Backend, pki: Pki) -> None:
    async def body(s: Storage) -> None:
        rec = pki.record(pki.alice)
        await s.put_certificate(rec, pki.issuers)
        got = await s.revoke(rec.fingerprint, NOW + 5, "keyCompromise")
        assert got == rec.revoked(NOW + 5, "keyCompromise")
        again = await s.revoke(rec.fingerprint, NOW + 9, "superseded")
        assert again == got
        assert await s.find("alice@alpha.test") == []
        assert await s.find_by_serial(rec.issuer_key_id, rec.serial) == got
        assert await s.find_by_serial(rec.issuer_key_id, "1") is None
        assert await s.revoke("ff" * 32, NOW, "superseded") is None
        assert await s.counts() == {"active": 0, "expired": 0, "revoked": 1}
    backend.run(body)


def test_rfc4387_search_keys(backend: Backend, pki: Pki) -> None:
    async def body(s: Storage) -> None:
        rec = pki.record(pki.alice)
        await s.put_certificate(rec, pki.issuers)
        for attr, value in (("certHash", rec.cert_sha1), ("sHash", rec.subject_hash),
                            ("iHash", rec.issuer_hash), ("iAndSHash", rec.iands_hash),
                            ("sKIDHash", rec.skid_hash), ("name", "Alice"),
                            ("email", "alice@alpha.test"), ("uri", "alice@alpha.test")):
            assert await s.search(attr, value) == [rec], attr
        assert await s.search("certHash", "A" * 27) == []
        with pytest.raises(ValueError, match="unknown search attribute"):
            await s.search("cn", "Alice")
    backend.run(body)


def test_tokens(backend: Backend) -> None:
    async def body(s: Storage) -> None:
        a1 = TokenRecord("a1", "alpha.test", "h1", NOW)
        a2 = TokenRecord("a2", "alpha.test", "h2", NOW + 1)
        b1 = TokenRecord("b1", "beta.test", "h3", NOW)
        for t in (a1, a2, b1):
            await s.add_token(t)
        assert await s.find_token("h2") == a2
        assert await s.find_token("nope") is None
        assert await s.revoke_tokens(NOW + 2, token_id="a1") == 1
        assert await s.revoke_tokens(NOW + 3, token_id="a1") == 0
        assert (await s.find_token("h1")) == TokenRecord("a1", "alpha.test", "h1", NOW, NOW + 2)
        assert await s.revoke_tokens(NOW + 4, domain="alpha.test") == 1
        assert [t.id for t in await s.list_tokens("alpha.test")] == ["a1", "a2"]
        assert [t.revoked_at for t in await s.list_tokens()] == [NOW + 2, None, NOW + 4]
        with pytest.raises(Conflict):
            await s.add_token(TokenRecord("a1", "x.test", "h9", NOW))  # duplicate id
        with pytest.raises(ValueError, match="exactly one"):
            await s.revoke_tokens(NOW)
    backend.run(body)


def test_concurrent_publishing_stays_consistent(backend: Backend, pki: Pki) -> None:
    leaves = [_leaf(pki, emails=(f"u{i}@alpha.test",)) for i in range(40)]

    async def body(s: Storage) -> None:
        records = [pki.record(c) for c in leaves]
        results = await asyncio.gather(*(s.put_certificate(r, pki.issuers)
                                         for r in records + records[:10]))
        assert sum(results) == 40
        revoked = await asyncio.gather(*(s.revoke(r.fingerprint, NOW, "superseded")
                                         for r in records[::2]))
        assert all(r is not None and r.state == "revoked" for r in revoked)
        assert await s.counts() == {"active": 20, "expired": 0, "revoked": 20}
        found = await s.find_many([f"u{i}@alpha.test" for i in range(40)])
        assert sorted(found) == sorted(f"u{i}@alpha.test" for i in range(1, 40, 2))
    backend.run(body)


def test_consistency_check_finds_damage(backend: Backend, pki: Pki) -> None:
    async def body(s: Storage) -> None:
        rec = pki.record(pki.alice)
        await s.put_certificate(rec, pki.issuers)
        assert await s.check_consistency() == []
        await s._transaction([("DELETE FROM certificate_names", ()),
                              ("UPDATE certificates SET state = 'revoked'", ())])
        problems = await s.check_consistency()
        assert any("names" in p for p in problems)
        assert any("disagrees" in p for p in problems)
    backend.run(body, check=False)


def test_http_roundtrip_on_postgresql(pg_cluster: PostgresCluster, tmp_path: Path) -> None:
    """The whole app on PostgreSQL: publish, look up, revoke, OCSP, health."""
    from cryptography.x509 import ocsp

    from gateway.config import load_directory_config
    from tests.directory_support import DirectoryServer, http

    pki_dir = tmp_path / "pki"
    write_demo_pki(pki_dir)
    url = pg_cluster.create_database(f"t{next(_db_numbers)}")
    config = load_directory_config(None, overrides={
        "server.data": str(tmp_path), "server.database_url": url,
        "trust.anchors": [str(pki_dir / "ca/root.pem")],
        "ocsp.signers": [str(pki_dir / "ca/ocsp-chain.pem")],
        "ocsp.keys": [str(pki_dir / "ca/ocsp.key")]})
    server = DirectoryServer(config).start()
    try:
        auth = {"Authorization": f"Bearer {server.token('alpha.test')}",
                "Content-Type": "application/pem-certificate-chain"}
        r = http("POST", server.url + "/v1/certificates",
                 (pki_dir / "alpha.test/alice-chain.pem").read_text(), auth)
        assert r.status == 201, r.body
        fp = r.json()["certificate"]["fingerprint"]
        assert http("GET", server.url + "/v1/addresses/alice@alpha.test/certificates"
                    ).status == 200
        assert http("POST", server.url + f"/v1/certificates/{fp}/revoke",
                    {"reason": "superseded"}, {"Authorization": auth["Authorization"]}
                    ).status == 200
        alice = load_certificates(pki_dir / "alpha.test/alice.pem")[0]
        inter = load_certificates(pki_dir / "ca/intermediate.pem")[0]
        req = ocsp.OCSPRequestBuilder().add_certificate(alice, inter, hashes.SHA1()).build()  # noqa: S303
        r = http("POST", server.url + "/ocsp", req.public_bytes(serialization.Encoding.DER),
                 {"Content-Type": "application/ocsp-request"})
        resp = ocsp.load_der_ocsp_response(r.body)
        assert resp.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert resp.revocation_reason == x509.ReasonFlags.superseded
        health = http("GET", server.url + "/healthz").json()
        assert health["storage"] == "postgresql"
        assert server.directory is not None
        assert server.call(server.directory.storage.check_consistency()) == []
    finally:
        server.stop()
