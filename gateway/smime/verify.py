"""S/MIME signature verification (RFC 8551 §3.5, RFC 5652 §5.4–5.6, RFC 8550 §3).

Takes multipart/signed (RFC 1847 §2.1; the first part's octets between the delimiters
are the signed content) and opaque application/pkcs7-mime signed-data. For each
SignerInfo: the signer's certificate among the SignedData's certificates (issuer+serial
or subject key identifier), the contentType and messageDigest signed attributes, the
signature over the attributes' original encoding, the chain to the caller's anchors via
gateway.keys.validate (purpose "sign": validity, key usage, emailProtection EKU; passing
verdicts memoised per process by gateway.keys.chain_cache) and, when the caller plugs one
in, revocation, asked for every message. The signer's addresses and domains are reported
so the caller can compare them with From (RFC 8550 §3); this module does not, because
only the caller knows which header it trusts. A passing signer's SMIMECapabilities
attribute (RFC 8551 §2.5.2) is reported too (`SignerInfoResult.capabilities`), for the
caller to remember what the sender's software decrypts (RFC 8551 §2.7.1).

A signature that does not verify is a VerifyResult with ok=False and a code; only input
that is not an S/MIME signed message, or cannot be parsed, raises SMIMEError.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from gateway.keys.chain_cache import validate_certificate_cached
from gateway.keys.identity import dns_names, email_addresses
from gateway.mime.canon import canonicalize
from gateway.smime import cms_signed as cs
from gateway.smime import cms_signed_read as cr
from gateway.smime.detect import PKCS7_MIME, PKCS7_SIGNATURE, is_p7m, parse_content_type
from gateway.smime.errors import SMIMEError
from gateway.smime.message import Header, Message, decode_base64_body, parse_message


@dataclass(frozen=True, slots=True)
class RevocationStatus:
    status: str  # "good" | "revoked" | "unknown"
    reason: str = ""


class RevocationCheck(Protocol):
    """Is cert (issued by issuer) revoked? OCSP against the directory plugs in here."""

    def __call__(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        ...


@dataclass(frozen=True)
class SignerInfoResult:
    """The verdict on one SignerInfo.

    code: "ok" | "no-signer-certificate" | "unsupported-algorithm" | "bad-attributes" |
    "content-type-mismatch" | "digest-mismatch" | "bad-signature" | "revoked" | a chain
    code of gateway.keys.validate ("untrusted", "expired", "not-yet-valid", "bad-usage",
    ...). revocation: "not-checked" | "good" | "unknown" | "revoked"; "unknown" leaves ok
    True: strict or soft handling of it is the caller's policy.
    """

    ok: bool
    code: str
    reason: str
    certificate: x509.Certificate | None
    chain: tuple[x509.Certificate, ...]
    digest_algorithm: str  # "sha256", or the OID when unknown
    signature_algorithm: str  # "rsa-pkcs1v15" | "rsa-pss" | "ecdsa", or the OID
    signing_time: dt.datetime | None
    addresses: tuple[str, ...]  # rfc822Name (and legacy emailAddress) of the certificate
    domains: tuple[str, ...]  # dNSName: a domain certificate speaks for these
    revocation: str = "not-checked"
    # The SMIMECapabilities signed attribute's values as DER (RFC 8551 §2.5.2), () when
    # absent; decoded only when `capabilities` is read, so verification does not pay.
    capabilities_der: tuple[bytes, ...] = ()

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The algorithm OIDs the signer announces (dotted, most preferred first); () when
        absent or unreadable, which never fails the signature."""
        return cr.decode_capabilities(self.capabilities_der)

    @property
    def subject(self) -> str:
        """The signer certificate's subject (RFC 4514), or why there is none."""
        if self.certificate is None:
            return "(certificate not in the message)"
        return self.certificate.subject.rfc4514_string()

    def speaks_for(self, address: str) -> bool:
        """Does the certificate name this address, or its domain (RFC 8550 §3)?
        names_match's rule on the names read from the certificate once, into addresses
        and domains, rather than parsing its extensions again per question."""
        if self.certificate is None:
            return False
        name = address.lower()
        if "@" in name:
            return name in self.addresses or name.rpartition("@")[2] in self.domains
        return name in self.domains or any(a.rpartition("@")[2] == name
                                           for a in self.addresses)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    code: str  # "ok", or the first failing signer's code
    reason: str
    signers: tuple[SignerInfoResult, ...]
    content: bytes  # the signed entity, byte for byte as it was signed
    opaque: bool  # signed-data rather than multipart/signed
    outer_headers: tuple[Header, ...] = ()  # routing headers of the signed message

    @property
    def message(self) -> bytes:
        """The message with the signature removed: outer routing headers + the entity."""
        return b"".join(h.raw for h in self.outer_headers) + b"MIME-Version: 1.0\r\n" + \
            self.content

    def speaks_for(self, address: str) -> bool:
        return any(s.ok and s.speaks_for(address) for s in self.signers)


def verify(message: bytes, *, anchors: Sequence[x509.Certificate],
           at: dt.datetime | None = None,
           revocation: RevocationCheck | None = None) -> VerifyResult:
    """Verify the S/MIME signature of message against anchors at time at (default now)."""
    return verify_parsed(parse_message(canonicalize(message)), anchors=anchors, at=at,
                         revocation=revocation)


def verify_parsed(msg: Message, *, anchors: Sequence[x509.Certificate],
                  at: dt.datetime | None = None,
                  revocation: RevocationCheck | None = None) -> VerifyResult:
    """verify() of a message already canonical (CRLF) and parsed, for a caller that
    parsed it anyway (gateway.inbound.open): the message is parsed once."""
    header = msg.get("content-type")
    if header is None:
        raise SMIMEError("the message has no Content-Type: it is not signed", "not-smime")
    ct = parse_content_type(header.value)
    mime_type, params = ct.mime_type, ct.params
    if mime_type == "multipart/signed":
        content, cms = _split_multipart_signed(msg.body, params)
        parsed = cr.parse_signed_data(cms)
        if parsed.content is not None and parsed.content != content:
            raise SMIMEError("multipart/signed whose signature also embeds different content")
        opaque = False
    elif mime_type in PKCS7_MIME or is_p7m(ct, msg):  # incl. octet-stream named *.p7m
        smime_type = params.get("smime-type", "signed-data").lower()
        if smime_type != "signed-data":
            raise SMIMEError(f"smime-type {smime_type} is not signed-data", "not-smime")
        parsed = cr.parse_signed_data(_decoded_body(msg.get("content-transfer-encoding"),
                                                    msg.body))
        if parsed.content is None:
            raise SMIMEError("opaque signed-data carries no content")
        content, opaque = parsed.content, True
    else:
        raise SMIMEError(f"{mime_type or 'the message'} is not an S/MIME signed message",
                         "not-smime")
    when = at or dt.datetime.now(dt.UTC)
    results = tuple(_verify_signer(s, parsed, content, anchors, when, revocation)
                    for s in parsed.signers)
    outer = msg.routing_headers()
    if not results:
        return VerifyResult(False, "no-signer", "the SignedData has no SignerInfo", (),
                            content, opaque, outer)
    good = next((r for r in results if r.ok), None)
    if good is not None:
        return VerifyResult(True, "ok", good.reason, results, content, opaque, outer)
    return VerifyResult(False, results[0].code, results[0].reason, results, content, opaque,
                        outer)


def _decoded_body(cte: Header | None, body: bytes) -> bytes:
    encoding = cte.value.lower() if cte is not None else "7bit"
    if encoding == "base64":
        return decode_base64_body(body)
    if encoding in ("binary", "8bit", "7bit"):
        return body
    raise SMIMEError(f"content-transfer-encoding {encoding!r} for a CMS part", "unsupported")


def _split_multipart_signed(body: bytes, params: dict[str, str]) -> tuple[bytes, bytes]:
    """RFC 1847 §2.1: (the first part's exact octets, the signature part's DER)."""
    protocol = params.get("protocol", "").lower()
    if protocol not in PKCS7_SIGNATURE:
        raise SMIMEError(f"multipart/signed with protocol {protocol or '(none)'!r}",
                         "not-smime")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 70:
        raise SMIMEError("multipart/signed without a usable boundary parameter")
    parts = _multipart_parts(body, b"--" + boundary.encode("latin-1"))
    if len(parts) != 2:
        raise SMIMEError(f"multipart/signed has {len(parts)} parts, not 2")
    sig_part = parse_message(parts[1])
    ctype = sig_part.get("content-type")
    sig_type = parse_content_type(ctype.value).mime_type if ctype is not None else ""
    if sig_type not in PKCS7_SIGNATURE:
        raise SMIMEError(f"the second part of multipart/signed is {sig_type or 'untyped'}")
    return parts[0], _decoded_body(sig_part.get("content-transfer-encoding"), sig_part.body)


def _multipart_parts(body: bytes, delimiter: bytes) -> list[bytes]:
    """The parts between delimiter lines (RFC 2046 §5.1.1): the CRLF before a delimiter
    belongs to the delimiter; the close delimiter ends the list."""
    if body.startswith(delimiter):
        pos = 0
    else:
        pos = body.find(b"\r\n" + delimiter)
        if pos < 0:
            raise SMIMEError("multipart/signed: boundary not found")
        pos += 2
    parts: list[bytes] = []
    while True:
        line_end = body.find(b"\r\n", pos)
        line = body[pos: len(body) if line_end < 0 else line_end]
        rest = line[len(delimiter):]
        if rest.startswith(b"--"):
            return parts
        if rest.strip(b" \t"):
            raise SMIMEError("multipart/signed: text after a boundary delimiter")
        if line_end < 0:
            raise SMIMEError("multipart/signed: truncated (no closing boundary)")
        start = line_end + 2
        nxt = body.find(b"\r\n" + delimiter, start)
        if nxt < 0:
            raise SMIMEError("multipart/signed: truncated (no closing boundary)")
        parts.append(body[start:nxt])
        pos = nxt + 2


def _fail(code: str, reason: str, signer: cr.ParsedSigner, **kw: object) -> SignerInfoResult:
    cert = signer.certificate
    return SignerInfoResult(
        ok=False, code=code, reason=reason, certificate=cert,
        chain=kw.get("chain", ()),  # type: ignore[arg-type]
        digest_algorithm=cs.DIGEST_BY_OID.get(signer.digest_oid, signer.digest_oid),
        signature_algorithm=cs.SIGNATURE_OIDS.get(signer.signature_oid,
                                                  (signer.signature_oid, None))[0],
        signing_time=kw.get("signing_time"),  # type: ignore[arg-type]
        addresses=email_addresses(cert) if cert is not None else (),
        domains=dns_names(cert) if cert is not None else (),
        revocation=str(kw.get("revocation", "not-checked")))


def _verify_signer(signer: cr.ParsedSigner, parsed: cr.ParsedSignedData, content: bytes,
                   anchors: Sequence[x509.Certificate], at: dt.datetime,
                   revocation: RevocationCheck | None) -> SignerInfoResult:
    cert = signer.certificate
    if cert is None:
        return _fail("no-signer-certificate",
                     f"the signer's certificate ({signer.sid}) is not in the message", signer)
    digest = cs.DIGEST_BY_OID.get(signer.digest_oid)
    kind, sig_hash = cs.SIGNATURE_OIDS.get(signer.signature_oid, ("", None))
    if digest is None or not kind:
        return _fail("unsupported-algorithm", f"digest {signer.digest_oid} / signature "
                     f"{signer.signature_oid} is not supported", signer)
    if sig_hash is not None and sig_hash != digest:
        return _fail("unsupported-algorithm", f"signature hash {sig_hash} differs from "
                     f"digest algorithm {digest}", signer)
    md = hashlib.new(digest, content).digest()
    signing_time: dt.datetime | None = None
    if signer.signed_attrs is None:
        # RFC 5652 §5.4: without signed attributes the signature covers the content itself,
        # which is only allowed for id-data.
        if parsed.content_type != cs.ID_DATA:
            return _fail("bad-attributes", "signed attributes missing for a content type "
                         "other than id-data", signer)
        signed = content
    else:
        problem, signing_time = _check_attributes(signer, parsed.content_type, md)
        if problem is not None:
            return _fail(problem[0], problem[1], signer, signing_time=signing_time)
        signed = signer.signed_attrs
    bad = _check_signature(cert, kind, digest, signer, signed)
    if bad is not None:
        return _fail(bad[0], bad[1], signer, signing_time=signing_time)
    others = [c for c in parsed.certificates if c is not cert]
    # Passing chain verdicts are remembered per process (gateway/keys/chain_cache.py);
    # revocation below is still asked for every message.
    chain = validate_certificate_cached(cert, anchors=anchors, intermediates=others, at=at,
                                        purpose="sign")
    if not chain.ok:
        return _fail(chain.code, chain.reason, signer, signing_time=signing_time)
    status, why = _revocation(chain.chain, revocation)
    if status == "revoked":
        return _fail("revoked", why, signer, chain=chain.chain, signing_time=signing_time,
                     revocation=status)
    return SignerInfoResult(
        ok=True, code="ok", reason=f"signed by {cert.subject.rfc4514_string()}",
        certificate=cert, chain=chain.chain, digest_algorithm=digest,
        signature_algorithm=kind, signing_time=signing_time,
        addresses=email_addresses(cert), domains=dns_names(cert), revocation=status,
        capabilities_der=signer.attribute(cs.ATTR_SMIME_CAPABILITIES) or ())


def _check_attributes(signer: cr.ParsedSigner, content_type: str,
                      md: bytes) -> tuple[tuple[str, str] | None, dt.datetime | None]:
    """RFC 5652 §5.3/§11: exactly one contentType equal to eContentType, exactly one
    messageDigest equal to the content's digest; signingTime read when present."""
    signing_time = None
    times = signer.attribute(cs.ATTR_SIGNING_TIME)
    if times:
        signing_time = cr.decode_signing_time(times[0])
    types = signer.attribute(cs.ATTR_CONTENT_TYPE)
    digests = signer.attribute(cs.ATTR_MESSAGE_DIGEST)
    if types is None or digests is None:
        return ("bad-attributes", "signed attributes lack contentType or messageDigest"), \
            signing_time
    if len(types) != 1 or len(digests) != 1:
        return ("bad-attributes", "contentType or messageDigest has more than one value"), \
            signing_time
    if cr.decode_oid(types[0]) != content_type:
        return ("content-type-mismatch", "the contentType attribute differs from the "
                "encapsulated content type"), signing_time
    if cr.decode_octets(digests[0]) != md:
        return ("digest-mismatch", "the content does not match the signed message digest "
                "(altered in transit?)"), signing_time
    return None, signing_time


def _check_signature(cert: x509.Certificate, kind: str, digest: str,
                     signer: cr.ParsedSigner, signed: bytes) -> tuple[str, str] | None:
    hash_alg = cs.HASH_CLASSES[digest]()
    try:
        key = cert.public_key()
        if kind == "ecdsa":
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return "bad-signature", "an ECDSA signature from a non-EC certificate"
            key.verify(signer.signature, signed, ec.ECDSA(hash_alg))
            return None
        if not isinstance(key, rsa.RSAPublicKey):
            return "bad-signature", "an RSA signature from a non-RSA certificate"
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
        if kind == "rsa-pss":
            pss = _pss_padding(signer.signature_params, digest)
            if isinstance(pss, str):
                return "unsupported-algorithm", pss
            pad = pss
        key.verify(signer.signature, signed, pad, hash_alg)
    except InvalidSignature:
        return "bad-signature", "the signature does not verify with the signer's certificate"
    except (UnsupportedAlgorithm, ValueError, TypeError) as e:
        return "unsupported-algorithm", f"cannot verify this signature: {e}"
    return None


def _pss_padding(params: bytes | None, digest: str) -> padding.PSS | str:
    """RFC 4055 §3.1 parameters → padding, or a sentence saying why not."""
    from asn1crypto import algos

    if params is None:
        return "RSASSA-PSS without parameters"
    try:
        p = algos.RSASSAPSSParams.load(params, strict=True)
        hash_name = p["hash_algorithm"]["algorithm"].native
        mgf = p["mask_gen_algorithm"]
        mgf_name = mgf["algorithm"].native
        mgf_hash = mgf["parameters"]["algorithm"].native
        salt = int(p["salt_length"].native)
        trailer = p["trailer_field"].native
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        return f"malformed RSASSA-PSS parameters: {e}"
    if hash_name != digest or mgf_name != "mgf1" or mgf_hash != digest:
        return f"RSASSA-PSS with hash {hash_name}/{mgf_name}-{mgf_hash} under digest {digest}"
    if trailer not in ("trailer_field_bc", 1) or not 0 <= salt <= 1024:
        return "RSASSA-PSS with an unusual trailer field or salt length"
    hash_alg: hashes.HashAlgorithm = cs.HASH_CLASSES[digest]()
    return padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=salt)


def _revocation(chain: tuple[x509.Certificate, ...],
                check: RevocationCheck | None) -> tuple[str, str]:
    """Ask check about every certificate below the anchor; the worst answer wins."""
    if check is None:
        return "not-checked", "no revocation check configured"
    unknown = ""
    for cert, issuer in itertools.pairwise(chain):
        try:
            answer = check(cert, issuer)
        except Exception as e:  # a plug-in failing must read as "unknown", never as "good"
            answer = RevocationStatus("unknown", f"revocation check failed: {e}")
        if answer.status == "revoked":
            return "revoked", f"{cert.subject.rfc4514_string()} is revoked" + (
                f": {answer.reason}" if answer.reason else "")
        if answer.status != "good":
            unknown = unknown or f"{cert.subject.rfc4514_string()}: revocation status " \
                f"unknown{': ' + answer.reason if answer.reason else ''}"
    return ("unknown", unknown) if unknown else ("good", "not revoked")
