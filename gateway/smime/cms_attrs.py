"""Reading the signed attributes of a CMS SignerInfo (RFC 5652 §5.3, §11) from untrusted DER.

    SignedAttributes ::= SET SIZE (1..MAX) OF Attribute
    Attribute ::= SEQUENCE { attrType OBJECT IDENTIFIER, attrValues SET OF AttributeValue }

Every signed message has five or so of them, and building an asn1crypto object per field
cost a tenth of a verification. So `read_attributes` walks them with asn1crypto's own
TLV reader (`asn1crypto.parser`, which decodes every tag and length, definite or not):
this module only checks the shape above. `read_attributes_spec` does the same through
asn1crypto's schema classes; it is the specification, and the tests hold the fast reader
to it on generated and mangled input: both raise, or both give the same pairs, with two
deliberate differences. The fast reader checks the shape of every Attribute (SHAPE:
the schema classes let fields after attrValues, or an attrValues that is not a SET of a
type nobody reads, pass unseen; RFC 5652 §5.3 allows neither), and it keeps a wanted
value of any tag (asn1crypto's Any cannot hold a constructed context-class one and fails
the whole SignedData), leaving the value's decoder to refuse it precisely or, for advice
like SMIMECapabilities, to ignore it.

Values are kept (as DER TLVs) only for the attribute types the caller wants: the others
may hold anything, e.g. SMIMEEncryptionKeyPreference's [0] IMPLICIT choice (RFC 8551
§2.5.3), which asn1crypto's Any cannot even hold.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from asn1crypto import core, parser

Attributes = tuple[tuple[str, tuple[bytes, ...]], ...]  # (dotted type, values' DER)

_SET, _OID = 17, 6
_UNIVERSAL, _PRIMITIVE, _CONSTRUCTED = 0, 0, 1
_FAST_VALUES = 16  # values split by slicing; past that the linear spec reader takes over
SHAPE = "an Attribute is not SEQUENCE { OBJECT IDENTIFIER, SET }"


class _RawAttributes(core.SetOf):  # type: ignore[misc]
    """SET OF SEQUENCE: asn1crypto checks each tag; the SEQUENCEs stay unparsed."""

    _child_spec = core.Sequence


class _LenientAttribute(core.Sequence):  # type: ignore[misc]
    """Attribute with its values kept undecoded."""

    _fields: ClassVar[list[Any]] = [("type", core.ObjectIdentifier),
                                    ("values", core.SetOf, {"spec": core.Any})]


class _LenientAttributes(core.SetOf):  # type: ignore[misc]
    _child_spec = _LenientAttribute


def read_attributes_spec(signed_attrs: bytes, wanted: frozenset[str]) -> Attributes:
    """The specification: asn1crypto's schema classes, one object per field."""
    out: list[tuple[str, tuple[bytes, ...]]] = []
    for attr in _LenientAttributes.load(signed_attrs, strict=True):
        oid = attr["type"].dotted
        values = tuple(v.dump() for v in attr["values"]) if oid in wanted else ()
        out.append((oid, values))
    return tuple(out)


def read_attributes(signed_attrs: bytes, wanted: frozenset[str]) -> Attributes:
    """signed_attrs (a SET OF Attribute, DER) as (type, values) pairs, values only for
    the types in wanted. ValueError (or another asn1crypto parse error) when malformed."""
    out: list[tuple[str, tuple[bytes, ...]]] = []
    for attr in _RawAttributes.load(signed_attrs, strict=True):
        body = attr.contents
        cls, method, tag, header, oid_body, trailer = parser.parse(body)
        if (cls, method, tag) != (_UNIVERSAL, _PRIMITIVE, _OID):
            raise ValueError("an attrType is not an OBJECT IDENTIFIER")
        oid = _dotted(header + oid_body)
        rest = body[len(header) + len(oid_body) + len(trailer):]
        try:
            values_tlv = parser.parse(rest, strict=True)  # strict: no field after the SET
        except ValueError as e:
            raise ValueError(f"{SHAPE}: {e}") from None
        if values_tlv[:3] != (_UNIVERSAL, _CONSTRUCTED, _SET):
            raise ValueError(f"{SHAPE}: attrValues is not a SET")
        out.append((oid, _values(rest, values_tlv[4]) if oid in wanted else ()))
    return tuple(out)


def _values(set_tlv: bytes, contents: bytes) -> tuple[bytes, ...]:
    """The TLVs of a SET's elements. Slicing is quadratic in their number, so a SET with
    many (never seen in mail: these attributes are single-valued) goes to the spec's
    linear reader instead."""
    values: list[bytes] = []
    pos = 0
    while pos < len(contents):
        if len(values) == _FAST_VALUES:
            return tuple(v.dump() for v in core.SetOf.load(set_tlv, spec=core.Any,
                                                           strict=True))
        _, _, _, header, body, trailer = parser.parse(contents[pos:])
        size = len(header) + len(body) + len(trailer)
        tlv = contents[pos:pos + size]
        # What the spec gives: asn1crypto re-encodes an indefinite length on dump().
        values.append(core.Any.load(tlv).dump() if header[-1:] == b"\x80" else tlv)
        pos += size
    return tuple(values)


@functools.lru_cache(maxsize=256)
def _dotted(encoded: bytes) -> str:
    """A few OIDs recur in every message: decode each encoding once."""
    return str(core.ObjectIdentifier.load(encoded, strict=True).dotted)
