"""Which of our identities signs a message (RFC 8551 §3.5: the signer speaks for the sender).

The `signing_certificate` decision: "domain" (the sender domain's identity), "sender"
(the sender's own certificate only), "sender-or-domain" (own if we hold one, else the
domain's), or a named identity (an address or a domain). The sender is the envelope
sender, or for the null sender (a bounce from a server behind us, RFC 5321 §4.5.5) the
From address. Names are looked up in the KeyRing's maps, not by reading certificates.
"""

from __future__ import annotations

import email.utils

from gateway.envelope import Envelope, domain_of
from gateway.keys import Identity, KeyRing
from gateway.policy.facts import MessageFacts


def sender_of(env: Envelope, facts: MessageFacts) -> str:
    """Whose message it is for signing, lower-cased ("" if nobody's)."""
    if env.mail_from:
        return env.mail_from.lower()
    values = facts.header_values("from")
    return email.utils.parseaddr(values[0])[1].lower() if values else ""


def signer_for(keyring: KeyRing, sender: str, choice: str) -> tuple[Identity | None, str]:
    """The identity to sign with and which kind it is ("domain", "sender" or "named")."""
    if choice in ("sender", "sender-or-domain"):
        own = keyring.for_user(sender) if sender else None
        if own is not None or choice == "sender":
            return own, "sender"
    if choice in ("domain", "sender-or-domain"):
        return (keyring.for_domain(domain_of(sender)) if sender else None), "domain"
    named = choice.lower()  # a rule names an identity by its address or its domain
    return (keyring.for_user(named) if "@" in named else keyring.for_domain(named)), "named"
