"""Revocation mode (strict / soft / off) and the inbound verdict of RFC 7281 §3.

RevocationPolicy wraps a RevocationCheck (normally gateway.revocation.ocsp.OcspClient):
hand `policy.check` to gateway.smime.verify (None when the mode is off, so the signer's
revocation reads "not-checked"), then `policy.verdict(result)` turns the VerifyResult into
the smime result of Authentication-Results:

- none: the message is not signed (no result, or SMIMEError code "not-smime");
- pass: a signature verified to a trusted, unrevoked signer; under soft, also when
  revocation could not be confirmed, with the reason as a note; under off, noted as not
  checked;
- fail: a signature that does not verify, an untrusted / expired / misused certificate,
  or a revoked signer (in every mode: a "revoked" answer is never overridden);
- temperror: strict mode and the revocation status could not be learnt (RFC 8601
  §2.7.1: a transient error, e.g. the verification server is down);
- neutral: S/MIME that cannot be processed (syntax errors, bad signed attributes);
- permerror: a signature we can never verify (unsupported algorithm, the signer's
  certificate missing from the message).

Revocation is never silently open: every pass that was not confirmed carries a note.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gateway.revocation import metrics
from gateway.smime.errors import SMIMEError
from gateway.smime.verify import (
    RevocationCheck,
    RevocationStatus,
    SignerInfoResult,
    VerifyResult,
)

if TYPE_CHECKING:
    from gateway.config.schema import InboundRevocationSection

MODES = ("strict", "soft", "off")
RESULTS = ("none", "pass", "fail", "neutral", "temperror", "permerror")

_FAIL = frozenset({"revoked", "bad-signature", "digest-mismatch", "content-type-mismatch"})
_NEUTRAL = frozenset({"bad-attributes"})
_PERMERROR = frozenset({"unsupported-algorithm", "no-signer-certificate", "no-signer"})
_REMEMBERED = 4096  # revocation answers kept for verdict notes


@dataclass(frozen=True)
class Verdict:
    """The smime result for Authentication-Results, with why."""

    result: str  # one of RESULTS
    reason: str  # one line for reason= (may be empty on a plain pass)
    signer: SignerInfoResult | None = None
    revocation: str = "not-checked"  # the signer's revocation status, as verify reports it


class RevocationPolicy:
    """A RevocationCheck that applies a mode; also remembers each answer's reason so the
    verdict can say why revocation is unknown (VerifyResult keeps only the status)."""

    def __init__(self, mode: str, inner: RevocationCheck | None) -> None:
        if mode not in MODES:
            raise ValueError(f"revocation mode {mode!r}: not one of {', '.join(MODES)}")
        if mode != "off" and inner is None:
            raise ValueError(f"revocation mode {mode} needs a revocation check")
        self.mode = mode
        self.inner = inner
        self._answers: dict[bytes, RevocationStatus] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, section: InboundRevocationSection) -> RevocationPolicy:
        """The policy of gateway.toml's [revocation], with its own OcspClient (build one
        per worker process: the client's cache and connections stay in-process)."""
        from gateway.revocation.ocsp import OcspClient

        inner = None if section.mode == "off" else OcspClient.from_config(section)
        return cls(section.mode, inner)

    @property
    def check(self) -> RevocationCheck | None:
        """What to pass as verify(revocation=...): None when off."""
        return None if self.mode == "off" else self

    def __call__(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        if self.inner is None:  # mode off, called directly
            return RevocationStatus("unknown", "revocation checking is off")
        try:
            answer = self.inner(cert, issuer)
        except Exception as e:  # a failing check reads as unknown, never as good
            answer = RevocationStatus("unknown", f"revocation check failed: {e}")
        key = cert.fingerprint(hashes.SHA256())  # the latest answer replaces older ones
        with self._lock:
            if len(self._answers) >= _REMEMBERED:
                self._answers.clear()
            self._answers[key] = answer
        return answer

    def _why_unknown(self, chain: tuple[x509.Certificate, ...]) -> str:
        with self._lock:
            for cert in chain:
                answer = self._answers.get(cert.fingerprint(hashes.SHA256()))
                if answer is not None and answer.status != "good":
                    return answer.reason
        return ""

    def verdict(self, result: VerifyResult | None,
                error: SMIMEError | None = None) -> Verdict:
        """The RFC 7281 result for a message: result is verify()'s answer, error what
        verify() raised instead, both None for an unsigned message."""
        verdict = self._verdict(result, error)
        metrics.VERDICTS.labels(self.mode, verdict.revocation).inc()
        return verdict

    def _verdict(self, result: VerifyResult | None, error: SMIMEError | None) -> Verdict:
        if result is None:
            if error is None or error.code == "not-smime":
                return Verdict("none", "" if error is None else str(error))
            return Verdict("neutral", f"unreadable S/MIME: {error}")
        if not result.ok:
            signer = result.signers[0] if result.signers else None
            revocation = signer.revocation if signer is not None else "not-checked"
            code = result.code
            if code in _NEUTRAL:
                kind = "neutral"
            elif code in _PERMERROR:
                kind = "permerror"
            else:  # _FAIL and every chain code (untrusted, expired, bad-usage, ...)
                kind = "fail"
            return Verdict(kind, f"{code}: {result.reason}", signer, revocation)
        signer = next(s for s in result.signers if s.ok)
        status = signer.revocation
        if status == "good":
            return Verdict("pass", "", signer, status)
        if self.mode == "off":
            return Verdict("pass", "revocation not checked (off by policy)", signer, status)
        why = self._why_unknown(signer.chain) if status == "unknown" else \
            "no revocation check was made"
        note = f"revocation status unknown: {why}" if why else "revocation status unknown"
        if self.mode == "strict":
            return Verdict("temperror", note, signer, status)
        return Verdict("pass", f"{note} (soft policy)", signer, status)


def inbound_verdict(result: VerifyResult | None, *, mode: str,
                    error: SMIMEError | None = None) -> Verdict:
    """The verdict without a RevocationPolicy at hand (no unknown-reason detail)."""
    return RevocationPolicy(mode, None if mode == "off" else _NeverCalled()).verdict(
        result, error)


class _NeverCalled:
    def __call__(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        return RevocationStatus("unknown", "no revocation check configured")


def revocation_check(mode: str, inner: RevocationCheck | None) -> RevocationPolicy:
    """A RevocationPolicy for mode over inner (the check verify() is given is .check)."""
    return RevocationPolicy(mode, inner)
