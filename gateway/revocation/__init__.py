"""Revocation checking of inbound signers and the reporting of verdicts.

ocsp: a blocking OCSP client (RFC 6960) with an in-process cache, for crypto workers.
crl, crlsource: CRLs (RFC 5280 §5) for certificates no OCSP server answers for.
fetch: the blocking http download both use; outcome: the answer both give.
policy: strict / soft / off, and a VerifyResult turned into an RFC 7281 result.
authres: the Authentication-Results header field (RFC 8601) with method smime.
metrics: Prometheus counters of the above.
"""

from gateway.revocation.authres import ResInfo, authentication_results, smime_resinfo
from gateway.revocation.crlsource import CrlSource
from gateway.revocation.ocsp import OcspClient, OcspOutcome
from gateway.revocation.outcome import Outcome
from gateway.revocation.policy import (
    MODES,
    RevocationPolicy,
    Verdict,
    inbound_verdict,
    revocation_check,
)

__all__ = [
    "MODES",
    "CrlSource",
    "OcspClient",
    "OcspOutcome",
    "Outcome",
    "ResInfo",
    "RevocationPolicy",
    "Verdict",
    "authentication_results",
    "inbound_verdict",
    "revocation_check",
    "smime_resinfo",
]
