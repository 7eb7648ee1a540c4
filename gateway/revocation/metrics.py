"""Prometheus metrics of revocation checking, in the gateway's default registry.

Module-level, as gateway.metrics does: a crypto worker process counts its own; the admin
server exposes the front-end process's registry.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter

# result: good | revoked | unknown (the responder's answer) or the failure kind:
# no-url | http-error | timeout | malformed | unsuccessful | bad-signature | certid |
# stale | nonce
OCSP_REQUESTS = Counter("smimegate_revocation_ocsp_requests",
                        "OCSP requests sent, by result", ["result"], registry=REGISTRY)
CACHE_HITS = Counter("smimegate_revocation_cache_hits",
                     "revocation checks answered from the in-process cache, by kind of "
                     "entry (answer: a responder's answer; failure: a remembered failure)",
                     ["kind"], registry=REGISTRY)
VERDICTS = Counter("smimegate_revocation_verdicts",
                   "revocation checks of signer certificates, by mode and status",
                   ["mode", "status"], registry=REGISTRY)
