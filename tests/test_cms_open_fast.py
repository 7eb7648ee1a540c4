"""The fast envelope reader (gateway/smime/cms_open_fast.py) against its specification, the
asn1crypto schema reader (gateway.smime.cms_open.parse_envelope): on real envelopes and on
generated ones, well-formed and mangled, whenever the fast reader answers, the schema
reader gives the very same Envelope; when it does not, parse_envelope gives the schema
reader's answer or error."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.smime import SMIMEError, der, encrypt
from gateway.smime.cms_open import ID_AUTH_ENVELOPED_DATA, ID_ENVELOPED_DATA, Envelope
from gateway.smime.cms_open import parse_envelope as parse_envelope_spec
from gateway.smime.cms_open_fast import parse_envelope, read_envelope
from gateway.smime.message import decode_base64_body, parse_message
from gateway.smime.recipients import (
    AES_WRAP,
    EC_PUBLIC_KEY,
    OAEP_SHA256_ALG,
    PKCS1_ALG,
    RSAES_OAEP,
)
from tests.envelope_support import MESSAGE, Pki, pki

__all__ = ["pki"]

AES128_CBC, AES128_GCM, DES3_CBC = ("2.16.840.1.101.3.4.1.2", "2.16.840.1.101.3.4.1.6",
                                    "1.2.840.113549.3.7")
ID_DATA = "1.2.840.113549.1.7.1"


def spec_outcome(data: bytes) -> tuple[str, Envelope | str]:
    try:
        return "ok", parse_envelope_spec(data)
    except SMIMEError as e:
        return "error", f"{e.code}: {e}"


def holds_to_spec(data: bytes) -> Envelope | None:
    """The property: a fast answer is the spec's answer; parse_envelope is the spec."""
    fast = read_envelope(data)
    spec = spec_outcome(data)
    if fast is not None:
        assert spec == ("ok", fast), (data.hex(), fast, spec)
    try:
        got: tuple[str, Envelope | str] = "ok", parse_envelope(data)
    except SMIMEError as e:
        got = "error", f"{e.code}: {e}"
    assert got == spec
    return fast


def der_of(message: bytes) -> bytes:
    return decode_base64_body(parse_message(message).body)


# --- real envelopes: the fast reader must answer for what we and OpenSSL send -------------

@pytest.mark.parametrize("cipher", ["aes128-gcm", "aes256-gcm", "aes128-cbc", "aes256-cbc"])
@pytest.mark.parametrize("oaep", [False, True], ids=["pkcs1", "oaep"])
def test_our_rsa_envelopes_take_the_fast_path(pki: Pki, cipher: str, oaep: bool) -> None:
    data = der_of(encrypt(MESSAGE, [pki.cert("beta.test/bob"), pki.cert("beta.test/domain-rsa")],
                          cipher=cipher, oaep=oaep))
    fast = holds_to_spec(data)
    assert fast is not None
    assert len(fast.recipients) == 2


@pytest.mark.parametrize("cipher", ["aes128-gcm", "aes256-cbc"])
def test_our_ec_envelopes_take_the_fast_path(pki: Pki, cipher: str) -> None:
    data = der_of(encrypt(MESSAGE, [pki.cert("beta.test/domain-ec"),
                                    pki.cert("beta.test/carol-p384"),
                                    pki.cert("beta.test/bob")], cipher=cipher))
    fast = holds_to_spec(data)
    assert fast is not None
    assert sorted(type(r).__name__ for r in fast.recipients) == ["KeyAgree", "KeyAgree",
                                                                "KeyTrans"]


# --- generated envelopes ------------------------------------------------------------------

def indefinite(tag: int, content: bytes) -> bytes:
    return bytes((tag, 0x80)) + content + b"\x00\x00"


Part = tuple[st.SearchStrategy[bytes], st.SearchStrategy[bytes]]  # (good, odd)

ISSUER = der.seq(der.tlv(der.SET, der.seq(der.oid("2.5.4.3"), der.tlv(0x0C, b"CA"))))
PARTS: dict[str, Part] = {
    "name": (st.sampled_from([ISSUER, der.seq()]), st.one_of(
        st.binary(max_size=8).map(der.seq),  # a SEQUENCE of anything
        st.binary(max_size=6).map(lambda b: der.tlv(0x31, b)))),  # not a Name
    "serial": (st.integers(-(2**70), 2**160).map(lambda n: der.tlv(
        der.INTEGER, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True))),
        st.one_of(st.sampled_from([der.tlv(der.INTEGER, b""),
                                   der.tlv(der.INTEGER, b"\x00\x00\x05")]),
                  st.binary(max_size=4))),
    "ski": (st.binary(max_size=20).map(lambda b: der.implicit_primitive(0, b)),
            st.binary(max_size=8).map(lambda b: der.tlv(0xA0, der.octets(b)))),
    "key_alg": (st.sampled_from([PKCS1_ALG, OAEP_SHA256_ALG, der.algorithm(RSAES_OAEP),
                                 der.algorithm("1.2.840.113549.1.1.1")]),
                st.one_of(st.sampled_from([
                    der.algorithm(RSAES_OAEP, der.octets(b"x")),
                    der.algorithm("1.2.840.113549.1.1.1", indefinite(0x30, b"")),
                    der.algorithm("1.2.840.113549.1.1.1", der.NULL + der.NULL),
                    der.algorithm("1.2.840.113549.1.1.1", der.octets(b"")),  # not NULL
                    der.algorithm("1.2.840.113549.1.1.1", b"\x05\x01\x00"),
                    der.algorithm("2.16.840.1.101.3.4.2.1", der.octets(b""))]),
                    st.binary(max_size=6).map(
                        lambda b: der.algorithm("1.2.840.113549.1.1.1", b)))),
    # KeyAgreeRecipientInfo pieces (RFC 5753 §3.1): the originator key, ukm, algorithms.
    "point": (st.binary(max_size=65).map(lambda p: der.tlv(der.BIT_STRING, b"\x00" + p)),
              st.sampled_from([der.tlv(der.BIT_STRING, b"\x03\x04\x08"),
                               der.tlv(der.BIT_STRING, b""), der.octets(b"\x04")])),
    "origin_alg": (st.sampled_from([der.algorithm(EC_PUBLIC_KEY),
                                    der.algorithm(EC_PUBLIC_KEY, der.oid("1.2.840.10045.3.1.7")),
                                    der.algorithm(EC_PUBLIC_KEY, der.NULL)]),
                   st.sampled_from([der.algorithm("1.2.840.113549.1.1.1", der.NULL),
                                    der.algorithm(EC_PUBLIC_KEY, der.seq()),
                                    der.algorithm(EC_PUBLIC_KEY, der.octets(b""))])),
    "originator": (st.just(b"\xa1"), st.sampled_from([  # good: originatorKey follows
        der.explicit(0, der.implicit_primitive(0, b"ski")),
        der.explicit(0, der.seq(ISSUER, der.integer(1))), der.explicit(0, b"")])),
    "ukm": (st.one_of(st.just(b""), st.binary(max_size=16).map(
        lambda u: der.explicit(1, der.octets(u)))), st.sampled_from([
            der.explicit(1, der.octets(b"u") + der.NULL), der.explicit(1, der.NULL)])),
    "wrap": (st.sampled_from([der.algorithm(AES_WRAP[16]), der.algorithm(AES_WRAP[32]),
                              der.algorithm(AES_WRAP[16], der.NULL)]),
             st.sampled_from([b"", der.octets(b""), der.seq(), der.algorithm(AES_WRAP[16])
                              + der.NULL])),
    "r_key_id": (st.binary(max_size=20).map(lambda k: der.tlv(0xA0, der.octets(k))),
                 st.sampled_from([der.tlv(0xA0, der.octets(b"k") + der.tlv(0x18, b"2026")),
                                  der.tlv(0xA0, b""), der.implicit_primitive(0, b"k")])),
    "version": (st.sampled_from([der.integer(0), der.integer(2)]),
                st.sampled_from([der.tlv(der.INTEGER, b""), der.octets(b""), b""])),
    "ktri_tail": (st.just(b""), st.just(der.octets(b""))),
    "other_ri": (st.just(b""), st.binary(max_size=12).map(
        lambda b: der.tlv(0xA1, b) if b[:1] < b"\x80" else der.tlv(0xA2 + b[0] % 3, b))),
    "iv": (st.binary(min_size=16, max_size=16).map(der.octets), st.one_of(
        st.binary(max_size=20).map(der.octets),
        st.just(der.tlv(0x24, der.octets(b"0123456789abcdef"))))),
    "des_iv": (st.binary(min_size=8, max_size=8).map(der.octets),
               st.binary(max_size=20).map(der.octets)),
    "gcm_params": (st.builds(lambda n, i: der.seq(der.octets(n), *([der.integer(i)] if i else [])),
                             st.binary(min_size=1, max_size=14),
                             st.sampled_from([0, 12, 13, 16])),
                   st.one_of(st.builds(lambda n, i: der.seq(der.octets(n), der.integer(i)),
                                       st.binary(max_size=14), st.integers(0, 300)),
                             st.builds(lambda n, i: der.seq(der.octets(n), der.tlv(
                                 der.INTEGER, i)), st.binary(min_size=12, max_size=12),
                                 st.sampled_from([b"\x00\x10", b"\x0c\x00", b""])),
                             st.binary(max_size=8).map(der.seq))),
    "content_oid": (st.just(b""), st.sampled_from([AES128_CBC, AES128_GCM, "1.2.3.4"])
                    .map(der.algorithm)),  # odd: an algorithm without parameters
    "ciphertext": (st.binary(max_size=48).map(lambda b: der.implicit_primitive(0, b)),
                   st.one_of(st.binary(max_size=32).map(lambda b: der.tlv(0xA0, der.octets(b))),
                             st.just(b""))),
    "content_type": (st.just(der.oid(ID_DATA)), st.just(der.octets(b""))),
    "mac": (st.just(b""), st.binary(max_size=17).map(der.octets)),  # good: as ICV says
    "tail": (st.just(b""), st.sampled_from([der.tlv(0xA1, b""), der.tlv(0xA2, b""),
                                            der.tlv(0xA1, der.seq()) + der.octets(b"")])),
    "originator_info": (st.just(b""), st.just(der.tlv(0xA0, b""))),
    "kind": (st.sampled_from([ID_ENVELOPED_DATA, ID_AUTH_ENVELOPED_DATA]).map(der.oid),
             st.just(der.oid(ID_DATA))),
    "indefinite": (st.just(b""), st.just(b"yes")),
    "trailing": (st.just(b""), st.just(b"\x00")),
}


def kari(draw: st.DrawFn, part: Callable[[str], bytes], by_serial: bool) -> bytes:
    originator = part("originator")
    if originator == b"\xa1":
        originator = der.explicit(0, der.tlv(0xA1, part("origin_alg") + part("point")))
    scheme = draw(st.sampled_from(["1.3.132.1.11.1", "1.3.133.16.840.63.0.2", "1.2.3.4",
                                   "1.2.840.113549.1.1.1", RSAES_OAEP]))
    keys = []
    for _ in range(draw(st.integers(1, 2))):
        rid = der.seq(part("name"), part("serial")) if by_serial else part("r_key_id")
        keys.append(der.seq(rid, der.octets(draw(st.binary(max_size=40)))))
    return der.tlv(0xA1, part("version") + originator + part("ukm")
                   + der.algorithm(scheme, part("wrap")) + der.seq(*keys))


@st.composite
def envelopes(draw: st.DrawFn, max_odd: int = 2, force: str | None = None) -> bytes:
    """An envelope from good parts but for at most max_odd odd ones (in every recipient
    alike); with force, exactly that part is odd, and the envelope is shaped to use it."""
    odd = {force} if force else draw(st.sets(st.sampled_from(sorted(PARTS)), max_size=max_odd))

    def part(name: str) -> bytes:
        return draw(PARTS[name][name in odd])

    def choose(yes: set[str], no: set[str]) -> bool:
        return True if force in yes else False if force in no else draw(st.booleans())

    kind = part("kind")
    if force in ("gcm_params", "mac"):
        kind = der.oid(ID_AUTH_ENVELOPED_DATA)
    elif force in ("iv", "des_iv"):
        kind = der.oid(ID_ENVELOPED_DATA)
    auth = kind == der.oid(ID_AUTH_ENVELOPED_DATA)
    infos = []
    kinds = draw(st.lists(st.booleans(), max_size=3)) + ([True, False] if force else [])
    for is_ktri in kinds:
        by_serial = choose({"name", "serial"}, {"ski", "r_key_id"})
        if is_ktri:
            rid = der.seq(part("name"), part("serial")) if by_serial else part("ski")
            infos.append(der.seq(part("version"), rid, part("key_alg"),
                                 der.octets(draw(st.binary(max_size=40)))) + part("ktri_tail"))
        else:
            infos.append(kari(draw, part, by_serial))
    infos.append(part("other_ri"))
    icv = 12
    if part("content_oid"):
        alg = part("content_oid")
    elif auth:
        params = part("gcm_params")
        icv = params[-1] if params[-3:-1] == b"\x02\x01" else 12
        alg = der.algorithm(AES128_GCM, params)
    else:
        des = choose({"des_iv"}, {"iv"})
        alg = der.algorithm(DES3_CBC if des else AES128_CBC, part("des_iv" if des else "iv"))
    eci = der.seq(part("content_type"), alg, part("ciphertext"))
    after = (part("mac") or der.octets(draw(st.binary(min_size=icv, max_size=icv)))) \
        if auth else b""
    body = der.seq(part("version"), part("originator_info"), der.tlv(der.SET, b"".join(infos)),
                   eci, after, part("tail"))
    if part("indefinite"):
        body = indefinite(0x30, body[2:] if body[1] < 0x80 else body[2 + (body[1] & 0x7F):])
    return der.seq(kind, der.explicit(0, body)) + part("trailing")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.parametrize("force", sorted(PARTS))
@given(data=st.data())
def test_each_odd_part_on_its_own(force: str, data: st.DataObject) -> None:
    """Every refusal the fast reader has, met one at a time in an otherwise good envelope."""
    holds_to_spec(data.draw(envelopes(force=force)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes())
def test_same_answer_as_the_spec(data: bytes) -> None:
    holds_to_spec(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes(), st.data())
def test_same_answer_when_mangled(data: bytes, draw: st.DataObject) -> None:
    good = bytearray(data)
    at = draw.draw(st.integers(0, len(good) - 1))
    how = draw.draw(st.sampled_from(("flip", "cut", "insert")))
    if how == "flip":
        good[at] ^= draw.draw(st.integers(1, 255))
    elif how == "cut":
        del good[at:]
    else:
        good[at:at] = draw.draw(st.binary(min_size=1, max_size=4))
    holds_to_spec(bytes(good))


def test_generated_envelopes_do_reach_the_fast_path() -> None:
    """The generator is not all fallbacks: a plain one is answered by the fast reader."""
    data = der.seq(der.oid(ID_AUTH_ENVELOPED_DATA), der.explicit(0, der.seq(
        der.integer(0),
        der.tlv(der.SET, der.seq(der.integer(2), der.implicit_primitive(0, b"ski"), PKCS1_ALG,
                                 der.octets(b"k" * 8))),
        der.seq(der.oid(ID_DATA), der.algorithm(AES128_GCM, der.seq(der.octets(b"n" * 12))),
                der.implicit_primitive(0, b"c" * 20)),
        der.octets(b"t" * 12))))
    fast = holds_to_spec(data)
    assert fast is not None
    assert (fast.recipients[0].ski, fast.icv_length) == (b"ski", 12)


def test_a_length_past_its_parent_is_refused() -> None:
    """keyEncryptionAlgorithm's OID claims two octets more than its SEQUENCE holds (the
    encryptedKey's tag and length, themselves a valid OID ending): asn1crypto refuses it,
    and so must the fast reader, which cannot simply read on."""
    oid = der.oid("1.2.840.113549.1.1.1")
    key = der.octets(b"k" * 8)
    overrun = b"\x30" + bytes((len(oid),)) + b"\x06" + bytes((oid[1] + 2,)) + oid[2:]
    ktri = der.seq(der.integer(0), der.implicit_primitive(0, b"ski"), overrun, key)
    data = der.seq(der.oid(ID_ENVELOPED_DATA), der.explicit(0, der.seq(
        der.integer(0), der.tlv(der.SET, ktri),
        der.seq(der.oid(ID_DATA), der.algorithm(AES128_CBC, der.octets(b"i" * 16)),
                der.implicit_primitive(0, b"c" * 16)))))
    assert read_envelope(data) is None
    holds_to_spec(data)
