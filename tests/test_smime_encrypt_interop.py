"""Envelopes against real peers, both ways: `openssl cms` (OpenSSL 3) and `gpgsm` (2.2).

OpenSSL opens every combination we write (AES-CBC and AES-GCM AuthEnvelopedData, RSA
PKCS#1 v1.5 and OAEP, ECDH P-256/P-384); gpgsm 2.2 only AES-CBC with RSA PKCS#1 v1.5.
What they write (DER, streamed indefinite-length BER, subjectKeyIdentifier recipients,
OpenSSL's default sha1kdf for ECDH, 3DES) we open.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.mime.canon import canonicalize
from gateway.smime import SMIMEError, decrypt, encrypt
from gateway.smime.message import base64_lines, decode_base64_body, parse_message
from tests import peers
from tests.envelope_support import ENTITY, MESSAGE, Pki, pki

__all__ = ["pki"]
pytestmark = pytest.mark.interop

ROUTING = MESSAGE[: MESSAGE.index(b"MIME-Version")]
OAEP_OPTS = ("-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256",
             "-keyopt", "rsa_mgf1_md:sha256")


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def openssl_decrypt(pki: Pki, who: str, message: bytes, tmp_path: Path) -> bytes:
    path = tmp_path / "in.eml"
    path.write_bytes(message)
    return peers.openssl_cms("-decrypt", "-in", str(path), "-inkey", str(pki.key(who)),
                             "-recip", str(pki.pem(who)))


def frame(der: bytes, smime_type: str = "enveloped-data") -> bytes:
    """A peer's raw CMS as the S/MIME message a mail client would send."""
    return (ROUTING + b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; "
            b"smime-type=" + smime_type.encode() + b"; name=smime.p7m\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64_lines(der))


# --- what we write, OpenSSL reads -------------------------------------------------------

@pytest.mark.parametrize("cipher", ["aes128-gcm", "aes256-gcm", "aes128-cbc", "aes256-cbc"])
@pytest.mark.parametrize(("who", "oaep"), [
    ("beta.test/bob", False), ("beta.test/bob", True),
    ("beta.test/domain-ec", False), ("beta.test/carol-p384", False),
], ids=["rsa-pkcs1", "rsa-oaep", "ecdh-p256", "ecdh-p384"])
def test_openssl_decrypts_ours(pki: Pki, tmp_path: Path, cipher: str, who: str,
                               oaep: bool) -> None:
    out = encrypt(MESSAGE, [pki.cert(who)], cipher=cipher, oaep=oaep)
    assert lf(openssl_decrypt(pki, who, out, tmp_path)) == lf(ENTITY)


def test_openssl_decrypts_mixed_recipients_and_header_protection(pki: Pki,
                                                                 tmp_path: Path) -> None:
    names = ("beta.test/bob", "beta.test/domain-ec", "beta.test/carol-p384")
    out = encrypt(MESSAGE, [pki.cert(n) for n in names], cipher="aes256-gcm", oaep=True,
                  protect_headers=True)
    for who in names:
        inner = openssl_decrypt(pki, who, out, tmp_path)
        assert lf(inner) == lf(b"Content-Type: message/rfc822; forwarded=no\r\n\r\n" + MESSAGE)


def test_openssl_refuses_a_tampered_tag(pki: Pki, tmp_path: Path) -> None:
    """Our mac really is the GCM tag OpenSSL checks."""
    out = encrypt(MESSAGE, [pki.cert("beta.test/bob")], cipher="aes128-gcm")
    der = bytearray(decode_base64_body(parse_message(out).body))
    der[-1] ^= 1
    bad = out[: out.index(b"\r\n\r\n") + 4] + base64_lines(bytes(der))
    with pytest.raises(peers.PeerError):
        openssl_decrypt(pki, "beta.test/bob", bad, tmp_path)


# --- what OpenSSL writes, we read -------------------------------------------------------

RSA_CASES = {"pkcs1": (), "oaep": OAEP_OPTS}
EC_CASES = {"sha1kdf": (), "sha256kdf": ("-keyopt", "ecdh_kdf_md:sha256")}


@pytest.mark.parametrize("cipher", ["-aes128", "-aes256", "-aes-128-gcm", "-aes-256-gcm"])
@pytest.mark.parametrize(("who", "opts"), [
    ("beta.test/bob", RSA_CASES["pkcs1"]), ("beta.test/bob", RSA_CASES["oaep"]),
    ("beta.test/domain-ec", EC_CASES["sha1kdf"]), ("beta.test/domain-ec", EC_CASES["sha256kdf"]),
    ("beta.test/carol-p384", EC_CASES["sha256kdf"]),
], ids=["rsa-pkcs1", "rsa-oaep", "ecdh-p256-sha1kdf", "ecdh-p256-sha256kdf",
        "ecdh-p384-sha256kdf"])
def test_we_decrypt_openssl(pki: Pki, cipher: str, who: str, opts: tuple[str, ...]) -> None:
    der = peers.openssl_cms("-encrypt", cipher, "-binary", "-outform", "DER",
                            "-recip", str(pki.pem(who)), *opts, data=ENTITY)
    smime_type = "authEnveloped-data" if "gcm" in cipher else "enveloped-data"
    assert decrypt(frame(der, smime_type), pki.ring(who)) == MESSAGE


def test_we_decrypt_openssl_smime_output_ski_streamed_and_3des(pki: Pki) -> None:
    ring = pki.ring("beta.test/bob", "beta.test/domain-ec")
    # S/MIME framing as OpenSSL writes it (LF line ends: canonicalised first), a
    # subjectKeyIdentifier recipient (-keyid), streamed indefinite-length BER, and
    # two recipients of different kinds.
    smime = peers.openssl_cms("-encrypt", "-aes256", "-binary", "-keyid", "-stream",
                              "-recip", str(pki.pem("beta.test/bob")),
                              "-recip", str(pki.pem("beta.test/domain-ec")), data=ENTITY)
    got = decrypt(canonicalize(ROUTING + smime), ring)
    assert got == MESSAGE
    der = peers.openssl_cms("-encrypt", "-des3", "-binary", "-outform", "DER",
                            "-recip", str(pki.pem("beta.test/bob")), data=ENTITY)
    assert decrypt(frame(der), ring) == MESSAGE


def test_openssl_output_for_someone_else_is_no_recipient(pki: Pki) -> None:
    der = peers.openssl_cms("-encrypt", "-aes-128-gcm", "-binary", "-outform", "DER",
                            "-recip", str(pki.pem("alpha.test/alice")), data=ENTITY)
    with pytest.raises(SMIMEError) as e:
        decrypt(frame(der, "authEnveloped-data"), pki.ring("beta.test/bob"))
    assert e.value.code == "no-recipient"


def test_openssl_gcm_tampered_is_decrypt_failed(pki: Pki) -> None:
    der = bytearray(peers.openssl_cms("-encrypt", "-aes-256-gcm", "-binary", "-outform", "DER",
                                      "-recip", str(pki.pem("beta.test/domain-ec")),
                                      data=ENTITY))
    der[-1] ^= 0x80  # the last octet of the mac
    with pytest.raises(SMIMEError) as e:
        decrypt(frame(bytes(der), "authEnveloped-data"), pki.ring("beta.test/domain-ec"))
    assert e.value.code == "decrypt-failed"


# --- gpgsm ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpgsm(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Gpgsm]:
    ca = pki.directory / "ca"
    with peers.gpgsm_home(tmp_path_factory.mktemp("gpgsm"), ca / "root.pem",
                          [ca / "intermediate.pem"]) as home:
        home.import_identity(pki.pem("beta.test/bob"), pki.key("beta.test/bob"))
        # gpgsm exits 2 on a RecipientInfo whose certificate it has never seen, even when
        # another one is its own; knowing alice's certificate (not key) avoids that.
        home.import_certificate(pki.pem("alpha.test/alice"))
        yield home


@pytest.mark.parametrize("cipher", ["aes128-cbc", "aes256-cbc"])
def test_gpgsm_decrypts_ours(pki: Pki, gpgsm: peers.Gpgsm, cipher: str) -> None:
    out = encrypt(MESSAGE, [pki.cert("beta.test/bob")], cipher=cipher)
    assert gpgsm.decrypt(decode_base64_body(parse_message(out).body)).stdout == ENTITY
    # Two recipients: gpgsm 2.2 decrypts, but exits 2 when a RecipientInfo for a key it
    # lacks comes first in the SET ("No secret key"), so only the output is checked.
    out = encrypt(MESSAGE, [pki.cert("alpha.test/alice"), pki.cert("beta.test/bob")],
                  cipher=cipher)
    result = gpgsm.decrypt(decode_base64_body(parse_message(out).body), check=False)
    assert result.stdout == ENTITY, result.stderr


@pytest.mark.parametrize("algo", ["AES128", "AES256"])
def test_we_decrypt_gpgsm(pki: Pki, gpgsm: peers.Gpgsm, algo: str) -> None:
    der = gpgsm.encrypt(ENTITY, ["bob@beta.test"]) if algo == "AES128" else \
        gpgsm.gpgsm("--cipher-algo", algo, "--encrypt", "-r", "bob@beta.test",
                    data=ENTITY).stdout
    assert der[:2] == b"\x30\x80"  # indefinite-length BER, what cryptography cannot read
    assert decrypt(frame(der), pki.ring("beta.test/bob")) == MESSAGE
    with pytest.raises(SMIMEError) as e:
        decrypt(frame(der), pki.ring("beta.test/domain-rsa"))
    assert e.value.code == "no-recipient"
    with pytest.raises(SMIMEError) as e:
        decrypt(frame(der[: len(der) - 30]), pki.ring("beta.test/bob"))
    assert e.value.code == "malformed"
