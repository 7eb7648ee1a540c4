"""The content cipher for one recipient group: what the recipients are known to decrypt.

Policy decides a cipher; a GCM decision (AuthEnvelopedData, RFC 5083/5084) stands only
when every recipient of the group is known to take it, otherwise it becomes AES-CBC of
the same key size (EnvelopedData, which every S/MIME agent reads). A recipient is known
to take it when every certificate we encrypt to lists that GCM in its SMIMECapabilities
extension (RFC 4262, gateway/keys/capabilities.py), or when the most recent verified
signed message from it announced it in its smimeCapabilities attribute (RFC 8551 §2.7.1,
gateway/lookup/learned.py; read from the shared-memory cache, only when the certificates
do not settle it). Learnt lists are kept per sender address for user certificates and
per domain for domain certificates (gateway/inbound/learn.py says why), so the name read
follows the kind of certificate the group encrypts to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from gateway.envelope import domain_of
from gateway.keys.capabilities import GCM_CIPHERS, narrowed_cipher
from gateway.lookup import learned
from gateway.lookup._cache_py import CertCache


@dataclass(frozen=True, slots=True)
class Choice:
    cipher: str
    # "policy" (not a GCM decision, or nothing to encrypt to) | "certificates" (they all
    # list it) | "learned" (learnt capabilities made up for the certificates) | "narrowed"
    by: str


def learned_names(kind: str, rcpts: Sequence[str]) -> tuple[str, ...]:
    """The names whose learnt capabilities speak for rcpts' software when encrypting to
    their certificates of kind "user" (each address) or "domain" (each domain)."""
    if kind == "domain":
        return tuple(dict.fromkeys(domain_of(r) for r in rcpts))
    return tuple(dict.fromkeys(r.lower() for r in rcpts))


def choose(decided: str, certs: tuple[x509.Certificate, ...], kind: str,
           rcpts: Sequence[str], cache: CertCache | None,
           now: float | None = None) -> Choice:
    """The cipher to encrypt a group's copy with, and what decided it."""
    gcm = GCM_CIPHERS.get(decided)
    if gcm is None or not certs:
        return Choice(decided, "policy")
    narrowed = narrowed_cipher(decided, certs)
    if narrowed == decided:
        return Choice(decided, "certificates")
    oid = gcm[0]
    names = learned_names(kind, rcpts)
    if names and all((got := learned.read(cache, n, now)) is not None and oid in got.oids
                     for n in names):
        return Choice(decided, "learned")
    return Choice(narrowed, "narrowed")
