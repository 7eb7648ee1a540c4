"""DANE SMIMEA (RFC 8162): user certificates published in the recipient's DNS.

Owner name (RFC 8162 §3): the SHA2-256 hash of the address's local part, truncated to
28 octets and written in hex, then "_smimecert." and the domain. The record's fields
are TLSA's (RFC 6698 §2.1): certificate usage 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA,
3 DANE-EE; selector 0 full certificate, 1 SubjectPublicKeyInfo; matching type 0 exact,
1 SHA2-256, 2 SHA2-512.

Trust: DANE-EE (usage 3) would let DNSSEC alone vouch for a certificate, but this
gateway does not validate DNSSEC (a stub resolver's AD bit is only as good as the path
to the resolver). So SMIMEA is only a source of candidates: an end-entity record
(usage 1 or 3) that carries a whole certificate (selector 0, matching type 0) gives a
candidate, a trust-anchor record (usage 0 or 2) with a whole certificate gives an extra
intermediate for path building — never an anchor — and every candidate must pass the
trust gate (gateway.keys.validate) like a directory's. Hash-only records (matching type
1 or 2, or selector 1) cannot produce a certificate and are skipped.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
from cryptography import x509
from dns.rdtypes.ANY.SMIMEA import SMIMEA

from gateway.lookup import metrics

log = logging.getLogger(__name__)

USAGE_PKIX_TA, USAGE_PKIX_EE, USAGE_DANE_TA, USAGE_DANE_EE = 0, 1, 2, 3  # RFC 6698 §2.1.1
SELECTOR_FULL = 0  # RFC 6698 §2.1.2
MATCHING_EXACT = 0  # RFC 6698 §2.1.3


def smimea_name(address: str) -> str:
    """The SMIMEA owner name of an address (RFC 8162 §3), fully qualified."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an e-mail address: {address!r}")
    digest = hashlib.sha256(local.encode("utf-8")).digest()[:28]
    return f"{digest.hex()}._smimecert.{domain.rstrip('.')}."


@dataclass(frozen=True, slots=True)
class SmimeaAnswer:
    """What the SMIMEA RRset gave: candidates to put through the trust gate."""

    certificates: tuple[x509.Certificate, ...]  # end-entity (usage 1 or 3)
    issuers: tuple[x509.Certificate, ...]  # trust-anchor records: path building only
    malformed: int  # records whose data is not a certificate
    skipped: int  # hash-only records, which cannot give a certificate


def parse_records(records: list[SMIMEA]) -> SmimeaAnswer:
    certs: list[x509.Certificate] = []
    issuers: list[x509.Certificate] = []
    malformed = skipped = 0
    for r in records:
        if r.selector != SELECTOR_FULL or r.mtype != MATCHING_EXACT:
            skipped += 1
            continue
        try:
            cert = x509.load_der_x509_certificate(r.cert)
        except ValueError:
            malformed += 1
            continue
        if r.usage in (USAGE_PKIX_EE, USAGE_DANE_EE):
            certs.append(cert)
        elif r.usage in (USAGE_PKIX_TA, USAGE_DANE_TA):
            issuers.append(cert)
        else:
            skipped += 1  # an unassigned usage: RFC 6698 §4.1 says not to use it
    return SmimeaAnswer(tuple(certs), tuple(issuers), malformed, skipped)


class DaneSource:
    """`await source.lookup(address)` → SmimeaAnswer (empty when there are no records),
    or None when DNS could not answer."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def lookup(self, address: str) -> SmimeaAnswer | None:
        qname = smimea_name(address)
        try:
            answer = await self.resolver.resolve(qname, "SMIMEA")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            metrics.DANE_QUERIES.labels("none").inc()
            return SmimeaAnswer((), (), 0, 0)
        except (dns.exception.DNSException, OSError) as e:
            metrics.DANE_QUERIES.labels("failed").inc()
            log.warning("SMIMEA lookup of %s (%s) failed: %s", address, qname, e)
            return None
        metrics.DANE_QUERIES.labels("found").inc()
        return parse_records([r for r in answer if isinstance(r, SMIMEA)])
