"""Learning capabilities, the worker's half: SMIMECapabilities of verified inbound mail.

With `[inbound] learn_capabilities` (default on), for a delivered message whose signature
passed (chain to our anchors, not revoked, signer speaks for From: RFC 8550 §3; the
condition harvesting uses) and whose signer announced SMIMECapabilities (RFC 8551
§2.5.2), the inbound job returns (name, algorithm OIDs, signing time) for each From
address; the crypto job puts them in Result.capabilities and the front end offers them to
its CertificateResolver (`offer_capabilities`; gateway/lookup/learned.py keeps the newest).

On by default, unlike harvesting: harvesting adds keys we encrypt to, learning only
chooses between two ciphers we trust (AES-GCM or AES-CBC) for keys found otherwise.

Whose software the list describes decides the name it is kept under: a certificate that
names the From address (rfc822Name) is the sender's own, its list is kept for the address
and used when we encrypt to the address's user certificate; a domain certificate
(dNSName) is the sender's gateway, its list is kept for the domain and used when we
encrypt to the domain's certificate, which that gateway decrypts. The time is the
signingTime attribute (RFC 8551 §2.7.1 orders by it), else when we received the message.
"""

from __future__ import annotations

from gateway.envelope import domain_of
from gateway.inbound.open import Opened, from_addresses

# (address or domain, algorithm OIDs most preferred first, signing time as Unix time)
Announced = tuple[tuple[str, tuple[str, ...], float], ...]


def candidates(opened: Opened, received_at: float) -> Announced:
    """What the passing signer of opened announced, per name it speaks for; () for any
    other verdict and when it announced nothing readable."""
    v = opened.verdict
    if v is None or v.result != "pass" or v.signer is None or v.signer.certificate is None:
        return ()
    oids = v.signer.capabilities
    if not oids:
        return ()  # absent or unreadable: what was learnt before stays
    when = v.signer.signing_time
    signed_at = when.timestamp() if when is not None else received_at
    names: dict[str, None] = {}
    for address in from_addresses(opened.message):
        if address in v.signer.addresses:
            names[address] = None
        elif domain_of(address) in v.signer.domains:
            names[domain_of(address)] = None
    return tuple((name, oids, signed_at) for name in names)
