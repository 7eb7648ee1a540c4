"""DANE for SMTP delivery: the TLSA records of a next hop and the check of its certificate.

RFC 7672 (SMTP security via opportunistic DANE TLS), RFC 6698 (the TLSA record), RFC 7671
(DANE operational updates). The TLSA RRset `_<port>._tcp.<MX host>` is asked for with the
DO bit (RFC 3225) and counts only when the resolver set the AD bit on the answer: this
module trusts the configured resolvers to validate DNSSEC (`delivery.dane`), as Postfix's
`smtp_dns_support_level = dnssec` does; it validates nothing itself.

What the RRset means for one host (RFC 7672 §2.2):
  INSECURE  the answer was not AD, or the MX / address records were not: DANE does not
            apply, the destination's non-DANE TLS policy does;
  ABSENT    securely no records: likewise;
  UNUSABLE  records, none usable: TLS is mandatory but unauthenticated (their presence
            says the host does TLS);
  USABLE    the peer must present a certificate one of them matches, else no delivery.

Usable records (RFC 7672 §3.1, RFC 7671 §5): usage DANE-EE (3) or DANE-TA (2), selector 0
(whole certificate) or 1 (SubjectPublicKeyInfo), matching type 0 (exact), 1 (SHA2-256) or
2 (SHA2-512). PKIX-TA/PKIX-EE (0, 1) are unusable for SMTP (RFC 7672 §3.1.3), as is any
unknown value. A hash of the wrong length never reaches this module: dnspython refuses
the whole answer (ignoring it, as it would a spoofed reply, until the resolver's lifetime
is over), which counts as a failed lookup: the host is then skipped (§2.1.1).

DANE-EE: the leaf matches; no name or expiry checks (RFC 7672 §3.1.1). DANE-TA (§3.1.2,
RFC 7671 §5.2.2): a certificate the peer sent after its leaf matches the record; the
leaf chains to it (issuer names and signatures, each issuer below the anchor a CA); the
leaf and those issuers are within their validity; and the leaf names the MX host or the
recipient domain (§3.2.2-3: DNS-ID, else the CN; a wildcard only as the whole left-most
label). A trust anchor published as a bare key that the peer does not send is not
supported: it matches nothing. The peer's chain comes from `get_unverified_chain`, which
CPython has had since 3.10 but publishes on SSLObject only from 3.13: on 3.11 it is read
from the private `_sslobj` (gateway.delivery.dane.peer_chain); without it DANE-TA records
match nothing and only DANE-EE can authenticate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ssl
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.resolver
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from dns.rdtypes.ANY.TLSA import TLSA

USAGE_PKIX_TA, USAGE_PKIX_EE, USAGE_DANE_TA, USAGE_DANE_EE = 0, 1, 2, 3  # RFC 6698 §2.1.1
SELECTOR_CERT, SELECTOR_SPKI = 0, 1  # RFC 6698 §2.1.2
MATCH_EXACT, MATCH_SHA256, MATCH_SHA512 = 0, 1, 2  # RFC 6698 §2.1.3

INSECURE, ABSENT, UNUSABLE, USABLE = "insecure", "absent", "unusable", "usable"


class TlsaLookupError(Exception):
    """The TLSA RRset of a secure host could not be had (SERVFAIL, timeout, malformed):
    the host must not be used, with or without TLS (RFC 7672 §2.1.1)."""


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()[:16]}"


@dataclass(frozen=True, slots=True)
class Tlsa:
    """What a host's TLSA RRset says: its state and the records that may be used."""

    state: str  # INSECURE | ABSENT | UNUSABLE | USABLE
    records: tuple[TlsaRecord, ...] = ()  # the usable ones
    ignored: int = 0  # records present but not usable


def tlsa_name(host: str, port: int) -> str:
    """RFC 6698 §3: the owner name of the TLSA RRset of a TCP service."""
    return f"_{port}._tcp.{host.rstrip('.')}."


def unusable_because(r: TlsaRecord) -> str | None:
    """Why a record cannot be used here, or None when it can."""
    if r.usage in (USAGE_PKIX_TA, USAGE_PKIX_EE):
        return "PKIX usages are not for SMTP (RFC 7672 §3.1.3)"
    if r.usage not in (USAGE_DANE_TA, USAGE_DANE_EE):
        return f"unknown usage {r.usage}"
    if r.selector not in (SELECTOR_CERT, SELECTOR_SPKI):
        return f"unknown selector {r.selector}"
    if r.mtype not in (MATCH_EXACT, MATCH_SHA256, MATCH_SHA512):
        return f"unknown matching type {r.mtype}"
    if not r.data:
        return "empty association data"
    return None


def classify(records: list[TlsaRecord]) -> Tlsa:
    """The state of a secure, non-empty or empty TLSA RRset."""
    if not records:
        return Tlsa(ABSENT)
    usable = tuple(r for r in records if unusable_because(r) is None)
    return Tlsa(USABLE if usable else UNUSABLE, usable, len(records) - len(usable))


async def lookup(resolver: dns.asyncresolver.Resolver, host: str, port: int) -> Tlsa:
    """The TLSA state of a host whose MX and address records were secure.
    Raises TlsaLookupError."""
    qname = tlsa_name(host, port)
    try:
        answer = await resolver.resolve(qname, "TLSA")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as e:
        # Securely absent or not, nothing follows from it (RFC 7672 §2.2).
        return Tlsa(ABSENT if _ad(denial_response(e)) else INSECURE)
    except (dns.exception.DNSException, OSError) as e:
        raise TlsaLookupError(f"TLSA lookup of {qname} failed: "
                              f"{e.__class__.__name__}") from None
    if not _ad(answer.response):
        return Tlsa(INSECURE)
    return classify([TlsaRecord(r.usage, r.selector, r.mtype, bytes(r.cert))
                     for r in answer if isinstance(r, TLSA)])


def denial_response(e: dns.resolver.NXDOMAIN | dns.resolver.NoAnswer) -> object:
    """The response that said there is nothing (for its AD bit)."""
    kwargs: dict[str, object] = e.kwargs
    if isinstance(e, dns.resolver.NoAnswer):
        return kwargs.get("response")
    responses = kwargs.get("responses")
    return next(iter(responses.values()), None) if isinstance(responses, dict) else None


def _ad(response: object) -> bool:
    """The resolver validated it (RFC 4035 §3.2.3: the AD bit)."""
    flags = getattr(response, "flags", 0)
    return bool(flags & dns.flags.AD)


@dataclass(frozen=True, slots=True)
class Expected:
    """What a peer must show under policy "dane": a match of one of `records`; for a
    DANE-TA match also one of `names` in its leaf (RFC 7672 §3.2.2)."""

    records: tuple[TlsaRecord, ...]
    names: tuple[str, ...]  # the TLSA base domain (MX host), the recipient domain


def peer_chain(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The certificates the peer sent, leaf first, DER; at least the leaf when it sent
    one (a client is always sent it, verified or not)."""
    public = getattr(ssl_object, "get_unverified_chain", None)  # Python >= 3.13
    if public is not None:
        return [bytes(c) for c in public() or []]
    private = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if private is not None:  # CPython 3.10-3.12: the same call, not yet public
        chain = [c.public_bytes(2) for c in private() or []]  # 2: _ssl.ENCODING_DER
        if chain:
            return chain
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def authenticate(expected: Expected, chain: list[bytes],
                 now: dt.datetime | None = None) -> str | None:
    """None when the peer's chain (leaf first) satisfies one usable record, else why
    not (RFC 7672 §3.1)."""
    if not chain:
        return "it sent no certificate"
    if matches(expected.records, chain[0]) is not None:
        return None
    ta_records = tuple(r for r in expected.records if r.usage == USAGE_DANE_TA)
    if not ta_records:
        return f"its certificate matches none of its {len(expected.records)} usable " \
               "TLSA record(s)"
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError:
        return "it sent a certificate that cannot be read"
    for k in range(1, len(certs)):
        if any(_selected_matches(r, chain[k], certs[k]) for r in ta_records):
            return _chain_problem(certs[:k + 1], expected.names,
                                  now or dt.datetime.now(dt.UTC))
    return f"no certificate it sent matches its {len(expected.records)} usable TLSA " \
           "record(s)"


def _chain_problem(path: list[x509.Certificate], names: tuple[str, ...],
                   now: dt.datetime) -> str | None:
    """path: leaf, intermediates, then the DANE-TA anchor (whose own validity and
    constraints are not checked: DNS made it an anchor, RFC 7671 §5.2.2)."""
    for i, cert in enumerate(path[:-1]):
        try:
            cert.verify_directly_issued_by(path[i + 1])
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return f"certificate {i} of its chain is not issued by the next"
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return f"certificate {i} of its chain is outside its validity period"
        if i > 0 and not _is_ca(cert):
            return f"certificate {i} of its chain is not a CA"
    if not any(_name_matches(p, n) for p in _presented_names(path[0]) for n in names):
        return f"its certificate names none of {', '.join(names)} (DANE-TA)"
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


def _presented_names(cert: x509.Certificate) -> list[str]:
    """RFC 7672 §3.2.3: the DNS-IDs; the CN only without a subjectAltName (RFC 6125
    §6.4.4)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    except ValueError:  # a malformed extension names nothing
        return []


def _name_matches(presented: str, reference: str) -> bool:
    p, r = presented.lower().rstrip("."), reference.lower().rstrip(".")
    if p.startswith("*."):  # the whole left-most label only (RFC 7672 §3.2.3)
        head, dot, rest = r.partition(".")
        return bool(head) and bool(dot) and "." in rest and rest == p[2:]
    return bool(p) and p == r


def _selected_matches(r: TlsaRecord, der: bytes, cert: x509.Certificate | None) -> bool:
    if r.selector == SELECTOR_CERT:
        selected = der
    else:
        try:
            if cert is None:
                cert = x509.load_der_x509_certificate(der)
            selected = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        except (ValueError, TypeError, UnsupportedAlgorithm):  # unreadable: no match
            return False
    if r.mtype == MATCH_SHA256:
        selected = hashlib.sha256(selected).digest()
    elif r.mtype == MATCH_SHA512:
        selected = hashlib.sha512(selected).digest()
    return hmac.compare_digest(selected, r.data)


def matches(records: tuple[TlsaRecord, ...], leaf_der: bytes) -> TlsaRecord | None:
    """The DANE-EE record the peer's certificate matches (RFC 6698 §2.1, RFC 7672
    §3.1.1: names and expiry are not checked), or None."""
    for r in records:
        if r.usage == USAGE_DANE_EE and _selected_matches(r, leaf_der, None):
            return r
    return None
