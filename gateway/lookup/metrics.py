"""Prometheus metrics of certificate lookup, in the default registry that the admin
server (gateway.metrics.server) serves."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0, 30.0)

# source: cache | stale | directory | unavailable; result: found | none | unavailable
LOOKUPS = Counter("smimegate_lookup_lookups", "certificate lookups (per name: an address "
                  "or a domain) by where the answer came from and what it was",
                  ["source", "result"], registry=REGISTRY)
# reason: the trust gate's code (untrusted, expired, wrong-name, ...), revoked, malformed
REJECTED = Counter("smimegate_lookup_rejected_certificates", "certificates offered by a "
                   "directory or DNS and never used, by reason", ["source", "reason"],
                   registry=REGISTRY)
DIRECTORY_SECONDS = Histogram("smimegate_lookup_directory_request_seconds",
                              "time of one directory request, by outcome (ok or the "
                              "DirectoryError code)", ["outcome"],
                              buckets=_LATENCY_BUCKETS, registry=REGISTRY)
DANE_QUERIES = Counter("smimegate_lookup_dane_queries", "SMIMEA (RFC 8162) queries by "
                       "outcome", ["outcome"], registry=REGISTRY)
# result: stored | rejected (the trust gate refused it) | skipped (a directory answer or an
# earlier harvest holds the address)
HARVESTED = Counter("smimegate_lookup_harvested", "signer certificates of verified inbound "
                    "mail offered to the cache ([inbound] harvest), by what became of them",
                    ["result"], registry=REGISTRY)
# result: stored | older (a message signed at that time or later is held) | future
# (signing time too far ahead) | rejected (not a name, OIDs or a time)
CAPABILITIES = Counter("smimegate_lookup_capabilities_learned", "SMIMECapabilities of "
                       "verified inbound mail offered to the cache ([inbound] "
                       "learn_capabilities), by what became of them", ["result"],
                       registry=REGISTRY)
