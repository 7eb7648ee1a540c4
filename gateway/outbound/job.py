"""The crypto job: one message in, one signed and encrypted copy per recipient group out.

Job function "gateway.outbound.job:process" (initializer context.init_worker). Per
message (DESIGN.md, process model; RFC 8551 for what is written):
1. Recipients in `smtp.local_domains` are inbound mail: gateway/inbound/job.py decrypts,
   verifies and applies [inbound] policy (deliver, reject, defer or quarantine), after
   the outbound recipients are done (a refused message is not quarantined as well).
2. The rest: the MIME scanner gives MessageFacts; policy decides per recipient
   (gateway/policy/engine.py); recipients are grouped by decision and certificate set
   (one envelope for recipients that share both).
3. The header fields `policy.strip_headers` names are removed (headers.py). Per group:
   strip the subject keywords the decision names; sign (RFC 8551 §3.5) with the sender
   domain's identity ("domain"), the sender's own ("sender") or the one a rule names (an
   address or a domain), unless sign = "never" or the input is already signed or
   encrypted; then encrypt (RFC 8551 §3.3) to the recipients' certificates from the
   shared-memory cache with the decision's cipher, narrowed from GCM to CBC of the same
   key size unless every certificate lists that GCM in SMIMECapabilities (RFC 4262;
   policy.gcm_without_capabilities skips this). Input that is already encrypted is
   passed on as it is (if_encrypted = "skip"), less those header fields.
4. No usable certificate → the decision's fallback: "plain" sends the signed copy
   unencrypted; "defer" refuses 451 4.7.0; "reject" refuses 550 5.7.1; "tls-only" is
   not available yet and acts as "defer"; "quarantine" keeps the ORIGINAL message (as
   received: it was never sent, so nothing is signed for it) in the quarantine store the
   inbound path uses, for that group's recipients only, and the session gets 250 (the id
   is in Result.quarantined). Since the result is per message, one group that must be
   refused refuses the whole message (replies.py says which reply wins), and then
   nothing is quarantined either: the client retries the whole message. Every decision
   and fallback is logged with the Message-ID and counted (gateway/outbound/metrics.py).
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
from dataclasses import dataclass

from cryptography import x509

from gateway.envelope import Envelope, Reply, domain_of
from gateway.inbound.job import handle
from gateway.inbound.quarantine import Quarantine, QuarantineError
from gateway.keys import Identity
from gateway.keys.capabilities import narrowed_cipher
from gateway.mime.canon import canonicalize
from gateway.mime.scanned import MimeError
from gateway.outbound import metrics
from gateway.outbound.certs import Found, certificates_for
from gateway.outbound.context import Loaded, current
from gateway.outbound.headers import strip_fields
from gateway.outbound.replies import (
    CRYPTO_FAILED,
    NO_CERTIFICATE_DEFER,
    NO_CERTIFICATE_REJECT,
    NO_SIGNING_IDENTITY,
)
from gateway.outbound.subject import strip_keywords
from gateway.policy.engine import Decision, decide_all, needs_text
from gateway.policy.extract import facts_from_message
from gateway.policy.facts import MessageFacts
from gateway.revocation import metrics as revocation_metrics
from gateway.smime import SMIMEError, encrypt, sign
from gateway.workers.jobs import Job, Output, Result

log = logging.getLogger(__name__)

# Fallbacks that refuse the message, and the reply each becomes.
_REFUSING = {"defer": NO_CERTIFICATE_DEFER, "reject": NO_CERTIFICATE_REJECT,
             "tls-only": NO_CERTIFICATE_DEFER}


class Refused(Exception):
    def __init__(self, reply: Reply, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Group:
    decision: Decision
    found: Found
    rcpts: tuple[str, ...]


def process(job: Job) -> Result:
    """The job function: see the module docstring."""
    return process_with(current(), job)


def process_with(state: Loaded, job: Job) -> Result:
    tally = metrics.Tally()
    result = _process(state, job, tally)
    # Revocation checks count in this worker's registry; their increments travel back too.
    return dataclasses.replace(result, counts=tally.counts() + revocation_metrics.drain())


def _process(state: Loaded, job: Job, tally: metrics.Tally) -> Result:
    env = job.envelope
    inbound = tuple(r for r in env.rcpt_tos if state.local.is_local(domain_of(r)))
    outbound = tuple(r for r in env.rcpt_tos if r not in inbound)
    result = _outbound(state, job, outbound, tally) if outbound else Result()
    if not inbound or result.refusal is not None:
        return result  # refused: nothing of it is quarantined either (the client retries)
    c = state.context
    done = handle(env, inbound, job.data, keys=state.keyring, anchors=state.anchors,
                  revocation=state.revocation, policy=state.inbound,
                  quarantine=Quarantine(c.quarantine_dir), tally=tally)
    if done.refusal is not None:
        _unquarantine(state, result.quarantined)  # the client retries the whole message
        return Result(refusal=done.refusal)
    first = (done.output,) if done.output is not None else ()
    held = (done.quarantined,) if done.quarantined else ()
    return Result(outputs=first + result.outputs, quarantined=held + result.quarantined,
                  harvested=done.harvested)


def _outbound(state: Loaded, job: Job, outbound: tuple[str, ...],
              tally: metrics.Tally) -> Result:
    env = job.envelope
    outputs: list[Output] = []
    data = canonicalize(job.data)
    try:
        facts = facts_from_message(data, want_text=needs_text(state.rules),
                                   budget=state.context.policy.text_budget)
    except MimeError as e:
        log.warning("message from %s refused: cannot be scanned: %s", env.mail_from, e)
        tally.inc("refused", "unscannable")
        return Result(refusal=e.reply)
    mid = (facts.header_values("message-id") or ("<no Message-ID>",))[0].strip()
    # Policy saw every field; what is sent says nothing internal (headers.py).
    data, removed = strip_fields(data, state.context.policy.strip_headers)
    if removed:
        log.info("%s: %d internal header field(s) removed (policy.strip_headers)", mid,
                 removed)
    decisions = decide_all(state.rules, state.defaults, sender=env.mail_from,
                           recipients=outbound, facts=facts, client_address=env.client_address)
    refusals: list[Refused] = []
    held: list[_Group] = []
    for group in _groups(state, decisions):
        if _held(group, facts):
            held.append(group)
            continue
        try:
            outputs.append(Output(group.rcpts, _copy(state, env, data, facts, group, mid,
                                                        tally)))
        except Refused as r:
            refusals.append(r)
    if refusals:
        # A permanent refusal wins: a retry could never deliver the message as written.
        worst = next((r for r in refusals if r.reply.permanent), refusals[0])
        tally.inc("refused", worst.reason)
        log.warning("%s from %s refused %s: %s", mid, env.mail_from, worst.reply, "; ".join(
            r.reason for r in refusals))
        return Result(refusal=worst.reply)
    written: list[str] = []
    try:
        for group in held:
            written.append(_quarantine(state, job, group, mid, tally))
    except OSError:
        _unquarantine(state, tuple(written))  # the job fails (451): no half-kept message
        raise
    return Result(outputs=tuple(outputs), quarantined=tuple(written))


def _held(group: _Group, facts: MessageFacts) -> bool:
    """Does this group's copy go to the quarantine instead of being sent?"""
    d = group.decision
    return (d.fallback == "quarantine" and d.encrypt != "never"
            and not group.found.certificates and facts.protected != "encrypted")


def _quarantine(state: Loaded, job: Job, group: _Group, mid: str,
                tally: metrics.Tally) -> str:
    """Keep the original message for group's recipients; returns the quarantine id."""
    d, who = group.decision, ", ".join(group.rcpts)
    rule = dict(d.why).get("fallback", "default")
    reason = f"outbound: no certificate for {who} (rule {rule})"
    env = dataclasses.replace(job.envelope, rcpt_tos=group.rcpts)
    qid = Quarantine(state.context.quarantine_dir).put(env, job.data, reason=reason,
                                                       verdict="no-certificate")
    tally.inc("fallbacks", "quarantine", group.found.status, n=len(group.rcpts))
    _count(tally, d, group.rcpts, "quarantined")
    log.warning("%s to %s: no usable certificate (%s), encrypt=%s: fallback quarantine, "
                "kept as %s", mid, who, group.found.status, d.encrypt, qid)
    return qid


def _unquarantine(state: Loaded, ids: tuple[str, ...]) -> None:
    store = Quarantine(state.context.quarantine_dir)
    for qid in ids:
        try:
            store.delete(qid)
        except (QuarantineError, OSError) as e:
            log.error("cannot remove quarantine entry %s of a refused message: %s", qid, e)


def _groups(state: Loaded, decisions: dict[str, Decision]) -> list[_Group]:
    by_key: dict[tuple[object, ...], _Group] = {}
    for rcpt, decision in decisions.items():
        found = Found((), frozenset(), "not-needed")
        if decision.encrypt != "never":
            found = certificates_for(state.cache, rcpt, decision.certificate,
                                     stale_bound=state.context.stale_bound)
        key = (decision.group_key(), found.status, found.ders)
        g = by_key.get(key)
        by_key[key] = _Group(decision, found, (*g.rcpts, rcpt) if g else (rcpt,))
    return list(by_key.values())


def _sender(env: Envelope, facts: MessageFacts) -> str:
    """Whose message it is for signing: the envelope sender, or for the null sender
    (a bounce from a server behind us, RFC 5321 §4.5.5) the From address."""
    if env.mail_from:
        return env.mail_from.lower()
    values = facts.header_values("from")
    return email.utils.parseaddr(values[0])[1].lower() if values else ""


def _signer(state: Loaded, sender: str, choice: str) -> Identity | None:
    if choice == "domain":
        return state.keyring.for_domain(domain_of(sender)) if sender else None
    if choice == "sender":
        return next((i for i in state.keyring if sender and sender in i.addresses), None)
    named = choice.lower()  # a rule names an identity by its address or its domain
    if "@" in named:
        return next((i for i in state.keyring if named in i.addresses), None)
    return state.keyring.for_domain(named)


def _copy(state: Loaded, env: Envelope, data: bytes, facts: MessageFacts, group: _Group,
          mid: str, tally: metrics.Tally) -> bytes:
    """The wire copy for one group, or Refused."""
    d, found, rcpts = group.decision, group.found, group.rcpts
    who = ", ".join(rcpts)
    if facts.protected == "encrypted":
        # Already encrypted by the sender's client: passed on as it is, never wrapped.
        log.info("%s to %s: already encrypted, passed unchanged", mid, who)
        _count(tally, d, rcpts, "already-encrypted")
        return data
    certs: tuple[x509.Certificate, ...] = found.certificates
    if d.encrypt != "never" and not certs:
        fallback = d.fallback
        tally.inc("fallbacks", fallback, found.status, n=len(rcpts))
        if fallback != "plain":  # never plaintext unless the rule says so (_held: quarantine)
            extra = "" if fallback in ("defer", "reject") else \
                f" ({fallback} is not available yet; deferred instead)"
            log.warning("%s to %s: no usable certificate (%s), encrypt=%s: fallback %s%s",
                        mid, who, found.status, d.encrypt, fallback, extra)
            _count(tally, d, rcpts, "rejected" if fallback == "reject" else "deferred")
            raise Refused(_REFUSING.get(fallback, NO_CERTIFICATE_DEFER),
                          f"no certificate for {who}: {fallback}")
        log.warning("%s to %s: no usable certificate (%s), encrypt=%s: fallback plain, "
                    "sent unencrypted", mid, who, found.status, d.encrypt)
    out = data
    if d.strip_subject_keywords:
        out, all_found = strip_keywords(out, d.strip_subject_keywords)
        if not all_found:
            log.info("%s: subject keyword(s) %s not found literally (encoded?); left as "
                     "they are", mid, ", ".join(d.strip_subject_keywords))
    cipher = _cipher(state, d.cipher, certs, mid, who, tally)
    try:
        signed = _sign(state, env, out, facts, d, mid, who, tally)
        out = signed if signed is not None else out
        if certs:
            out = encrypt(out, certs, cipher=cipher, protect_headers=d.protect_headers,
                          if_encrypted="skip")
            tally.inc("encrypted", cipher)
    except SMIMEError as e:
        log.error("%s to %s: cannot sign or encrypt: %s", mid, who, e)
        raise Refused(CRYPTO_FAILED, f"S/MIME failed: {e}") from None
    outcome = "encrypted" if certs else ("signed-only" if signed is not None else "plain")
    log.info("%s to %s: %s (encrypt=%s%s, sign=%s/%s, cipher=%s; rules %s)", mid, who,
             outcome, d.encrypt, f", {found.kind} certificate" if certs else "", d.sign,
             d.signing_certificate, cipher if certs else "-",
             ", ".join(d.matched) or "none")
    _count(tally, d, rcpts, outcome)
    return out


def _cipher(state: Loaded, decided: str, certs: tuple[x509.Certificate, ...], mid: str,
            who: str, tally: metrics.Tally) -> str:
    """The decided cipher, narrowed to CBC unless every certificate lists its GCM."""
    if not certs or state.context.policy.gcm_without_capabilities:
        return decided
    cipher = narrowed_cipher(decided, certs)
    if cipher != decided:
        log.info("%s to %s: %s not listed in every recipient certificate's "
                 "SMIMECapabilities: %s instead", mid, who, decided, cipher)
        tally.inc("cipher_narrowed", decided, cipher)
    return cipher


def _sign(state: Loaded, env: Envelope, data: bytes, facts: MessageFacts, d: Decision,
          mid: str, who: str, tally: metrics.Tally) -> bytes | None:
    """The signed message, or None when it goes unsigned (logged and counted)."""
    if d.sign == "never":
        tally.inc("unsigned", "policy")
        return None
    if facts.protected == "signed":
        # The sender's client signed it: its signature is kept, not wrapped in ours.
        tally.inc("unsigned", "already-signed")
        return None
    signer = _signer(state, _sender(env, facts), d.signing_certificate)
    if signer is None:
        if d.sign == "required":
            log.warning("%s to %s: sign=required, no identity for %r (sender %s)", mid, who,
                        d.signing_certificate, env.mail_from or "<>")
            raise Refused(NO_SIGNING_IDENTITY, f"no signing identity "
                          f"({d.signing_certificate}) for {env.mail_from or '<>'}")
        log.info("%s to %s: sign=%s, no identity for %r: sent unsigned", mid, who, d.sign,
                 d.signing_certificate)
        tally.inc("unsigned", "no-identity")
        return None
    tally.inc("signed", d.signing_certificate if d.signing_certificate
              in ("domain", "sender") else "named")
    return sign(data, signer)


def _count(tally: metrics.Tally, d: Decision, rcpts: tuple[str, ...], outcome: str) -> None:
    tally.inc("decisions", d.encrypt, outcome, n=len(rcpts))
