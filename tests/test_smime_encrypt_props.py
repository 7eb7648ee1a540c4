"""Properties: encrypt → decrypt is byte-exact for arbitrary MIME; damaged input only
ever raises SMIMEError (never another exception, never a hang)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.keys import KeyRing
from gateway.smime import SMIMEError, decrypt, encrypt
from gateway.smime.message import base64_lines, decode_base64_body, parse_message
from tests.envelope_support import MESSAGE, Pki, pki

__all__ = ["pki"]

RECIPIENTS = ("beta.test/bob", "beta.test/domain-ec", "beta.test/carol-p384")
_settings = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])

# Body lines: any octets but CR and LF (the message is canonical CRLF), 8-bit included.
line = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
lines = st.lists(line, max_size=20).map(lambda ls: b"".join(x + b"\r\n" for x in ls))
words = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                              exclude_characters=";\"\\"), min_size=1, max_size=12)


@st.composite
def entities(draw: st.DrawFn, depth: int = 0) -> bytes:
    kind = draw(st.sampled_from(["text", "html", "attachment", "multipart"] if depth < 2
                                else ["text", "html", "attachment"]))
    if kind == "text":
        return b"Content-Type: text/plain; charset=utf-8\r\n" \
               b"Content-Transfer-Encoding: 8bit\r\n\r\n" + draw(lines)
    if kind == "html":
        return b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body>" + \
            draw(lines) + b"</body></html>\r\n"
    if kind == "attachment":
        name = draw(words).encode()
        return (b"Content-Type: application/octet-stream\r\n"
                b"Content-Disposition: attachment; filename=\"" + name + b"\"\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n" +
                base64_lines(draw(st.binary(max_size=400))))
    boundary = b"=_b" + draw(words).encode() + str(depth).encode()
    parts = draw(st.lists(entities(depth + 1), min_size=1, max_size=3))
    sub = draw(st.sampled_from([b"mixed", b"alternative", b"related"]))
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return (b"Content-Type: multipart/" + sub + b"; boundary=\"" + boundary + b"\"\r\n\r\n"
            + body + b"--" + boundary + b"--\r\n")


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    subject = draw(st.binary(max_size=60)).replace(b"\r", b"").replace(b"\n", b"")
    head = (b"From: a@alpha.test\r\nTo: b@beta.test\r\nSubject: " + subject + b"\r\n"
            b"MIME-Version: 1.0\r\n")
    return head + draw(entities())


@pytest.fixture(scope="module")
def ring(pki: Pki) -> KeyRing:
    return pki.ring(*RECIPIENTS)


@_settings
@given(message=messages(),
       cipher=st.sampled_from(["aes128-gcm", "aes256-gcm", "aes128-cbc", "aes256-cbc"]),
       who=st.sampled_from(RECIPIENTS), oaep=st.booleans(), protect=st.booleans())
def test_round_trip_is_byte_exact(pki: Pki, ring: KeyRing, message: bytes, cipher: str,
                                  who: str, oaep: bool, protect: bool) -> None:
    out = encrypt(message, [pki.cert(who)], cipher=cipher, oaep=oaep, protect_headers=protect)
    assert decrypt(out, ring) == message


@pytest.fixture(scope="module")
def samples(pki: Pki) -> list[bytes]:
    """Real outputs: GCM and CBC, RSA and EC recipients."""
    return [encrypt(MESSAGE, [pki.cert(who)], cipher=cipher)
            for who in ("beta.test/bob", "beta.test/domain-ec")
            for cipher in ("aes128-gcm", "aes256-cbc")]


def _check(message: bytes, ring: KeyRing) -> None:
    code = None
    try:
        decrypt(message, ring)
    except SMIMEError as e:
        code = e.code
    assert code in {None, "malformed", "not-smime", "unsupported", "no-recipient",
                    "decrypt-failed", "bad-key"}


@_settings
@given(data=st.data())
def test_mutated_der_only_raises_smime_error(samples: list[bytes], ring: KeyRing,
                                             data: st.DataObject) -> None:
    sample = data.draw(st.sampled_from(samples))
    head = sample[: sample.index(b"\r\n\r\n") + 4]
    der = bytearray(decode_base64_body(parse_message(sample).body))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = data.draw(st.integers(0, max(len(der) - 1, 0)))
        if op == "flip" and der:
            der[at] ^= data.draw(st.integers(1, 255))
        elif op == "truncate":
            del der[at:]
        elif op == "insert":
            der[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif der:
            del der[at : at + data.draw(st.integers(1, 16))]
    _check(head + base64_lines(bytes(der)), ring)


@_settings
@given(data=st.data())
def test_mutated_message_text_only_raises_smime_error(samples: list[bytes], ring: KeyRing,
                                                      data: st.DataObject) -> None:
    sample = bytearray(data.draw(st.sampled_from(samples)))
    at = data.draw(st.integers(0, len(sample) - 1))
    if data.draw(st.booleans()):
        del sample[at:]
    else:
        sample[at] = data.draw(st.integers(0, 255))
    _check(bytes(sample), ring)


@_settings
@given(garbage=st.binary(max_size=300))
def test_garbage_body_only_raises_smime_error(ring: KeyRing, garbage: bytes) -> None:
    head = (b"From: a@alpha.test\r\nContent-Type: application/pkcs7-mime; "
            b"smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n")
    _check(head + base64.b64encode(garbage) + b"\r\n", ring)
    _check(head + garbage, ring)
