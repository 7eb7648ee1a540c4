"""The fast path for reading EnvelopedData (RFC 5652 §6) and AuthEnvelopedData (RFC 5083).

    ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT ANY }
    EnvelopedData ::= SEQUENCE { version, originatorInfo [0] OPTIONAL, recipientInfos SET,
        encryptedContentInfo, unprotectedAttrs [1] OPTIONAL }
    AuthEnvelopedData ::= SEQUENCE { version, originatorInfo [0] OPTIONAL, recipientInfos,
        authEncryptedContentInfo, authAttrs [1] OPTIONAL, mac OCTET STRING,
        unauthAttrs [2] OPTIONAL }
    KeyTransRecipientInfo ::= SEQUENCE { version, rid, keyEncryptionAlgorithm,
        encryptedKey OCTET STRING }
    KeyAgreeRecipientInfo ::= [1] IMPLICIT SEQUENCE { version, originator [0] EXPLICIT
        originatorKey [1] IMPLICIT SEQUENCE { algorithm, publicKey BIT STRING },
        ukm [1] EXPLICIT OCTET STRING OPTIONAL, keyEncryptionAlgorithm,
        recipientEncryptedKeys SEQUENCE OF SEQUENCE { rid, encryptedKey OCTET STRING } }

gateway.smime.cms_open reads these with asn1crypto's schema classes: about a hundred
microseconds per message, half of what the RSA key transport itself costs. Every
envelope this gateway and OpenSSL write in DER has one shape, so `read_envelope` walks
just that shape and slices the fields out: a one-octet tag it expects and a short-form
length (X.690 §8.1.3.4, checked against the enclosing value's end) are read inline,
every long-form length by asn1crypto's own TLV reader (asn1crypto.parser), and OIDs are
decoded by asn1crypto.

It answers only when it is sure: anything outside that shape (indefinite-length BER as
gpgsm and NSS write, constructed strings, originatorInfo, attributes, an originator named
by certificate, RecipientInfo kinds other than ktri and kari, an algorithm or parameters
it does not know, a length that does not add up) gives None, and `parse_envelope` then
asks the schema reader, which gives the result or the precise error. So this module never
rejects anything and never phrases an error. Where it is stricter than the schema reader
(which leaves fields it is not asked for unparsed, e.g. a stray value after a ktri's
encryptedKey), the fallback keeps the answer the schema reader's. tests/test_cms_open_fast.py
holds it to the schema reader on generated and mangled envelopes: whenever it answers,
the schema reader gives the same Envelope.
"""

from __future__ import annotations

import functools

from asn1crypto import algos, core, parser

from gateway.smime.cms_open import (
    _CBC,
    _GCM,
    ID_AUTH_ENVELOPED_DATA,
    ID_ENVELOPED_DATA,
    Envelope,
    KeyAgree,
    KeyTrans,
)
from gateway.smime.cms_open import parse_envelope as parse_envelope_spec
from gateway.smime.recipients import EC_PUBLIC_KEY, RSAES_OAEP

_SEQUENCE, _SET, _INTEGER, _OCTETS, _OID, _BITS, _NULL = 0x30, 0x31, 0x02, 0x04, 0x06, 0x03, 0x05
_CTX0_PRIMITIVE, _CTX0_CONSTRUCTED, _CTX1_CONSTRUCTED = 0x80, 0xA0, 0xA1
# asn1crypto's length decoder, without the copies parser.parse makes of every value (the
# ciphertext included): it returns where a value's contents start and end.
_lengths = functools.partial(parser._parse, lengths_only=True)
_NULL_PARAMETERS = frozenset(algos._ForceNullParameters._null_algos)


class _Unsure(Exception):
    """Not the shape this reader knows: the schema reader decides."""


def _tlv(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    """Contents start and end of the value at pos, which has this tag and ends by end."""
    if pos + 2 > end or data[pos] != tag:
        raise _Unsure
    size = data[pos + 1]
    if size < 0x80:  # X.690 §8.1.3.4 short form, most fields: no call needed
        if pos + 2 + size > end:
            raise _Unsure
        return pos + 2, pos + 2 + size
    if size == 0x80:  # indefinite: the schema reader
        raise _Unsure
    start, stop = _lengths(data, end, pos)
    return int(start), int(stop)


def _tag_at(data: bytes, pos: int, end: int) -> int:
    if pos >= end:
        raise _Unsure
    return data[pos]


@functools.lru_cache(maxsize=256)
def _dotted(encoded: bytes) -> str:
    """An OID's TLV in dotted form, by asn1crypto; the few that recur are decoded once."""
    return str(core.ObjectIdentifier.load(encoded, strict=True).dotted)


def _algorithm(data: bytes, pos: int, end: int) -> tuple[str, int, int, int]:
    """AlgorithmIdentifier at pos: (dotted OID, parameters start, parameters end, its end);
    parameters start == end when they are absent."""
    start, stop = _tlv(data, pos, end, _SEQUENCE)
    _, oid_end = _tlv(data, start, stop, _OID)
    oid = _dotted(data[start:oid_end])
    if oid_end < stop:  # parameters: one value of any tag, in its definite-length form
        if data[oid_end] & 0x1F == 0x1F or _tag_at(data, oid_end + 1, stop) == 0x80:
            raise _Unsure
        _, param_end = _lengths(data, stop, oid_end)
        if param_end != stop:
            raise _Unsure
    return oid, oid_end, stop, stop


def _key_encryption_algorithm(data: bytes, pos: int, end: int) -> tuple[str, int, int, int]:
    """_algorithm, with the parameter types asn1crypto's KeyEncryptionAlgorithm insists
    on: RSAES-OAEP-params for OAEP, NULL for rsaEncryption and the other OIDs RFC 4055
    §2.1 gives NULL parameters (its _ForceNullParameters list), whatever the field."""
    oid, p_start, p_end, alg_end = _algorithm(data, pos, end)
    if p_start < p_end:
        if oid in _NULL_PARAMETERS and data[p_start:p_end] != b"\x05\x00":
            raise _Unsure
        if oid == RSAES_OAEP and data[p_start] != _SEQUENCE:
            raise _Unsure
    return oid, p_start, p_end, alg_end


Rid = tuple[bytes | None, int | None, bytes | None]  # issuer Name DER, serial, SKI


def _issuer_serial(data: bytes, pos: int, end: int) -> tuple[Rid, int]:
    """IssuerAndSerialNumber at pos, and where it ends."""
    start, stop = _tlv(data, pos, end, _SEQUENCE)
    _, name_end = _tlv(data, start, stop, _SEQUENCE)
    number, number_end = _tlv(data, name_end, stop, _INTEGER)
    if number_end != stop or number == number_end:
        raise _Unsure
    serial = int.from_bytes(data[number:number_end], "big", signed=True)
    return (data[start:name_end], serial, None), stop


def _key_trans(data: bytes, pos: int, end: int) -> KeyTrans:
    _, at = _tlv(data, pos, end, _INTEGER)  # version: not read (RFC 5652 §6.2.1)
    if _tag_at(data, at, end) == _SEQUENCE:
        (issuer, serial, ski), rid_end = _issuer_serial(data, at, end)
    else:  # subjectKeyIdentifier [0] IMPLICIT, primitive
        start, rid_end = _tlv(data, at, end, _CTX0_PRIMITIVE)
        issuer, serial, ski = None, None, data[start:rid_end]
    oid, p_start, p_end, alg_end = _key_encryption_algorithm(data, rid_end, end)
    key_start, key_end = _tlv(data, alg_end, end, _OCTETS)
    if key_end != end:
        raise _Unsure
    return KeyTrans(issuer, serial, ski, oid, data[p_start:p_end] if p_start < p_end else None,
                    data[key_start:key_end])


def _originator(data: bytes, pos: int, end: int) -> tuple[bytes, str | None]:
    """originatorKey (RFC 5753 §3.1.1): the ephemeral point, and the named curve if any."""
    start, stop = _tlv(data, pos, end, _CTX1_CONSTRUCTED)
    if stop != end:
        raise _Unsure
    oid, p_start, p_end, alg_end = _algorithm(data, start, stop)
    if oid != EC_PUBLIC_KEY:
        raise _Unsure
    curve = None
    if p_start < p_end:
        tag = data[p_start]
        if tag == _OID:  # namedCurve
            curve = _dotted(data[p_start:p_end])
        elif tag != _NULL or p_end - p_start != 2:  # implicitlyCA is NULL: no curve named
            raise _Unsure
    bits, bits_end = _tlv(data, alg_end, stop, _BITS)
    if bits_end != stop or bits == bits_end or data[bits] != 0:  # whole octets only
        raise _Unsure
    return data[bits + 1:bits_end], curve


def _key_agree(data: bytes, pos: int, end: int) -> list[KeyAgree]:
    _, at = _tlv(data, pos, end, _INTEGER)  # version: not read (RFC 5652 §6.2.2)
    start, at = _tlv(data, at, end, _CTX0_CONSTRUCTED)
    point, curve = _originator(data, start, at)
    ukm = None
    if _tag_at(data, at, end) == _CTX1_CONSTRUCTED:
        start, stop = _tlv(data, at, end, _CTX1_CONSTRUCTED)
        u_start, u_end = _tlv(data, start, stop, _OCTETS)
        if u_end != stop:
            raise _Unsure
        ukm, at = data[u_start:u_end], stop
    scheme, p_start, p_end, at = _key_encryption_algorithm(data, at, end)
    wrap = None
    if p_start < p_end:  # the key-wrap AlgorithmIdentifier: its OID, parameters unread
        wrap, _, _, wrap_end = _algorithm(data, p_start, p_end)
        if wrap_end != p_end:
            raise _Unsure
    start, stop = _tlv(data, at, end, _SEQUENCE)
    if stop != end:
        raise _Unsure
    found = []
    while start < stop:
        rek, rek_end = _tlv(data, start, stop, _SEQUENCE)
        if _tag_at(data, rek, rek_end) == _SEQUENCE:
            rid, at = _issuer_serial(data, rek, rek_end)
        else:  # rKeyId [0] IMPLICIT RecipientKeyIdentifier; date / other: the spec
            r_start, at = _tlv(data, rek, rek_end, _CTX0_CONSTRUCTED)
            s_start, s_end = _tlv(data, r_start, at, _OCTETS)
            if s_end != at:
                raise _Unsure
            rid = None, None, data[s_start:s_end]
        k_start, k_end = _tlv(data, at, rek_end, _OCTETS)
        if k_end != rek_end:
            raise _Unsure
        found.append(KeyAgree(*rid, point, curve, ukm, scheme, wrap, data[k_start:k_end]))
        start = rek_end
    return found


def _recipients(data: bytes, pos: int, end: int) -> tuple[KeyTrans | KeyAgree, ...]:
    found: list[KeyTrans | KeyAgree] = []
    while pos < end:
        if _tag_at(data, pos, end) == _CTX1_CONSTRUCTED:  # kari
            start, stop = _tlv(data, pos, end, _CTX1_CONSTRUCTED)
            found += _key_agree(data, start, stop)
        else:  # ktri; kekri, pwri, ori: the schema reader
            start, stop = _tlv(data, pos, end, _SEQUENCE)
            found.append(_key_trans(data, start, stop))
        pos = stop
    return tuple(found)


def _content(kind: str, data: bytes, pos: int, end: int) -> tuple[str, int, bytes, int, bytes]:
    _, at = _tlv(data, pos, end, _OID)  # contentType: not read
    oid, p_start, p_end, alg_end = _algorithm(data, at, end)
    c_start, c_end = _tlv(data, alg_end, end, _CTX0_PRIMITIVE)
    if c_end != end or p_start == p_end:
        raise _Unsure
    content = data[c_start:c_end]
    if kind == "enveloped" and oid in _CBC:
        name, key_len = _CBC[oid]
        iv_start, iv_end = _tlv(data, p_start, p_end, _OCTETS)
        if iv_end - iv_start != (8 if name == "des-ede3-cbc" else 16):
            raise _Unsure
        return name, key_len, data[iv_start:iv_end], 0, content
    if kind == "auth-enveloped" and oid in _GCM:
        name, key_len = _GCM[oid]
        start, stop = _tlv(data, p_start, p_end, _SEQUENCE)  # GCMParameters, RFC 5084 §3.2
        n_start, n_end = _tlv(data, start, stop, _OCTETS)
        icv = 12
        if n_end < stop:  # aes-ICVlen, in the one-octet form every sender writes
            i_start, i_end = _tlv(data, n_end, stop, _INTEGER)
            if i_end != stop or i_end - i_start != 1:
                raise _Unsure
            icv = data[i_start]
        if n_start == n_end or not 12 <= icv <= 16:
            raise _Unsure
        return name, key_len, data[n_start:n_end], icv, content
    raise _Unsure


def _read(data: bytes) -> Envelope:
    size = len(data)
    start, stop = _tlv(data, 0, size, _SEQUENCE)
    if stop != size:
        raise _Unsure
    _, oid_end = _tlv(data, start, stop, _OID)
    content_type = _dotted(data[start:oid_end])
    if content_type == ID_ENVELOPED_DATA:
        kind = "enveloped"
    elif content_type == ID_AUTH_ENVELOPED_DATA:
        kind = "auth-enveloped"
    else:
        raise _Unsure
    outer_start, outer_end = _tlv(data, oid_end, stop, _CTX0_CONSTRUCTED)
    body, end = _tlv(data, outer_start, outer_end, _SEQUENCE)
    if outer_end != stop or end != outer_end:
        raise _Unsure
    _, at = _tlv(data, body, end, _INTEGER)  # version: not read (RFC 5652 §6.1)
    # originatorInfo [0] would stand here: _tlv refuses its tag, so it goes to the spec.
    ri_start, ri_end = _tlv(data, at, end, _SET)
    recipients = _recipients(data, ri_start, ri_end)
    eci_start, eci_end = _tlv(data, ri_end, end, _SEQUENCE)
    cipher, key_len, iv, icv, ciphertext = _content(kind, data, eci_start, eci_end)
    mac, at = b"", eci_end
    if kind == "auth-enveloped":  # authAttrs [1] would stand here: the spec reads them
        mac_start, at = _tlv(data, eci_end, end, _OCTETS)
        mac = data[mac_start:at]
        if len(mac) != icv:
            raise _Unsure
    if at != end:  # unprotectedAttrs / unauthAttrs: the spec reads them
        raise _Unsure
    return Envelope(kind, recipients, cipher, key_len, iv, icv, ciphertext, mac, b"")


def read_envelope(data: bytes) -> Envelope | None:
    """The Envelope, when data has the one common shape; None means ask the schema
    reader (which also gives every error)."""
    try:
        return _read(data)
    except (_Unsure, ValueError):  # ValueError: asn1crypto's TLV reader met a bad length
        return None


def parse_envelope(data: bytes) -> Envelope:
    """gateway.smime.cms_open.parse_envelope_spec's answer, usually without building it."""
    found = read_envelope(data)
    return found if found is not None else parse_envelope_spec(data)
