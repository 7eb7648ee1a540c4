"""Reading CMS SignedData (RFC 5652 §5) from untrusted DER or BER, with asn1crypto only.

gpgsm and NSS write indefinite lengths; asn1crypto reads them. The result is the plain
ParsedSignedData record; any parse problem becomes SMIMEError("malformed"). Signed
attributes are read one by one through a lenient spec, so an attribute asn1crypto cannot
decode (NSS's 1.3.6.1.4.1.311.16.4) does no harm, and their ORIGINAL encoding, re-tagged
as a SET, is kept for the signature check (RFC 5652 §5.4). Certificates that
`cryptography` cannot fully parse are left out (it parses lazily: each field verification
reads is touched here once), so nothing downstream meets a half-readable certificate.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from asn1crypto import cms as acms
from asn1crypto import core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning

from gateway.smime import der
from gateway.smime.cms_signed import (
    ATTR_CONTENT_TYPE,
    ATTR_MESSAGE_DIGEST,
    ATTR_SIGNING_TIME,
    ID_SIGNED_DATA,
    MAX_CERTIFICATES,
)
from gateway.smime.errors import SMIMEError

READ_ATTRIBUTES = frozenset({ATTR_CONTENT_TYPE, ATTR_MESSAGE_DIGEST, ATTR_SIGNING_TIME})


class _LenientAttribute(core.Sequence):  # type: ignore[misc]
    """Attribute with its values kept undecoded (RFC 5652 §5.3 Attribute)."""

    _fields: ClassVar[list[Any]] = [("type", core.ObjectIdentifier),
                                    ("values", core.SetOf, {"spec": core.Any})]


class _LenientAttributes(core.SetOf):  # type: ignore[misc]
    _child_spec = _LenientAttribute


@dataclass(frozen=True, slots=True)
class ParsedSigner:
    """One SignerInfo, decoded to plain values; certificate is None when not carried."""

    certificate: x509.Certificate | None
    sid: str  # for messages: "issuer CN..., serial 0x..." or "ski ..."
    digest_oid: str
    signature_oid: str
    signature_params: bytes | None  # DER of the parameters, None when absent
    signature: bytes
    signed_attrs: bytes | None  # the SET OF Attribute as originally encoded, re-tagged
    # (oid, values' DER); values only for READ_ATTRIBUTES, () for the others
    attributes: tuple[tuple[str, tuple[bytes, ...]], ...]

    def attribute(self, oid: str) -> tuple[bytes, ...] | None:
        for found, values in self.attributes:
            if found == oid:
                return values
        return None


@dataclass(frozen=True, slots=True)
class ParsedSignedData:
    content_type: str  # eContentType, dotted
    content: bytes | None  # eContent, None when detached
    certificates: tuple[x509.Certificate, ...]
    signers: tuple[ParsedSigner, ...]


# What a malformed or hostile encoding makes asn1crypto or cryptography raise.
_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
                 RecursionError, UnicodeError)


def parse_signed_data(data: bytes) -> ParsedSignedData:
    """Decode a ContentInfo carrying SignedData (DER or BER); SMIMEError when it is not one."""
    try:
        return _parse(data)
    except SMIMEError:
        raise
    except _PARSE_ERRORS as e:
        raise SMIMEError(f"malformed SignedData: {e}") from None


def _parse(data: bytes) -> ParsedSignedData:
    if not data:
        raise SMIMEError("empty CMS structure")
    info = acms.ContentInfo.load(data, strict=True)
    ctype = info["content_type"].dotted
    if ctype != ID_SIGNED_DATA:
        raise SMIMEError(f"CMS content type {ctype} is not signed-data", "not-smime")
    sd = info["content"]
    encap = sd["encap_content_info"]
    e_type = encap["content_type"].dotted
    e_content = encap["content"]
    # BER may split eContent into a constructed OCTET STRING; bytes() joins the chunks.
    content = None if isinstance(e_content, core.Void) else bytes(e_content.__bytes__())
    pairs: list[tuple[ax509.Certificate, x509.Certificate]] = []
    cert_field = sd["certificates"]
    if not isinstance(cert_field, core.Void):
        if len(cert_field) > MAX_CERTIFICATES:
            raise SMIMEError(f"more than {MAX_CERTIFICATES} certificates in SignedData")
        for choice in cert_field:
            if choice.name != "certificate":
                continue  # attribute certificates and others play no part in S/MIME
            loaded = _load_certificate(choice.chosen.dump())
            if loaded is None:
                continue  # an unreadable certificate cannot be the signer's
            pairs.append((choice.chosen, loaded))
    signers = tuple(_parse_signer(si, pairs) for si in sd["signer_infos"])
    return ParsedSignedData(e_type, content, tuple(c for _, c in pairs), signers)


def _load_certificate(data: bytes) -> x509.Certificate | None:
    """The certificate, or None when any part the verifier reads does not parse:
    `cryptography` parses fields lazily, so each one is touched here, once."""
    try:
        with warnings.catch_warnings():
            # e.g. a non-positive serial number: old certificates carry them; judging
            # them is the chain validator's business, not a warning's.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(data)
        cert.subject.rfc4514_string()
        cert.issuer.rfc4514_string()
        for ext in cert.extensions:
            ext.value  # noqa: B018 -- forces the parse of each extension
        cert.public_key()
        cert.not_valid_before_utc  # noqa: B018
        cert.not_valid_after_utc  # noqa: B018
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension,
            x509.UnsupportedGeneralNameType):
        return None
    return cert


def _parse_signer(si: acms.SignerInfo,
                  pairs: list[tuple[ax509.Certificate, x509.Certificate]]) -> ParsedSigner:
    sid = si["sid"]
    found: x509.Certificate | None = None
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"]
        serial = sid.chosen["serial_number"].native
        label = f"issuer {issuer.human_friendly}, serial {serial:#x}"
        issuer_der = issuer.dump()
        for a_cert, c_cert in pairs:
            # Byte-equal names first: asn1crypto's Name equality runs RFC 4518 string
            # preparation (a third of a verify); it remains for differently encoded names.
            if a_cert.serial_number == serial and (a_cert.issuer.dump() == issuer_der
                                                   or a_cert.issuer == issuer):
                found = c_cert
                break
    else:
        ski = sid.chosen.native
        label = f"subject key identifier {ski.hex()}"
        for a_cert, c_cert in pairs:
            if a_cert.key_identifier == ski or _computed_ski(c_cert) == ski:
                found = c_cert
                break
    attrs_field = si["signed_attrs"]
    signed_attrs: bytes | None = None
    attributes: list[tuple[str, tuple[bytes, ...]]] = []
    if not isinstance(attrs_field, core.Void):
        signed_attrs = der.retag(attrs_field.dump(), der.SET)
        for attr in _LenientAttributes.load(signed_attrs, strict=True):
            oid = attr["type"].dotted
            # Only the values verification reads are decoded: others may be anything,
            # e.g. SMIMEEncryptionKeyPreference's [0] IMPLICIT choice (RFC 8551 §2.5.3),
            # which asn1crypto's Any cannot even hold.
            values = tuple(v.dump() for v in attr["values"]) if oid in READ_ATTRIBUTES else ()
            attributes.append((oid, values))
    sig_alg = si["signature_algorithm"]
    params = sig_alg["parameters"]
    params_der = None if isinstance(params, core.Void) else params.dump()
    return ParsedSigner(
        certificate=found,
        sid=label,
        digest_oid=si["digest_algorithm"]["algorithm"].dotted,
        signature_oid=sig_alg["algorithm"].dotted,
        signature_params=params_der,
        signature=si["signature"].native,
        signed_attrs=signed_attrs,
        attributes=tuple(attributes),
    )


def _computed_ski(cert: x509.Certificate) -> bytes:
    try:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    except (ValueError, TypeError):
        return b""


def decode_signing_time(value: bytes) -> dt.datetime:
    """A signingTime attribute value (UTCTime or GeneralizedTime) as an aware datetime."""
    try:
        parsed = acms.Time.load(value, strict=True).native
    except _PARSE_ERRORS as e:
        raise SMIMEError(f"malformed signingTime: {e}") from None
    if not isinstance(parsed, dt.datetime):
        raise SMIMEError("malformed signingTime")
    return parsed


def decode_octets(value: bytes) -> bytes:
    try:
        return bytes(core.OctetString.load(value, strict=True).native)
    except _PARSE_ERRORS as e:
        raise SMIMEError(f"malformed OCTET STRING attribute: {e}") from None


def decode_oid(value: bytes) -> str:
    try:
        return str(core.ObjectIdentifier.load(value, strict=True).dotted)
    except _PARSE_ERRORS as e:
        raise SMIMEError(f"malformed OBJECT IDENTIFIER attribute: {e}") from None
