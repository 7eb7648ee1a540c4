"""The directory's small parts on their own: read cache, failure limiter, tokens,
record facts (RFC 4387 keys, usage, SMIMECapabilities), the RFC 4386 record."""

from __future__ import annotations

import base64
import hashlib

import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from gateway.directory.client import ClientError, dns_record
from gateway.directory.ratelimit import FailureLimiter
from gateway.directory.readcache import ReadCache
from gateway.directory.records import (
    SMIME_CAPABILITIES_OID,
    capabilities_of,
    search_key,
    usage_of,
)
from gateway.directory.tokens import hash_token, new_token, well_formed
from gateway.keys.demo import issue, new_key


def test_read_cache_drops_reads_that_began_before_a_write() -> None:
    cache: ReadCache[str] = ReadCache(60)
    gen = cache.generation
    cache.put("a", "old", gen)
    assert cache.get("a") == "old"
    cache.clear()  # a write
    cache.put("b", "read before the write", gen)
    assert cache.get("b") is None
    cache.put("b", "fresh", cache.generation)
    assert cache.get("b") == "fresh"
    assert (cache.hits, cache.misses) == (2, 1)


def test_read_cache_off_and_expiry() -> None:
    off: ReadCache[int] = ReadCache(0)
    off.put("a", 1, off.generation)
    assert off.get("a") is None
    short: ReadCache[int] = ReadCache(1e-9)
    short.put("a", 1, short.generation)
    assert short.get("a") is None


def test_failure_limiter_window() -> None:
    now = [100.0]
    lim = FailureLimiter(3, 10.0, max_clients=2, clock=lambda: now[0])
    for _ in range(3):
        assert lim.retry_after("c") is None
        lim.fail("c")
    assert lim.retry_after("c") == pytest.approx(10.0)
    assert lim.retry_after("other") is None
    now[0] += 4
    assert lim.retry_after("c") == pytest.approx(6.0)
    now[0] += 6.01
    assert lim.retry_after("c") is None
    for client in ("x", "y", "z"):  # bounded memory: the oldest client is forgotten
        lim.fail(client)
    assert "x" not in lim._failures


def test_tokens() -> None:
    token, record = new_token("alpha.test")
    assert well_formed(token)
    assert not well_formed(token + "x")
    assert record.hash == hashlib.sha256(token.encode()).hexdigest() == hash_token(token)
    assert token not in repr(record)
    assert record.id == record.hash[:12]


def test_search_key_is_rfc4387_form() -> None:
    key = search_key(b"abc")
    assert len(key) == 27
    assert "=" not in key
    assert base64.b64decode(key + "=") == hashlib.sha1(b"abc").digest()  # noqa: S324


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def test_usage_and_capabilities() -> None:
    ca = issue(_name("ca"), new_key("p256"), None, ca=True)
    ec_leaf = issue(_name("e"), new_key("p256"), ca, emails=("e@x.test",)).certificate
    assert usage_of(ec_leaf) == ("encryption", "signing")
    assert capabilities_of(ec_leaf) is None
    caps = asn1_cms.SMIMECapabilites([
        {"capability_id": "2.16.840.1.101.3.4.1.6"},   # aes128-GCM
        {"capability_id": "2.16.840.1.101.3.4.1.2"}])  # aes128-CBC
    key = new_key("p256")
    cert = (x509.CertificateBuilder().subject_name(_name("c")).issuer_name(_name("c"))
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(ec_leaf.not_valid_before_utc)
            .not_valid_after(ec_leaf.not_valid_after_utc)
            .add_extension(x509.UnrecognizedExtension(SMIME_CAPABILITIES_OID, caps.dump()),
                           critical=False)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                         False, False), critical=True)
            .sign(key, hashes.SHA256()))
    assert capabilities_of(cert) == ("aes128_gcm", "aes128_cbc")
    assert usage_of(cert) == ("signing",)


def test_dns_record_refuses_non_http() -> None:
    record, warnings = dns_record("Alpha.Test.", "http://dir.example.net:8780")
    assert record.zone_line() == "_PKIXREP._http.alpha.test. 3600 IN SRV 10 0 8780 dir.example.net."
    assert warnings == []
    with pytest.raises(ClientError, match="not an http"):
        dns_record("alpha.test", "ldap://dir.example.net")


def test_missing_postgresql_is_an_error_not_a_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    import glob
    import shutil

    from tests import directory_support

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    with pytest.raises(directory_support.PostgresUnavailable, match="ensure-debian-tools"):
        directory_support.find_pg_bin()
