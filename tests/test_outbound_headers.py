"""Outbound header hygiene: `[policy] strip_headers` fields never leave the gateway.

strip_fields as a table (folded fields, case, a body line that looks like a field), then
the real job (demo PKI, shared-memory cache, real S/MIME): the field is gone from the
outer headers and from what the recipient decrypts, and policy still saw it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.lookup._cache_py import CertCache
from gateway.outbound.headers import strip_fields
from gateway.outbound.job import process_with
from gateway.smime import decrypt, detect
from tests.test_outbound_job import (  # noqa: F401  (pytest fixtures by name)
    bob_ring,
    cache_fixture,
    counts,
    job,
    pki_fixture,
    state,
)

BODY = b"\r\nX-Originating-IP: [10.0.0.9] (in the body: kept)\r\n"


@pytest.mark.parametrize(("head", "names", "expected", "n"), [
    (b"A: 1\r\nX-Originating-IP: [10.1.2.3]\r\nB: 2\r\n", ("X-Originating-IP",),
     b"A: 1\r\nB: 2\r\n", 1),
    (b"x-originating-ip : [10.1.2.3]\r\n\t more\r\nB: 2\r\n", ("X-Originating-IP",),
     b"B: 2\r\n", 1),
    (b"Received: a\r\n b\r\nReceived: c\r\nFrom: x\r\n", ("received", "x-no"),
     b"From: x\r\n", 2),
    (b"A: 1\r\nB: 2\r\n", (), b"A: 1\r\nB: 2\r\n", 0),
    (b"A: 1\r\n X-Originating-IP: folded into A\r\n", ("X-Originating-IP",),
     b"A: 1\r\n X-Originating-IP: folded into A\r\n", 0),
])
def test_strip_fields(head: bytes, names: tuple[str, ...], expected: bytes, n: int) -> None:
    assert strip_fields(head + BODY, names) == (expected + BODY, n)


def test_header_only_message() -> None:
    assert strip_fields(b"X-A: 1\r\nB: 2\r\n", ("x-a",)) == (b"B: 2\r\n", 1)


def leaky() -> bytes:
    return (b"From: alice@alpha.test\r\nTo: bob@beta.test\r\nSubject: Hi\r\n"
            b"X-Originating-IP: [10.9.8.7]\r\nMessage-ID: <leak@alpha.test>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHi Bob.\r\n")


def test_default_strips_x_originating_ip_outside_and_inside(pki: Path,
                                                             cache: CertCache) -> None:
    s = state(pki, cache, [{"name": "internal", "header": {"X-Originating-IP": "^\\[10\\."},
                            "cipher": "aes256-cbc"}])
    r = process_with(s, job("bob@beta.test", data=leaky()))
    (out,) = r.outputs
    assert b"10.9.8.7" not in out.data  # outer headers
    inner = decrypt(out.data, bob_ring(pki))
    assert detect(inner).layers == ("signed",)
    assert b"10.9.8.7" not in inner  # nor what bob reads
    assert b"Subject: Hi" in out.data
    # policy saw the field before it went: the header rule chose the cipher
    assert counts(r)[("encrypted", ("aes256-cbc",))] == 1


def test_signed_only_and_an_empty_list(pki: Path, cache: CertCache) -> None:
    r = process_with(state(pki, cache), job("dave@gamma.test", data=leaky()))
    assert detect(r.outputs[0].data).layers == ("signed",)
    assert b"X-Originating-IP" not in r.outputs[0].data
    r = process_with(state(pki, cache, strip_headers=()), job("dave@gamma.test",
                                                              data=leaky()))
    assert b"X-Originating-IP: [10.9.8.7]" in r.outputs[0].data
