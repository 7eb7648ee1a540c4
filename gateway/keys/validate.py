"""Is this certificate good for this use? The trust model's one gate (DESIGN.md).

Every certificate from any source — directory, DNS, harvested, the signer of a message —
passes through validate_certificate before it is used: a chain to our anchors (RFC 5280
§6, signatures and CA constraints), valid at the time asked, the S/MIME usage allowed
(RFC 8550 §4.4: emailProtection EKU, key usage), and naming the address or domain it is
used for. The answer is a ChainResult with a short code an operator can count by.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from gateway.keys.identity import dns_names, email_addresses

MAX_DEPTH = 8  # leaf + intermediates; deeper paths are refused rather than searched

# Extensions this gate understands; any other critical one makes a certificate unusable
# (RFC 5280 §4.2: a critical extension that is not recognised must be rejected).
_KNOWN_CRITICAL = frozenset({
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.NAME_CONSTRAINTS,
    ExtensionOID.CERTIFICATE_POLICIES, ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.INHIBIT_ANY_POLICY, ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
})

PURPOSES = ("sign", "encrypt", "any")


@dataclass(frozen=True)
class ChainResult:
    """The verdict: ok, or a code ("untrusted", "expired", ...) and a sentence why."""

    ok: bool
    code: str  # "ok" | "untrusted" | "bad-signature" | "expired" | "not-yet-valid" |
    #            "not-a-ca" | "path-too-long" | "bad-usage" | "wrong-name" |
    #            "unknown-critical-extension" | "malformed"
    reason: str
    chain: tuple[x509.Certificate, ...] = ()  # leaf first, anchor last (when ok)

    @staticmethod
    def fail(code: str, reason: str) -> ChainResult:
        return ChainResult(False, code, reason)


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    aki = _ext(child, x509.AuthorityKeyIdentifier)
    ski = _ext(parent, x509.SubjectKeyIdentifier)
    if isinstance(aki, x509.AuthorityKeyIdentifier) and aki.key_identifier and \
            isinstance(ski, x509.SubjectKeyIdentifier):
        return aki.key_identifier == ski.digest
    return True


def _signature_ok(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _time_problem(cert: x509.Certificate, at: dt.datetime) -> ChainResult | None:
    if at < cert.not_valid_before_utc:
        return ChainResult.fail("not-yet-valid", f"{_subject(cert)} is not valid before "
                                f"{cert.not_valid_before_utc.isoformat()}")
    if at > cert.not_valid_after_utc:
        return ChainResult.fail("expired", f"{_subject(cert)} expired "
                                f"{cert.not_valid_after_utc.isoformat()}")
    return None


def _ca_problem(cert: x509.Certificate, below: int) -> ChainResult | None:
    """Can cert issue the certificates below it (below = intermediates under it)?"""
    bc = _ext(cert, x509.BasicConstraints)
    if not isinstance(bc, x509.BasicConstraints) or not bc.ca:
        return ChainResult.fail("not-a-ca", f"{_subject(cert)} is not a CA certificate")
    if bc.path_length is not None and below > bc.path_length:
        return ChainResult.fail("path-too-long",
                                f"{_subject(cert)} allows {bc.path_length} CAs below it")
    ku = _ext(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
        return ChainResult.fail("not-a-ca", f"{_subject(cert)} may not sign certificates")
    return None


def _critical_problem(cert: x509.Certificate) -> ChainResult | None:
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _KNOWN_CRITICAL:
            return ChainResult.fail("unknown-critical-extension",
                                    f"{_subject(cert)} has critical extension "
                                    f"{ext.oid.dotted_string}")
    return None


def _usage_problem(cert: x509.Certificate, purpose: str) -> ChainResult | None:
    bc = _ext(cert, x509.BasicConstraints)
    if isinstance(bc, x509.BasicConstraints) and bc.ca:
        return ChainResult.fail("bad-usage", f"{_subject(cert)} is a CA, not an end entity")
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if isinstance(eku, x509.ExtendedKeyUsage) and \
            ExtendedKeyUsageOID.EMAIL_PROTECTION not in eku and \
            ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
        return ChainResult.fail("bad-usage", f"{_subject(cert)} lacks the emailProtection EKU")
    ku = _ext(cert, x509.KeyUsage)
    if not isinstance(ku, x509.KeyUsage):
        return None
    if purpose == "sign" and not (ku.digital_signature or ku.content_commitment):
        return ChainResult.fail("bad-usage", f"{_subject(cert)} may not sign (key usage)")
    if purpose == "encrypt":
        is_ec = isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        allowed = ku.key_agreement if is_ec else ku.key_encipherment
        if not allowed:
            need = "keyAgreement" if is_ec else "keyEncipherment"
            return ChainResult.fail("bad-usage", f"{_subject(cert)} lacks {need} (key usage)")
    return None


def names_match(cert: x509.Certificate, name: str) -> bool:
    """Does cert speak for name? An address: its rfc822Name, or a domain certificate of its
    domain (a domain certificate is accepted for its own domain). A domain: its dNSName,
    or an rfc822Name within the domain."""
    name = name.lower()
    if "@" in name:
        return name in email_addresses(cert) or name.rpartition("@")[2] in dns_names(cert)
    return name in dns_names(cert) or any(a.rpartition("@")[2] == name
                                          for a in email_addresses(cert))


def validate_certificate(
    cert: x509.Certificate,
    *,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    at: dt.datetime | None = None,
    purpose: str = "any",
    name: str | None = None,
) -> ChainResult:
    """The verdict on cert for purpose ("sign", "encrypt", "any"), naming name if given."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}")
    at = at or dt.datetime.now(dt.UTC)
    try:
        for check in (_critical_problem(cert), _usage_problem(cert, purpose),
                      _time_problem(cert, at)):
            if check is not None:
                return check
        if name is not None and not names_match(cert, name):
            return ChainResult.fail("wrong-name", f"{_subject(cert)} does not name {name}")
        return _build(cert, list(anchors), list(intermediates), at)
    except ValueError as e:  # a certificate whose extensions do not parse
        return ChainResult.fail("malformed", f"{_subject(cert)}: {e}")


def _build(leaf: x509.Certificate, anchors: list[x509.Certificate],
           intermediates: list[x509.Certificate], at: dt.datetime) -> ChainResult:
    """Depth-first search for a path leaf → … → anchor that passes every check."""
    last_failure = ChainResult.fail(
        "untrusted", f"{_subject(leaf)}: no chain to a trust anchor (issuer "
        f"{leaf.issuer.rfc4514_string()})")

    def search(path: list[x509.Certificate]) -> ChainResult | None:
        nonlocal last_failure
        child = path[-1]
        for anchor in anchors:
            if _issued_by(child, anchor):
                if not _signature_ok(child, anchor):
                    last_failure = ChainResult.fail(
                        "bad-signature", f"{_subject(child)}: signature by "
                        f"{_subject(anchor)} does not verify")
                    continue
                problem = _time_problem(anchor, at) or _ca_problem(anchor, len(path) - 1)
                if problem is None:
                    return ChainResult(True, "ok", "chains to a trust anchor",
                                       (*path, anchor))
                last_failure = problem
        if len(path) >= MAX_DEPTH:
            last_failure = ChainResult.fail("path-too-long", "no trust anchor within "
                                            f"{MAX_DEPTH} certificates")
            return None
        for inter in intermediates:
            if inter in path or not _issued_by(child, inter):
                continue
            if not _signature_ok(child, inter):
                last_failure = ChainResult.fail(
                    "bad-signature", f"{_subject(child)}: signature by {_subject(inter)} "
                    "does not verify")
                continue
            problem = (_time_problem(inter, at) or _ca_problem(inter, len(path) - 1)
                       or _critical_problem(inter))
            if problem is not None:
                last_failure = problem
                continue
            found = search([*path, inter])
            if found is not None:
                return found
        return None

    return search([leaf]) or last_failure
