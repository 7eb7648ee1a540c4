"""encrypt / decrypt / detect on their own: format, structure, round trips, precise errors."""

from __future__ import annotations

import base64
import os

import pytest
from asn1crypto import cms, core
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.keys.demo import issue, name_of, new_key
from gateway.smime import SMIMEError, decrypt, der, detect, encrypt
from gateway.smime.cms_enveloped import ID_AUTH_ENVELOPED_DATA, ID_DATA
from gateway.smime.cms_open import KeyTrans, parse_envelope
from gateway.smime.message import base64_lines, decode_base64_body, parse_message
from gateway.smime.recipients import recipient_for
from gateway.smime.unwrap import unwrap_key_trans
from tests.envelope_support import ENTITY, MESSAGE, Pki, pki

__all__ = ["pki"]

CIPHERS = ("aes128-gcm", "aes256-gcm", "aes128-cbc", "aes256-cbc")
RSA = ("beta.test/bob", "beta.test/domain-rsa")
EC = ("beta.test/domain-ec", "beta.test/carol-p384")


def der_of(message: bytes) -> bytes:
    return decode_base64_body(parse_message(message).body)


def reframe(message: bytes, der: bytes) -> bytes:
    head = message[: message.index(b"\r\n\r\n") + 4]
    return head + base64_lines(der)


def info_of(message: bytes) -> cms.ContentInfo:
    return cms.ContentInfo.load(der_of(message))


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("who", [*RSA, *EC])
@pytest.mark.parametrize("oaep", [False, True], ids=["pkcs1", "oaep"])
def test_round_trip_every_combination(pki: Pki, cipher: str, who: str, oaep: bool) -> None:
    out = encrypt(MESSAGE, [pki.cert(who)], cipher=cipher, oaep=oaep)
    assert decrypt(out, pki.ring(who)) == MESSAGE


@pytest.mark.parametrize("cipher", CIPHERS)
def test_output_framing(pki: Pki, cipher: str) -> None:
    out = encrypt(MESSAGE, [pki.cert("beta.test/bob")], cipher=cipher)
    msg = parse_message(out)
    smime_type = "authEnveloped-data" if "gcm" in cipher else "enveloped-data"
    assert [h.raw for h in msg.headers] == [
        b"From: Alice <alice@alpha.test>\r\n", b"To: Bob <bob@beta.test>\r\n",
        b"Subject: quarterly figures\r\n", b"Date: Sat, 28 Nov 2026 17:00:00 +0000\r\n",
        b"Message-ID: <1@alpha.test>\r\n", b"MIME-Version: 1.0\r\n",
        f"Content-Type: application/pkcs7-mime; smime-type={smime_type}; "
        "name=smime.p7m\r\n".encode(),
        b"Content-Disposition: attachment; filename=smime.p7m\r\n",
        b"Content-Transfer-Encoding: base64\r\n"]
    lines = msg.body.split(b"\r\n")
    assert lines[-1] == b""
    assert all(0 < len(line) <= 76 for line in lines[:-1])
    assert b"\n" not in out.replace(b"\r\n", b"")
    assert b"quarterly" not in msg.body
    assert b"Hello" not in out


def test_gcm_structure_follows_rfc5083_and_rfc5084(pki: Pki) -> None:
    env = info_of(encrypt(MESSAGE, [pki.cert("beta.test/bob")], cipher="aes256-gcm"))["content"]
    assert env["version"].native == "v0"
    eci = env["auth_encrypted_content_info"]
    alg = eci["content_encryption_algorithm"]
    assert alg["algorithm"].dotted == "2.16.840.1.101.3.4.1.46"
    params = alg["parameters"].dump()
    assert params[:4] == b"\x30\x11\x04\x0c"
    assert params[-3:] == b"\x02\x01\x10"
    assert len(env["mac"].native) == 16
    assert isinstance(env["auth_attrs"], core.Void)  # absent: the GCM AAD is empty
    assert isinstance(env["unauth_attrs"], core.Void)


def test_recipient_info_algorithms(pki: Pki) -> None:
    out = encrypt(MESSAGE, [pki.cert(n) for n in (*RSA, *EC)], cipher="aes256-cbc", oaep=True)
    env = info_of(out)["content"]
    assert env["version"].native == "v2"  # a kari is present (RFC 5652 §6.1)
    schemes = {}
    for ri in env["recipient_infos"]:
        if ri.name == "ktri":
            alg = ri.chosen["key_encryption_algorithm"]
            assert alg["algorithm"].native == "rsaes_oaep"
            assert alg["parameters"]["hash_algorithm"]["algorithm"].native == "sha256"
            assert alg["parameters"]["mask_gen_algorithm"]["parameters"]["algorithm"].native \
                == "sha256"
            assert ri.chosen["rid"].name == "issuer_and_serial_number"
        else:
            kari = ri.chosen
            assert kari["version"].native == "v3"
            origin = kari["originator"].chosen
            assert kari["originator"].name == "originator_key"
            assert origin["algorithm"]["algorithm"].dotted == "1.2.840.10045.2.1"
            wrap = cms.KeyEncryptionAlgorithm.load(
                kari["key_encryption_algorithm"]["parameters"].dump())
            assert wrap["algorithm"].native == "aes256_wrap"  # matches the 256-bit CEK
            point = origin["public_key"].native
            schemes[len(point)] = kari["key_encryption_algorithm"]["algorithm"].dotted
    # uncompressed P-256 point is 65 octets, P-384 97: sha256kdf / sha384kdf respectively
    assert schemes == {65: "1.3.132.1.11.1", 97: "1.3.132.1.11.2"}


def test_pkcs1_is_default_and_envelope_v0_without_ec(pki: Pki) -> None:
    env = info_of(encrypt(MESSAGE, [pki.cert("beta.test/bob")], cipher="aes128-cbc"))["content"]
    assert env["version"].native == "v0"
    ri = env["recipient_infos"][0].chosen
    assert ri["key_encryption_algorithm"]["algorithm"].native == "rsaes_pkcs1v15"


def test_many_recipients_each_decrypts(pki: Pki) -> None:
    names = ("beta.test/bob", "beta.test/domain-ec", "beta.test/carol-p384",
             "beta.test/domain-rsa")
    certs = [pki.cert(n) for n in names]
    out = encrypt(MESSAGE, [*certs, certs[0]], cipher="aes128-gcm")  # a duplicate too
    assert len(info_of(out)["content"]["recipient_infos"]) == 4  # one per certificate
    for name in names:
        assert decrypt(out, pki.ring(name)) == MESSAGE
    assert decrypt(out, pki.ring("alpha.test/alice", *names)) == MESSAGE


def test_header_protection_wraps_the_whole_message(pki: Pki) -> None:
    out = encrypt(MESSAGE, [pki.cert("beta.test/bob")], protect_headers=True)
    outer = parse_message(out)
    assert outer.get("subject") is not None  # routing still works outside
    assert decrypt(out, pki.ring("beta.test/bob")) == MESSAGE


def test_message_without_content_headers(pki: Pki) -> None:
    plain = b"From: a@alpha.test\r\nTo: b@beta.test\r\n\r\nplain body\r\n"
    out = encrypt(plain, [pki.cert("beta.test/bob")])
    assert decrypt(out, pki.ring("beta.test/bob")) == \
        b"From: a@alpha.test\r\nTo: b@beta.test\r\nMIME-Version: 1.0\r\n\r\nplain body\r\n"


def test_already_encrypted_is_skipped_or_refused(pki: Pki) -> None:
    once = encrypt(MESSAGE, [pki.cert("beta.test/bob")])
    assert encrypt(once, [pki.cert("beta.test/domain-ec")]) == once
    with pytest.raises(SMIMEError) as e:
        encrypt(once, [pki.cert("beta.test/bob")], if_encrypted="refuse")
    assert e.value.code == "already-protected"
    with pytest.raises(SMIMEError) as e:
        encrypt(MESSAGE, [pki.cert("beta.test/bob")], if_encrypted="maybe")
    assert e.value.code == "unsupported"


def test_bad_arguments(pki: Pki) -> None:
    with pytest.raises(SMIMEError) as e:
        encrypt(MESSAGE, [pki.cert("beta.test/bob")], cipher="des3")
    assert e.value.code == "unsupported"
    with pytest.raises(SMIMEError) as e:
        encrypt(MESSAGE, [])
    assert e.value.code == "bad-key"
    ca = issue(name_of("odd CA"), new_key("p256"), None, ca=True)
    for key in (ed25519.Ed25519PrivateKey.generate(), new_key("rsa1024")):
        issued = issue(name_of("odd"), key, ca)  # type: ignore[arg-type]
        with pytest.raises(SMIMEError) as e:
            encrypt(MESSAGE, [issued.certificate])
        assert e.value.code == "bad-key", e.value.reason


def test_wrong_recipient_is_no_recipient(pki: Pki) -> None:
    out = encrypt(MESSAGE, [pki.cert("beta.test/bob"), pki.cert("beta.test/domain-ec")])
    with pytest.raises(SMIMEError) as e:
        decrypt(out, pki.ring("alpha.test/alice", "alpha.test/domain-ec"))
    assert e.value.code == "no-recipient"


def _mutate(message: bytes, index: int, xor: int = 0x01) -> bytes:
    der = bytearray(der_of(message))
    der[index] ^= xor
    return reframe(message, bytes(der))


def test_tampered_gcm_ciphertext_and_tag(pki: Pki) -> None:
    out = encrypt(MESSAGE, [pki.cert("beta.test/domain-ec")], cipher="aes128-gcm")
    der = der_of(out)
    for index in (len(der) - 1, len(der) - 40):  # inside the mac, inside the ciphertext
        with pytest.raises(SMIMEError) as e:
            decrypt(_mutate(out, index), pki.ring("beta.test/domain-ec"))
        assert e.value.code == "decrypt-failed"


def test_tampered_cbc_padding(pki: Pki) -> None:
    out = encrypt(MESSAGE, [pki.cert("beta.test/bob")], cipher="aes128-cbc")
    # Flipping every bit of the last octet of the second-to-last block flips the last
    # plaintext octet (the pad length 1..16) to 0xEF..0xFE: always invalid padding.
    index = len(der_of(out)) - 17
    with pytest.raises(SMIMEError) as e:
        decrypt(_mutate(out, index, 0xFF), pki.ring("beta.test/bob"))
    assert e.value.code == "decrypt-failed"


@pytest.mark.parametrize("who", ["beta.test/bob", "beta.test/domain-ec"])
@pytest.mark.parametrize("oaep", [False, True], ids=["pkcs1", "oaep"])
def test_tampered_wrapped_key_fails_like_bad_content(pki: Pki, who: str, oaep: bool) -> None:
    out = encrypt(MESSAGE, [pki.cert(who)], cipher="aes128-gcm", oaep=oaep)
    der = der_of(out)
    env = parse_envelope(der)
    key = env.recipients[0].encrypted_key
    index = der.index(key) + len(key) // 2
    with pytest.raises(SMIMEError) as e:
        decrypt(_mutate(out, index), pki.ring(who))
    assert e.value.code == "decrypt-failed"


def test_pkcs1_unwrap_failure_yields_a_random_key_not_an_error(pki: Pki) -> None:
    """The Bleichenbacher defence: a bad PKCS#1 v1.5 block gives a fresh random key."""
    out = encrypt(MESSAGE, [pki.cert("beta.test/bob")], cipher="aes256-cbc")
    ri = parse_envelope(der_of(out)).recipients[0]
    assert isinstance(ri, KeyTrans)
    bad = KeyTrans(ri.issuer, ri.serial, ri.ski, ri.algorithm, ri.parameters,
                   bytes(len(ri.encrypted_key)))
    key = pki.identity("beta.test/bob").key
    first, second = (unwrap_key_trans(bad, key, 32) for _ in range(2))
    assert len(first) == len(second) == 32
    assert first != second


def test_truncated_garbage_and_wrong_kinds(pki: Pki) -> None:
    ring = pki.ring("beta.test/bob")
    out = encrypt(MESSAGE, [pki.cert("beta.test/bob")])
    der = der_of(out)
    cases = {
        "truncated": (reframe(out, der[: len(der) // 2]), "malformed"),
        "garbage DER": (reframe(out, b"\x30\x03garbage"), "malformed"),
        "huge length": (reframe(out, b"\x30\x88\x7f\xff\xff\xff\xff\xff\xff\xff\x00"),
                        "malformed"),
        "bad base64": (out[: out.index(b"\r\n\r\n") + 4] + b"!!not base64!!\r\n", "malformed"),
        "plain text": (MESSAGE, "not-smime"),
        "signed-data": (out.replace(b"smime-type=authEnveloped-data", b"smime-type=signed-data"),
                        "not-smime"),
        "data content": (reframe(out, bytes.fromhex("300f06092a864886f70d010701a0020400")),
                         "not-smime"),
    }
    for name, (message, code) in cases.items():
        with pytest.raises(SMIMEError) as e:
            decrypt(message, ring)
        assert e.value.code == code, (name, e.value.reason)


def test_binary_transfer_encoding_and_x_pkcs7(pki: Pki) -> None:
    out = encrypt(MESSAGE, [pki.cert("beta.test/bob")], cipher="aes128-cbc")
    raw = (b"From: a@alpha.test\r\nContent-Type: application/x-pkcs7-mime; name=smime.p7m\r\n"
           b"Content-Transfer-Encoding: binary\r\n\r\n" + der_of(out))
    assert decrypt(raw, pki.ring("beta.test/bob")).endswith(ENTITY)


# --- detect -----------------------------------------------------------------------------

SIGNED = (b"From: a@alpha.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; "
          b'protocol="application/pkcs7-signature"; micalg=sha-256;\r\n boundary="b1"\r\n\r\n'
          b"--b1\r\n%s\r\n--b1\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n"
          b"--b1--\r\n")


def test_detect_layers(pki: Pki) -> None:
    assert detect(MESSAGE).layers == ()
    assert detect(MESSAGE).outer == "none"
    gcm = encrypt(MESSAGE, [pki.cert("beta.test/bob")])
    cbc = encrypt(MESSAGE, [pki.cert("beta.test/bob")], cipher="aes128-cbc")
    assert detect(gcm).layers == ("auth-enveloped",)
    assert detect(cbc).layers == ("enveloped",)
    assert detect(cbc).encrypted
    # the smime-type parameter missing: classified from the DER itself
    bare = cbc.replace(b"; smime-type=enveloped-data", b"")
    assert detect(bare).layers == ("enveloped",)
    octet = cbc.replace(b"application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
                        b"application/octet-stream")
    assert detect(octet).layers == ("enveloped",)
    signed_plain = SIGNED % b"Content-Type: text/plain\r\n\r\nhi"
    assert detect(signed_plain).layers == ("signed",)
    assert not detect(signed_plain).encrypted
    inner = parse_message(cbc).entity()
    signed_enc = SIGNED % inner.rstrip(b"\r\n")
    assert detect(signed_enc).layers == ("signed", "enveloped")
    wrapped = b"From: a@alpha.test\r\nContent-Type: message/rfc822\r\n\r\n" + signed_plain
    assert detect(wrapped).layers == ("signed",)
    other = SIGNED.replace(b"application/pkcs7-signature\"", b"application/pgp-signature\"")
    assert detect(other % b"x").layers == ()


def test_detect_tolerates_junk_in_pkcs7_parts() -> None:
    junk = (b"From: a@alpha.test\r\nContent-Type: application/pkcs7-mime\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"junk") + b"\r\n")
    assert detect(junk).layers == ()


def _auth_enveloped_with_attrs(pki: Pki, aad_matches: bool) -> bytes:
    """AuthEnvelopedData carrying authAttrs (which some senders add): RFC 5083 §2.2 makes
    their DER, under the SET OF tag, the GCM additional data."""
    cek, nonce = os.urandom(16), os.urandom(12)
    attr = der.seq(der.oid("1.2.840.113549.1.9.3"), der.set_of([der.oid(ID_DATA)]))
    auth_attrs = der.set_of([attr])
    sealed = AESGCM(cek).encrypt(nonce, ENTITY, auth_attrs if aad_matches else None)
    ri = recipient_for(pki.cert("beta.test/bob")).build(cek, False)
    gcm = der.seq(der.oid("2.16.840.1.101.3.4.1.6"), der.seq(der.octets(nonce), der.integer(16)))
    eci = der.seq(der.oid(ID_DATA), gcm, der.implicit_primitive(0, sealed[:-16]))
    body = der.seq(der.integer(0), der.set_of([ri]), eci, der.retag(auth_attrs, 0xA1),
                   der.octets(sealed[-16:]))
    info = der.seq(der.oid(ID_AUTH_ENVELOPED_DATA), der.explicit(0, body))
    head = MESSAGE[: MESSAGE.index(b"MIME-Version")]
    return (head + b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; "
            b"smime-type=authEnveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64_lines(info))


def test_auth_attrs_are_the_gcm_additional_data(pki: Pki) -> None:
    ring = pki.ring("beta.test/bob")
    assert decrypt(_auth_enveloped_with_attrs(pki, True), ring) == MESSAGE
    with pytest.raises(SMIMEError) as e:
        decrypt(_auth_enveloped_with_attrs(pki, False), ring)
    assert e.value.code == "decrypt-failed"
