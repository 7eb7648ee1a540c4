"""MIME charset names (RFC 2978 registry, RFC 2046 §4.1.2) to Python text codecs.

A charset name comes from untrusted input: it may hold surrogates, name a bytes-to-bytes
codec ("hex", "base64") or one that raises whatever the error handler ("idna",
"undefined"). Only names that resolve to a plain text codec pass.
"""

from __future__ import annotations

import codecs

_REFUSED = frozenset({"idna", "punycode", "undefined", "unicode_escape",
                      "raw_unicode_escape", "mbcs", "oem"})


def text_codec(name: str) -> str | None:
    """The Python codec name for a MIME charset, or None when it is not a usable one."""
    if not name.isascii() or not name or len(name) > 64:
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED:
        return None
    return info.name


def decode(octets: bytes, codec: str, *, final: bool = True) -> str:
    """octets in a codec from text_codec, bad sequences replaced; an incomplete one at
    the end dropped unless final."""
    decoder = codecs.getincrementaldecoder(codec)("replace")
    try:
        return str(decoder.decode(octets, final=final))
    except (UnicodeError, ValueError):  # a codec that fails despite "replace"
        return octets.decode("latin-1")
