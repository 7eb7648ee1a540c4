"""Signatures both ways against real peers: `openssl cms` (OpenSSL 3) and `gpgsm` (2.2).

What we sign, each peer verifies (detached and opaque; RSA PKCS#1 v1.5, RSA-PSS with salt
length = hash length, ECDSA P-256/P-384; SHA-256/384/512). What each peer signs
(openssl: detached, -nodetach, -binary, PSS, ECDSA, -noattr, -keyid; gpgsm: detached and
opaque, indefinite-length BER) we verify, returning the exact content signed. Tampered,
untrusted, expired, truncated and garbage input give their precise result or error.
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from gateway.mime.canon import canonicalize
from gateway.smime import SMIMEError, sign, verify
from tests import peers
from tests.sign_support import ENTITY, MESSAGE, ROUTING, Pki, Signer, make_pki

pytestmark = pytest.mark.interop

needs_openssl = pytest.mark.skipif(peers.OPENSSL is None, reason="openssl not installed")
needs_gpgsm = pytest.mark.skipif(peers.GPGSM is None, reason="gpgsm not installed")

# (signer, pss) pairs each peer can verify: every key type we sign with.
KEY_CHOICES = [("rsa", False), ("rsa", True), ("p256", False), ("p384", False)]
DIGESTS = ["sha256", "sha384", "sha512"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def gpgsm(pki: Pki) -> Iterator[peers.Gpgsm]:
    if peers.GPGSM is None:
        pytest.skip("gpgsm not installed")
    # A short path: gpg-agent's socket must fit in sun_path.
    home = Path(tempfile.mkdtemp(prefix="gsm", dir="/tmp"))
    with peers.gpgsm_home(home, pki.root_pem, [pki.intermediate_pem]) as g:
        # gpgsm 2.2 signs with RSA only: importing an EC key from PKCS#12 crashes it
        # (SIGSEGV on 3DES bags, "error at pkcs5PBES2-params" on PBES2 ones).
        s = pki.signers["rsa"]
        g.import_identity(s.cert_pem, s.key_pem)
        yield g
    shutil.rmtree(home, ignore_errors=True)


# --- ours → peers ------------------------------------------------------------------------


@needs_openssl
@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
@pytest.mark.parametrize(("key", "pss", "digest"),
                         [(k, p, d) for (k, p), d in itertools.product(KEY_CHOICES, DIGESTS)],
                         ids=lambda v: str(v))
def test_openssl_verifies_ours(pki: Pki, tmp_path: Path, key: str, pss: bool, digest: str,
                               opaque: bool) -> None:
    signed = sign(MESSAGE, pki.signers[key].identity, digest=digest, pss=pss, opaque=opaque)
    path = tmp_path / "signed.eml"
    path.write_bytes(signed)
    # -binary keeps opaque content byte-exact; for multipart/signed OpenSSL 3.0's binary
    # mode leaves the delimiter's CR on the content, so its text mode (CRLF) is used.
    binary = ["-binary"] if opaque else []
    out = peers.run(["openssl", "cms", "-verify", "-in", str(path), "-CAfile",
                     str(pki.root_pem), *binary], check=False)
    assert out.returncode == 0, out.stderr.decode()
    assert b"Verification successful" in out.stderr
    assert out.stdout == ENTITY


# gpgsm refuses a hash shorter than the curve ("a 256 bit hash is not valid for a 384 bit
# ECC key"): P-384 signers should use SHA-384 or SHA-512 for gpgsm's sake.
GPGSM_CHOICES = [(k, p, d) for (k, p), d in itertools.product(KEY_CHOICES, DIGESTS)
                 if (k, d) != ("p384", "sha256")]


@needs_gpgsm
@pytest.mark.parametrize("opaque", [False, True], ids=["detached", "opaque"])
@pytest.mark.parametrize(("key", "pss", "digest"), GPGSM_CHOICES, ids=lambda v: str(v))
def test_gpgsm_verifies_ours(pki: Pki, gpgsm: peers.Gpgsm, key: str, pss: bool, digest: str,
                             opaque: bool) -> None:
    signed = sign(MESSAGE, pki.signers[key].identity, digest=digest, pss=pss, opaque=opaque)
    if opaque:
        out = gpgsm.verify_opaque(peers.opaque_der(signed))
        assert out.stdout == ENTITY
    else:
        entity, signature = peers.split_multipart_signed(signed)
        assert entity == ENTITY
        out = gpgsm.verify_detached(signature, entity)
    assert out.returncode == 0, out.stderr.decode()
    assert b"Good signature" in out.stderr


@needs_gpgsm
def test_gpgsm_rejects_ours_when_tampered(pki: Pki, gpgsm: peers.Gpgsm) -> None:
    """The interop check above can fail: gpgsm does say no to an altered body."""
    entity, signature = peers.split_multipart_signed(sign(MESSAGE, pki.signers["rsa"].identity))
    out = gpgsm.verify_detached(signature, entity.replace(b"Z\xc3\xbcrich", b"Zurich"))
    assert out.returncode != 0
    assert b"Good signature" not in out.stderr


# --- peers → ours ------------------------------------------------------------------------


def _openssl_sign(pki: Pki, tmp_path: Path, signer: Signer, *flags: str) -> bytes:
    src = tmp_path / "entity"
    src.write_bytes(ENTITY)
    out = peers.openssl_cms("-sign", "-in", str(src), "-signer", str(signer.cert_pem),
                            "-inkey", str(signer.key_pem), "-certfile", str(pki.intermediate_pem),
                            *flags)
    # openssl writes its own MIME headers; ours (routing) go on top, as an MTA would see it.
    return ROUTING + out


OPENSSL_CASES = [
    ("rsa", ()), ("rsa", ("-nodetach",)), ("rsa", ("-binary",)),
    ("rsa", ("-nodetach", "-binary")), ("rsa", ("-md", "sha384")),
    ("rsa", ("-md", "sha512", "-nodetach")),
    ("rsa", ("-keyopt", "rsa_padding_mode:pss")),
    ("rsa", ("-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:digest",
             "-nodetach", "-md", "sha384")),
    ("p256", ()), ("p256", ("-nodetach", "-binary")), ("p384", ("-md", "sha384")),
    ("p384", ("-nodetach", "-md", "sha512")),
    ("rsa", ("-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:max")),
    ("rsa", ("-noattr",)), ("p256", ("-keyid", "-nodetach")),
]


@needs_openssl
@pytest.mark.parametrize(("key", "flags"), OPENSSL_CASES,
                         ids=[f"{k}{''.join(f)}" for k, f in OPENSSL_CASES])
def test_we_verify_openssl(pki: Pki, tmp_path: Path, key: str, flags: tuple[str, ...]) -> None:
    signer = pki.signers[key]
    result = verify(_openssl_sign(pki, tmp_path, signer, *flags), anchors=[pki.root])
    assert result.ok, result.reason
    assert result.code == "ok"
    assert result.content == ENTITY
    assert result.opaque == ("-nodetach" in flags)
    (info,) = result.signers
    assert info.certificate == signer.identity.certificate
    assert info.chain == (signer.identity.certificate, pki.intermediate, pki.root)
    digest = flags[flags.index("-md") + 1] if "-md" in flags else "sha256"
    assert info.digest_algorithm == digest
    expected = "ecdsa" if not signer.is_rsa else (
        "rsa-pss" if "rsa_padding_mode:pss" in flags else "rsa-pkcs1v15")
    assert info.signature_algorithm == expected
    assert (info.signing_time is None) == ("-noattr" in flags)
    if key == "p384":  # a user certificate: its address, not its domain
        assert (info.addresses, info.domains) == (("carol@alpha.test",), ())
        assert info.speaks_for("carol@alpha.test")
        assert not info.speaks_for("anyone@alpha.test")
    else:  # a domain certificate speaks for every address of its domain
        assert info.domains == ("alpha.test",)
        assert info.speaks_for("anyone@alpha.test")
    assert not info.speaks_for("bob@beta.test")


@needs_gpgsm
@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
@pytest.mark.parametrize("digest", ["SHA256", "SHA384", "SHA512"])
def test_we_verify_gpgsm(pki: Pki, gpgsm: peers.Gpgsm, detached: bool, digest: str) -> None:
    """gpgsm 2.2 signs with RSA PKCS#1 v1.5 only (no PSS; EC keys cannot be imported)."""
    signer = pki.signers["rsa"]
    fingerprint = signer.identity.certificate.fingerprint(hashes.SHA1()).hex()  # noqa: S303
    cms = gpgsm.sign(ENTITY, fingerprint, detached=detached, digest=digest)
    assert cms[:2] == b"\x30\x80"  # indefinite-length BER, which asn1crypto must read
    micalg = "sha-" + digest[3:]
    message = (peers.multipart_signed(ROUTING, ENTITY, cms, micalg) if detached
               else peers.opaque_signed(ROUTING, cms))
    result = verify(message, anchors=[pki.root])
    assert result.ok, result.reason
    assert result.content == ENTITY
    (info,) = result.signers
    assert info.certificate == signer.identity.certificate
    assert info.digest_algorithm == digest.lower()
    assert info.signing_time is not None
    if detached:
        tampered = message.replace(b"Z\xc3\xbcrich", b"Zurich")
        assert verify(tampered, anchors=[pki.root]).code == "digest-mismatch"


# --- failures, with peers' output --------------------------------------------------------


@needs_openssl
@pytest.mark.parametrize("flags", [(), ("-binary",)], ids=["text", "binary"])
def test_tampered_openssl_body_is_digest_mismatch(pki: Pki, tmp_path: Path,
                                                  flags: tuple[str, ...]) -> None:
    signed = canonicalize(_openssl_sign(pki, tmp_path, pki.signers["rsa"], *flags))
    tampered = signed.replace(b"Z\xc3\xbcrich", b"Zuerich", 1)
    assert tampered != signed
    result = verify(tampered, anchors=[pki.root])
    assert (result.ok, result.code) == (False, "digest-mismatch")
    assert result.signers[0].certificate == pki.signers["rsa"].identity.certificate


@needs_openssl
def test_openssl_signer_from_foreign_root_is_untrusted(pki: Pki, tmp_path: Path) -> None:
    from gateway.keys.demo import issue, name_of, new_key

    foreign_root = issue(name_of("foreign root"), new_key("p256"), None, ca=True)
    signer = pki.odd_signer("mallory", issuer=foreign_root)
    result = verify(_openssl_sign(pki, tmp_path, signer), anchors=[pki.root])
    assert (result.ok, result.code) == (False, "untrusted")
    assert result.signers[0].addresses == ("mallory@alpha.test",)


@needs_openssl
def test_openssl_expired_signer_is_expired(pki: Pki, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    signer = pki.odd_signer("old", not_before=now - dt.timedelta(days=30),
                            not_after=now - dt.timedelta(hours=1))
    result = verify(_openssl_sign(pki, tmp_path, signer), anchors=[pki.root])
    assert (result.ok, result.code) == (False, "expired")
    # The same signature judged at a time the certificate was valid is good.
    good = verify(_openssl_sign(pki, tmp_path, signer), anchors=[pki.root],
                  at=now - dt.timedelta(hours=2))
    assert good.ok, good.reason


@needs_openssl
def test_openssl_without_certificates_is_no_signer_certificate(pki: Pki,
                                                                tmp_path: Path) -> None:
    message = _openssl_sign(pki, tmp_path, pki.signers["p256"], "-nocerts")
    result = verify(message, anchors=[pki.root])
    assert (result.ok, result.code) == (False, "no-signer-certificate")


@needs_openssl
@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_openssl_output_is_malformed(pki: Pki, tmp_path: Path, cut: float) -> None:
    message = canonicalize(_openssl_sign(pki, tmp_path, pki.signers["rsa"], "-nodetach"))
    with pytest.raises(SMIMEError) as err:
        verify(message[: int(len(message) * cut)], anchors=[pki.root])
    assert err.value.code == "malformed"


def test_garbage_is_malformed_or_not_smime(pki: Pki) -> None:
    with pytest.raises(SMIMEError) as err:
        verify(ROUTING + b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\nAAAA//8=\r\n", anchors=[pki.root])
    assert err.value.code == "malformed"
    with pytest.raises(SMIMEError) as err:
        verify(MESSAGE, anchors=[pki.root])
    assert err.value.code == "not-smime"




@needs_openssl
def test_openssl_without_intermediate_is_untrusted(pki: Pki, tmp_path: Path) -> None:
    """Intermediates come from the message only: leave it out and there is no chain."""
    src = tmp_path / "entity"
    src.write_bytes(ENTITY)
    signer = pki.signers["rsa"]
    out = peers.openssl_cms("-sign", "-in", str(src), "-signer", str(signer.cert_pem),
                            "-inkey", str(signer.key_pem))
    result = verify(ROUTING + out, anchors=[pki.root])
    assert (result.ok, result.code) == (False, "untrusted")


@needs_openssl
def test_openssl_two_signers_one_untrusted(pki: Pki, tmp_path: Path) -> None:
    """RFC 5652 allows several SignerInfos: each is judged; one good one makes it ok."""
    from gateway.keys.demo import issue, name_of, new_key

    stranger = pki.odd_signer("stranger", issuer=issue(name_of("elsewhere"), new_key("p256"),
                                                       None, ca=True))
    src = tmp_path / "entity"
    src.write_bytes(ENTITY)
    good = pki.signers["p256"]
    out = peers.openssl_cms("-sign", "-in", str(src), "-certfile", str(pki.intermediate_pem),
                            "-signer", str(stranger.cert_pem), "-inkey", str(stranger.key_pem),
                            "-signer", str(good.cert_pem), "-inkey", str(good.key_pem))
    result = verify(ROUTING + out, anchors=[pki.root])
    assert result.ok
    assert sorted(s.code for s in result.signers) == ["ok", "untrusted"]
    bad = next(s for s in result.signers if s.code == "untrusted")
    assert bad.addresses == ("stranger@alpha.test",)
    assert result.speaks_for("someone@alpha.test")  # through the good domain signer
