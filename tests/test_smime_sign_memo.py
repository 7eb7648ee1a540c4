"""Verification's per-process memos give the answers of a fresh parse: carried
certificates parsed once per DER (gateway/smime/cms_signed_read.py) and passing chain
verdicts (gateway/keys/chain_cache.py) never mix up signers, and an unreadable
certificate stays unreadable on every message."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from gateway.keys import Identity
from gateway.smime import SMIMEError, sign, verify
from gateway.smime import cms_signed_read as cr
from gateway.smime.cms_signed import MAX_CERTIFICATES, build_signed_data, prepare
from tests.sign_support import ENTITY, MESSAGE, ROUTING, Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki-memo"))


def _opaque(der: bytes) -> bytes:
    return ROUTING + (b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
                      b"Content-Transfer-Encoding: base64\r\n\r\n"
                      + base64.encodebytes(der).replace(b"\n", b"\r\n"))


def test_carried_certificates_are_parsed_once(pki: Pki) -> None:
    ident = pki.signers["p256"].identity
    first = cr.parse_signed_data(build_signed_data(prepare(ident), ENTITY, detached=False))
    before = cr._known_set.cache_info().hits
    second = cr.parse_signed_data(build_signed_data(prepare(ident), ENTITY, detached=False))
    assert cr._known_set.cache_info().hits == before + 1
    assert all(a is b for a, b in zip(first.certificates, second.certificates, strict=True))
    assert second.signers[0].certificate == ident.certificate


def test_each_message_is_judged_by_its_own_signer(pki: Pki) -> None:
    """Alternating signers under the same intermediate: every verdict names its own."""
    for _ in range(2):
        for name in ("rsa", "p256", "alice", "p384"):
            ident = pki.signers[name].identity
            result = verify(sign(MESSAGE, ident), anchors=[pki.root])
            assert result.ok, (name, result.reason)
            assert result.signers[0].certificate == ident.certificate
            assert result.signers[0].chain[0] == ident.certificate


def test_expired_signer_after_a_good_one(pki: Pki) -> None:
    """The good chain's verdict in memory does not carry over to another leaf."""
    now = dt.datetime.now(dt.UTC)
    good = pki.signers["p256"].identity
    assert verify(sign(MESSAGE, good), anchors=[pki.root]).ok
    expired = pki.odd_signer("memo-expired", not_before=now - dt.timedelta(days=9),
                             not_after=now - dt.timedelta(days=1))
    result = verify(sign(MESSAGE, expired.identity), anchors=[pki.root])
    assert (result.ok, result.code) == (False, "expired")


def test_unreadable_certificate_stays_unreadable(pki: Pki) -> None:
    """`cryptography` loads a certificate with an unknown string tag in its subject and
    fails only when the subject is read: left out on the first message and, from the
    memo, on the next."""
    der = build_signed_data(prepare(pki.signers["p256"].identity), ENTITY, detached=False)
    cn = b"\x0c\x0aalpha.test"
    assert der.count(cn) == 1
    patched = _opaque(der.replace(cn, b"\x0d" + cn[1:]))
    for _ in range(2):
        result = verify(patched, anchors=[pki.root])
        assert (result.ok, result.code) == (False, "no-signer-certificate")
    assert verify(_opaque(der), anchors=[pki.root]).ok  # the untouched one is fine


def test_too_many_certificates_is_refused_every_time(pki: Pki) -> None:
    """The certificate-set memo keeps no refusal: the limit holds on every message."""
    ident = pki.signers["p256"].identity
    crowded = Identity.create(ident.key, ident.certificate,
                              (pki.intermediate,) * (MAX_CERTIFICATES + 1))
    der = build_signed_data(prepare(crowded), ENTITY, detached=False)
    for _ in range(2):
        with pytest.raises(SMIMEError, match="more than"):
            cr.parse_signed_data(der)
        with pytest.raises(SMIMEError, match="more than"):
            verify(_opaque(der), anchors=[pki.root])


def test_econtent_of_another_content_type_is_its_octets(pki: Pki) -> None:
    """eContent is an OCTET STRING for every eContentType (RFC 5652 §5.2); asn1crypto
    knows a few types only and used to hand back an object whose bytes were its repr."""
    der = build_signed_data(prepare(pki.signers["p256"].identity), ENTITY, detached=False)
    id_data = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01"
    other = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x03\x01"  # not a type asn1crypto knows
    assert der.count(id_data) == 2  # eContentType, then the contentType attribute
    parsed = cr.parse_signed_data(der.replace(id_data, other, 1))
    assert parsed.content_type == "1.2.840.113549.1.3.1"
    assert parsed.content == ENTITY
    result = verify(_opaque(der.replace(id_data, other, 1)), anchors=[pki.root])
    assert (result.ok, result.code) == (False, "content-type-mismatch")


def test_certificate_with_an_unknown_version_is_left_out(pki: Pki) -> None:
    """x509 version 10 makes `cryptography` raise InvalidVersion, which is no ValueError
    (found by fuzzing): the certificate is left out, never a traceback."""
    der = build_signed_data(prepare(pki.signers["p256"].identity), ENTITY, detached=False)
    v3 = b"\xa0\x03\x02\x01\x02"
    assert der.count(v3) >= 1
    result = verify(_opaque(der.replace(v3, b"\xa0\x03\x02\x01\x0a", 1)), anchors=[pki.root])
    assert (result.ok, result.code) == (False, "no-signer-certificate")
