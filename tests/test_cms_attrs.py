"""The fast signed-attribute reader (gateway/smime/cms_attrs.py) against its specification,
the asn1crypto schema reader: on generated attribute sets, well-formed and mangled, both
raise a parse error or both give the same (type, values) pairs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.smime import der
from gateway.smime.cms_attrs import SHAPE, Attributes, read_attributes, read_attributes_spec
from gateway.smime.cms_signed import ATTR_CONTENT_TYPE, ATTR_MESSAGE_DIGEST, ATTR_SIGNING_TIME
from gateway.smime.cms_signed_read import _PARSE_ERRORS, READ_ATTRIBUTES

ENC_KEY_PREF = "1.2.840.113549.1.9.16.2.11"
MS_ENC_KEY_PREF = "1.3.6.1.4.1.311.16.4"
OIDS = (ATTR_CONTENT_TYPE, ATTR_MESSAGE_DIGEST, ATTR_SIGNING_TIME, ENC_KEY_PREF,
        MS_ENC_KEY_PREF, "1.2.840.113549.1.9.15", "2.5.29.99.1234567")


def outcome(reader: Callable[[bytes, frozenset[str]], Attributes], data: bytes,
            wanted: frozenset[str] = READ_ATTRIBUTES) -> tuple[str, Attributes | str]:
    try:
        return "ok", reader(data, wanted)
    except _PARSE_ERRORS as e:
        return "error", str(e)


def same_as_spec(data: bytes) -> None:
    """Equal outcomes, but for the two differences cms_attrs documents."""
    fast, spec = outcome(read_attributes, data), outcome(read_attributes_spec, data)
    if fast[0] == spec[0] == "error":
        return
    if fast[0] == "error" and spec[0] == "ok":  # a shape the schema classes let pass
        assert str(fast[1]).startswith(SHAPE), (fast, spec)
    elif fast[0] == "ok" and spec[0] == "error":  # a wanted value asn1crypto's Any refuses
        assert "Unknown element" in str(spec[1]), (fast, spec)
    else:
        assert fast == spec


def attribute(oid: str, values: list[bytes]) -> bytes:
    return der.seq(der.oid(oid), der.tlv(der.SET, b"".join(values)))


def attributes(*attrs: bytes) -> bytes:
    return der.tlv(der.SET, b"".join(attrs))


def indefinite(tag: int, content: bytes) -> bytes:
    return bytes((tag, 0x80)) + content + b"\x00\x00"


values = st.one_of(
    st.binary(max_size=40).map(der.octets),
    st.sampled_from(OIDS).map(der.oid),
    st.just(der.tlv(0x17, b"261128170000Z")),  # UTCTime
    st.binary(max_size=20).map(lambda b: der.tlv(0xA0, der.octets(b))),  # [0] constructed
    st.binary(max_size=20).map(lambda b: indefinite(0x30, der.octets(b))),
    st.binary(max_size=12),  # not a TLV at all, or a wrong one
)
an_attribute = st.one_of(
    st.builds(attribute, st.sampled_from(OIDS), st.lists(values, max_size=4)),
    st.builds(lambda o, v: indefinite(0x30, der.oid(o) + indefinite(0x31, b"".join(v))),
              st.sampled_from(OIDS), st.lists(values, max_size=3)),
    st.binary(max_size=16),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(an_attribute, max_size=6))
def test_same_answer_as_the_spec(attrs: list[bytes]) -> None:
    same_as_spec(attributes(*attrs))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.builds(attribute, st.sampled_from(OIDS), st.lists(values, max_size=3)),
                min_size=1, max_size=5), st.data())
def test_same_answer_when_mangled(attrs: list[bytes], data: st.DataObject) -> None:
    good = bytearray(attributes(*attrs))
    at = data.draw(st.integers(0, len(good) - 1))
    how = data.draw(st.sampled_from(("flip", "cut", "insert")))
    if how == "flip":
        good[at] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        del good[at:]
    else:
        good[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    same_as_spec(bytes(good))


def test_values_only_for_wanted_types() -> None:
    data = attributes(attribute(ATTR_CONTENT_TYPE, [der.oid("1.2.840.113549.1.7.1")]),
                      attribute(MS_ENC_KEY_PREF, [der.tlv(0xA0, b"\x05\x00")]))
    assert read_attributes(data, READ_ATTRIBUTES) == (
        (ATTR_CONTENT_TYPE, (der.oid("1.2.840.113549.1.7.1"),)), (MS_ENC_KEY_PREF, ()))


def test_many_values_take_the_linear_path() -> None:
    many = [der.octets(bytes([i])) for i in range(40)]
    data = attributes(attribute(ATTR_MESSAGE_DIGEST, many))
    got = read_attributes(data, READ_ATTRIBUTES)
    assert got == read_attributes_spec(data, READ_ATTRIBUTES)
    assert got[0][1] == tuple(many)


@pytest.mark.parametrize("data", [
    attributes(der.seq(der.octets(b"x"), der.tlv(der.SET, b""))),  # type is not an OID
    attributes(der.seq(der.oid(ATTR_CONTENT_TYPE), der.seq())),  # values not a SET
    attributes(der.seq(der.oid(ATTR_CONTENT_TYPE), der.tlv(der.SET, b""), der.octets(b""))),
    attributes(der.seq(der.oid(ATTR_CONTENT_TYPE))),  # no values at all
    attributes(der.octets(b"not an attribute")),
    b"\x31\x05\x30\x03\x06\x01",  # truncated
], ids=["type-not-oid", "values-not-set", "trailing-field", "no-values", "not-sequence",
        "truncated"])
def test_malformed_raises(data: bytes) -> None:
    assert outcome(read_attributes, data)[0] == "error"


def test_the_documented_differences() -> None:
    trailing = attributes(der.seq(der.oid(ATTR_CONTENT_TYPE), der.tlv(der.SET, b""),
                                  der.octets(b"")))
    assert outcome(read_attributes_spec, trailing)[0] == "ok"  # asn1crypto ignores it
    odd_value = der.tlv(0xA0, der.octets(b""))
    data = attributes(attribute(ATTR_CONTENT_TYPE, [odd_value]))
    assert outcome(read_attributes_spec, data)[0] == "error"
    assert read_attributes(data, READ_ATTRIBUTES) == ((ATTR_CONTENT_TYPE, (odd_value,)),)
