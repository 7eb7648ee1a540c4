"""The crypto job: one message in, one signed and encrypted copy per recipient group out.

Job function "gateway.outbound.job:process" (initializer context.init_worker). Per
message (DESIGN.md, process model; RFC 8551 for what is written):
1. Recipients in `smtp.local_domains` are inbound mail: gateway/inbound/job.py decrypts,
   verifies and applies [inbound] policy (deliver, reject, defer or quarantine), after
   the outbound recipients are done; its refusal is one more refused group (item 5).
2. The rest: the MIME scanner gives MessageFacts; policy decides per recipient
   (gateway/policy/engine.py); recipients are grouped by decision and certificate set
   (one envelope for recipients that share both).
3. The header fields `policy.strip_headers` names are removed (headers.py). Per group:
   strip the subject keywords the decision names (literal or RFC 2047-encoded:
   subject.py); sign (RFC 8551 §3.5; signer.py) with the sender
   domain's identity ("domain"), the sender's own ("sender"), the sender's own if there
   is one and else the domain's ("sender-or-domain"), or the one a rule names (an
   address or a domain), unless sign = "never" or the input is already signed or
   encrypted; then encrypt (RFC 8551 §3.3) to the recipients' certificates from the
   shared-memory cache with the decision's cipher, narrowed from GCM to CBC of the same
   key size unless every recipient is known to take that GCM: its certificates list it
   in SMIMECapabilities (RFC 4262), or its latest verified signed mail announced it
   (RFC 8551 §2.7.1, learnt by the inbound path; cipher.py);
   policy.gcm_without_capabilities skips this. Input that is already encrypted is
   passed on as it is (if_encrypted = "skip"), less those header fields.
4. No usable certificate → the decision's fallback: "plain" sends the signed copy
   unencrypted; "tls-only" sends it too, but marked (Output.require_tls) so delivery
   uses it only over TLS with a verified certificate; "defer" refuses the group 451
   4.7.0; "reject" refuses it 550 5.7.1; "quarantine" keeps the ORIGINAL message (as
   received: it was never sent, so nothing is signed for it) in the quarantine store the
   inbound path uses, for that group's recipients only (the id is in
   Result.quarantined).
5. One reply per message: when no group of it went anywhere (queued or quarantined),
   the message is refused with the worst group's reply (a permanent one wins; the
   client keeps or bounces the message). Otherwise it is accepted and each refused
   group's original is handed back marked with its reply (Output.refused): delivery
   bounces a 5yz and runs the job again for a 4yz when due (gateway/delivery/agent.py).
   Every decision and fallback is logged with the queue ID (Job.queue_id) and the
   Message-ID, and counted (gateway/outbound/metrics.py). The hot path writes ONE info
   line per recipient group (outcome, decision, rules and whatever else happened to that
   copy, as notes), built only when info is enabled; warnings are for fallbacks and
   refusals.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from cryptography import x509

from gateway.envelope import Envelope, Reply, domain_of
from gateway.inbound.job import handle
from gateway.inbound.learn import Announced
from gateway.inbound.quarantine import NO_CERTIFICATE, Quarantine, QuarantineError
from gateway.keys import Identity
from gateway.mime.canon import canonicalize
from gateway.mime.scanned import MimeError
from gateway.outbound import metrics
from gateway.outbound.certs import Found, certificates_for
from gateway.outbound.cipher import choose as choose_cipher
from gateway.outbound.context import Loaded, current
from gateway.outbound.headers import strip_fields
from gateway.outbound.replies import (
    CRYPTO_FAILED,
    NO_CERTIFICATE_DEFER,
    NO_CERTIFICATE_REJECT,
    NO_SIGNING_IDENTITY,
)
from gateway.outbound.signer import sender_of, signer_for
from gateway.outbound.subject import strip_keywords
from gateway.policy.engine import Decision, decide_all, needs_text
from gateway.policy.extract import facts_from_message, header_names
from gateway.policy.facts import MessageFacts
from gateway.revocation import metrics as revocation_metrics
from gateway.smime import SMIMEError, encrypt, sign, sign_and_encrypt
from gateway.workers.jobs import Job, Output, Result

log = logging.getLogger(__name__)

# The header fields the job itself reads from MessageFacts (rules name the others).
_READ_HEADERS = ("message-id", "from")
# Fallbacks that refuse the group's copy, and the reply each becomes.
_REFUSING = {"defer": NO_CERTIFICATE_DEFER, "reject": NO_CERTIFICATE_REJECT}


class Refused(Exception):
    """A group's copy cannot be made: the reply, why, and whose copy it was."""

    def __init__(self, reply: Reply, reason: str, rcpts: tuple[str, ...] = (),
                 kind: str = "") -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason
        self.rcpts = rcpts
        self.reason_kind = kind or reason  # the metric label: a small fixed set


@dataclass(slots=True)
class _Part:
    """What the job made of a message so far."""

    outputs: list[Output] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    refusal: Reply | None = None  # the message as a whole cannot be processed


@dataclass(frozen=True, slots=True)
class _Trace:
    """What every log line about a message names: the queue ID (or, without one, the
    Message-ID), the Message-ID and sender, and what was done to the whole message."""

    mid: str
    message_id: str
    sender: str
    stripped: int = 0  # header fields removed (policy.strip_headers)

    def about(self) -> str:
        """The message's identification for the group line (after the queue ID)."""
        text = f"message-id={self.message_id}, " if self.mid != self.message_id else ""
        text += f"from=<{self.sender}>"
        if self.stripped:
            text += f", {self.stripped} internal header field(s) removed"
        return text


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
    # Only the inbound path checks revocation, so an outbound-only job has nothing to
    # drain (what is not drained now travels with the next inbound job's result).
    extra = revocation_metrics.drain() if _has_inbound(state, job) else ()
    return dataclasses.replace(result, counts=tally.counts() + extra)


def _has_inbound(state: Loaded, job: Job) -> bool:
    return any(state.local.is_local(domain_of(r)) for r in job.envelope.rcpt_tos)


def _process(state: Loaded, job: Job, tally: metrics.Tally) -> Result:
    env = job.envelope
    inbound = tuple(r for r in env.rcpt_tos if state.local.is_local(domain_of(r)))
    outbound = tuple(r for r in env.rcpt_tos if r not in inbound)
    part = _outbound(state, job, outbound, tally) if outbound else _Part()
    if part.refusal is not None:
        return Result(refusal=part.refusal)  # the message itself: nothing else happened
    harvested: tuple[tuple[str, tuple[bytes, ...]], ...] = ()
    learned: Announced = ()
    if inbound:
        c = state.context
        done = handle(env, inbound, job.data, keys=state.keyring, anchors=state.anchors,
                      revocation=state.revocation, policy=state.inbound,
                      quarantine=Quarantine(c.quarantine_dir), tally=tally,
                      queue_id=job.queue_id)
        if done.refusal is not None:
            part.refused.append(Refused(done.refusal, f"inbound: {done.refusal}", inbound,
                                        "inbound"))
        if done.output is not None:
            part.outputs.insert(0, done.output)
        if done.quarantined:
            part.quarantined.insert(0, done.quarantined)
        harvested, learned = done.harvested, done.capabilities
    result = _settled(state, job, part, tally, harvested)
    if learned and result.refusal is None:
        result = dataclasses.replace(result, capabilities=learned)
    return result


def _settled(state: Loaded, job: Job, part: _Part, tally: metrics.Tally,
             harvested: tuple[tuple[str, tuple[bytes, ...]], ...]) -> Result:
    """One reply for the whole message: refused when nothing of it went anywhere,
    otherwise accepted with the refused groups kept for a retry or a bounce (Output)."""
    if not part.refused:
        return Result(outputs=tuple(part.outputs), quarantined=tuple(part.quarantined),
                      harvested=harvested)
    tag = job.queue_id or "message"
    reasons = "; ".join(r.reason for r in part.refused)
    if not part.outputs and not part.quarantined:
        # A permanent refusal wins: a retry could never deliver the message as written.
        worst = next((r for r in part.refused if r.reply.permanent), part.refused[0])
        tally.inc("refused", worst.reason_kind)
        log.warning("%s from %s refused %s: %s", tag, job.envelope.mail_from or "<>",
                    worst.reply, reasons)
        return Result(refusal=worst.reply)
    kept = tuple(Output(r.rcpts, job.data, refused=r.reply) for r in part.refused)
    for r in part.refused:
        tally.inc("refused_recipients", "deferred" if r.reply.transient else "bounced",
                  n=len(r.rcpts))
    log.warning("%s from %s accepted for some recipients; refused for %s: %s", tag,
                job.envelope.mail_from or "<>",
                ", ".join(a for r in part.refused for a in r.rcpts), reasons)
    return Result(outputs=tuple(part.outputs) + kept, quarantined=tuple(part.quarantined),
                  harvested=harvested)


def _outbound(state: Loaded, job: Job, outbound: tuple[str, ...],
              tally: metrics.Tally) -> _Part:
    env = job.envelope
    part = _Part()
    data = canonicalize(job.data)
    try:
        facts = facts_from_message(data, want_text=needs_text(state.rules),
                                   budget=state.context.policy.text_budget,
                                   want_headers=header_names(state.rules, _READ_HEADERS))
    except MimeError as e:
        log.warning("%s from %s refused: cannot be scanned: %s", job.queue_id or "message",
                    env.mail_from or "<>", e)
        tally.inc("refused", "unscannable")
        part.refusal = e.reply
        return part
    message_id = (facts.header_values("message-id") or ("<no Message-ID>",))[0].strip()
    # Policy saw every field; what is sent says nothing internal (headers.py).
    data, removed = strip_fields(data, state.context.policy.strip_headers)
    # The worker's log lines carry the queue ID; each group's line also the Message-ID.
    trace = _Trace(job.queue_id or message_id, message_id, env.mail_from, removed)
    decisions = decide_all(state.rules, state.defaults, sender=env.mail_from,
                           recipients=outbound, facts=facts, client_address=env.client_address)
    held: list[_Group] = []
    for group in _groups(state, decisions):
        if _held(group, facts):
            held.append(group)
            continue
        try:
            part.outputs.append(_copy(state, env, data, facts, group, trace, tally))
        except Refused as r:
            r.rcpts = group.rcpts
            part.refused.append(r)
    try:
        for group in held:
            part.quarantined.append(_quarantine(state, job, group, trace, tally))
    except OSError:
        _unquarantine(state, tuple(part.quarantined))  # the job fails (451): nothing half-kept
        raise
    return part


def _held(group: _Group, facts: MessageFacts) -> bool:
    """Does this group's copy go to the quarantine instead of being sent?"""
    d = group.decision
    return (d.fallback == "quarantine" and d.encrypt != "never"
            and not group.found.certificates and facts.protected != "encrypted")


def _quarantine(state: Loaded, job: Job, group: _Group, trace: _Trace,
                tally: metrics.Tally) -> str:
    """Keep the original message for group's recipients; returns the quarantine id."""
    d, who = group.decision, ", ".join(group.rcpts)
    rule = dict(d.why).get("fallback", "default")
    reason = f"outbound: no certificate for {who} (rule {rule})"
    env = dataclasses.replace(job.envelope, rcpt_tos=group.rcpts)
    key = f"{job.queue_id} outbound {' '.join(group.rcpts)}" if job.queue_id else ""
    qid = Quarantine(state.context.quarantine_dir).put(env, job.data, reason=reason,
                                                       verdict=NO_CERTIFICATE, key=key)
    tally.inc("fallbacks", "quarantine", group.found.status, n=len(group.rcpts))
    _count(tally, d, group.rcpts, "quarantined")
    log.warning("%s to %s: no usable certificate (%s), encrypt=%s: fallback quarantine, "
                "kept as %s (%s)", trace.mid, who, group.found.status, d.encrypt, qid,
                trace.about())
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


def _copy(state: Loaded, env: Envelope, data: bytes, facts: MessageFacts, group: _Group,
          trace: _Trace, tally: metrics.Tally) -> Output:
    """The wire copy for one group, or Refused."""
    d, found, rcpts = group.decision, group.found, group.rcpts
    who = ", ".join(rcpts)
    mid = trace.mid
    if facts.protected == "encrypted":
        # Already encrypted by the sender's client: passed on as it is, never wrapped.
        log.info("%s to %s: already encrypted, passed unchanged (%s)", mid, who,
                 trace.about())
        _count(tally, d, rcpts, "already-encrypted")
        return Output(rcpts, data)
    certs: tuple[x509.Certificate, ...] = found.certificates
    require_tls = False
    if d.encrypt != "never" and not certs:
        fallback = d.fallback
        tally.inc("fallbacks", fallback, found.status, n=len(rcpts))
        if fallback in _REFUSING:  # never plaintext unless the rule says so
            log.warning("%s to %s: no usable certificate (%s), encrypt=%s: fallback %s (%s)",
                        mid, who, found.status, d.encrypt, fallback, trace.about())
            _count(tally, d, rcpts, "rejected" if fallback == "reject" else "deferred")
            raise Refused(_REFUSING[fallback], f"no certificate for {who}: {fallback}",
                          kind=f"no-certificate-{fallback}")
        # "plain" or "tls-only" ("quarantine" never gets here: _held)
        require_tls = fallback == "tls-only"
        log.warning("%s to %s: no usable certificate (%s), encrypt=%s: fallback %s, "
                    "sent unencrypted%s", mid, who, found.status, d.encrypt, fallback,
                    " over verified TLS only" if require_tls else "")
    # What else happened to this copy, for its one info line.
    notes: list[str] = []
    out = data
    if d.strip_subject_keywords:
        out, all_found = strip_keywords(out, d.strip_subject_keywords)
        if not all_found:
            notes.append(f"subject keyword(s) {', '.join(d.strip_subject_keywords)} not all "
                         "found (in an undecodable encoded-word?): left as they are")
    cipher = _cipher(state, group, notes, tally)
    try:
        signer = _signer_of(state, env, facts, d, mid, who, notes, tally)
        if signer is not None and certs:
            # Input neither signed nor encrypted (facts.protected): one pass, no re-parse.
            out = sign_and_encrypt(out, signer, certs, cipher=cipher,
                                   protect_headers=d.protect_headers)
        elif signer is not None:
            out = sign(out, signer)
        elif certs:
            out = encrypt(out, certs, cipher=cipher, protect_headers=d.protect_headers,
                          if_encrypted="skip")
        if certs:
            tally.inc("encrypted", cipher)
    except SMIMEError as e:
        log.error("%s to %s: cannot sign or encrypt: %s", mid, who, e)
        raise Refused(CRYPTO_FAILED, f"S/MIME failed: {e}", kind="crypto-failed") from None
    outcome = "encrypted" if certs else ("signed-only" if signer is not None else "plain")
    if require_tls:
        outcome = "tls-only"
    if log.isEnabledFor(logging.INFO):  # the trace line, built only when it is written
        log.info("%s to %s: %s (%s; encrypt=%s%s, sign=%s/%s, cipher=%s; rules %s)%s", mid,
                 who, outcome, trace.about(), d.encrypt,
                 f", {found.kind} certificate" if certs else "", d.sign,
                 d.signing_certificate, cipher if certs else "-",
                 ", ".join(d.matched) or "none", "".join(f"; {n}" for n in notes))
    _count(tally, d, rcpts, outcome)
    return Output(rcpts, out, require_tls=require_tls)


def _cipher(state: Loaded, group: _Group, notes: list[str], tally: metrics.Tally) -> str:
    """The decided cipher, narrowed to CBC unless every recipient is known to take its
    GCM (gateway/outbound/cipher.py: certificates, then learnt capabilities)."""
    decided, found = group.decision.cipher, group.found
    if not found.certificates or state.context.policy.gcm_without_capabilities:
        return decided
    choice = choose_cipher(decided, found.certificates, found.kind, group.rcpts,
                           state.cache)
    if choice.by == "learned":
        notes.append(f"{decided} not listed in every recipient certificate's "
                     "SMIMECapabilities, but announced in their latest verified signed "
                     "mail: kept")
        tally.inc("cipher_learned", decided)
    elif choice.cipher != decided:
        notes.append(f"{decided} not listed in every recipient certificate's "
                     f"SMIMECapabilities nor learnt from their signed mail: {choice.cipher} "
                     "instead")
        tally.inc("cipher_narrowed", decided, choice.cipher)
    return choice.cipher


def _signer_of(state: Loaded, env: Envelope, facts: MessageFacts, d: Decision, mid: str,
               who: str, notes: list[str], tally: metrics.Tally) -> Identity | None:
    """The identity to sign the copy with, or None when it goes unsigned (noted and
    counted); Refused when signing is required and there is no identity."""
    if d.sign == "never":
        tally.inc("unsigned", "policy")
        return None
    if facts.protected == "signed":
        # The sender's client signed it: its signature is kept, not wrapped in ours.
        tally.inc("unsigned", "already-signed")
        return None
    signer, kind = signer_for(state.keyring, sender_of(env, facts),
                              d.signing_certificate)
    if signer is None:
        if d.sign == "required":
            log.warning("%s to %s: sign=required, no identity for %r (sender %s)", mid, who,
                        d.signing_certificate, env.mail_from or "<>")
            raise Refused(NO_SIGNING_IDENTITY, f"no signing identity "
                          f"({d.signing_certificate}) for {env.mail_from or '<>'}",
                          kind="no-signing-identity")
        notes.append(f"sign={d.sign}, no identity for {d.signing_certificate!r}: sent "
                     "unsigned")
        tally.inc("unsigned", "no-identity")
        return None
    if kind != d.signing_certificate and kind == "domain":
        notes.append("no certificate of the sender's own: signed with the domain's")
    tally.inc("signed", kind)
    return signer


def _count(tally: metrics.Tally, d: Decision, rcpts: tuple[str, ...], outcome: str) -> None:
    tally.inc("decisions", d.encrypt, outcome, n=len(rcpts))
