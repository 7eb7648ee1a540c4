"""sign() and verify() on their own: output shape, signed attributes, already-signed
input, every failure code, the revocation plug, and malformed input."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.keys import Identity
from gateway.keys.demo import issue, name_of, new_key
from gateway.smime import RevocationStatus, SMIMEError, sign, verify
from gateway.smime import der as d
from gateway.smime.cms_signed import SMIME_CAPABILITIES, build_signed_data, prepare
from gateway.smime.message import parse_message
from tests.sign_support import ENTITY, MESSAGE, ROUTING, Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _rsa(pki: Pki) -> Identity:
    return pki.signers["rsa"].identity


def _signed_data(message: bytes) -> cms.SignedData:
    body = message.split(b"\r\n\r\n", 1)[1]
    if b"multipart/signed" in message.split(b"\r\n\r\n", 1)[0]:
        b64 = body.split(b"S/MIME Cryptographic Signature\r\n\r\n", 1)[1].split(b"--", 1)[0]
        return cms.ContentInfo.load(base64.b64decode(b64))["content"]
    return cms.ContentInfo.load(base64.b64decode(body))["content"]


# --- output shape ------------------------------------------------------------------------


@pytest.mark.parametrize(("digest", "micalg"),
                         [("sha256", "sha-256"), ("sha384", "sha-384"), ("sha512", "sha-512")])
def test_multipart_signed_shape(pki: Pki, digest: str, micalg: str) -> None:
    out = sign(MESSAGE, _rsa(pki), digest=digest)
    msg = parse_message(out)
    ctype = msg.get("content-type")
    assert ctype is not None
    assert "multipart/signed" in ctype.value
    assert f"micalg={micalg};" in ctype.value  # RFC 8551 §3.5.3.2: the digest used
    assert 'protocol="application/pkcs7-signature"' in ctype.value
    assert out.startswith(ROUTING)  # routing headers stay outside, unchanged, in order
    assert b"\n" not in out.replace(b"\r\n", b"")  # CRLF only
    boundary = re.search(rb'boundary="([^"]+)"', out)
    assert boundary is not None
    assert b"--" + boundary.group(1) + b"\r\n" + ENTITY + b"\r\n--" + boundary.group(1) in out
    b64 = out.split(b"S/MIME Cryptographic Signature\r\n\r\n")[1].split(b"\r\n--")[0]
    assert all(len(line) <= 76 for line in b64.split(b"\r\n"))
    assert b">From" not in out


def test_opaque_shape_and_byte_exact_content(pki: Pki) -> None:
    out = sign(MESSAGE, _rsa(pki), opaque=True)
    head = out.split(b"\r\n\r\n", 1)[0]
    assert b"application/pkcs7-mime; smime-type=signed-data" in head
    assert b"Content-Transfer-Encoding: base64" in head
    sd = _signed_data(out)
    assert sd["encap_content_info"]["content"].native == ENTITY


def test_signed_attributes_and_certificates(pki: Pki) -> None:
    ident = _rsa(pki)
    sd = _signed_data(sign(MESSAGE, ident, digest="sha384"))
    assert sd["version"].native == "v1"
    certs = [c.chosen.dump() for c in sd["certificates"]]
    assert certs == [ident.certificate.public_bytes(Encoding.DER),
                     pki.intermediate.public_bytes(Encoding.DER)]
    (si,) = sd["signer_infos"]
    assert si["sid"].chosen["serial_number"].native == ident.certificate.serial_number
    attrs = {a["type"].native: a["values"] for a in si["signed_attrs"]}
    assert attrs["content_type"][0].native == "data"
    signing_time = attrs["signing_time"][0].native
    assert abs((signing_time - dt.datetime.now(dt.UTC)).total_seconds()) < 120
    assert attrs["message_digest"][0].native == hashlib.sha384(ENTITY).digest()
    caps = [c["capability_id"].dotted for c in attrs["smime_capabilities"][0]]
    assert caps == [oid for _, oid in SMIME_CAPABILITIES]
    # RFC 8551 §2.5.3: this (RSA, keyEncipherment) certificate is also the one to encrypt to
    pref = attrs["encrypt_key_pref"][0]
    assert pref.name == "issuer_and_serial_number"
    assert pref.chosen["serial_number"].native == ident.certificate.serial_number
    # DER: the SET OF attributes is sorted by encoding (X.690 §11.6).
    encoded = [a.dump() for a in si["signed_attrs"]]
    assert encoded == sorted(encoded)


def test_prepared_signer_is_cached(pki: Pki) -> None:
    assert prepare(_rsa(pki), "sha256", False) is prepare(_rsa(pki), "sha256", False)
    assert prepare(_rsa(pki), "sha256", True) is not prepare(_rsa(pki), "sha256", False)


def test_signing_time_is_the_time_given(pki: Pki) -> None:
    when = dt.datetime(2051, 3, 4, 5, 6, 7, tzinfo=dt.UTC)  # GeneralizedTime after 2049
    content_info = build_signed_data(prepare(pki.signers["p256"].identity), ENTITY,
                                     detached=True, now=when.timestamp())
    (si,) = cms.ContentInfo.load(content_info)["content"]["signer_infos"]
    times = [a["values"][0] for a in si["signed_attrs"] if a["type"].native == "signing_time"]
    assert times[0].name == "generalized_time"
    assert times[0].native == when


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"digest": "md5"}, "unsupported"),
    ({"digest": "sha1"}, "unsupported"),
    ({"if_signed": "maybe"}, "unsupported"),
])
def test_bad_arguments(pki: Pki, kwargs: dict[str, str], code: str) -> None:
    with pytest.raises(SMIMEError) as err:
        sign(MESSAGE, _rsa(pki), **kwargs)  # type: ignore[arg-type]
    assert err.value.code == code


def test_pss_with_ec_key_is_bad_key(pki: Pki) -> None:
    with pytest.raises(SMIMEError) as err:
        sign(MESSAGE, pki.signers["p256"].identity, pss=True)
    assert err.value.code == "bad-key"


def test_bare_lf_input_is_canonicalised(pki: Pki) -> None:
    result = verify(sign(MESSAGE.replace(b"\r\n", b"\n"), _rsa(pki)), anchors=[pki.root])
    assert result.ok
    assert result.content == ENTITY


def test_message_without_mime_headers(pki: Pki) -> None:
    plain = b"From: a@alpha.test\r\nSubject: x\r\n\r\nhello\r\n"
    result = verify(sign(plain, _rsa(pki)), anchors=[pki.root])
    assert result.ok
    assert result.content == b"\r\nhello\r\n"
    assert result.message.startswith(b"From: a@alpha.test\r\nSubject: x\r\nMIME-Version")


def test_octet_stream_p7m_is_read_as_opaque(pki: Pki) -> None:
    """Old clients label opaque signed-data application/octet-stream; name=*.p7m."""
    out = sign(MESSAGE, _rsa(pki), opaque=True).replace(
        b"application/pkcs7-mime; smime-type=signed-data;", b"application/octet-stream;")
    assert b"pkcs7-mime" not in out
    result = verify(out, anchors=[pki.root])
    assert result.ok
    assert result.opaque
    assert result.content == ENTITY


# --- already signed ----------------------------------------------------------------------


@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
def test_already_signed_is_wrapped_skipped_or_refused(pki: Pki, opaque: bool) -> None:
    once = sign(MESSAGE, pki.signers["alice"].identity, opaque=opaque)
    assert sign(once, _rsa(pki), if_signed="skip") == once
    with pytest.raises(SMIMEError) as err:
        sign(once, _rsa(pki), if_signed="refuse")
    assert err.value.code == "already-protected"
    twice = sign(once, _rsa(pki))
    outer = verify(twice, anchors=[pki.root])
    assert outer.ok
    assert outer.signers[0].certificate == _rsa(pki).certificate
    # The inner signature survives byte for byte inside the outer one.
    inner = verify(outer.message, anchors=[pki.root])
    assert inner.ok
    assert inner.signers[0].addresses == ("alice@alpha.test",)
    assert inner.content == ENTITY


# --- verification failures --------------------------------------------------------------


def test_tampered_content_is_digest_mismatch(pki: Pki) -> None:
    signed = sign(MESSAGE, _rsa(pki))
    result = verify(signed.replace(b"Z\xc3\xbcrich", b"Zurich"), anchors=[pki.root])
    assert (result.ok, result.code) == (False, "digest-mismatch")


@pytest.mark.parametrize("key", ["rsa", "p256"])
def test_altered_signature_is_bad_signature(pki: Pki, key: str) -> None:
    prepared = prepare(pki.signers[key].identity)
    der = bytearray(build_signed_data(prepared, ENTITY, detached=False))
    der[-5] ^= 0x01  # the signature value is the last thing in the encoding
    message = ROUTING + (b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
                         b"Content-Transfer-Encoding: base64\r\n\r\n"
                         + base64.encodebytes(bytes(der)).replace(b"\n", b"\r\n"))
    result = verify(message, anchors=[pki.root])
    assert (result.ok, result.code) == (False, "bad-signature")


def test_untrusted_anchor(pki: Pki) -> None:
    other_root = issue(name_of("other root"), new_key("p256"), None, ca=True).certificate
    result = verify(sign(MESSAGE, _rsa(pki)), anchors=[other_root])
    assert (result.ok, result.code) == (False, "untrusted")
    assert result.signers[0].certificate == _rsa(pki).certificate  # reported all the same


def test_expired_and_not_yet_valid(pki: Pki) -> None:
    signed = sign(MESSAGE, _rsa(pki))
    later = verify(signed, anchors=[pki.root], at=dt.datetime.now(dt.UTC)
                   + dt.timedelta(days=5 * 365))
    assert (later.ok, later.code) == (False, "expired")
    earlier = verify(signed, anchors=[pki.root], at=dt.datetime(2001, 1, 1, tzinfo=dt.UTC))
    assert (earlier.ok, earlier.code) == (False, "not-yet-valid")


def test_wrong_usage_is_bad_usage(pki: Pki) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    issued = issue(name_of("tls only"), new_key("p256"), pki.inter_issued,
                   eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    ident = Identity.create(issued.key, issued.certificate, (pki.intermediate,))
    result = verify(sign(MESSAGE, ident), anchors=[pki.root])
    assert (result.ok, result.code) == (False, "bad-usage")


class FakeRevocation:
    """A test double for the RevocationCheck plug: answers from a table, records calls."""

    def __init__(self, answers: dict[int, RevocationStatus]) -> None:
        self.answers = answers
        self.asked: list[tuple[int, int]] = []

    def __call__(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        self.asked.append((cert.serial_number, issuer.serial_number))
        if cert.serial_number == -1:
            raise RuntimeError("responder down")
        return self.answers.get(cert.serial_number, RevocationStatus("good"))


def test_revocation_plug(pki: Pki) -> None:
    ident = _rsa(pki)
    signed = sign(MESSAGE, ident)
    serial = ident.certificate.serial_number
    fake = FakeRevocation({})
    good = verify(signed, anchors=[pki.root], revocation=fake)
    assert (good.ok, good.signers[0].revocation) == (True, "good")
    # asked about the leaf (by the intermediate) and the intermediate (by the root)
    assert fake.asked == [(serial, pki.intermediate.serial_number),
                          (pki.intermediate.serial_number, pki.root.serial_number)]
    revoked = verify(signed, anchors=[pki.root], revocation=FakeRevocation(
        {serial: RevocationStatus("revoked", "keyCompromise")}))
    assert (revoked.ok, revoked.code) == (False, "revoked")
    assert "keyCompromise" in revoked.reason
    inter_revoked = verify(signed, anchors=[pki.root], revocation=FakeRevocation(
        {pki.intermediate.serial_number: RevocationStatus("revoked")}))
    assert inter_revoked.code == "revoked"
    unknown = verify(signed, anchors=[pki.root], revocation=FakeRevocation(
        {serial: RevocationStatus("unknown", "no responder")}))
    # unknown is reported, never silently good; strict or soft is the caller's policy
    assert (unknown.ok, unknown.signers[0].revocation) == (True, "unknown")
    assert verify(signed, anchors=[pki.root]).signers[0].revocation == "not-checked"


def test_revocation_plug_that_raises_reads_unknown(pki: Pki) -> None:
    class Broken:
        def __call__(self, cert: x509.Certificate,
                     issuer: x509.Certificate) -> RevocationStatus:
            raise OSError("responder down")

    result = verify(sign(MESSAGE, _rsa(pki)), anchors=[pki.root], revocation=Broken())
    assert (result.ok, result.signers[0].revocation) == (True, "unknown")


def test_unknown_signed_attribute_is_tolerated(pki: Pki) -> None:
    """NSS adds Microsoft's 1.3.6.1.4.1.311.16.4 (an IssuerAndSerialNumber) and an
    encryption key preference; attributes verification does not read must not stop it,
    and the original encoding is what is hashed."""
    ident = pki.signers["p256"].identity
    assert isinstance(ident.key, ec.EllipticCurvePrivateKey)
    p = prepare(ident)
    md = hashlib.sha256(ENTITY).digest()
    attrs = sorted([
        d.seq(d.oid("1.2.840.113549.1.9.3"), d.tlv(d.SET, d.oid("1.2.840.113549.1.7.1"))),
        d.seq(d.oid("1.2.840.113549.1.9.4"), d.tlv(d.SET, d.octets(md))),
        d.seq(d.oid("1.3.6.1.4.1.311.16.4"), d.tlv(d.SET, d.seq(b"\x02\x01\x05"))),
        # a context-tagged value (like NSS's SMIMEEncryptionKeyPreference [0]), which
        # asn1crypto's Any cannot hold: it must not be decoded at all
        d.seq(d.oid("1.2.840.113549.1.9.16.2.11"), d.tlv(d.SET, d.tlv(0xA0, b"\x02\x01\x05"))),
    ])
    body = b"".join(attrs)
    sig = ident.key.sign(d.tlv(d.SET, body), ec.ECDSA(hashes.SHA256()))
    si = d.seq(p.signer_head, d.tlv(0xA0, body), p.signature_alg, d.octets(sig))
    sd = d.seq(d.integer(1), p.digest_algs, d.seq(d.oid("1.2.840.113549.1.7.1")),
               p.certificates, d.tlv(d.SET, si))
    ci = d.seq(d.oid("1.2.840.113549.1.7.2"), d.explicit(0, sd))
    message = _frame_detached(ci)
    result = verify(message, anchors=[pki.root])
    assert result.ok, result.reason
    assert result.signers[0].signing_time is None


def _frame_detached(ci: bytes) -> bytes:
    return (ROUTING + b'MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol='
            b'"application/pkcs7-signature"; micalg=sha-256; boundary="b1"\r\n\r\n--b1\r\n'
            + ENTITY + b"\r\n--b1\r\nContent-Type: application/pkcs7-signature\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(ci).replace(b"\n", b"\r\n") + b"--b1--\r\n")


# --- malformed input ---------------------------------------------------------------------


@pytest.mark.parametrize(("message", "code"), [
    (MESSAGE, "not-smime"),
    (b"Subject: no content type\r\n\r\nhi\r\n", "not-smime"),
    (ROUTING + b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nx",
     "not-smime"),
    (ROUTING + b'Content-Type: multipart/signed; protocol="application/pgp-signature"; '
     b'boundary="x"\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n', "not-smime"),
    (ROUTING + b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"'
     b"\r\n\r\n", "malformed"),
    (ROUTING + b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
     b'boundary="x"\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n', "malformed"),
    (ROUTING + b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
     b'boundary="x"\r\n\r\n--x\r\n\r\nhi\r\n--x\r\nContent-Type: application/pkcs7-signature'
     b"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n--x--\r\n", "malformed"),
    (ROUTING + b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
     b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQE=\r\n", "malformed"),
    (ROUTING + b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
     b"Content-Transfer-Encoding: base64\r\n\r\nMIQ/////AAAA\r\n", "malformed"),
])
def test_malformed_input(pki: Pki, message: bytes, code: str) -> None:
    with pytest.raises(SMIMEError) as err:
        verify(message, anchors=[pki.root])
    assert err.value.code == code


def test_enveloped_data_in_signed_slot_is_not_smime(pki: Pki) -> None:
    ci = d.seq(d.oid("1.2.840.113549.1.7.3"), d.explicit(0, d.seq(d.integer(0))))
    with pytest.raises(SMIMEError) as err:
        verify(_frame_detached(ci), anchors=[pki.root])
    assert err.value.code == "not-smime"


def test_no_signer_infos(pki: Pki) -> None:
    p = prepare(_rsa(pki))
    sd = d.seq(d.integer(1), p.digest_algs, d.seq(d.oid("1.2.840.113549.1.7.1")),
               p.certificates, d.tlv(d.SET, b""))
    ci = d.seq(d.oid("1.2.840.113549.1.7.2"), d.explicit(0, sd))
    result = verify(_frame_detached(ci), anchors=[pki.root])
    assert (result.ok, result.code) == (False, "no-signer")


# --- regressions found by the property tests ---------------------------------------------


def _opaque_with_cert_patch(pki: Pki, old: bytes, new: bytes) -> bytes:
    der = build_signed_data(prepare(pki.signers["p256"].identity), ENTITY, detached=False)
    assert der.count(old) == 1
    patched = der.replace(old, new)
    return ROUTING + (b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
                      b"Content-Transfer-Encoding: base64\r\n\r\n"
                      + base64.encodebytes(patched).replace(b"\n", b"\r\n"))


def test_half_parseable_signer_certificate_is_left_out(pki: Pki) -> None:
    """`cryptography` loads a certificate whose subject holds an unknown string tag and
    fails only when the subject is read (found by test_mutated_der_...): the certificate
    must be dropped, not crash the chain validator."""
    cn = b"\x0c\x0aalpha.test"  # the leaf's CN as UTF8String; 0x0d is no string type
    result = verify(_opaque_with_cert_patch(pki, cn, b"\x0d" + cn[1:]), anchors=[pki.root])
    assert (result.ok, result.code) == (False, "no-signer-certificate")


def test_negative_serial_number_is_no_warning(pki: Pki) -> None:
    """A non-positive serial makes `cryptography` warn (an error under pytest); it must be
    judged like any certificate that is not the signer's."""
    cert = pki.signers["p256"].identity.certificate
    serial = cert.serial_number.to_bytes(cert.serial_number.bit_length() // 8 + 1, "big")
    encoded = b"\x02" + bytes((len(serial),)) + serial
    negative = b"\x02" + bytes((len(serial),)) + bytes((serial[0] | 0x80,)) + serial[1:]
    der = build_signed_data(prepare(pki.signers["p256"].identity), ENTITY, detached=False)
    # in the certificate, the SignerIdentifier and the encryption key preference
    assert der.count(encoded) == 3
    tampered = der.replace(encoded, negative, 1)  # the certificate comes first
    message = ROUTING + (b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
                         b"Content-Transfer-Encoding: base64\r\n\r\n"
                         + base64.encodebytes(tampered).replace(b"\n", b"\r\n"))
    result = verify(message, anchors=[pki.root])
    assert (result.ok, result.code) == (False, "no-signer-certificate")
