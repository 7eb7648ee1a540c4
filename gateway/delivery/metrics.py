"""Delivery's Prometheus metrics (module-level: one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "smimegate_deliveries_total",
    "Recipient delivery attempts by result (delivered, deferred, bounced, expired)",
    ["result"])
DSNS = Counter("smimegate_dsn_total", "Delivery status notifications (bounces) queued")
DELIVERY_LATENCY = Histogram(
    "smimegate_delivery_latency_seconds", "From acceptance to delivery, per message and hop",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600, 86400))
TRANSACTION_SECONDS = Histogram(
    "smimegate_delivery_transaction_seconds", "One SMTP transaction with a next hop",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30))
CONNECTIONS = Gauge("smimegate_delivery_connections", "Open connections to next hops")
TLS = Counter(
    "smimegate_delivery_tls_total",
    "Sessions opened with next hops by TLS result (dane-verified, pkix-verified, "
    "unauthenticated, clear) and handshakes or authentications that failed (failed)",
    ["result"])
TLSA = Counter(
    "smimegate_delivery_tlsa_total",
    "TLSA lookups of DNSSEC-secure MX hosts (RFC 7672) by state (usable, unusable, absent, "
    "insecure, failed)", ["state"])
MTA_STS = Counter(
    "smimegate_delivery_mta_sts_total",
    "MTA-STS (RFC 8461) policy look-ups by result (fetched, cached, none, failed) and "
    "sessions under an enforce policy (enforced, refused) or a testing policy that "
    "enforce would have refused (testing-refused)", ["result"])
