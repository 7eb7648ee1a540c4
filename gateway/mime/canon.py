"""Canonical CRLF bytes and 8-bit/binary facts for signing: native when built, else the twin."""

from __future__ import annotations

from collections.abc import Callable

from gateway import native
from gateway.mime import _canon_py
from gateway.mime._canon_py import ContentFacts

__all__ = ["IMPLEMENTATION", "ContentFacts", "canonicalize", "content_facts"]

_native = native.load("canon")

canonicalize: Callable[[bytes], bytes]
content_facts: Callable[[bytes], ContentFacts]

if _native is not None:
    canonicalize = _native.canonicalize
    content_facts = _native.content_facts
    IMPLEMENTATION = "native"
else:
    canonicalize = _canon_py.canonicalize
    content_facts = _canon_py.content_facts
    IMPLEMENTATION = "python"
