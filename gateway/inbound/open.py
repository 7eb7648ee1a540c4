"""Open an inbound message: decrypt every encrypted layer, verify the signature, judge.

Layers are followed from the outside in (gateway.smime.detect): enveloped and
auth-enveloped data (RFC 8551 §3.3, RFC 5083) are decrypted with whichever of our
identities (domain or user, `[keys]`) a RecipientInfo names; the first signed layer,
multipart/signed or opaque (RFC 8551 §3.5), is verified against the trust anchors with
the RevocationPolicy's check, and its VerifyResult becomes the RFC 7281 verdict
(gateway.revocation.policy). A signed layer whose content is encrypted again (sign, then
encrypt, then sign) is opened further. A signature that verifies must also speak for the
From address (RFC 8550 §3: the certificate names the address, or is a domain certificate
of its domain); otherwise the verdict is fail, with the reason.
"""

from __future__ import annotations

import dataclasses
import email.utils
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from gateway.keys import KeyRing
from gateway.revocation import RevocationPolicy, Verdict
from gateway.smime import SMIMEError, decrypt, detect, verify
from gateway.smime.detect import (
    ENCRYPTED_LAYERS,
    ENVELOPED,
    OPAQUE_SIGNED,
    PKCS7_MIME,
    PKCS7_SIGNATURE,
    SIGNED,
    SIGNED_LAYERS,
    SMIME_TYPES,
    content_type_of,
    is_p7m,
)
from gateway.smime.message import parse_message

MAX_LAYERS = 8  # as gateway.smime.detect: nobody nests deeper


@dataclass(frozen=True, slots=True)
class Opened:
    """What the message turned out to be. verdict None: it could not be decrypted."""

    message: bytes  # decrypted, signature kept (what "deliver" sends by default)
    unsigned: bytes  # decrypted, signature removed (strip_signature), else == message
    verdict: Verdict | None
    decrypted: bool
    error: str = ""  # why it could not be decrypted


def from_addresses(message: bytes) -> list[str]:
    """Every address of every From field (lower case); [] when there is none."""
    global _last_from
    last = _last_from
    if last is not None and last[0] is message:
        return list(last[1])
    try:
        fields = [h.value for h in parse_message(message).headers if h.key == "from"]
    except SMIMEError:
        return []
    found = [a.lower() for _, a in email.utils.getaddresses(fields) if "@" in a]
    _last_from = (message, tuple(found))
    return found


# The opened message's From is read up to four times (signer check, Authentication-Results,
# harvest, learnt capabilities), at a tenth of a verification each: the last answer is
# kept with the very bytes object it is for (held, so its identity cannot be reused).
_last_from: tuple[bytes, tuple[str, ...]] | None = None


def from_address(message: bytes) -> str:
    """The (first) From address of a message, lower case; "" when there is none."""
    addresses = from_addresses(message)
    return addresses[0] if addresses else ""


def open_message(data: bytes, keys: KeyRing, anchors: Sequence[x509.Certificate],
                 policy: RevocationPolicy) -> Opened:
    """Decrypt and verify data (a whole CRLF message); never raises SMIMEError."""
    current = unsigned = data
    decrypted = False
    verdict: Verdict | None = None
    for _ in range(MAX_LAYERS):
        try:
            layers = detect(current).layers
        except SMIMEError as e:  # an unreadable header block
            verdict = verdict or policy.verdict(None, e)
            break
        outer = layers[0] if layers else _claimed(current)
        if outer in ENCRYPTED_LAYERS:
            try:
                current = unsigned = decrypt(current, keys)
            except SMIMEError as e:
                return Opened(data, data, None, decrypted, f"{e.code}: {e}")
            decrypted = True
            continue
        if outer in SIGNED_LAYERS and verdict is None:
            try:
                result = verify(current, anchors=anchors, revocation=policy.check)
            except SMIMEError as e:
                verdict = policy.verdict(None, e)
                break
            verdict = policy.verdict(result)
            unsigned = result.message
            if len(layers) > 1 and layers[1] in ENCRYPTED_LAYERS:
                current = unsigned  # signed, then encrypted again inside: open that too
                continue
        break
    if verdict is None:
        verdict = policy.verdict(None)
    return Opened(current, unsigned, _match_from(verdict, current), decrypted)


def _claimed(message: bytes) -> str:
    """The layer the top Content-Type claims when detect() could not read it: garbage
    CMS is then judged (undecryptable, or neutral), never taken for unsigned mail."""
    try:
        msg = parse_message(message)
    except SMIMEError:
        return "none"
    ct = content_type_of(msg)
    if ct.mime_type == "multipart/signed":
        proto = ct.params.get("protocol", "").lower()
        return SIGNED if proto in PKCS7_SIGNATURE else "none"
    if ct.mime_type in PKCS7_MIME or is_p7m(ct, msg):
        kind = SMIME_TYPES.get(ct.params.get("smime-type", "").lower(), OPAQUE_SIGNED)
        return ENVELOPED if kind in ENCRYPTED_LAYERS else OPAQUE_SIGNED
    return "none"


def _match_from(verdict: Verdict, message: bytes) -> Verdict:
    """RFC 8550 §3: a passing signer must speak for From (address or its domain)."""
    if verdict.result != "pass" or verdict.signer is None:
        return verdict
    senders = from_addresses(message)
    if not senders:
        return dataclasses.replace(verdict, result="fail",
                                   reason="signer-mismatch: the message has no From address")
    # Every From address (a second From field or address is what a reader may be shown).
    foreign = [a for a in senders if not verdict.signer.speaks_for(a)]
    if not foreign:
        return verdict
    names = ", ".join(verdict.signer.addresses + verdict.signer.domains) or \
        verdict.signer.subject
    return dataclasses.replace(verdict, result="fail", reason=f"signer-mismatch: the "
                               f"certificate ({names}) does not speak for From {foreign[0]}")
