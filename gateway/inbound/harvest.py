"""Harvesting, the worker's half: signer certificates of verified inbound mail.

With `[inbound] harvest = true`, for a delivered message whose signature passed (chain to
our anchors, not revoked, signer speaks for From: RFC 8550 §3), the inbound job returns
the signer's certificate chain and the From addresses it names (rfc822Name); the crypto
job puts them in Result.harvested. The front end, the certificate cache's only writer,
offers them to its CertificateResolver (`offer_harvested`), which applies the lookup
trust gate again (purpose "encrypt") and never lets them replace a directory's answer.
A domain certificate names no address and is not harvested.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from gateway.inbound.open import Opened, from_addresses

Harvested = tuple[tuple[str, tuple[bytes, ...]], ...]


def candidates(opened: Opened) -> Harvested:
    """(From address, DER chain signer first) for each From address the passing
    signer's certificate names; () for any other verdict."""
    v = opened.verdict
    if v is None or v.result != "pass" or v.signer is None or v.signer.certificate is None:
        return ()
    leaf = v.signer.certificate
    chain = (leaf, *(c for c in v.signer.chain if c != leaf))
    ders = tuple(c.public_bytes(serialization.Encoding.DER) for c in chain)
    named = set(v.signer.addresses)
    return tuple((a, ders) for a in dict.fromkeys(from_addresses(opened.message))
                 if a in named)
