"""The chain-verdict memo (gateway/keys/chain_cache.py) never lets a chain pass that the
trust gate would refuse: every test first makes a passing entry, then asks about an
expired, not-yet-valid, wrong-usage, wrong-name or untrusted variant that a wrong key or
a missing expiry check would answer from memory. Revocation stays per message."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.keys.chain_cache import CHAINS, ChainCache
from gateway.keys.demo import Issued, issue, name_of, new_key
from gateway.keys.identity import Identity
from gateway.keys.validate import validate_certificate
from gateway.smime import sign, verify
from gateway.smime.verify import RevocationStatus

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
HOUR = dt.timedelta(hours=1)
ONE_BUCKET = 1e12  # seconds: every instant of these tests falls into the same bucket


@pytest.fixture(scope="module")
def ca() -> tuple[Issued, Issued]:
    root = issue(name_of("cache root"), new_key("p256"), None, ca=True)
    inter = issue(name_of("cache inter"), new_key("p256"), root, ca=True, path_length=0)
    return root, inter


def _leaf(issuer: Issued, **kw: object) -> Issued:
    kw.setdefault("dns", ("alpha.test",))
    return issue(name_of("cache leaf"), new_key("p256"), issuer, **kw)  # type: ignore[arg-type]


def _sign_only_leaf(issuer: Issued) -> x509.Certificate:
    """digitalSignature without keyAgreement: good to sign with, not to encrypt to."""
    key = new_key("p256")
    return (x509.CertificateBuilder()
            .subject_name(name_of("signing only")).issuer_name(issuer.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - HOUR).not_valid_after(NOW + 24 * HOUR)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                         False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("alpha.test")]),
                           critical=False)
            .sign(issuer.key, hashes.SHA256()))


def _primed(cache: ChainCache, cert: x509.Certificate, ca: tuple[Issued, Issued],
            **kw: object) -> None:
    root, inter = ca
    first = cache.validate(cert, anchors=[root.certificate], intermediates=[inter.certificate],
                           **kw)  # type: ignore[arg-type]
    assert first.ok, first
    assert len(cache) == 1


def test_a_hit_gives_the_gate_s_verdict(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    cache = ChainCache()
    cert = _leaf(inter).certificate
    plain = validate_certificate(cert, anchors=[root.certificate],
                                 intermediates=[inter.certificate], at=NOW, purpose="sign")
    for _ in range(3):
        got = cache.validate(cert, anchors=[root.certificate],
                             intermediates=[inter.certificate], at=NOW, purpose="sign")
        assert got == plain
    assert (cache.misses, cache.hits) == (1, 2)
    # the same certificates parsed afresh (other objects, same DER) hit as well
    again = x509.load_der_x509_certificate(cert.public_bytes(serialization.Encoding.DER))
    assert cache.validate(again, anchors=[root.certificate], intermediates=[inter.certificate],
                          at=NOW, purpose="sign").ok
    assert cache.hits == 3


def test_expired_leaf_is_not_served_from_memory(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    cache = ChainCache(bucket=ONE_BUCKET)
    cert = _leaf(inter, not_before=NOW - HOUR, not_after=NOW + HOUR).certificate
    _primed(cache, cert, ca, at=NOW)
    later = cache.validate(cert, anchors=[root.certificate], intermediates=[inter.certificate],
                           at=NOW + 2 * HOUR)
    assert (later.ok, later.code) == (False, "expired")


def test_entry_ends_at_the_earliest_not_after_of_the_chain(ca: tuple[Issued, Issued]) -> None:
    root, _ = ca
    short_inter = issue(name_of("short inter"), new_key("p256"), root, ca=True,
                        not_before=NOW - HOUR, not_after=NOW + HOUR)
    cert = _leaf(short_inter).certificate  # valid for years; its issuer for an hour
    cache = ChainCache(bucket=ONE_BUCKET)
    _primed(cache, cert, (root, short_inter), at=NOW)
    later = cache.validate(cert, anchors=[root.certificate],
                           intermediates=[short_inter.certificate], at=NOW + 2 * HOUR)
    assert not later.ok
    assert later.code == "expired"


def test_not_yet_valid_is_not_served_from_memory(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    cache = ChainCache(bucket=ONE_BUCKET)
    cert = _leaf(inter, not_before=NOW - HOUR).certificate
    _primed(cache, cert, ca, at=NOW)
    earlier = cache.validate(cert, anchors=[root.certificate],
                             intermediates=[inter.certificate], at=NOW - 2 * HOUR)
    assert (earlier.ok, earlier.code) == (False, "not-yet-valid")


def test_purpose_is_part_of_the_key(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    cache = ChainCache()
    cert = _sign_only_leaf(inter)
    _primed(cache, cert, ca, at=NOW, purpose="sign")
    enc = cache.validate(cert, anchors=[root.certificate], intermediates=[inter.certificate],
                         at=NOW, purpose="encrypt")
    assert (enc.ok, enc.code) == (False, "bad-usage")


def test_another_leaf_with_the_wrong_usage_is_judged_itself(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    cache = ChainCache()
    _primed(cache, _leaf(inter).certificate, ca, at=NOW, purpose="sign")
    tls = _leaf(inter, eku=(ExtendedKeyUsageOID.SERVER_AUTH,)).certificate
    got = cache.validate(tls, anchors=[root.certificate], intermediates=[inter.certificate],
                         at=NOW, purpose="sign")
    assert (got.ok, got.code) == (False, "bad-usage")


def test_name_is_part_of_the_key(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    cache = ChainCache()
    cert = _leaf(inter).certificate
    _primed(cache, cert, ca, at=NOW, name="alpha.test")
    other = cache.validate(cert, anchors=[root.certificate], intermediates=[inter.certificate],
                           at=NOW, name="beta.test")
    assert (other.ok, other.code) == (False, "wrong-name")


def test_other_anchors_make_it_untrusted(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    cache = ChainCache()
    cert = _leaf(inter).certificate
    anchors = [root.certificate]
    assert cache.validate(cert, anchors=anchors, intermediates=[inter.certificate], at=NOW).ok
    stranger = issue(name_of("cache root"), new_key("p256"), None, ca=True).certificate
    got = cache.validate(cert, anchors=[stranger], intermediates=[inter.certificate], at=NOW)
    assert (got.ok, got.code) == (False, "untrusted")
    # the same list object, changed in place: recognised as other anchors, not remembered
    anchors[0] = stranger
    got = cache.validate(cert, anchors=anchors, intermediates=[inter.certificate], at=NOW)
    assert (got.ok, got.code) == (False, "untrusted")
    assert cache.validate(cert, anchors=[], intermediates=[inter.certificate], at=NOW).code \
        == "untrusted"


def test_intermediates_are_part_of_the_key(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    cache = ChainCache()
    cert = _leaf(inter).certificate
    _primed(cache, cert, ca, at=NOW)
    got = cache.validate(cert, anchors=[root.certificate], at=NOW)
    assert (got.ok, got.code) == (False, "untrusted")


def test_a_new_time_bucket_judges_afresh(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    cache = ChainCache(bucket=60)
    cert = _leaf(inter).certificate
    _primed(cache, cert, ca, at=NOW)
    cache.validate(cert, anchors=[root.certificate], intermediates=[inter.certificate],
                   at=NOW + dt.timedelta(seconds=61))
    assert (cache.misses, cache.hits) == (2, 0)


def test_failures_are_not_kept_and_size_is_bounded(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    cache = ChainCache(max_entries=2)
    bad = _leaf(inter, eku=(ExtendedKeyUsageOID.SERVER_AUTH,)).certificate
    assert not cache.validate(bad, anchors=[root.certificate],
                              intermediates=[inter.certificate], at=NOW).ok
    assert len(cache) == 0
    leaves = [_leaf(inter).certificate for _ in range(3)]
    for cert in leaves:
        assert cache.validate(cert, anchors=[root.certificate],
                              intermediates=[inter.certificate], at=NOW).ok
    assert len(cache) == 2
    cache.validate(leaves[0], anchors=[root.certificate], intermediates=[inter.certificate],
                   at=NOW)
    assert cache.hits == 0  # the least recently used went first


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        ChainCache(max_entries=0)
    with pytest.raises(ValueError, match="bucket"):
        ChainCache(bucket=0)


class _Revocation:
    def __init__(self, status: str) -> None:
        self.status = status
        self.asked = 0

    def __call__(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        self.asked += 1
        return RevocationStatus(self.status, "test")


def test_verify_asks_about_revocation_on_every_message(ca: tuple[Issued, Issued]) -> None:
    """A chain verdict from memory still gets the revocation question each time."""
    root, inter = ca
    issued = _leaf(inter, emails=("alice@alpha.test",))
    ident = Identity.create(issued.key, issued.certificate, (inter.certificate,))
    message = b"From: alice@alpha.test\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    good = _Revocation("good")
    hits = CHAINS.hits
    assert verify(sign(message, ident), anchors=[root.certificate], revocation=good).ok
    assert verify(sign(message, ident), anchors=[root.certificate], revocation=good).ok
    assert CHAINS.hits > hits  # the second message's chain came from memory
    assert good.asked == 4  # leaf and intermediate, per message
    revoked = _Revocation("revoked")
    result = verify(sign(message, ident), anchors=[root.certificate], revocation=revoked)
    assert (result.ok, result.code) == (False, "revoked")
