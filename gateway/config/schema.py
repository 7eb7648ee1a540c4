"""Every setting of the gateway and of the directory: type, default, unit, meaning.

This is the one table. A section is a frozen dataclass; a configuration is a frozen
dataclass of sections. Add a setting here and the loader, `smimegate config --defaults`
and deploy/*.example.toml all know it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config.declare import setting
from gateway.config.types import HostPort, Network

if TYPE_CHECKING:
    from gateway.policy.rules import Rule


@dataclass(frozen=True, slots=True)
class SmtpSection:
    listen: HostPort = setting(HostPort("127.0.0.1", 2525), "hostport",
                               "where the SMTP front end accepts mail")
    hostname: str = setting("smimegate.localdomain", "str",
                            "name in the greeting, EHLO reply and Received headers")
    trusted_networks: tuple[Network, ...] = setting(
        (), "network-list",
        "clients that may relay to any domain (outbound); loopback is NOT implied")
    local_domains: tuple[str, ...] = setting(
        (), "str-list", "domains anyone may send to (inbound); everything else is 554 5.7.1")
    max_message_size: int = setting(25 * 1024**2, "size", "largest message accepted (552 5.3.4)",
                                    unit="bytes", minimum=1024)
    max_recipients: int = setting(100, "int", "recipients per message (452 4.5.3 past it)",
                                  minimum=1)
    max_line_length: int = setting(998, "int",
                                   "longest line in DATA, CRLF excluded (RFC 5322 §2.1.1)",
                                   unit="octets", minimum=78)
    command_timeout: float = setting(300.0, "duration", "idle time allowed between commands",
                                     unit="seconds", minimum=1)
    data_timeout: float = setting(600.0, "duration", "time allowed to send one DATA body",
                                  unit="seconds", minimum=1)
    max_connections_per_client: int = setting(20, "int",
                                              "simultaneous sessions from one client address",
                                              minimum=1)
    max_sessions: int = setting(1000, "int", "simultaneous sessions in all", minimum=1)
    max_data_memory: int = setting(
        256 * 1024**2, "size",
        "message data held in memory by all sessions together, from DATA to the spool "
        "(452 4.3.1 past it)", unit="bytes", minimum=64 * 1024)
    tls_certificate: Path | None = setting(None, "path",
                                           "PEM certificate chain offered by STARTTLS")
    tls_key: Path | None = setting(None, "path", "PEM private key for STARTTLS")


@dataclass(frozen=True, slots=True)
class SpoolSection:
    directory: Path = setting(Path("spool"), "path",
                              "where accepted messages are kept until delivered")
    max_messages: int = setting(100_000, "int", "queued messages before new mail gets 451 4.3.2",
                                minimum=1)
    group_commit_window: float = setting(
        0.0, "duration",
        "extra wait, under load, to gather more writes under one fsync round; 0: a round "
        "starts when the previous ends, and what arrived meanwhile shares it",
        unit="seconds")
    sync: str = setting("fsync", "str",
                        "how a commit round is made durable: fsync every file (issued at "
                        "once) or one syncfs(2) of the spool's filesystem (best on its own "
                        "filesystem)", choices=("fsync", "syncfs"))
    control_poll: float = setting(0.5, "duration",
                                  "how often a running gateway applies `smimegate queue` "
                                  "commands", unit="seconds", minimum=0.01)


@dataclass(frozen=True, slots=True)
class WorkersSection:
    processes: int = setting(0, "int", "crypto worker processes; 0 means one per core",
                             minimum=0)
    max_batch: int = setting(32, "int", "messages handed to a worker in one round trip",
                             minimum=1)
    max_pending: int = setting(512, "int", "messages waiting for a worker before 451 4.3.2",
                               minimum=1)
    batch_timeout: float = setting(60.0, "duration",
                                   "a batch running longer has its worker killed and its "
                                   "jobs retried", unit="seconds", minimum=0.1)


@dataclass(frozen=True, slots=True)
class DeliverySection:
    transport: tuple[tuple[str, HostPort], ...] = setting(
        (), "hostport-map",
        "next hop per recipient domain, e.g. \"beta.test\" = \"127.0.0.1:2526\"")
    relayhost: HostPort | None = setting(None, "hostport",
                                         "send everything not in the transport map here")
    concurrency_per_destination: int = setting(10, "int", "connections to one next hop",
                                               minimum=1)
    connect_timeout: float = setting(30.0, "duration", "TCP connect timeout", unit="seconds")
    retry_initial: float = setting(60.0, "duration", "first retry delay after a 4xx",
                                   unit="seconds")
    retry_max: float = setting(3600.0, "duration", "longest delay between retries",
                               unit="seconds")
    max_queue_lifetime: float = setting(5 * 86400.0, "duration",
                                        "age at which undeliverable mail bounces",
                                        unit="seconds")
    tls: str = setting("opportunistic", "str", "TLS to next hops unless a domain says "
                       "otherwise; dane: DANE (RFC 7672) where the MX host has DNSSEC-secure "
                       "usable TLSA records, else opportunistic (needs delivery.dane)",
                       choices=("none", "opportunistic", "required", "verify", "dane"))
    tls_policy: tuple[tuple[str, str], ...] = setting(
        (), "str-map",
        "TLS per recipient domain, overriding delivery.tls, e.g. \"beta.test\" = \"verify\"")
    dane: bool = setting(False, "bool",
                         "look up TLSA records of MX hosts (RFC 7672) for tls = dane and "
                         "verify, trusting the AD bit of delivery.dns_servers (or the "
                         "system's resolvers): they MUST be a DNSSEC-validating resolver "
                         "reached over a trusted path, e.g. a local unbound")
    mta_sts: bool = setting(False, "bool",
                            "honour MTA-STS policies (RFC 8461) of domains routed by MX: "
                            "under enforce only listed MX hosts, over TLS verified like "
                            "tls = verify; policies fetched over HTTPS and cached")
    mta_sts_port: int = setting(443, "int", "HTTPS port of mta-sts.<domain> policy hosts "
                                "(RFC 8461 says 443; other values are for tests)",
                                minimum=1, maximum=65535)
    tls_ca_file: Path | None = setting(None, "path",
                                       "CA certificates (PEM) for tls = verify and "
                                       "MTA-STS; empty means the system's")
    smtp_port: int = setting(25, "int", "port of next hops found by MX or A/AAAA",
                             minimum=1, maximum=65535)
    dns_servers: tuple[HostPort, ...] = setting(
        (), "hostport-list", "resolvers for MX and A/AAAA lookups; empty means /etc/resolv.conf")
    command_timeout: float = setting(300.0, "duration",
                                     "wait for a next hop's reply to a command",
                                     unit="seconds", minimum=0.1)
    data_timeout: float = setting(600.0, "duration",
                                  "wait for a next hop's reply after the message data",
                                  unit="seconds", minimum=0.1)
    connection_idle: float = setting(2.0, "duration",
                                     "how long an idle connection to a next hop stays open "
                                     "for more mail", unit="seconds")
    shutdown_grace: float = setting(30.0, "duration",
                                    "on stop, time given to transactions in flight",
                                    unit="seconds")


@dataclass(frozen=True, slots=True)
class KeysSection:
    certificates: tuple[Path, ...] = setting(
        (), "path-list", "this gateway's own certificates (PEM chain or PKCS#12)")
    private_keys: tuple[Path, ...] = setting((), "path-list",
                                             "private keys for those certificates (PEM)")
    trust_anchors: tuple[Path, ...] = setting(
        (), "path-list", "CA certificates that any certificate used must chain to (PEM)")
    allow_group_readable_keys: bool = setting(
        False, "bool", "accept a private key file that group or others can read")


@dataclass(frozen=True, slots=True)
class AdminSection:
    listen: HostPort | None = setting(HostPort("127.0.0.1", 9025), "hostport",
                                      "HTTP /metrics and /healthz; empty string turns it off")


@dataclass(frozen=True, slots=True)
class LogSection:
    level: str = setting("info", "str", "log verbosity",
                         choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True, slots=True)
class PolicySection:
    default_encrypt: str = setting("opportunistic", "str",
                                   "encryption when no rule decides",
                                   choices=("required", "opportunistic", "never"))
    default_certificate: str = setting("user-then-domain", "str",
                                       "which recipient certificate when no rule decides",
                                       choices=("user-then-domain", "domain-only", "user-only"))
    default_cipher: str = setting("aes128-gcm", "str",
                                  "content encryption when no rule decides (GCM only where "
                                  "the recipient's capabilities allow it)",
                                  choices=("aes128-gcm", "aes256-gcm", "aes128-cbc",
                                           "aes256-cbc"))
    gcm_without_capabilities: bool = setting(
        False, "bool", "keep a GCM cipher even when a recipient certificate does not list it "
        "in SMIMECapabilities (RFC 4262); by default such recipients get the CBC cipher of "
        "the same key size")
    default_sign: str = setting("required", "str", "signing when no rule decides",
                                choices=("required", "if-possible", "never"))
    default_signing_certificate: str = setting(
        "domain", "str", "signing certificate when no rule decides: domain, sender (the "
        "sender's own only), sender-or-domain, or the address or domain of a configured "
        "identity")
    default_protect_headers: bool = setting(False, "bool",
                                            "wrap the whole message (RFC 8551 §3.1) by default")
    text_budget: int = setting(1024 * 1024, "size",
                               "decoded text examined by content rules per message",
                               unit="bytes", minimum=1024)
    strip_headers: tuple[str, ...] = setting(
        ("X-Originating-IP",), "str-list",
        "header fields removed from outbound mail before it is signed (they say something "
        "internal)")
    rules: tuple[Rule, ...] = setting(
        (), "policy-rules", "[[policy.rules]] tables, read top to bottom (see README: Policy)")


@dataclass(frozen=True, slots=True)
class CacheSection:
    name: str = setting("smimegate-certs", "str",
                        "shared-memory file (in /dev/shm) of the certificate cache that "
                        "the front end writes and crypto workers read")
    entries: int = setting(131_072, "int",
                           "slots in the certificate cache (entries it can hold), in sets "
                           "of 8; a full set evicts its entry that expires first",
                           minimum=8, maximum=1 << 31)
    arena: int = setting(256 * 1024**2, "size",
                         "room for the cached certificates; when full, the oldest written "
                         "entries are evicted", unit="bytes", minimum=64 * 1024)


@dataclass(frozen=True, slots=True)
class InboundRevocationSection:
    mode: str = setting(
        "soft", "str",
        "revocation checking of inbound signers (gateway.revocation): strict makes an "
        "unanswered check a temperror, soft passes it with a note in Authentication-Results "
        "(a revoked signer fails either way), off does not ask. Default soft: strict turns "
        "any outage of a verification server into held mail for every sender, while soft "
        "still catches every revocation a server does answer and never hides that it could "
        "not ask", choices=("strict", "soft", "off"))
    servers: tuple[tuple[str, str], ...] = setting(
        (), "str-map",
        "OCSP verification server per issuing CA, keyed by the CA's subject (RFC 4514) or "
        "its certificate's SHA-256 fingerprint (hex), e.g. \"CN=Example CA,O=Example\" = "
        "\"http://directory.example:8780/ocsp\"; other CAs: the certificate's own OCSP URL")
    use_aia: bool = setting(True, "bool",
                            "ask the OCSP URL in the certificate (AIA, http only) when no "
                            "server is configured for its issuer")
    timeout: float = setting(3.0, "duration", "timeout of one OCSP request", unit="seconds",
                             minimum=0.1)
    cache_max: float = setting(3600.0, "duration",
                               "longest an OCSP answer is reused (less when its nextUpdate "
                               "is sooner)", unit="seconds", minimum=0)
    failure_cache: float = setting(30.0, "duration",
                                   "how long a failed lookup is remembered, so a down server "
                                   "does not cost a timeout per message", unit="seconds",
                                   minimum=0)
    clock_skew: float = setting(300.0, "duration",
                                "allowance for clock differences when checking an answer's "
                                "thisUpdate and nextUpdate", unit="seconds", minimum=0)
    crl: bool = setting(True, "bool",
                        "when there is no OCSP server to ask about a certificate (leaf or "
                        "intermediate CA), read the CRL at its http CRL distribution point "
                        "(RFC 5280), cached until nextUpdate (at most cache_max); off: a CA "
                        "certificate without OCSP is not asked, a leaf is unknown")
    crl_max_size: int = setting(10 * 1024**2, "size", "largest CRL downloaded",
                                unit="bytes", minimum=1024)


_INBOUND_ACTIONS = ("deliver", "reject", "defer", "quarantine")


@dataclass(frozen=True, slots=True)
class InboundSection:
    """What gateway/inbound does with mail for smtp.local_domains, per S/MIME verdict."""

    on_pass: str = setting("deliver", "str", "action for a signature that verified "
                           "(RFC 7281 smime=pass)", choices=_INBOUND_ACTIONS)
    on_fail: str = setting("quarantine", "str", "action for a signature that failed, a "
                           "signer not matching From, and neutral/permerror results",
                           choices=_INBOUND_ACTIONS)
    on_temperror: str = setting("defer", "str", "action when revocation could not be "
                                "learnt under strict revocation (451 4.7.5 by default)",
                                choices=_INBOUND_ACTIONS)
    on_none: str = setting("deliver", "str", "action for unsigned mail",
                           choices=_INBOUND_ACTIONS)
    on_undecryptable: str = setting("quarantine", "str", "action for encrypted mail that "
                                    "none of our keys opens", choices=_INBOUND_ACTIONS)
    strip_signature: bool = setting(False, "bool", "deliver verified mail without its "
                                    "signature (the Authentication-Results header stays)")
    quarantine_dir: Path | None = setting(None, "path", "quarantine store (one file per "
                                          "message); empty: \"quarantine\" next to the spool")
    harvest: bool = setting(False, "bool", "put the signer certificate of mail that "
                            "verified (smime=pass) into the certificate cache for its From "
                            "address, after the lookup trust gate; directory answers win")
    learn_capabilities: bool = setting(True, "bool", "remember the SMIMECapabilities "
                                       "attribute of mail that verified (smime=pass) per "
                                       "sender (RFC 8551 §2.7.1): AES-GCM is then used "
                                       "for it even when its certificate does not list it")
    capabilities_ttl: float = setting(30 * 86400.0, "duration", "how long learnt "
                                      "capabilities are kept after the message that "
                                      "announced them", unit="seconds", minimum=1)


@dataclass(frozen=True, slots=True)
class LookupSection:
    directories: tuple[tuple[str, str], ...] = setting(
        (), "str-map",
        "directory base URL per recipient domain, tried before DNS, e.g. "
        "\"beta.test\" = \"https://directory.beta.test\"")
    default_directories: tuple[str, ...] = setting(
        (), "str-list", "directory base URLs asked for domains with no entry above and no "
        "_PKIXREP SRV record (RFC 4386), in order")
    srv: bool = setting(True, "bool", "look for a domain's directory in DNS (_PKIXREP._http SRV)")
    dane: bool = setting(False, "bool", "also look for user certificates in DNS SMIMEA records "
                         "(RFC 8162); they must pass the trust gate like any other")
    dns_servers: tuple[HostPort, ...] = setting(
        (), "hostport-list", "resolvers for SRV and SMIMEA lookups; empty means /etc/resolv.conf")
    dns_timeout: float = setting(3.0, "duration", "time allowed for one DNS lookup",
                                 unit="seconds", minimum=0.01)
    timeout: float = setting(5.0, "duration", "time allowed for one directory request",
                             unit="seconds", minimum=0.01)
    retries: int = setting(2, "int", "further tries of a directory request that failed for a "
                           "reason that may pass (no answer, timeout, 5xx)", minimum=0,
                           maximum=10)
    batch_window: float = setting(0.002, "duration", "while a request to a directory is in "
                                  "flight, how long further asks are gathered into one POST "
                                  "/v1/lookup (an idle directory is asked at once)",
                                  unit="seconds")
    max_answer: int = setting(4 * 1024**2, "size", "largest directory answer read",
                              unit="bytes", minimum=1024)
    positive_ttl: float = setting(3600.0, "duration", "how long found certificates are cached "
                                  "(never past a certificate's expiry)", unit="seconds",
                                  minimum=1)
    negative_ttl: float = setting(300.0, "duration", "how long \"no usable certificate\" is "
                                  "cached", unit="seconds", minimum=1)
    stale_bound: float = setting(3600.0, "duration", "how long past its expiry an entry is "
                                 "still used while a refresh runs or the directory is down "
                                 "(0: never)", unit="seconds")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything `smimegate run` reads from gateway.toml."""

    smtp: SmtpSection = field(default_factory=SmtpSection)
    spool: SpoolSection = field(default_factory=SpoolSection)
    workers: WorkersSection = field(default_factory=WorkersSection)
    delivery: DeliverySection = field(default_factory=DeliverySection)
    keys: KeysSection = field(default_factory=KeysSection)
    admin: AdminSection = field(default_factory=AdminSection)
    log: LogSection = field(default_factory=LogSection)
    policy: PolicySection = field(default_factory=PolicySection)
    cache: CacheSection = field(default_factory=CacheSection)
    lookup: LookupSection = field(default_factory=LookupSection)
    revocation: InboundRevocationSection = field(
        default_factory=InboundRevocationSection)
    inbound: InboundSection = field(default_factory=InboundSection)


@dataclass(frozen=True, slots=True)
class ServerSection:
    listen: HostPort = setting(HostPort("127.0.0.1", 8780), "hostport",
                               "where the directory's HTTP API listens")
    data: Path = setting(Path("directory-data"), "path", "folder for the SQLite database")
    database_url: str = setting("", "str",
                                "postgresql://... to use PostgreSQL; empty means SQLite in data")
    max_body: int = setting(1024 * 1024, "size", "largest request body (413 past it)",
                            unit="bytes", minimum=1024)
    cache_max_age: float = setting(300.0, "duration", "Cache-Control max-age of public reads",
                                   unit="seconds")
    lookup_cache_ttl: float = setting(
        2.0, "duration", "reuse a lookup read from the database this long (0: never); "
        "this process's writes clear it, other replicas' writes show within it",
        unit="seconds")


@dataclass(frozen=True, slots=True)
class TrustSection:
    anchors: tuple[Path, ...] = setting(
        (), "path-list", "CA certificates a published certificate must chain to (PEM)")


@dataclass(frozen=True, slots=True)
class OcspSection:
    signers: tuple[Path, ...] = setting(
        (), "path-list", "delegated OCSP responder certificates (PEM; the issuing CA may follow)")
    keys: tuple[Path, ...] = setting((), "path-list",
                                     "private keys of those responders, in the same order")
    validity: float = setting(3600.0, "duration",
                              "nextUpdate - thisUpdate of OCSP answers (RFC 6960 §4.2.2.1)",
                              unit="seconds", minimum=1)


@dataclass(frozen=True, slots=True)
class RatelimitSection:
    auth_failures: int = setting(10, "int",
                                 "failed authentications one client may make per window",
                                 minimum=1)
    auth_window: float = setting(60.0, "duration", "window over which failures are counted",
                                 unit="seconds", minimum=1)


@dataclass(frozen=True, slots=True)
class RevocationSection:
    fetch_timeout: float = setting(5.0, "duration",
                                   "timeout fetching a CA's CRL or OCSP answer for /v1/verify",
                                   unit="seconds", minimum=0.1)
    cache_max: float = setting(3600.0, "duration",
                               "longest a fetched CRL or OCSP answer is reused",
                               unit="seconds")


@dataclass(frozen=True, slots=True)
class DirectoryConfig:
    """Everything `smimegate directory run` reads from directory.toml."""

    server: ServerSection = field(default_factory=ServerSection)
    trust: TrustSection = field(default_factory=TrustSection)
    ocsp: OcspSection = field(default_factory=OcspSection)
    ratelimit: RatelimitSection = field(default_factory=RatelimitSection)
    revocation: RevocationSection = field(default_factory=RevocationSection)
    log: LogSection = field(default_factory=LogSection)
