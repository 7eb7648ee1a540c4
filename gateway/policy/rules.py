"""Policy rules: the `[[policy.rules]]` tables of gateway.toml, compiled and checked.

A rule has conditions (all must hold; a list inside one condition means any of its items)
and decisions (only those it names). Evaluation order is documented in engine.py. Every
error names the rule by index and name and the key that is wrong.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from gateway.config.types import Network, parse_size
from gateway.policy.detectors import DETECTORS

ENCRYPT = ("required", "opportunistic", "never")
CERTIFICATE = ("user-then-domain", "domain-only", "user-only")
CIPHERS = ("aes128-gcm", "aes256-gcm", "aes128-cbc", "aes256-cbc")
SIGN = ("required", "if-possible", "never")
FALLBACK = ("tls-only", "defer", "reject", "quarantine", "plain")
PROTECTED = ("signed", "encrypted", "none")


class PolicyError(ValueError):
    """A rule that cannot be compiled: names the rule and the key."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Glob:
    """A case-insensitive shell glob (*, ?, [..]) compiled once."""

    text: str
    pattern: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def of(cls, text: str) -> Glob:
        return cls(text.lower(), re.compile(fnmatch.translate(text.lower())))

    def match(self, value: str) -> bool:
        return self.pattern.match(value.lower()) is not None


@dataclass(frozen=True, slots=True)
class Conditions:
    sender: tuple[Glob, ...] = ()
    recipient: tuple[Glob, ...] = ()
    sender_domain: tuple[Glob, ...] = ()
    recipient_domain: tuple[Glob, ...] = ()
    client_network: tuple[Network, ...] = ()
    header: tuple[tuple[str, re.Pattern[str]], ...] = ()
    subject_keyword: tuple[str, ...] = ()
    body_keyword: tuple[str, ...] = ()
    body_regex: tuple[re.Pattern[str], ...] = ()
    detector: tuple[str, ...] = ()
    attachment_type: tuple[Glob, ...] = ()
    attachment_name: tuple[Glob, ...] = ()
    min_size: int | None = None
    max_size: int | None = None
    protected: tuple[str, ...] = ()

    @property
    def needs_content(self) -> bool:
        """Does evaluating these conditions need the decoded text of the message?"""
        return bool(self.body_keyword or self.body_regex or self.detector)

    @property
    def envelope_only(self) -> bool:
        """Can these conditions be decided at RCPT, before the message is seen?"""
        return not (self.header or self.subject_keyword or self.attachment_type
                    or self.attachment_name or self.min_size is not None
                    or self.max_size is not None or self.protected or self.needs_content)


@dataclass(frozen=True, slots=True)
class Decisions:
    """What a rule decides; None means "not this rule's say"."""

    encrypt: str | None = None
    certificate: str | None = None
    cipher: str | None = None
    sign: str | None = None
    # "domain", "sender", "sender-or-domain" or a named identity (address or domain)
    signing_certificate: str | None = None
    fallback: str | None = None
    protect_headers: bool | None = None
    strip_subject_keyword: bool | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    conditions: Conditions
    decisions: Decisions
    final: bool = False  # no later rule is consulted for a recipient this rule matched


_CONDITION_KEYS = {f.name for f in fields(Conditions)}
_DECISION_KEYS = {f.name for f in fields(Decisions)}


def _strings(where: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PolicyError(where, f"expected a string or a list of strings, got {value!r}")


def _regex(where: str, text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as e:
        raise PolicyError(where, f"bad regular expression {text!r}: {e}") from None


def _choice(where: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise PolicyError(where, f"must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def _compile_conditions(where: str, raw: Mapping[str, Any]) -> Conditions:
    kw: dict[str, Any] = {}
    for key in ("sender", "recipient", "sender_domain", "recipient_domain",
                "attachment_type", "attachment_name"):
        if key in raw:
            kw[key] = tuple(Glob.of(s) for s in _strings(f"{where}.{key}", raw[key]))
    if "client_network" in raw:
        nets = []
        for text in _strings(f"{where}.client_network", raw["client_network"]):
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise PolicyError(f"{where}.client_network", f"not a network: {text!r}") from None
        kw["client_network"] = tuple(nets)
    if "header" in raw:
        table = raw["header"]
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise PolicyError(f"{where}.header",
                              'expected a table of header name = "regex"')
        kw["header"] = tuple((k.lower(), _regex(f"{where}.header.{k}", v))
                             for k, v in table.items())
    for key in ("subject_keyword", "body_keyword"):
        if key in raw:
            kw[key] = tuple(s.lower() for s in _strings(f"{where}.{key}", raw[key]))
    if "body_regex" in raw:
        kw["body_regex"] = tuple(_regex(f"{where}.body_regex", s)
                                 for s in _strings(f"{where}.body_regex", raw["body_regex"]))
    if "detector" in raw:
        kw["detector"] = tuple(_choice(f"{where}.detector", d, tuple(DETECTORS))
                               for d in _strings(f"{where}.detector", raw["detector"]))
    for key in ("min_size", "max_size"):
        if key in raw:
            try:
                kw[key] = parse_size(raw[key])
            except ValueError as e:
                raise PolicyError(f"{where}.{key}", str(e)) from None
    if "protected" in raw:
        kw["protected"] = tuple(_choice(f"{where}.protected", p, PROTECTED)
                                for p in _strings(f"{where}.protected", raw["protected"]))
    return Conditions(**kw)


def _compile_decisions(where: str, raw: Mapping[str, Any]) -> Decisions:
    kw: dict[str, Any] = {}
    for key, allowed in (("encrypt", ENCRYPT), ("certificate", CERTIFICATE),
                         ("cipher", CIPHERS), ("sign", SIGN), ("fallback", FALLBACK)):
        if key in raw:
            kw[key] = _choice(f"{where}.{key}", raw[key], allowed)
    if "signing_certificate" in raw:
        value = raw["signing_certificate"]
        if not isinstance(value, str) or not value:
            raise PolicyError(f"{where}.signing_certificate",
                              '"domain", "sender", "sender-or-domain" or the address or '
                              'domain of a configured identity')
        kw["signing_certificate"] = value
    for key in ("protect_headers", "strip_subject_keyword"):
        if key in raw:
            if not isinstance(raw[key], bool):
                raise PolicyError(f"{where}.{key}", f"expected true or false, got {raw[key]!r}")
            kw[key] = raw[key]
    return Decisions(**kw)


def compile_rule(index: int, raw: object) -> Rule:
    where = f"policy.rules[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(where, "expected a table ([[policy.rules]])")
    name = raw.get("name", f"rule-{index}")
    if not isinstance(name, str):
        raise PolicyError(f"{where}.name", "expected a string")
    where = f"{where} ({name})"
    unknown = set(raw) - _CONDITION_KEYS - _DECISION_KEYS - {"name", "final"}
    if unknown:
        raise PolicyError(where, f"unknown key(s) {', '.join(sorted(unknown))}; conditions: "
                          f"{', '.join(sorted(_CONDITION_KEYS))}; decisions: "
                          f"{', '.join(sorted(_DECISION_KEYS))}")
    final = raw.get("final", False)
    if not isinstance(final, bool):
        raise PolicyError(f"{where}.final", "expected true or false")
    decisions = _compile_decisions(where, raw)
    if decisions == Decisions():
        raise PolicyError(where, "decides nothing: name at least one decision "
                          f"({', '.join(sorted(_DECISION_KEYS))})")
    return Rule(name, _compile_conditions(where, raw), decisions, final)


def compile_rules(raw: object) -> tuple[Rule, ...]:
    """The compiled rules of `[[policy.rules]]`; raises PolicyError naming the bad key."""
    if not isinstance(raw, list):
        raise PolicyError("policy.rules", "expected a list of tables ([[policy.rules]])")
    rules = tuple(compile_rule(i, r) for i, r in enumerate(raw))
    names = [r.name for r in rules]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise PolicyError("policy.rules", f"rule names must be unique: {', '.join(sorted(dupes))}")
    return rules
