"""Which RecipientInfo is ours (gateway/smime/decrypt.py _find_identity): exact
issuer+serial, the RFC 5280 §7.1 normalised issuer a sender may have re-encoded, and
recipients that are someone else's, skipped before any private-key operation."""

from __future__ import annotations

import pytest
from cryptography import x509

from gateway.smime import SMIMEError, decrypt, encrypt
from gateway.smime.message import base64_lines, decode_base64_body, parse_message
from tests.envelope_support import MESSAGE, Pki, pki

__all__ = ["pki"]


def with_issuer(message: bytes, cert: x509.Certificate, issuer: x509.Name) -> bytes:
    """The message with cert's issuer Name in every RecipientInfo replaced by issuer (an
    encoding of the same length, so no enclosing length changes)."""
    old, new = cert.issuer.public_bytes(), issuer.public_bytes()
    assert len(old) == len(new)
    data = decode_base64_body(parse_message(message).body)
    assert old in data
    head = message[: message.index(b"\r\n\r\n") + 4]
    return head + base64_lines(data.replace(old, new))


def recased(name: x509.Name, change: str = "") -> x509.Name:
    """The same Name in other letter case (caseIgnoreMatch equal), or with its last letter
    changed too (another issuer)."""
    attrs = []
    for a in name:
        value = str(a.value).swapcase()
        if change and a.oid == x509.NameOID.COMMON_NAME:
            value = value[:-1] + change
        attrs.append(x509.NameAttribute(a.oid, value))
    return x509.Name(attrs)


@pytest.mark.parametrize("cipher", ["aes128-gcm", "aes256-cbc"])
def test_issuer_reencoded_by_the_sender_still_matches(pki: Pki, cipher: str) -> None:
    cert = pki.cert("beta.test/bob")
    out = with_issuer(encrypt(MESSAGE, [cert], cipher=cipher), cert, recased(cert.issuer))
    assert decrypt(out, pki.ring("beta.test/bob")) == MESSAGE


def test_same_serial_from_another_issuer_is_not_ours(pki: Pki) -> None:
    cert = pki.cert("beta.test/bob")
    out = with_issuer(encrypt(MESSAGE, [cert]), cert, recased(cert.issuer, change="#"))
    with pytest.raises(SMIMEError) as e:
        decrypt(out, pki.ring("beta.test/bob"))
    assert e.value.code == "no-recipient"


@pytest.mark.parametrize("ours", ["beta.test/bob", "beta.test/domain-ec"])
def test_ours_among_others(pki: Pki, ours: str) -> None:
    others = [pki.cert(n) for n in ("beta.test/domain-rsa", "beta.test/carol-p384")]
    out = encrypt(MESSAGE, [*others, pki.cert(ours)])
    assert decrypt(out, pki.ring(ours)) == MESSAGE
