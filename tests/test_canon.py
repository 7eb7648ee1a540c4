"""CRLF canonicalisation and content facts: native and twin give the same answers."""

from __future__ import annotations

from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.mime import canon
from tests.impls import implementations

pytestmark = pytest.mark.native
IMPLS = implementations("canon", "gateway.mime._canon_py")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", b""),
        (b"no newline", b"no newline"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"\n\n", b"\r\n\r\n"),
        (b"mixed\r\nbare\nlone\rcr\n", b"mixed\r\nbare\r\nlone\rcr\r\n"),
        ("8bit \u00e9\n".encode(), "8bit \u00e9\r\n".encode()),
    ],
)
def test_canonicalize(impl: ModuleType, raw: bytes, expected: bytes) -> None:
    assert impl.canonicalize(raw) == expected


@pytest.mark.parametrize("impl", IMPLS)
def test_facts_of_a_typical_body(impl: ModuleType) -> None:
    facts = impl.content_facts(b"From me\r\ntrailing \r\n\xc3\xa9\r\n")
    assert facts.has_8bit
    assert not facts.has_nul
    assert not facts.has_bare_lf
    assert not facts.has_bare_cr
    assert facts.trailing_whitespace
    assert facts.from_line
    assert facts.max_line_length == len(b"trailing ")


@pytest.mark.parametrize("impl", IMPLS)
def test_facts_binary(impl: ModuleType) -> None:
    facts = impl.content_facts(b"a\x00b\rc\n")
    assert facts.has_nul
    assert facts.has_bare_cr
    assert facts.has_bare_lf
    assert not facts.has_8bit


@given(st.binary(max_size=2000))
def test_native_and_twin_agree(data: bytes) -> None:
    results = {(impl.values[0].canonicalize(data), impl.values[0].content_facts(data))
               for impl in IMPLS}
    assert len(results) == 1


@given(st.binary(max_size=500))
def test_canonical_form_is_stable(data: bytes) -> None:
    once = canon.canonicalize(data)
    assert canon.canonicalize(once) == once
    assert not canon.content_facts(once).has_bare_lf
