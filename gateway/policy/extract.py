"""MessageFacts from a message, via the MIME scanner (never email.message objects).

Text for content rules comes from every text/* leaf part, inline or attached, decoded
(transfer encoding, then charset) within one byte budget for the whole message. A part
that cannot be decoded (bad base64, unknown charset) is skipped and noted in the facts,
so the trace shows that content rules did not see it.

Only what some reader needs is computed: text when a rule tests content (`needs_text`),
and the decoded header fields the rules name plus those the caller asks for
(`header_names`); everything else in MessageFacts costs next to nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from gateway.mime.decode import decoded_text
from gateway.mime.scan import scan
from gateway.mime.scanned import MimeError, ScannedMessage
from gateway.policy.facts import Attachment, MessageFacts
from gateway.policy.rules import Rule

_PROTECTED = {"signed": "signed", "opaque-signed": "signed", "enveloped": "encrypted",
              "auth-enveloped": "encrypted"}


def header_names(rules: Sequence[Rule], also: Collection[str] = ()) -> frozenset[str]:
    """The header fields (lower-cased names) rules test, and the caller's own."""
    return frozenset({n.lower() for r in rules for n, _ in r.conditions.header}
                     | {n.lower() for n in also})


def facts_from_scan(msg: ScannedMessage, size: int, *, want_text: bool,
                    budget: int, want_headers: frozenset[str] | None = None) -> MessageFacts:
    """want_headers: the fields facts.headers holds (header_names), None for all of them;
    only those are RFC 2047-decoded."""
    fields = msg.root.header_fields()
    if want_headers is None:
        headers = tuple((f.name.lower(), f.decoded) for f in fields)
    else:
        headers = tuple((name, f.decoded) for f in fields
                        if (name := f.name.lower()) in want_headers)
    attachments: list[Attachment] = []
    texts: list[str] = []
    notes: list[str] = []
    remaining = budget
    truncated = False
    for part in msg.walk():
        if part.children or part.is_multipart:
            continue
        filename = part.filename or ""
        if filename or part.disposition == "attachment":
            attachments.append(Attachment(filename, part.content_type))
        if not want_text or part.maintype != "text":
            continue
        if remaining <= 0:
            truncated = True
            continue
        try:
            text, complete = decoded_text(part, remaining)
        except MimeError as e:
            notes.append(f"content rules skipped part {part.path}: {e.reason}")
            continue
        texts.append(text)
        remaining -= len(text.encode("utf-8", "surrogatepass"))
        truncated = truncated or not complete
    return MessageFacts(
        size=size,
        subject=msg.decoded_header("subject") or "",
        headers=headers,
        attachments=tuple(attachments),
        protected=_PROTECTED.get(msg.smime, "none"),
        text="\n".join(texts) if want_text else None,
        text_truncated=truncated,
        notes=tuple(notes),
    )


def facts_from_message(data: bytes, *, want_text: bool, budget: int,
                       want_headers: frozenset[str] | None = None) -> MessageFacts:
    """Facts of a whole message; raises MimeError when it cannot be scanned at all."""
    return facts_from_scan(scan(data), len(data), want_text=want_text, budget=budget,
                           want_headers=want_headers)
