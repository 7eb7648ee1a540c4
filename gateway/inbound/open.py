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
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from gateway.keys import KeyRing
from gateway.mime.canon import canonicalize
from gateway.revocation import RevocationPolicy, Verdict
from gateway.smime import SMIMEError
from gateway.smime.decrypt import decrypt_parsed
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
    detect_message,
    is_p7m,
)
from gateway.smime.message import Message, parse_message
from gateway.smime.verify import verify_parsed

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
    last = _last_from
    if last is not None and last[0] is message:
        return list(last[1])
    try:
        msg = parse_message(message)
    except SMIMEError:
        return []
    return _remember_from(message, msg)


def _remember_from(message: bytes, msg: Message) -> list[str]:
    """from_addresses of message, already parsed as msg, kept for the next question."""
    global _last_from
    fields = [h.value for h in msg.headers if h.key == "from"]
    simple = [_SIMPLE_FROM.fullmatch(f) for f in fields]
    if all(simple):  # the usual "addr" or "Name <addr>": what getaddresses would find
        found = [(m[1] or m[2]).lower() for m in simple if m is not None]
    else:
        found = [a.lower() for _, a in email.utils.getaddresses(fields) if "@" in a]
    _last_from = (message, tuple(found))
    return found


# A From field of one plain address, bare or after a display name of plain words
# (RFC 5322 dot-atoms; a property test holds it to email.utils.getaddresses): read
# with one regex, at a tenth of the cost of getaddresses' general parser.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR = rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*"
_SIMPLE_FROM = re.compile(rf"({_ADDR})|{_ATOM}(?: {_ATOM})* ?<({_ADDR})>")

# The opened message's From is read up to four times (signer check, Authentication-Results,
# harvest, learnt capabilities), at a tenth of a verification each, and only for mail
# whose signature passed: the last answer is kept with the very bytes object it is for
# (held, so its identity cannot be reused).
_last_from: tuple[bytes, tuple[str, ...]] | None = None


def from_address(message: bytes) -> str:
    """The (first) From address of a message, lower case; "" when there is none."""
    addresses = from_addresses(message)
    return addresses[0] if addresses else ""


def open_message(data: bytes, keys: KeyRing, anchors: Sequence[x509.Certificate],
                 policy: RevocationPolicy) -> Opened:
    """Decrypt and verify data (a whole CRLF message); never raises SMIMEError.

    Each layer's bytes are parsed once (parse_message) and the parsed message goes to
    detection, decryption and verification alike; decryption hands back its result
    parsed, so a decrypted layer is not parsed again either."""
    current = unsigned = data
    parsed: Message | None = None  # current, parsed, when decryption did it already
    decrypted = False
    verdict: Verdict | None = None
    for _ in range(MAX_LAYERS):
        try:
            msg = parsed if parsed is not None else parse_message(current)
        except SMIMEError as e:  # an unreadable header block
            verdict = verdict or policy.verdict(None, e)
            break
        parsed = msg
        layers = detect_message(msg).layers
        outer = layers[0] if layers else _claimed(msg)
        if outer in ENCRYPTED_LAYERS:
            try:
                current, parsed = decrypt_parsed(msg, keys)
            except SMIMEError as e:
                return Opened(data, data, None, decrypted, f"{e.code}: {e}")
            unsigned = current
            decrypted = True
            continue
        if outer in SIGNED_LAYERS and verdict is None:
            canonical = canonicalize(current)
            try:
                # verify() canonicalises first; mail from SMTP already is canonical, so
                # the parse at hand is the one verify would make.
                signed = msg if canonical is current or canonical == current else \
                    parse_message(canonical)
                result = verify_parsed(signed, anchors=anchors, revocation=policy.check)
            except SMIMEError as e:
                verdict = policy.verdict(None, e)
                break
            verdict = policy.verdict(result)
            unsigned = result.message
            if len(layers) > 1 and layers[1] in ENCRYPTED_LAYERS:
                current, parsed = unsigned, None  # signed, then encrypted again inside
                continue
        break
    if verdict is None:
        verdict = policy.verdict(None)
    # parsed is None or the parse of current (each step above keeps that so).
    return Opened(current, unsigned, _match_from(verdict, current, parsed), decrypted)


def _claimed(msg: Message) -> str:
    """The layer the top Content-Type claims when detect() could not read it: garbage
    CMS is then judged (undecryptable, or neutral), never taken for unsigned mail."""
    ct = content_type_of(msg)
    if ct.mime_type == "multipart/signed":
        proto = ct.params.get("protocol", "").lower()
        return SIGNED if proto in PKCS7_SIGNATURE else "none"
    if ct.mime_type in PKCS7_MIME or is_p7m(ct, msg):
        kind = SMIME_TYPES.get(ct.params.get("smime-type", "").lower(), OPAQUE_SIGNED)
        return ENVELOPED if kind in ENCRYPTED_LAYERS else OPAQUE_SIGNED
    return "none"


def _match_from(verdict: Verdict, message: bytes, parsed: Message | None) -> Verdict:
    """RFC 8550 §3: a passing signer must speak for From (address or its domain).
    parsed: message parsed, when at hand (From is then read without parsing again)."""
    if verdict.result != "pass" or verdict.signer is None:
        return verdict
    senders = from_addresses(message) if parsed is None else _remember_from(message, parsed)
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
