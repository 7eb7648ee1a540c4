"""The directory's Prometheus metrics, one registry per running app (tests run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0)


class DirectoryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("smimegate_directory_requests", "HTTP requests by route and "
                                "status", ["route", "status"], registry=r)
        self.latency = Histogram("smimegate_directory_request_seconds", "time to answer a "
                                 "request", ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.storage = Histogram("smimegate_directory_storage_seconds", "time of one storage "
                                 "operation", ["op"], buckets=_LATENCY_BUCKETS, registry=r)
        self.certificates = Gauge("smimegate_directory_certificates", "stored certificates by "
                                  "state", ["state"], registry=r)
        self.auth_failures = Counter("smimegate_directory_auth_failures", "failed write "
                                     "authentications", ["why"], registry=r)
        self.ocsp = Counter("smimegate_directory_ocsp_responses", "OCSP answers by certificate "
                            "status or error", ["status"], registry=r)
        self.verdicts = Counter("smimegate_directory_verify_verdicts", "POST /v1/verify "
                                "verdicts", ["verdict"], registry=r)
        self.rejected = Counter("smimegate_directory_publish_rejected", "certificates refused "
                                "at publish, by reason code", ["code"], registry=r)
        self.cache = Gauge("smimegate_directory_lookup_cache_events", "in-process lookup "
                           "cache hits and misses since start (readcache.py)",
                           ["cache", "result"], registry=r)
        self._storage_children: dict[str, Histogram] = {}

    def observe_storage(self, op: str, seconds: float) -> None:
        child = self._storage_children.get(op)
        if child is None:
            child = self._storage_children[op] = self.storage.labels(op)
        child.observe(seconds)
