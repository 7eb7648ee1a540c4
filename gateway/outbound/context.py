"""What a crypto worker loads once: keys, trust anchors, policy, the certificate cache.

`WorkerContext` is the small frozen record the pool hands each worker process (STYLE.md
habit 6); `init_worker(context)` is the pool's initializer and loads everything in it
once per process (`Loaded`); the job function then reads `current()`. The front end
calls `load(context)` too, before starting workers, so a missing key file is a precise
error at startup rather than a worker that fails to start.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from gateway.config.schema import (
    GatewayConfig,
    InboundRevocationSection,
    InboundSection,
    KeysSection,
    PolicySection,
)
from gateway.inbound.job import InboundPolicy
from gateway.inbound.quarantine import quarantine_dir
from gateway.keys import Identity, KeyMaterialError, KeyRing, load_identity, load_trust_anchors
from gateway.lookup._cache_py import CertCache as CertCacheType
from gateway.lookup.cache import CertCache
from gateway.policy.cli import defaults_of
from gateway.policy.engine import Defaults
from gateway.policy.rules import Rule
from gateway.revocation import RevocationPolicy
from gateway.smtp.relay import RelayPolicy


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """Everything a crypto worker needs, picklable and immutable."""

    keys: KeysSection
    policy: PolicySection
    cache_name: str
    local_domains: tuple[str, ...]
    stale_bound: float  # seconds past expiry a cached certificate may still be used
    log_level: str = "info"
    # The inbound path (gateway/inbound) for local_domains recipients:
    inbound: InboundSection = field(default_factory=InboundSection)
    revocation: InboundRevocationSection = field(default_factory=InboundRevocationSection)
    hostname: str = "smimegate.localdomain"  # our authserv-id in Authentication-Results
    quarantine_dir: Path = Path("quarantine")

    @classmethod
    def of(cls, config: GatewayConfig) -> WorkerContext:
        return cls(config.keys, config.policy, config.cache.name, config.smtp.local_domains,
                   config.lookup.stale_bound, config.log.level, config.inbound,
                   config.revocation, config.smtp.hostname,
                   quarantine_dir(config.inbound.quarantine_dir, config.spool.directory))


def outbound_configured(config: GatewayConfig) -> bool:
    """Does the config ask for the crypto job? ([keys] with certificates and trust
    anchors, and [lookup] naming where to find recipients' certificates, or local
    domains whose inbound mail gateway/inbound decrypts and verifies.)"""
    lookup = config.lookup
    return bool(config.keys.certificates and config.keys.trust_anchors
                and (lookup.directories or lookup.default_directories or lookup.srv
                     or lookup.dane or config.smtp.local_domains))


def load_identities(keys: KeysSection) -> KeyRing:
    """The gateway's identities: certificates[i] with private_keys[i] (none for PKCS#12)."""
    identities: list[Identity] = []
    for i, cert_path in enumerate(keys.certificates):
        key_path: Path | None = keys.private_keys[i] if i < len(keys.private_keys) else None
        identities.append(load_identity(
            cert_path, key_path, allow_group_readable=keys.allow_group_readable_keys))
    return KeyRing(identities)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A worker's loaded state (one per process)."""

    context: WorkerContext
    keyring: KeyRing
    anchors: tuple[x509.Certificate, ...]
    rules: tuple[Rule, ...]
    defaults: Defaults
    local: RelayPolicy  # only its is_local() is used: which recipients are inbound
    cache: CertCacheType | None  # None until the front end has created it
    revocation: RevocationPolicy  # with its own OCSP client and cache (per process)
    inbound: InboundPolicy


def load(context: WorkerContext, *, attach: bool = True) -> Loaded:
    """Load keys and anchors (KeyMaterialError names the file) and attach the cache."""
    keyring = load_identities(context.keys)
    if not len(keyring):
        raise KeyMaterialError(Path("keys.certificates"), "no certificate configured")
    anchors = load_trust_anchors(context.keys.trust_anchors)
    cache = CertCache.attach(context.cache_name) if attach else None
    return Loaded(context, keyring, anchors, context.policy.rules,
                  defaults_of(context.policy), RelayPolicy((), context.local_domains), cache,
                  RevocationPolicy.from_config(context.revocation), _inbound(context))


def _inbound(context: WorkerContext) -> InboundPolicy:
    i = context.inbound
    return InboundPolicy({"pass": i.on_pass, "fail": i.on_fail, "temperror": i.on_temperror,
                          "none": i.on_none, "undecryptable": i.on_undecryptable},
                         i.strip_signature, context.hostname, i.harvest,
                         i.learn_capabilities)


_loaded: Loaded | None = None


def init_worker(context: WorkerContext) -> None:
    """The worker pool's initializer: load once, before the first job."""
    global _loaded
    # A spawned worker starts with no logging set up: the decisions and fallbacks it
    # logs go to stderr (the gateway's log) in the front end's format.
    logging.basicConfig(level=context.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: "
                               "%(message)s")
    _loaded = load(context)


def current() -> Loaded:
    if _loaded is None:
        raise RuntimeError("gateway.outbound: worker not initialised (the pool must be "
                           "started with initializer gateway.outbound.context:init_worker)")
    return _loaded
