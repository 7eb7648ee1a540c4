"""The lazy helpers around the scanner: transfer and charset decoding with a budget,
RFC 2047 encoded-words, RFC 5322 addresses."""

from __future__ import annotations

import base64
import email
import email.policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.mime.addresses import Address, addresses, parse_addresses
from gateway.mime.decode import decoded_bytes, decoded_text
from gateway.mime.rfc2047 import decode_words
from gateway.mime.scan import scan
from gateway.mime.scanned import MimeError, Part


def part_of(headers: str, body: bytes) -> Part:
    return scan(headers.replace("\n", "\r\n").encode() + b"\r\n" + body).root


# --- transfer and charset decoding ---------------------------------------------------------


def test_base64_with_budget() -> None:
    content = "Grüße, München! ".encode() * 500
    body = base64.encodebytes(content).replace(b"\n", b"\r\n")
    part = part_of("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n",
                   body)
    assert decoded_bytes(part, 1 << 20) == (content, True)
    cut = decoded_bytes(part, 1000)
    assert cut == (content[:1000], False)
    text = decoded_text(part, 1000)
    assert not text.complete
    assert content.decode().startswith(text.text)
    assert "\ufffd" not in text.text  # a character cut in half is dropped, not garbled


@pytest.mark.parametrize("body", [b"Zm9v*YmFy\r\n", b"Zm9vY\r\n", b"Zm9v=Zm9v\r\n"])
def test_bad_base64_is_a_precise_error(body: bytes) -> None:
    part = part_of("Content-Transfer-Encoding: base64\n", body)
    with pytest.raises(MimeError) as info:
        decoded_bytes(part, 1000)
    assert info.value.status == "5.6.0"
    assert "bad base64 in part 0" in info.value.reason


def test_quoted_printable() -> None:
    part = part_of("Content-Type: text/plain; charset=iso-8859-1\n"
                   "Content-Transfer-Encoding: Quoted-Printable\n",
                   b"caf=E9 soft=\r\nbreak =3D sign=\r\n")
    assert decoded_text(part, 100) == ("café softbreak = sign", True)
    assert decoded_bytes(part, 4) == (b"caf\xe9", False)


def test_identity_encodings_and_ascii_fallback() -> None:
    part = part_of("Content-Transfer-Encoding: 8bit\n", "naïve\r\n".encode())
    assert decoded_text(part, 100) == ("naïve\r\n", True)  # us-ascii label, UTF-8 octets


def test_unsupported_encoding_and_charset_are_5_6_1() -> None:
    with pytest.raises(MimeError) as info:
        decoded_bytes(part_of("Content-Transfer-Encoding: x-uuencode\n", b"begin"), 10)
    assert info.value.status == "5.6.1"
    with pytest.raises(MimeError) as info:
        decoded_text(part_of("Content-Type: text/plain; charset=x-klingon\n", b"x"), 10)
    assert (info.value.status, info.value.reason) == (
        "5.6.1", "unknown charset 'x-klingon' in part 0 (the message)")
    composite = scan(b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\nx\r\n--B--")
    with pytest.raises(ValueError, match="composite"):
        decoded_bytes(composite.root, 10)


# --- RFC 2047 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("plain text", "plain text"),
        ("=?ISO-8859-1?Q?a?=", "a"),  # RFC 2047 §8 examples
        ("=?ISO-8859-1?Q?a?= b", "a b"),
        ("=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=", "ab"),
        ("=?ISO-8859-1?Q?a?=  \t =?ISO-8859-1?Q?b?=", "ab"),
        ("=?ISO-8859-1?Q?a_b?=", "a b"),
        ("=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=", "a b"),
        ("=?UTF-8?B?4pyI?= =?UTF-8?B?IFg=?=", "✈ X"),
        ("=?utf-8?b?4g==?= =?utf-8?b?nIg=?=", "✈"),  # a character split across two words
        ("=?US-ASCII*EN?Q?Keith_Moore?=", "Keith Moore"),  # RFC 2231 §5 language
        ("=?x-unknown?Q?a?=", "=?x-unknown?Q?a?="),  # left as it was (§6.3)
        ("=?utf-8?X?abc?=", "=?utf-8?X?abc?="),
        ("=?utf-8?B?####?=", "=?utf-8?B?####?="),
        ("=?utf-8?q?a b?=", "=?utf-8?q?a b?="),  # whitespace inside: not a word
        ("x=?utf-8?q?=C3=A9?=y", "xéy"),
    ],
)
def test_rfc2047(raw: str, decoded: str) -> None:
    assert decode_words(raw) == decoded


@given(st.text(alphabet="=?QqBb_ab\t 8-u", max_size=80))
def test_rfc2047_never_fails(raw: str) -> None:
    assert isinstance(decode_words(raw), str)


@pytest.mark.timeout(60)
def test_rfc2047_stays_linear_on_hostile_input() -> None:
    # A hang guard, not a speed test: a quadratic scan of these would run for hours.
    hostile = ["=?a?q?" * 50_000, "=?" * 100_000, "=?utf-8?q?" + "x" * 200_000]
    for value in hostile:
        assert decode_words(value) == value


# --- addresses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@b.example", [("", "a", "b.example", None)]),
        ('"Doe, John" <john@x.example>, Mary Smith <mary@x.example>',
         [("Doe, John", "john", "x.example", None), ("Mary Smith", "mary", "x.example", None)]),
        ('"john doe"@x.example', [("", "john doe", "x.example", None)]),
        ("A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;",
         [("Ed Jones", "c", "a.test", "A Group"), ("", "joe", "where.test", "A Group"),
          ("John", "jdoe", "one.test", "A Group")]),  # RFC 5322 Appendix A.1.3
        ("Undisclosed recipients:;", []),
        ("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
         [("Pete", "pete", "silly.test", None)]),  # RFC 5322 Appendix A.5
        ("=?utf-8?q?J=C3=B6rg?= <j@x.de>", [("Jörg", "j", "x.de", None)]),
        ("a@[192.0.2.1]", [("", "a", "[192.0.2.1]", None)]),
        ("Müller <müller@bücher.example>", [("Müller", "müller", "bücher.example", None)]),
        (", a@b,,", [("", "a", "b", None)]),
    ],
)
def test_addresses(value: str, expected: list[tuple[str, str, str, str | None]]) -> None:
    got = [(a.display_name, a.local_part, a.domain, a.group) for a in parse_addresses(value)]
    assert got == expected


@pytest.mark.parametrize("value", ["john", "a@", "<a@b", '"open@x', "a@[1.2", "x <a@b> y",
                                   "@b"])
def test_bad_addresses(value: str) -> None:
    with pytest.raises(MimeError) as info:
        parse_addresses(value)
    assert info.value.status == "5.6.0"


def test_addr_spec_quotes_when_needed() -> None:
    assert Address("", "john doe", "x").addr_spec == '"john doe"@x'
    assert Address("", 'a"b', "x").addr_spec == '"a\\"b"@x'
    assert Address("", "a.b", "x").addr_spec == "a.b@x"


def test_addresses_of_a_message_match_email() -> None:
    data = (b"From: Ann <ann@a.test>\r\nTo: grp: b@b.test, \"c c\"@c.test;, d@d.test\r\n"
            b"Cc: E <e@e.test>\r\nBcc: hidden@x.test\r\n\r\n")
    ours = [(a.display_name, a.local_part, a.domain) for a in addresses(scan(data).root)]
    msg = email.message_from_bytes(data, policy=email.policy.default)
    theirs = [(a.display_name, a.username, a.domain)
              for name in ("from", "to", "cc") for a in msg[name].addresses]
    assert ours == theirs
