"""Rules → one decision per final envelope recipient.

Evaluation order (documented for operators in README.md):
1. Rules are read top to bottom, for each recipient separately (decided after alias
   expansion: the envelope recipients the gateway relays to).
2. A rule matches when every condition it names holds; a condition with a list holds when
   any item does. Message conditions (content, size, headers) are evaluated once per message.
3. Each decision attribute (encrypt, sign, cipher, ...) is taken from the FIRST matching
   rule that names it, so a signing rule and an encryption rule can be separate rules.
4. A matching rule with `final = true` ends the search for that recipient.
5. What no rule decided comes from the [policy] defaults.
The fallback (what to do when no usable certificate exists) defaults to "plain" when
encryption is opportunistic and to "defer" when it is required; either use is logged and
counted per recipient by the caller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address

from gateway.envelope import domain_of
from gateway.policy.detectors import DETECTORS
from gateway.policy.facts import MessageFacts
from gateway.policy.rules import Conditions, Decisions, Rule


@dataclass(frozen=True, slots=True)
class Defaults:
    encrypt: str = "opportunistic"
    certificate: str = "user-then-domain"
    cipher: str = "aes128-gcm"
    sign: str = "required"
    signing_certificate: str = "domain"
    protect_headers: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything decided for one recipient; `why` says which rule set each attribute."""

    encrypt: str
    certificate: str
    cipher: str
    sign: str
    signing_certificate: str
    fallback: str
    protect_headers: bool
    strip_subject_keywords: tuple[str, ...]
    why: tuple[tuple[str, str], ...]  # (attribute, rule name or "default")
    matched: tuple[str, ...]  # names of every rule that matched, in order

    def group_key(self) -> tuple[object, ...]:
        """Recipients whose decisions agree on this can share one copy of the message."""
        return (self.encrypt, self.certificate, self.cipher, self.sign,
                self.signing_certificate, self.fallback, self.protect_headers,
                self.strip_subject_keywords)


_ATTRIBUTES = tuple(f.name for f in dataclasses.fields(Decisions)
                    if f.name != "strip_subject_keyword")


class MessageMatcher:
    """Evaluates message-level conditions once per message, remembering each answer."""

    def __init__(self, facts: MessageFacts, client_address: str) -> None:
        self.facts = facts
        self.client_address = client_address
        self._memo: dict[int, bool] = {}
        self._detected: dict[str, int] = {}

    def detector_hits(self, name: str) -> int:
        if name not in self._detected:
            text = self.facts.text or ""
            self._detected[name] = DETECTORS[name](text)
        return self._detected[name]

    def matches(self, c: Conditions) -> bool:
        key = id(c)
        if key not in self._memo:
            self._memo[key] = self._evaluate(c)
        return self._memo[key]

    def subject_keywords(self, c: Conditions) -> tuple[str, ...]:
        subject = self.facts.subject.lower()
        return tuple(k for k in c.subject_keyword if k in subject)

    def _evaluate(self, c: Conditions) -> bool:
        f = self.facts
        if c.client_network:
            try:
                addr = ip_address(self.client_address)
            except ValueError:
                return False
            if not any(addr in net for net in c.client_network):
                return False
        if c.min_size is not None and f.size < c.min_size:
            return False
        if c.max_size is not None and f.size > c.max_size:
            return False
        if c.protected and f.protected not in c.protected:
            return False
        for name, pattern in c.header:
            if not any(pattern.search(v) for v in f.header_values(name)):
                return False
        if c.subject_keyword and not self.subject_keywords(c):
            return False
        if c.attachment_type and not any(g.match(a.content_type) for a in f.attachments
                                         for g in c.attachment_type):
            return False
        if c.attachment_name and not any(g.match(a.filename) for a in f.attachments
                                         if a.filename for g in c.attachment_name):
            return False
        text = (f.text or "").lower() if (c.body_keyword or c.body_regex) else ""
        if c.body_keyword and not any(k in text for k in c.body_keyword):
            return False
        if c.body_regex and not any(p.search(f.text or "") for p in c.body_regex):
            return False
        return not c.detector or any(self.detector_hits(d) > 0 for d in c.detector)


def _envelope_matches(c: Conditions, sender: str, recipient: str) -> bool:
    checks = ((c.sender, sender), (c.recipient, recipient),
              (c.sender_domain, domain_of(sender)), (c.recipient_domain, domain_of(recipient)))
    return all(not globs or any(g.match(value) for g in globs) for globs, value in checks)


def decide(rules: Sequence[Rule], defaults: Defaults, *, sender: str, recipient: str,
           matcher: MessageMatcher) -> Decision:
    """The decision for one recipient of one message (see the module docstring for order)."""
    chosen: dict[str, tuple[object, str]] = {}
    strip: list[str] = []
    matched: list[str] = []
    for rule in rules:
        c = rule.conditions
        if not _envelope_matches(c, sender, recipient) or not matcher.matches(c):
            continue
        matched.append(rule.name)
        for attr in _ATTRIBUTES:
            value = getattr(rule.decisions, attr)
            if value is not None and attr not in chosen:
                chosen[attr] = (value, rule.name)
        if rule.decisions.strip_subject_keyword:
            strip += [k for k in matcher.subject_keywords(c) if k not in strip]
        if rule.final:
            break
    for attr in ("encrypt", "certificate", "cipher", "sign", "signing_certificate",
                 "protect_headers"):
        chosen.setdefault(attr, (getattr(defaults, attr), "default"))
    fallback_default = "plain" if chosen["encrypt"][0] != "required" else "defer"
    chosen.setdefault("fallback", (fallback_default, "default"))

    def val(attr: str) -> object:
        return chosen[attr][0]

    return Decision(
        encrypt=str(val("encrypt")), certificate=str(val("certificate")),
        cipher=str(val("cipher")), sign=str(val("sign")),
        signing_certificate=str(val("signing_certificate")), fallback=str(val("fallback")),
        protect_headers=bool(val("protect_headers")),
        strip_subject_keywords=tuple(strip),
        why=tuple((a, str(chosen[a][1])) for a in (*_ATTRIBUTES,) if a in chosen),
        matched=tuple(matched),
    )


def decide_all(rules: Sequence[Rule], defaults: Defaults, *, sender: str,
               recipients: Sequence[str], facts: MessageFacts,
               client_address: str = "") -> dict[str, Decision]:
    """A decision for every recipient; message conditions evaluated once."""
    matcher = MessageMatcher(facts, client_address)
    return {r: decide(rules, defaults, sender=sender, recipient=r, matcher=matcher)
            for r in recipients}


def envelope_decision(rules: Sequence[Rule], defaults: Defaults, *, sender: str,
                      recipient: str, client_address: str = "") -> Decision | None:
    """The decision for recipient when the envelope alone makes it (at RCPT time), or
    None when some rule matching the envelope also tests the message (content, size,
    headers, attachments, protection): its say is only known after DATA."""
    matcher = MessageMatcher(_NO_FACTS, client_address)
    for rule in rules:
        c = rule.conditions
        # (Conservative: client_network is not checked here, so such a rule defers the
        # decision to after DATA even from a network it does not name.)
        if not c.envelope_only and _envelope_matches(c, sender, recipient):
            return None
    # Only envelope conditions left to match: the empty facts are never consulted.
    return decide(rules, defaults, sender=sender, recipient=recipient, matcher=matcher)


_NO_FACTS = MessageFacts(size=0)


def needs_text(rules: Sequence[Rule]) -> bool:
    """Must the caller extract decoded text for these rules?"""
    return any(r.conditions.needs_content for r in rules)
