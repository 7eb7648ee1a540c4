"""Properties (hypothesis): sign → verify round-trips arbitrary MIME byte-exact, and no
mutation or truncation of a real signed message gets anything but a VerifyResult or an
SMIMEError out of verify()."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mime.canon import canonicalize
from gateway.smime import SMIMEError, VerifyResult, sign, verify
from gateway.smime.message import parse_message
from tests.sign_support import MESSAGE, ROUTING, Pki, make_pki

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# --- MIME bodies -------------------------------------------------------------------------

_line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=90)
_lines = st.lists(st.one_of(_line_text, st.sampled_from(
    ["From the start", ".", "", "  trailing  ", "--not-a-boundary", "\t"])), max_size=30)


@st.composite
def text_body(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(content headers, body) of a text/plain or text/html part, often 8-bit."""
    subtype = draw(st.sampled_from(["plain", "html"]))
    lines = draw(_lines)
    if subtype == "html":
        lines = ["<html><body>", *(f"<p>{line}</p>" for line in lines), "</body></html>"]
    body = "\r\n".join(lines).encode()
    if draw(st.booleans()):
        body += b"\r\n"
    cte = b"8bit" if not body.isascii() else draw(st.sampled_from([b"7bit", b"8bit"]))
    return (b"Content-Type: text/" + subtype.encode() + b"; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: " + cte + b"\r\n"), body


@st.composite
def attachment(draw: st.DrawFn) -> tuple[bytes, bytes]:
    data = draw(st.binary(max_size=600))
    return (b'Content-Type: application/octet-stream; name="a.bin"\r\n'
            b'Content-Disposition: attachment; filename="a.bin"\r\n'
            b"Content-Transfer-Encoding: base64\r\n",
            base64.encodebytes(data).replace(b"\n", b"\r\n"))


@st.composite
def multipart(draw: st.DrawFn, depth: int = 0) -> tuple[bytes, bytes]:
    kind = draw(st.sampled_from(["mixed", "alternative", "related"]))
    boundary = b"=_b" + str(depth).encode() + draw(st.sampled_from([b"x", b"yy", b"z9"]))
    children = [draw(text_body())]
    children += draw(st.lists(st.one_of(text_body(), attachment()) if depth else
                              st.one_of(text_body(), attachment(), multipart(depth + 1)),
                              max_size=3))
    body = draw(st.sampled_from([b"", b"This is a multi-part message in MIME format.\r\n"]))
    for head, child in children:
        body += b"--" + boundary + b"\r\n" + head + b"\r\n" + child + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    return (b"Content-Type: multipart/" + kind.encode() + b'; boundary="' + boundary
            + b'"\r\n'), body


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    head, body = draw(st.one_of(text_body(), multipart()))
    message = ROUTING + b"MIME-Version: 1.0\r\n" + head + b"\r\n" + body
    if draw(st.booleans()):  # as a file on disk: bare LF, canonicalised by sign()
        message = message.replace(b"\r\n", b"\n")
    return message


@SETTINGS
@given(message=messages(), key=st.sampled_from(["p256", "rsa", "rsa-pss", "p384"]),
       opaque=st.booleans(), digest=st.sampled_from(["sha256", "sha384", "sha512"]))
def test_sign_verify_round_trip(pki: Pki, message: bytes, key: str, opaque: bool,
                                digest: str) -> None:
    signer = pki.signers[key.removesuffix("-pss")].identity
    signed = sign(message, signer, digest=digest, opaque=opaque, pss=key.endswith("-pss"))
    result = verify(signed, anchors=[pki.root])
    assert result.ok, result.reason
    assert result.content == parse_message(canonicalize(message)).entity()
    assert result.opaque == opaque
    assert result.message.startswith(ROUTING)


# --- robustness: mutations of real output ------------------------------------------------


@pytest.fixture(scope="module")
def samples(pki: Pki) -> list[bytes]:
    """Signed once, so every example mutates the same bytes (hypothesis replays them)."""
    return [sign(MESSAGE, pki.signers["p256"].identity),
            sign(MESSAGE, pki.signers["p256"].identity, opaque=True)]


def _check(message: bytes, pki: Pki) -> None:
    try:
        result = verify(message, anchors=[pki.root])
    except SMIMEError as e:
        error = e
    else:
        assert isinstance(result, VerifyResult)
        assert result.ok or result.code != "ok"
        return
    assert error.code in {"malformed", "not-smime", "unsupported"}, error.code
    assert error.reason


@SETTINGS
@given(data=st.data())
def test_mutated_mime_never_raises_anything_else(pki: Pki, samples: list[bytes],
                                                 data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(samples))
    message = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(message) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if action == "flip":
            message[pos] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del message[pos:]
            if not message:
                message = bytearray(b"x")
        elif action == "insert":
            message[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif len(message) > 1:
            del message[pos]
    _check(bytes(message), pki)


@SETTINGS
@given(data=st.data())
def test_mutated_der_never_raises_anything_else(pki: Pki, samples: list[bytes],
                                                data: st.DataObject) -> None:
    """Mutations inside the CMS structure itself (re-framed as valid base64)."""
    original = data.draw(st.sampled_from(samples))
    head, _, body = original.partition(b"\r\n\r\n")
    opaque = b"pkcs7-mime" in head
    if opaque:
        cms = base64.b64decode(body)
    else:
        b64 = body.split(b"Signature\r\n\r\n", 1)[1].split(b"--", 1)[0]
        cms = base64.b64decode(b64)
    mutated = bytearray(cms)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "length"]))
        if action == "flip":
            mutated[pos] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del mutated[max(pos, 1):]
        else:  # a huge or indefinite length where a length octet may be
            mutated[pos:pos + 1] = data.draw(st.sampled_from([b"\x84\xff\xff\xff\xff",
                                                              b"\x80", b"\x89" + b"\xff" * 9]))
    encoded = base64.encodebytes(bytes(mutated)).replace(b"\n", b"\r\n")
    if opaque:
        message = head + b"\r\n\r\n" + encoded
    else:
        b64 = body.split(b"Signature\r\n\r\n", 1)[1].split(b"--", 1)[0]
        message = original.replace(b64, encoded)
    _check(message, pki)
