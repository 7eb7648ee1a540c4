"""The inbound half of the crypto job: one message for local recipients → one action.

Called by gateway.outbound.job for the recipients in smtp.local_domains. Incoming
Authentication-Results fields claiming our authserv-id are removed first (RFC 8601 §5:
a forgery), then the message is opened (gateway/inbound/open.py) and `[inbound]` policy
picks the action for its verdict:

- deliver: our `Authentication-Results: <hostname>; smime=...` (RFC 7281) is prepended
  to the decrypted message, which keeps its signature unless strip_signature is set;
- reject: 550 with RFC 3463 codes: 5.7.7 integrity failure (fail/neutral/permerror),
  5.7.5 cryptographic failure (undecryptable, temperror), 5.7.1 other (none, pass);
- defer: the same as 451 4.7.x;
- quarantine: the message as received is written to the quarantine store and the id
  returned; the front end answers 250 and does not queue it (Result.quarantined).

neutral and permerror follow on_fail. Every verdict and action is logged and counted.
A delivered smime=pass message also returns its signer's chain ([inbound] harvest,
harvest.py) and what the signer announced in SMIMECapabilities ([inbound]
learn_capabilities, learn.py) for the front end's resolver.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from gateway.envelope import Envelope, Reply
from gateway.inbound import harvest, learn
from gateway.inbound.open import Opened, from_address, open_message
from gateway.inbound.quarantine import Quarantine
from gateway.keys import KeyRing
from gateway.outbound.metrics import Tally
from gateway.revocation import RevocationPolicy, authentication_results, smime_resinfo
from gateway.revocation.authres import ResInfo
from gateway.workers.jobs import Output

log = logging.getLogger(__name__)

UNDECRYPTABLE = "undecryptable"
# RFC 3463 subject/detail per verdict for reject and defer.
_STATUS = {"fail": "7.7", "neutral": "7.7", "permerror": "7.7", "temperror": "7.5",
           UNDECRYPTABLE: "7.5", "none": "7.1", "pass": "7.1"}
_TEXT = {"fail": "S/MIME signature verification failed", "neutral": "unreadable S/MIME",
         "permerror": "S/MIME signature cannot be verified",
         "temperror": "S/MIME signer revocation status unknown",
         UNDECRYPTABLE: "S/MIME message cannot be decrypted",
         "none": "unsigned mail is not accepted", "pass": "signed mail is not accepted"}
_HEADER_LINE = re.compile(rb"([^\r\n]*)\r\n")


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    """[inbound] as the worker holds it (from gateway.config.schema.InboundSection)."""

    actions: dict[str, str]  # verdict → deliver | reject | defer | quarantine
    strip_signature: bool
    authserv_id: str  # smtp.hostname
    harvest: bool = False  # return the signers of passing mail for the lookup cache
    learn_capabilities: bool = True  # return what passing signers announce (learn.py)


@dataclass(frozen=True, slots=True)
class Handled:
    """One of: outputs to queue, a refusal, or a quarantine id."""

    output: Output | None = None
    refusal: Reply | None = None
    quarantined: str = ""
    harvested: harvest.Harvested = ()  # (From address, DER chain) when delivered and asked
    capabilities: learn.Announced = ()  # (name, OIDs, signing time) when delivered and asked


def action_for(policy: InboundPolicy, verdict: str) -> str:
    key = "fail" if verdict in ("neutral", "permerror") else verdict
    return policy.actions[key]


def handle(env: Envelope, rcpts: tuple[str, ...], data: bytes, *, keys: KeyRing,
           anchors: Sequence[x509.Certificate], revocation: RevocationPolicy, policy: InboundPolicy,
           quarantine: Quarantine, tally: Tally, queue_id: str = "") -> Handled:
    """The action for data (whole CRLF message) to rcpts (the local recipients);
    log lines carry queue_id (and the Message-ID) when given."""
    clean = strip_our_results(data, policy.authserv_id)
    opened: Opened = open_message(clean, keys, anchors, revocation)
    verdict = opened.verdict.result if opened.verdict is not None else UNDECRYPTABLE
    reason = opened.error if opened.verdict is None else opened.verdict.reason
    action = action_for(policy, verdict)
    tally.inc("inbound_verdicts", verdict)
    tally.inc("inbound_actions", verdict, action)
    mid = f"{queue_id}: message-id={_message_id(clean)}" if queue_id else _message_id(clean)
    log.info("%s from %s to %s: smime=%s%s -> %s", mid, env.mail_from or "<>",
             ", ".join(rcpts), verdict, f" ({reason})" if reason else "", action)
    if action == "reject" or action == "defer":
        code, cls = (550, "5") if action == "reject" else (451, "4")
        text = _TEXT[verdict] + (f": {_one_line(reason)}" if reason else "")
        return Handled(refusal=Reply(code, f"{cls}.{_STATUS[verdict]}", text))
    if action == "quarantine":
        key = f"{queue_id} inbound {' '.join(rcpts)}" if queue_id else ""
        qid = quarantine.put(Envelope(env.mail_from, rcpts, env.client_address, env.helo,
                                      env.received_at, env.esmtp), data,
                             reason=reason or verdict, verdict=verdict, key=key)
        log.warning("%s from %s to %s quarantined as %s: smime=%s %s", mid,
                    env.mail_from or "<>", ", ".join(rcpts), qid, verdict, reason)
        return Handled(quarantined=qid)
    if opened.verdict is None:
        info = ResInfo("smime", "neutral", f"not decrypted: {opened.error}")
        body = opened.message
    else:
        info = smime_resinfo(opened.verdict, from_address=_sender(opened))
        body = opened.unsigned if policy.strip_signature else opened.message
    header = authentication_results(policy.authserv_id, info).encode("ascii")
    harvested = harvest.candidates(opened) if policy.harvest else ()
    learnt = learn.candidates(opened, env.received_at or time.time()) \
        if policy.learn_capabilities else ()
    return Handled(output=Output(rcpts, header + body), harvested=harvested,
                   capabilities=learnt)


def _sender(opened: Opened) -> str | None:
    """From for smime_resinfo, which reads it only to name a signer certificate: mail
    without one (unsigned, above all) does not pay for parsing the field."""
    signer = opened.verdict.signer if opened.verdict is not None else None
    if signer is None or signer.certificate is None:
        return None
    return from_address(opened.message) or None


def _one_line(text: str, limit: int = 200) -> str:
    """Reply text: printable ASCII on one line (the reason may quote the message)."""
    out = "".join(c if 0x20 <= ord(c) < 0x7F else " " for c in text)
    return out[:limit]


def _message_id(data: bytes) -> str:
    m = re.search(rb"(?im)^message-id:[ \t]*([^\r\n]*)", data[:data.find(b"\r\n\r\n") + 2])
    return m.group(1).decode("ascii", "replace").strip() if m else "<no Message-ID>"


def strip_our_results(data: bytes, authserv_id: str) -> bytes:
    """The message without header fields Authentication-Results naming our authserv-id
    (RFC 8601 §5: an MTA MUST remove them, they are forged or stale); body untouched."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data
    head, body = data[: end + 2], data[end + 2:]
    fields: list[bytes] = []
    for m in _HEADER_LINE.finditer(head):
        line = m.group(0)
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line  # a folded continuation belongs to the field before it
        else:
            fields.append(line)
    ours = authserv_id.lower().encode()
    kept = [f for f in fields if not _claims(f, ours)]
    if len(kept) == len(fields):
        return data
    return b"".join(kept) + body


def _claims(field: bytes, authserv_id: bytes) -> bool:
    name, sep, value = field.partition(b":")
    if not sep or name.strip().lower() != b"authentication-results":
        return False
    # authserv-id is the first token, before ";" (a version number may follow it).
    first = re.sub(rb"\([^)]*\)", b" ", value).split(b";", 1)[0].split()
    return bool(first) and first[0].lower() == authserv_id
