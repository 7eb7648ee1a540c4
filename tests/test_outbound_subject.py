"""Subject keywords removed where policy saw them: literal, inside RFC 2047 encoded-words
(Q, B, runs of adjacent words, any charset), or spanning both (gateway/outbound/subject.py).
Expected results are checked with the stdlib `email.header` decoder and with the
decoder policy matches on (gateway/mime/rfc2047.py), never with the code under test."""

from __future__ import annotations

import binascii
import re
from email.charset import BASE64, QP, Charset
from email.header import Header, decode_header, make_header

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.mime.rfc2047 import decode_words, encode_words
from gateway.mime.scanned import unfold
from gateway.outbound.subject import strip_keywords

HEAD = b"From: alice@alpha.test\r\nTo: bob@beta.test\r\n"
TAIL = (b"Message-ID: <1@alpha.test>\r\nMIME-Version: 1.0\r\n\r\n"
        b"[encrypt] in the body stays.\r\nSubject: [encrypt] not a header here\r\n")


def message(subject: bytes) -> bytes:
    return HEAD + b"Subject:" + subject + b"\r\n" + TAIL


def split(out: bytes) -> tuple[bytes, bytes]:
    """(the Subject value as written, everything else), asserting the rest is intact."""
    assert out.startswith(HEAD + b"Subject:")
    value, sep, rest = out[len(HEAD) + 8 :].partition(b"\r\nMessage-ID:")
    assert sep
    assert b"\r\nMessage-ID:" + rest == b"\r\n" + TAIL
    return value, rest


def policy_view(value: bytes) -> str:
    """The Subject as policy decodes it."""
    return decode_words(unfold(value))


def stdlib_view(value: bytes) -> str:
    return str(make_header(decode_header(value.decode("ascii").replace("\r\n", ""))))


def check_shape(out: bytes) -> None:
    """Lines of the Subject ≤ 78 and no line of only whitespace in the header block."""
    value, _ = split(out)
    lines = (b"Subject:" + value).split(b"\r\n")
    assert all(len(line) <= 78 for line in lines), lines
    assert all(line.strip(b" \t") for line in lines[1:]), lines
    head = out.split(b"\r\n\r\n", 1)[0]
    assert all(line.strip(b" \t") for line in head.split(b"\r\n")), head


@pytest.mark.parametrize(("subject", "expected"), [
    (b" [encrypt] Salaries 2027", "Salaries 2027"),
    (b" Salaries [ENCRYPT] 2027", "Salaries 2027"),
    (b" Salaries 2027 [Encrypt]", "Salaries 2027"),
    (b" =?UTF-8?Q?=5Bencrypt=5D_Gehalt?=", "Gehalt"),
    (b" =?utf-8?q?=5BEnCrYpT=5D_Geh=C3=A4lter?=", "Gehälter"),
    (b" =?UTF-8?B?W2VuY3J5cHRdIEdlaMOkbHRlcg==?=", "Gehälter"),
    (b" =?ISO-8859-1?Q?Geh=E4lter_=5Bencrypt=5D?=", "Gehälter"),
    (b" =?iso-8859-1?b?W0VOQ1JZUFRdIEdlaORsdGVy?=", "Gehälter"),
    (b" =?UTF-8?Q?=5Benc?= =?UTF-8?Q?rypt=5D_Gehalt?=", "Gehalt"),  # split over two words
    (b" =?UTF-8?B?W2Vu?=\r\n =?ISO-8859-1?Q?crypt=5D_Geh=E4lter?=", "Gehälter"),  # and a fold
    (b" abc =?UTF-8?Q?=5Bencrypt=5D?= def", "abc def"),  # a whole word goes
    (b" =?UTF-8?Q?abc?= [encrypt] =?UTF-8?Q?def?=", "abc def"),  # the space survives §6.2
    (b" [encr=?UTF-8?Q?ypt=5D?= Gehalt", "Gehalt"),  # literal and encoded
    (b" =?UTF-8?Q?=5Bencr?=ypt] Gehalt", "Gehalt"),
    (b" Re: Gehalt\r\n [encrypt]", "Re: Gehalt"),
    (b"\r\n [encrypt] Gehalt", "Gehalt"),
    (b" [encrypt]", ""),
    (b" =?UTF-8?Q?=5Bencrypt=5D?=", ""),
    (b" [enc[encrypt]rypt] x", "x"),  # what one removal joins goes too
    (b" =?[encrypt]UTF-8?Q?x?= y", "=?UTF-8?Q?x?= y"),  # the removal makes a word: encoded
])
def test_keyword_goes_wherever_it_was_written(subject: bytes, expected: str) -> None:
    assert "[encrypt]" in policy_view(subject).lower()
    out, found = strip_keywords(message(subject), ("[encrypt]",))
    assert found
    value, _ = split(out)
    assert policy_view(value) == expected
    assert stdlib_view(value).strip() == expected
    check_shape(out)


def test_unchanged_runs_and_literal_text_keep_their_bytes() -> None:
    subject = (b" =?ISO-8859-1?Q?Geh=E4lter?= [encrypt] und\r\n =?UTF-8?Q?Boni_=E2=82=AC?=")
    out, found = strip_keywords(message(subject), ("[encrypt]",))
    assert found
    value, _ = split(out)
    assert value == b" =?ISO-8859-1?Q?Geh=E4lter?= und\r\n =?UTF-8?Q?Boni_=E2=82=AC?="


def test_only_the_changed_run_is_written_anew() -> None:
    subject = b" plain =?UTF-8?Q?=5Bsecure=5D_x?= more"
    out, _ = strip_keywords(message(subject), ("[secure]",))
    value, _ = split(out)
    assert value == b" plain =?UTF-8?Q?x?= more"


def test_multiple_keywords_any_mix() -> None:
    subject = b" [SECURE] =?UTF-8?Q?Gehalt_=5Bencrypt=5D?= 2027"
    out, found = strip_keywords(message(subject), ("[encrypt]", "[secure]"))
    assert found
    assert policy_view(split(out)[0]) == "Gehalt 2027"


def test_a_keyword_not_there_is_reported() -> None:
    out, found = strip_keywords(message(b" [encrypt] Gehalt"), ("[encrypt]", "[secure]"))
    assert not found
    assert policy_view(split(out)[0]) == "Gehalt"


@pytest.mark.parametrize("subject", [
    b" =?x-klingon?Q?=5Bencrypt=5D?= Gehalt",  # unknown charset
    b" =?UTF-8?B?W2VuY3J5cHRd#?= Gehalt",  # bad base64
    b" =?UTF-8?X?=5Bencrypt=5D?= Gehalt",  # no such encoding
])
def test_undecodable_words_are_left_and_not_found(subject: bytes) -> None:
    msg = message(subject)
    assert strip_keywords(msg, ("[encrypt]",)) == (msg, False)


def test_no_subject_or_no_keywords() -> None:
    msg = HEAD + TAIL
    assert strip_keywords(msg, ("[encrypt]",)) == (msg, False)
    assert strip_keywords(message(b" [encrypt] x"), ()) == (message(b" [encrypt] x"), True)


def test_every_subject_field_is_stripped_and_the_body_never() -> None:
    msg = HEAD + b"Subject: [encrypt] one\r\nSubject: =?UTF-8?Q?=5Bencrypt=5D_two?=\r\n" + TAIL
    out, found = strip_keywords(msg, ("[encrypt]",))
    assert found
    assert out == HEAD + b"Subject: one\r\nSubject: =?UTF-8?Q?two?=\r\n" + TAIL


def test_raw_utf8_subject_rfc6532() -> None:
    msg = message(" Gehälter [encrypt] 2027".encode())
    out, found = strip_keywords(msg, ("[encrypt]",))
    assert found
    assert split(out)[0] == " Gehälter 2027".encode()


def test_long_runs_fold_at_78() -> None:
    text = "Gehälter und Boni für das Jahr 2027, vertraulich " * 4
    words = " ".join(encode_words("[encrypt] " + text, 60))
    out, found = strip_keywords(message(b" " + words.encode()), ("[encrypt]",))
    assert found
    assert policy_view(split(out)[0]) == text.strip()
    check_shape(out)


def test_a_run_after_a_long_line_folds_before_it() -> None:
    subject = b" " + b"x" * 60 + b" =?UTF-8?Q?=5Bencrypt=5D_Geh=C3=A4lter_f=C3=BCr_2027?= tail"
    out, found = strip_keywords(message(subject), ("[encrypt]",))
    assert found
    value = split(out)[0]
    assert policy_view(value) == "x" * 60 + " Gehälter für 2027 tail"
    check_shape(out)


@given(text=st.text(max_size=200), first=st.integers(24, 75))
def test_encode_words_respects_the_limits(text: str, first: int) -> None:
    words = encode_words(text, first, 75)
    assert len(words[0] if words else "") <= first
    assert all(len(w) <= 75 for w in words)
    assert decode_words(" ".join(words)) == text


# --- property: random subjects, encoded by the stdlib ---------------------------------------------

KEYWORDS = ("[encrypt]", "[secure]", "vertraulich")
TEXT = st.text(st.characters(whitelist_categories=("L", "N", "P", "S", "Zs"),
                             blacklist_characters="\x85"), max_size=60)


def normal(text: str) -> str:
    return " ".join(text.split())


def cased(keyword: str, flips: list[bool]) -> str:
    padded = flips + [False] * len(keyword)
    return "".join(c.upper() if f else c for c, f in zip(keyword, padded, strict=False))


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(TEXT, min_size=2, max_size=4), keyword=st.sampled_from(KEYWORDS),
       flips=st.lists(st.booleans(), max_size=12), encoding=st.sampled_from(["Q", "B"]),
       charset=st.sampled_from(["utf-8", "iso-8859-1"]), literal=st.booleans())
def test_property_stdlib_encoded_subjects(parts: list[str], keyword: str, flips: list[bool],
                                          encoding: str, charset: str, literal: bool) -> None:
    text = cased(keyword, flips).join(parts)
    cs = Charset(charset)
    cs.header_encoding = QP if encoding == "Q" else BASE64
    try:
        text.encode(cs.input_codec or "utf-8")
    except UnicodeEncodeError:
        assume(False)
    header = Header(header_name="Subject", maxlinelen=78)
    if literal and parts[0].isascii() and "=?" not in parts[0]:
        # an ASCII start written as it is, the rest encoded
        header.append(parts[0], "us-ascii")
        header.append(text[len(parts[0]) :], cs)
    else:
        header.append(text, cs)
    value = (" " + header.encode(linesep="\r\n")).encode("ascii")
    before = stdlib_view(value)
    assume(keyword in policy_view(value).lower() and keyword in before.lower())
    rest = re.sub(re.escape(keyword), "", before, flags=re.IGNORECASE)
    assume(keyword not in rest.lower())

    out, found = strip_keywords(message(value), (keyword,))
    assert found
    new = split(out)[0]
    after = stdlib_view(new)
    assert keyword not in after.lower()
    assert keyword not in policy_view(new).lower()
    assert normal(after) == normal(rest)
    check_shape(out)


@pytest.mark.timeout(60)
def test_hostile_subjects_stay_near_linear() -> None:
    # A hang guard, not a speed test: one stack pass per keyword set, not one per nesting.
    nested = b""
    for _ in range(3000):
        nested = b"[enc[sec" + nested + b"ure]rypt]"
    runs = b" x ".join([b"=?UTF-8?Q?=5Bencrypt=5D_a?="] * 5000)
    for subject, keywords, left in [
        (nested, ("[encrypt]", "[secure]"), ""),
        (b"[encrypt]" * 20000, ("[encrypt]",), ""),
        (runs, ("[encrypt]",), " x ".join(["a"] * 5000)),
        (b"=?" * 50000 + b" [encrypt]", ("[encrypt]",), "=?" * 50000),
    ]:
        out, found = strip_keywords(message(b" " + subject), keywords)
        assert found
        assert policy_view(split(out)[0]) == left


# --- property: hand-made mixes of literal text, encoded-words, folds and broken words -------------

def q_word(text: str, charset: str) -> str:
    octets = text.encode(charset)
    return f"=?{charset}?Q?" + "".join(
        chr(o) if chr(o).isalnum() and o < 128 else f"={o:02X}" for o in octets) + "?="


def b_word(text: str, charset: str) -> str:
    payload = binascii.b2a_base64(text.encode(charset), newline=False).decode()
    return f"=?{charset}?B?{payload}?="


PIECES = ["[enc", "rypt]", "[encrypt]", "[ENCRYPT]", "a", "b c", "ä", "€", "x=?y", "=?", "?="]
TOKEN = st.one_of(
    st.sampled_from(PIECES),
    st.builds(q_word, st.sampled_from(PIECES[:8]), st.sampled_from(["utf-8", "UTF-8"])),
    st.builds(b_word, st.sampled_from(PIECES[:8]), st.sampled_from(["utf-8", "utf-16"])),
    st.builds(q_word, st.sampled_from(PIECES[:7]), st.just("iso-8859-1")),
    st.just("=?x-bad?Q?=5Bencrypt=5D?="),
)
GAP = st.sampled_from(["", " ", "  ", "\t", "\r\n ", "\r\n\t", " \r\n "])


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(st.tuples(TOKEN, GAP), min_size=1, max_size=8))
def test_property_mixed_subjects(tokens: list[tuple[str, str]]) -> None:
    value = (" " + "".join(t + g for t, g in tokens).rstrip(" \t\r\n")).encode()
    before = policy_view(value)
    rest = before
    while "[encrypt]" in rest.lower():
        rest = re.sub(re.escape("[encrypt]"), "", rest, flags=re.IGNORECASE)

    out, found = strip_keywords(message(value), ("[encrypt]",))
    new = split(out)[0]
    assert found == ("[encrypt]" in before.lower())
    after = policy_view(new)
    assert "[encrypt]" not in after.lower()
    assert normal(after) == normal(rest)
    if not found:
        assert new == value
    lines = new.split(b"\r\n")
    assert all(line[:1] in (b" ", b"\t") and line.strip(b" \t") for line in lines[1:]), lines
