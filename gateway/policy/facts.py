"""What policy may know about a message: the facts its conditions test.

The front end or a worker fills MessageFacts from the MIME scanner; policy itself never
parses mail. `text` is the decoded text of text parts and text attachments, cut at a byte
budget, and is only filled when some rule needs content (Conditions.needs_content).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str  # "" when the part has none
    content_type: str  # "type/subtype", lower-cased


@dataclass(frozen=True, slots=True)
class MessageFacts:
    size: int
    subject: str = ""  # RFC 2047-decoded
    # (lower-cased name, decoded value), in order; the worker keeps only the fields rules
    # or it read (gateway.policy.extract.header_names)
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = ()
    protected: str = "none"  # "signed" | "encrypted" | "none": S/MIME already present
    text: str | None = None  # decoded text for content rules; None when not extracted
    text_truncated: bool = False  # the budget cut the text short
    notes: tuple[str, ...] = field(default=())  # what extraction could not do, for the trace

    def header_values(self, name: str) -> tuple[str, ...]:
        key = name.lower()
        return tuple(v for k, v in self.headers if k == key)
