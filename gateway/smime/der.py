"""DER building by concatenation (X.690 §8, §10), for the envelope hot path.

Only BUILDING lives here: every value is one we made ourselves. Untrusted input is parsed
with asn1crypto, never with these helpers. asn1crypto's encoder costs tens of
microseconds per structure; joining pre-encoded pieces costs well under one.
"""

from __future__ import annotations

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
OCTET_STRING = 0x04
BIT_STRING = 0x03
OID = 0x06
NULL = b"\x05\x00"


# Short lengths looked up, not built: an envelope and a signature take ~20 lengths each.
_SHORT = tuple(bytes((n,)) for n in range(0x80))
_ONE = tuple(bytes((0x81, n)) for n in range(0x100))


def length(n: int) -> bytes:
    """X.690 §10.1: definite form, minimum number of octets."""
    if n < 0x80:
        return _SHORT[n]
    if n < 0x100:
        return _ONE[n]
    if n < 0x10000:
        return b"\x82" + n.to_bytes(2, "big")
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + length(len(content)) + content


def seq(*parts: bytes) -> bytes:
    content = b"".join(parts)
    return b"\x30" + length(len(content)) + content


def set_of(parts: list[bytes]) -> bytes:
    """DER SET OF: elements sorted by their encodings (X.690 §11.6)."""
    content = b"".join(sorted(parts))
    return b"\x31" + length(len(content)) + content


def octets(value: bytes) -> bytes:
    return b"\x04" + length(len(value)) + value


def integer(value: int) -> bytes:
    """A non-negative INTEGER, with the leading zero octet a set top bit needs."""
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return tlv(INTEGER, body)


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return tlv(OID, bytes(body))


def explicit(number: int, content: bytes) -> bytes:
    """[number] EXPLICIT: a constructed context tag around the whole encoding."""
    return tlv(0xA0 | number, content)


def implicit_primitive(number: int, content: bytes) -> bytes:
    """[number] IMPLICIT on a primitive type (e.g. OCTET STRING)."""
    return tlv(0x80 | number, content)


def retag(encoding: bytes, tag: int) -> bytes:
    """The same TLV under another tag octet (IMPLICIT tagging of a built structure)."""
    return bytes((tag,)) + encoding[1:]


def algorithm(dotted: str, parameters: bytes | None = None) -> bytes:
    """AlgorithmIdentifier; parameters None means absent (RFC 5652 §10.1)."""
    return seq(oid(dotted), parameters or b"")
