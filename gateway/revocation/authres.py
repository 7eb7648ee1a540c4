"""The Authentication-Results header field (RFC 8601 §2.2) with method smime (RFC 7281).

    Authentication-Results: beta.test; smime=pass reason="..."
        body.smime-identifier=alice@alpha.test body.smime-serial=5A3F...
        body.smime-issuer="CN=...,O=..."

Properties are those RFC 7281 §3.2 registers: body.smime-identifier (the signer's
identity: the certificate's address that speaks for From, else its first address or
domain), body.smime-part (the MIME part that carried the signature, when the caller knows
it), and body.smime-serial with body.smime-issuer (the signer certificate's serial, in
hex, and issuer, RFC 4514; §3.2.3: both or neither).

Everything taken from the message (addresses, names, reasons quoting them) is untrusted:
control characters (CR and LF included) are dropped, whitespace runs become one space,
non-ASCII becomes "?" unless the caller allows UTF-8 (RFC 8601 §2.2 / RFC 6532), values
are tokens or quoted-strings with '"' and '\\' escaped, comments escape '(' ')' '\\', and
each unbreakable piece is capped, so the field is folded (RFC 5322 §2.2.3) at spaces into
lines of at most 78 characters and cannot be made to carry another header field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.revocation.policy import RESULTS, Verdict

HEADER = "Authentication-Results"
WIDTH = 78  # RFC 5322 §2.1.1 SHOULD
INDENT = " "  # the fold replaces one space: unfolding restores quoted text exactly
MAX_WORD = 48  # longest unbreakable value piece; with the longest property name it fits
MAX_TEXT = 300  # longest reason or comment, in characters
_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')  # RFC 2045 §5.1
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PROPERTY = re.compile(r"[a-z]+\.[a-z][a-z0-9-]*")
_METHOD = re.compile(r"[a-z][a-z0-9-]*")
# A token (RFC 2045 §5.1): printable ASCII but space and tspecials (one regex, not a
# Python loop per character: the serial and identifier of every passing message).
_TOKEN = re.compile("[" + re.escape("".join(
    chr(c) for c in range(0x21, 0x7F) if chr(c) not in _TSPECIALS)) + "]+")


@dataclass(frozen=True)
class ResInfo:
    """One resinfo (RFC 8601 §2.2): method=result, reason, comment, properties."""

    method: str
    result: str
    reason: str = ""
    comment: str = ""
    properties: tuple[tuple[str, str], ...] = ()  # ("body.smime-identifier", value)


def _clean(text: str, ascii_only: bool) -> str:
    if text.isascii() and text.isprintable():
        # The usual text (printable ASCII): the loop below would copy every character.
        cleaned = " ".join(text.split())
        return cleaned if len(cleaned) <= MAX_TEXT else cleaned[:MAX_TEXT - 3] + "..."
    out: list[str] = []
    for ch in text:
        if ch.isspace():
            out.append(" ")
        elif not ch.isprintable():  # C0/C1 controls, line/paragraph separators, ...
            continue
        elif ascii_only and ord(ch) > 0x7E:
            out.append("?")
        else:
            out.append(ch)
    cleaned = " ".join("".join(out).split())
    return cleaned if len(cleaned) <= MAX_TEXT else cleaned[:MAX_TEXT - 3] + "..."


def _escaped_words(text: str, special: str) -> list[str]:
    """text's words with special characters backslash-escaped, each capped at MAX_WORD."""
    words = []
    for word in text.split(" "):
        if len(word) <= MAX_WORD - 3 and not any(c in word for c in special):
            words.append(word)  # the usual word: nothing to escape or cap
            continue
        pieces: list[str] = []
        size = 0
        for ch in word:
            piece = "\\" + ch if ch in special else ch
            if size + len(piece) > MAX_WORD - 3:
                pieces.append("...")
                break
            pieces.append(piece)
            size += len(piece)
        words.append("".join(pieces))
    return words


def _quoted(text: str, ascii_only: bool) -> list[str]:
    """A quoted-string (RFC 5322 §3.2.4) as words; spaces inside are fold points."""
    words = _escaped_words(_clean(text, ascii_only), '"\\')
    words[0] = '"' + words[0]
    words[-1] += '"'
    return words


def _comment(text: str, ascii_only: bool) -> list[str]:
    words = _escaped_words(_clean(text, ascii_only), "()\\")
    words[0] = "(" + words[0]
    words[-1] += ")"
    return words


def _value(text: str, ascii_only: bool) -> list[str]:
    """A pvalue: a bare address or token when it is one, else a quoted-string."""
    if 0 < len(text) <= MAX_WORD and (_ADDRESS.fullmatch(text) or _TOKEN.fullmatch(text)):
        return [text]
    return _quoted(text, ascii_only)


def _words(info: ResInfo, ascii_only: bool) -> list[str]:
    if not _METHOD.fullmatch(info.method) or info.result not in RESULTS:
        raise ValueError(f"not a method=result of RFC 8601: {info.method}={info.result}")
    words = [f"{info.method}={info.result}"]
    if info.comment:
        words += _comment(info.comment, ascii_only)
    if info.reason:
        reason = _quoted(info.reason, ascii_only)
        words += ["reason=" + reason[0], *reason[1:]]
    for name, value in info.properties:
        if not _PROPERTY.fullmatch(name):
            raise ValueError(f"not a ptype.property of RFC 8601: {name!r}")
        pvalue = _value(value, ascii_only)
        words += [f"{name}={pvalue[0]}", *pvalue[1:]]
    return words


def _fold(words: list[str]) -> str:
    lines = [f"{HEADER}:"]
    for word in words:
        if len(lines[-1]) + 1 + len(word) <= WIDTH:
            lines[-1] += " " + word
        else:
            lines.append(INDENT + word)
    return "\r\n".join(lines) + "\r\n"


def authentication_results(authserv_id: str, results: ResInfo | Sequence[ResInfo], *,
                           ascii_only: bool = True) -> str:
    """The whole header field, folded, ending in CRLF. authserv_id is ours (RFC 8601
    §2.5, e.g. the host name) and must be a token; no results reads "none" (§2.2)."""
    if not authserv_id or len(authserv_id) > MAX_WORD or not all(
            0x20 < ord(c) < 0x7F and c not in _TSPECIALS for c in authserv_id):
        raise ValueError(f"authserv-id {authserv_id!r} must be a token (RFC 8601 §2.5)")
    infos = [results] if isinstance(results, ResInfo) else list(results)
    if not infos:
        return _fold([authserv_id + ";", "none"])
    words = [authserv_id + ";"]
    for i, info in enumerate(infos):
        piece = _words(info, ascii_only)
        if i < len(infos) - 1:
            piece[-1] += ";"
        words += piece
    return _fold(words)


def smime_resinfo(verdict: Verdict, *, from_address: str | None = None,
                  part: str | None = None) -> ResInfo:
    """The smime resinfo (RFC 7281) for a verdict of gateway.revocation.policy."""
    props: list[tuple[str, str]] = []
    signer = verdict.signer
    if signer is not None and signer.certificate is not None:
        names = list(signer.addresses) + list(signer.domains)
        if from_address and signer.speaks_for(from_address):
            names.insert(0, from_address)
        if names:
            props.append(("body.smime-identifier", names[0]))
    if part:
        props.append(("body.smime-part", part))
    if signer is not None and signer.certificate is not None:
        cert = signer.certificate
        props.append(("body.smime-serial", format(cert.serial_number, "X")))
        props.append(("body.smime-issuer", cert.issuer.rfc4514_string()))
    return ResInfo("smime", verdict.result, verdict.reason, properties=tuple(props))
