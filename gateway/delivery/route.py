"""Next hop of a recipient domain: transport map, relayhost, else MX, else A/AAAA.

RFC 5321 §5.1 (MX in preference order, equal preferences shuffled; no MX → the domain's
own address records, the "implicit MX"), §4.1.3 (an address literal goes to that
address), RFC 7505 (null MX "0 ." → the domain accepts no mail: 556 5.1.10). MX and
their addresses come from dnspython's async resolver (`delivery.dns_servers` or
/etc/resolv.conf); a configured next hop's name from the system resolver (/etc/hosts).

A *destination* is what concurrency limits and connection reuse apply to: an explicit
next hop (transport entry or relayhost, host:port) or, for MX routing, the recipient
domain; together with the TLS policy that applies to it.

With `delivery.dane` on, queries carry the DO bit (RFC 3225) and a host found by MX is
*secure* when the resolver set the AD bit on the MX answer (or, for the implicit MX, on
the NODATA MX answer) and on every answer that gave its addresses (RFC 7672 §2.2.1-2):
only a secure host's TLSA records are looked up (gateway.delivery.dane). Explicit next
hops and address literals are never secure: their names come from configuration.

With `delivery.mta_sts` on, an MX-routed domain's MTA-STS policy (RFC 8461,
gateway.delivery.mtasts) filters its hosts: under "enforce" only those matching the
policy are kept (none left: 451 4.7.5) and each is sent to with TLS policy "verify"
unless DANE authenticates it (DANE first, RFC 8461 §2); under "testing" every host is
kept and marked, and the agent tries "verify" first, logging what would have failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from dataclasses import dataclass, replace

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.inet
import dns.nameserver
import dns.resolver

from gateway.config.errors import ConfigError
from gateway.config.schema import DeliverySection
from gateway.config.types import HostPort
from gateway.delivery import dane, metrics, mtasts
from gateway.envelope import Reply, domain_of

log = logging.getLogger("smimegate.delivery")

TLS_POLICIES = ("none", "opportunistic", "required", "verify", "dane")


class RouteError(Exception):
    """No next hop; `reply` says whether to try again (4xx) or bounce (5xx)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Destination:
    key: str  # e.g. "relay:[127.0.0.1]:2526|verify" or "mx:beta.test|opportunistic"
    domain: str  # for MX routing; "" for explicit hops
    hop: HostPort | None  # explicit next hop
    tls: str


@dataclass(frozen=True, slots=True)
class Host:
    name: str  # for TLS verification and Remote-MTA
    address: str
    port: int
    secure: bool = False  # DNSSEC-secure MX and address records: TLSA may be looked up
    sts: str = ""  # the MTA-STS mode it was chosen under: "enforce", "testing" or ""


class Router:
    def __init__(self, config: DeliverySection,
                 resolver: dns.asyncresolver.Resolver | None = None) -> None:
        self._config = config
        self._transport = dict(config.transport)
        self._tls = dict(config.tls_policy)
        for domain, policy in self._tls.items():
            if policy not in TLS_POLICIES:
                raise ConfigError("delivery.tls_policy", f"{domain!r} has {policy!r}; "
                                  f"must be one of {', '.join(TLS_POLICIES)}")
        if not config.dane:
            # Without a validating resolver "dane" would silently mean "opportunistic".
            if config.tls == "dane":
                raise ConfigError("delivery.tls", "\"dane\" needs delivery.dane = true "
                                  "(and a DNSSEC-validating resolver)")
            for domain, policy in self._tls.items():
                if policy == "dane":
                    raise ConfigError("delivery.tls_policy", f"{domain!r} has \"dane\", "
                                      "which needs delivery.dane = true (and a "
                                      "DNSSEC-validating resolver)")
        self._dane = config.dane
        self._resolver = resolver or make_resolver(config)
        if self._dane:
            # RFC 3225: the DO bit asks a validating resolver for the AD bit.
            self._resolver.use_edns(0, dns.flags.DO, 1232)
        self._sts = mtasts.MtaSts(self._resolver, ca_file=config.tls_ca_file,
                                  port=config.mta_sts_port) if config.mta_sts else None

    def destination(self, rcpt: str, *, require_tls: bool = False) -> Destination:
        """Where rcpt's copy goes. require_tls (a copy the crypto job sent unencrypted
        under the "tls-only" fallback) makes the TLS policy "verify" whatever the
        domain's: the next hop's certificate must match its usable TLSA records (with
        delivery.dane, see host_tls), else chain to delivery.tls_ca_file (or the
        system's CAs) and name the host."""
        domain = domain_of(rcpt)
        tls = "verify" if require_tls else self._tls.get(domain, self._config.tls)
        hop = self._transport.get(domain) or self._config.relayhost
        if hop is not None:
            return Destination(f"relay:{hop}|{tls}", "", hop, tls)
        return Destination(f"mx:{domain}|{tls}", domain, None, tls)

    async def hosts(self, dest: Destination) -> list[Host]:
        """Addresses to try in order, after the domain's MTA-STS policy if any.
        Raises RouteError."""
        hosts = await self._hosts(dest)
        if self._sts is None or dest.hop is not None or dest.domain.startswith("["):
            return hosts
        return _apply_sts(dest.domain, await self._sts.policy(dest.domain), hosts)

    async def _hosts(self, dest: Destination) -> list[Host]:
        if dest.hop is not None:
            if _is_address(dest.hop.host):
                return [Host(dest.hop.host, dest.hop.host, dest.hop.port)]
            return await _system_addresses(dest.hop)
        port = self._config.smtp_port
        if dest.domain.startswith("["):  # RFC 5321 §4.1.3 address literal: no DNS at all
            literal = dest.domain[1:-1]
            literal = literal[5:] if literal.lower().startswith("ipv6:") else literal
            if not _is_address(literal):
                raise RouteError(Reply(550, "5.1.2", f"bad address literal {dest.domain}"))
            return [Host(literal, literal, port)]
        try:
            answer = await self._resolver.resolve(dest.domain, "MX")
        except dns.resolver.NXDOMAIN:
            raise RouteError(Reply(550, "5.1.2", f"domain {dest.domain} does not exist")) \
                from None
        except dns.resolver.NoAnswer as e:  # RFC 5321 §5.1: the implicit MX
            addresses, secure = await self._addresses(dest.domain, dest.domain)
            secure = secure and self._secure(dane.denial_response(e))
            return [Host(dest.domain, a, port, secure) for a in addresses]
        except dns.exception.DNSException as e:
            raise RouteError(Reply(451, "4.4.3", f"MX lookup for {dest.domain} failed: "
                                   f"{e.__class__.__name__}")) from None
        mxs: dict[int, list[str]] = {}
        for rr in answer:
            mxs.setdefault(rr.preference, []).append(rr.exchange.to_text(omit_final_dot=True))
        if any(name in ("", ".") for names in mxs.values() for name in names):
            raise RouteError(Reply(556, "5.1.10", f"domain {dest.domain} accepts no mail "
                                   "(null MX, RFC 7505)"))
        mx_secure = self._secure(answer.response)
        hosts: list[Host] = []
        for pref in sorted(mxs):
            names = mxs[pref]
            random.shuffle(names)
            for name in names:
                try:
                    addresses, secure = await self._addresses(name, dest.domain)
                except RouteError:
                    continue  # try the other MX hosts
                hosts += [Host(name, a, port, mx_secure and secure) for a in addresses]
        if not hosts:
            raise RouteError(Reply(451, "4.4.3", f"no MX host of {dest.domain} has an address"))
        return hosts

    async def host_tls(self, dest: Destination,
                       host: Host) -> tuple[str, dane.Expected | None]:
        """The TLS policy for one host of dest after its TLSA records, and what the
        peer must then show (RFC 7672 §2.2). Where DANE does not apply (off, an explicit hop, an
        insecure host or answer, no records), "dane" is "opportunistic" and "verify"
        stays PKIX. With usable records both authenticate by DANE only; with records
        none of which is usable, "dane" is mandatory unauthenticated TLS.
        Raises RouteError when a secure host's TLSA records cannot be had: the host must
        not be used at all (RFC 7672 §2.1.1)."""
        fallback = "opportunistic" if dest.tls == "dane" else dest.tls
        if host.sts == mtasts.ENFORCE and fallback != "verify":
            # RFC 8461 §4.2: a PKIX-valid certificate for the MX host, unless DANE
            # (looked up below when the host is secure) authenticates it instead.
            fallback = "verify"
        if not (self._dane and host.secure and (dest.tls in ("dane", "verify")
                                               or host.sts == mtasts.ENFORCE)):
            return fallback, None
        try:
            tlsa = await dane.lookup(self._resolver, host.name, host.port)
        except dane.TlsaLookupError as e:
            metrics.TLSA.labels("failed").inc()
            raise RouteError(Reply(451, "4.4.3", str(e))) from None
        metrics.TLSA.labels(tlsa.state).inc()
        if tlsa.state == dane.USABLE:
            # RFC 7672 §3.2.2: the TLSA base domain and the next-hop domain are the
            # names a DANE-TA leaf may carry.
            return "dane", dane.Expected(tlsa.records, (host.name, dest.domain))
        if tlsa.state == dane.UNUSABLE and fallback == "opportunistic" and dest.tls == "dane":
            return "required", None
        return fallback, None

    def _secure(self, response: object) -> bool:
        return self._dane and bool(getattr(response, "flags", 0) & dns.flags.AD)

    async def _addresses(self, name: str, domain: str) -> tuple[list[str], bool]:
        """The addresses of name, and whether every answer giving them was secure."""
        out: list[str] = []
        secure = True
        missing = False
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(name, rdtype)
                out += [rr.address for rr in answer]
                secure = secure and self._secure(answer.response)
            except dns.resolver.NXDOMAIN:
                missing = True
            except dns.resolver.NoAnswer:
                continue
            except dns.exception.DNSException as e:
                raise RouteError(Reply(451, "4.4.3", f"address lookup for {name} failed: "
                                       f"{e.__class__.__name__}")) from None
        if not out:
            code, status = (550, "5.1.2") if missing and name == domain else (451, "4.4.3")
            raise RouteError(Reply(code, status, f"{name} has no address"))
        return out, secure


def _apply_sts(domain: str, policy: mtasts.Policy | None, hosts: list[Host]) -> list[Host]:
    """RFC 8461 §4.1, §5: the hosts a policy lets us use, each marked with its mode."""
    if policy is None or policy.mode == mtasts.NONE:
        return hosts
    out: list[Host] = []
    for host in hosts:
        if policy.allows(host.name):
            out.append(replace(host, sts=policy.mode))
        elif policy.mode == mtasts.TESTING:
            metrics.MTA_STS.labels("testing-refused").inc()
            log.warning("delivery: MTA-STS (testing) of %s does not list MX host %s; "
                        "enforce would not use it", domain, host.name)
            out.append(host)
        else:
            metrics.MTA_STS.labels("refused").inc()
            log.info("delivery: MTA-STS of %s does not list MX host %s; skipped",
                     domain, host.name)
    if not out:
        raise RouteError(Reply(451, "4.7.5", f"no MX host of {domain} is listed in its "
                               "MTA-STS policy (RFC 8461)"))
    return out


async def _system_addresses(hop: HostPort) -> list[Host]:
    """A configured next hop's name through the system resolver (so /etc/hosts counts).
    Failure is always transient: a typo in the configuration must not bounce mail."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            hop.host, hop.port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise RouteError(Reply(451, "4.4.3", f"cannot resolve next hop {hop}: "
                               f"{e.strerror or e}")) from None
    seen: dict[str, None] = {str(info[4][0]): None for info in infos}
    return [Host(hop.host, address, hop.port) for address in seen]


def make_resolver(config: DeliverySection) -> dns.asyncresolver.Resolver:
    if not config.dns_servers:
        return dns.asyncresolver.Resolver()
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(s.host, s.port)
                            for s in config.dns_servers]
    resolver.lifetime = 10.0
    return resolver


def _is_address(host: str) -> bool:
    return dns.inet.is_address(host)
