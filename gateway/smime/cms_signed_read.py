"""Reading CMS SignedData (RFC 5652 §5) from untrusted DER or BER, with asn1crypto only.

gpgsm and NSS write indefinite lengths; asn1crypto reads them. The result is the plain
ParsedSignedData record; any parse problem becomes SMIMEError("malformed"). Signed
attributes are read one by one (gateway/smime/cms_attrs.py), only the values verification
reads decoded, so an attribute asn1crypto cannot decode (NSS's 1.3.6.1.4.1.311.16.4)
does no harm, and their ORIGINAL encoding, re-tagged as a SET, is kept for the signature
check (RFC 5652 §5.4). Certificates that
`cryptography` cannot fully parse are left out (it parses lazily: each field verification
reads is touched here once), so nothing downstream meets a half-readable certificate.
Carried certificates are parsed once per process and DER (a bounded memo): senders send
the same chain with every message.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import warnings
from dataclasses import dataclass

from asn1crypto import cms as acms
from asn1crypto import core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning

from gateway.smime import cms_attrs, der
from gateway.smime.cms_signed import (
    ATTR_CONTENT_TYPE,
    ATTR_MESSAGE_DIGEST,
    ATTR_SIGNING_TIME,
    ATTR_SMIME_CAPABILITIES,
    ID_SIGNED_DATA,
    MAX_CERTIFICATES,
)
from gateway.smime.errors import SMIMEError

# The attributes whose values are kept (as DER); SMIMECapabilities (RFC 8551 §2.5.2) is
# kept undecoded and read only when a caller asks (gateway/inbound/learn.py).
READ_ATTRIBUTES = frozenset({ATTR_CONTENT_TYPE, ATTR_MESSAGE_DIGEST, ATTR_SIGNING_TIME,
                             ATTR_SMIME_CAPABILITIES})
MAX_CAPABILITIES = 64  # algorithms read from one SMIMECapabilities value; the rest ignored
CERTIFICATE_MEMO = 512  # parsed carried certificates kept per process, by exact DER


@dataclass(frozen=True, slots=True)
class ParsedSigner:
    """One SignerInfo, decoded to plain values; certificate is None when not carried."""

    certificate: x509.Certificate | None
    sid: str  # for messages: "issuer CN..., serial 0x..." (the issuer only when the
    # certificate is missing, the one time it is shown), or "subject key identifier ..."
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
    if isinstance(e_content, core.Any):
        # asn1crypto has specs for a few eContentTypes only; for the others it hands back
        # Any, whose bytes() is its repr. eContent is an OCTET STRING whatever the type
        # (RFC 5652 §5.2).
        e_content = e_content.parse(core.ParsableOctetString)
    # BER may split eContent into a constructed OCTET STRING; bytes() joins the chunks.
    content = None if isinstance(e_content, core.Void) else bytes(e_content.__bytes__())
    cert_field = sd["certificates"]
    pairs = () if isinstance(cert_field, core.Void) else _known_set(cert_field.dump())
    signers = tuple(_parse_signer(si, pairs) for si in sd["signer_infos"])
    return ParsedSignedData(e_type, content, tuple(k.cert for k in pairs), signers)


@functools.lru_cache(maxsize=CERTIFICATE_MEMO // 4)
def _known_set(encoded: bytes) -> tuple[_Known, ...]:
    """The readable certificates of a CertificateSet ([0] IMPLICIT, as encoded): a sender
    carries the same set in every message, so it is split once per encoding."""
    cert_field = acms.CertificateSet.load(der.retag(encoded, der.SET), strict=True)
    if len(cert_field) > MAX_CERTIFICATES:
        raise SMIMEError(f"more than {MAX_CERTIFICATES} certificates in SignedData")
    pairs: list[_Known] = []
    for choice in cert_field:
        if choice.name != "certificate":
            continue  # attribute certificates and others play no part in S/MIME
        known = _known_certificate(choice.chosen.dump())
        if known is None:
            continue  # an unreadable certificate cannot be the signer's
        pairs.append(known)
    return tuple(pairs)


@dataclass(frozen=True, slots=True)
class _Known:
    """A carried certificate with what signer matching reads, parsed once per DER."""

    cert: x509.Certificate
    serial: int
    issuer: ax509.Name  # for the rare differently-encoded-but-equal issuer
    issuer_der: bytes
    key_identifier: bytes | None  # its subjectKeyIdentifier extension
    computed_ski: bytes  # RFC 5280 §4.2.1.2 method 1 over its public key


@functools.lru_cache(maxsize=CERTIFICATE_MEMO)
def _known_certificate(data: bytes) -> _Known | None:
    """Senders carry the same few certificates in every message: parsing one (with both
    libraries) costs more than the signature check, so the result is memoised by its
    exact DER, which determines it. Bounded; unreadable ones (None) are memoised too."""
    cert = _load_certificate(data)
    if cert is None:
        return None
    try:
        a_cert = ax509.Certificate.load(data, strict=True)
        issuer = a_cert.issuer
        return _Known(cert, a_cert.serial_number, issuer, issuer.dump(), a_cert.key_identifier,
                      _computed_ski(cert))
    except _PARSE_ERRORS:
        return None  # cryptography read it but asn1crypto cannot: not a signer we can match


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
            x509.UnsupportedGeneralNameType, x509.InvalidVersion):
        # InvalidVersion: a version field other than v1/v3 (found by fuzzing; it is no
        # ValueError and escaped as a traceback before)
        return None
    return cert


def _parse_signer(si: acms.SignerInfo, pairs: tuple[_Known, ...]) -> ParsedSigner:
    sid = si["sid"]
    found: x509.Certificate | None = None
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"]
        serial = sid.chosen["serial_number"].native
        issuer_der = issuer.dump()
        for known in pairs:
            # Byte-equal names first: asn1crypto's Name equality runs RFC 4518 string
            # preparation (a third of a verify); it remains for differently encoded names.
            if known.serial == serial and (known.issuer_der == issuer_der
                                           or known.issuer == issuer):
                found = known.cert
                break
        # The issuer's human-friendly form costs more than a signature check and is shown
        # only when the certificate is missing.
        label = f"serial {serial:#x}" if found is not None else \
            f"issuer {issuer.human_friendly}, serial {serial:#x}"
    else:
        ski = sid.chosen.native
        label = f"subject key identifier {ski.hex()}"
        for known in pairs:
            if known.key_identifier == ski or known.computed_ski == ski:
                found = known.cert
                break
    attrs_field = si["signed_attrs"]
    signed_attrs: bytes | None = None
    attributes: cms_attrs.Attributes = ()
    if not isinstance(attrs_field, core.Void):
        signed_attrs = der.retag(attrs_field.dump(), der.SET)
        attributes = cms_attrs.read_attributes(signed_attrs, READ_ATTRIBUTES)
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
        attributes=attributes,
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


# decode_capabilities' answers per encoding (bounded in count and in size of each).
_DECODED_MAX = 1024
_DECODED_BYTES = 2048
_decoded: dict[bytes, tuple[str, ...]] = {}


def decode_capabilities(values: tuple[bytes, ...] | None) -> tuple[str, ...]:
    """The algorithm OIDs (dotted, in the signer's order of preference) of an
    SMIMECapabilities attribute's values (RFC 8551 §2.5.2); () when it is absent, has not
    exactly one value, or does not parse. Never raises: the attribute is advice, and
    garbage in it must not fail a signature that verified."""
    if not values or len(values) != 1:
        return ()
    # One sender's software writes the same bytes every time, and asn1crypto takes tens
    # of microseconds to read them: remember the answer per encoding.
    known = _decoded.get(values[0])
    if known is not None:
        return known
    try:
        caps = acms.SMIMECapabilites.load(values[0], strict=True)  # sic: asn1crypto's name
        oids = tuple(str(c["capability_id"].dotted)
                     for c in itertools.islice(caps, MAX_CAPABILITIES))
    except _PARSE_ERRORS:
        oids = ()
    if len(values[0]) <= _DECODED_BYTES:  # a hostile sender's huge value is not kept
        if len(_decoded) >= _DECODED_MAX:
            _decoded.clear()
        _decoded[values[0]] = oids
    return oids

