"""`smimegate run`: the gateway process — front end, workers, spool, delivery, admin.

Starts the parts in the order data flows backwards (spool, workers, delivery, then the
SMTP listener last, so nothing is accepted before it can be stored) and stops them in
the reverse order on SIGTERM or SIGINT: stop listening, let messages past DATA reach
the spool, stop the workers, let deliveries in flight finish, close the spool. Anything
acknowledged and not delivered stays in the spool for the next start.

Flags override the file (`-c gateway.toml`), which overrides the embedded defaults.

With `[keys]` certificates and trust anchors and a `[lookup]` source configured, the
outbound path is wired in (gateway/outbound): the front end creates the shared-memory
certificate cache and the CertificateResolver and looks certificates up at RCPT; the
workers run the crypto job, attached to the same cache. Without them the relay passes
messages unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import uvloop

from gateway.cli.errors import CliError
from gateway.config import ConfigError, load_gateway_config
from gateway.config.schema import GatewayConfig
from gateway.delivery import DeliveryAgent
from gateway.envelope import domain_of
from gateway.inbound import metrics as inbound_metrics
from gateway.keys import KeyMaterialError, load_trust_anchors
from gateway.lookup._cache_py import CertCache as CertCacheType
from gateway.lookup.cache import CertCache
from gateway.lookup.resolver import CertificateResolver
from gateway.metrics.server import AdminServer
from gateway.outbound.context import WorkerContext, load, outbound_configured
from gateway.outbound.readiness import CertificateReadiness
from gateway.smtp import Acceptor, FrontEnd, RelayPolicy
from gateway.spool import Spool, SpoolLocked
from gateway.workers import IDENTITY, WorkerPool
from gateway.workers.jobs import Job, Result

log = logging.getLogger("smimegate")

OUTBOUND_JOB = "gateway.outbound.job:process"
OUTBOUND_INIT = "gateway.outbound.context:init_worker"


class Gateway:
    """Every part of one gateway process, started and stopped in order."""

    def __init__(self, config: GatewayConfig, *, job_function: str | None = None) -> None:
        """job_function None: the outbound crypto job when configured, else identity."""
        self.config = config
        self.outbound = job_function is None and outbound_configured(config)
        self.job_function = job_function or (OUTBOUND_JOB if self.outbound else IDENTITY)
        self.cache: CertCacheType | None = None
        self.resolver: CertificateResolver | None = None
        self.spool: Spool | None = None
        self.pool: WorkerPool | None = None
        self.delivery: DeliveryAgent | None = None
        self.front: FrontEnd | None = None
        self.admin: AdminServer | None = None

    async def start(self) -> None:
        c = self.config
        try:
            readiness = self._start_outbound() if self.outbound else None
            self.spool = await Spool.open(c.spool)
            self.pool = WorkerPool(
                c.workers, job_function=self.job_function,
                initializer=OUTBOUND_INIT if self.outbound else None,
                init_arg=WorkerContext.of(c) if self.outbound else None,
                on_counts=inbound_metrics.apply if self.outbound else None)
            await self.pool.start()
            # A copy the crypto job refused for a while (no certificate yet) is tried
            # again through the same pool when delivery finds it due.
            self.delivery = DeliveryAgent(
                self.spool, c.delivery, hostname=c.smtp.hostname,
                reprocess=functools.partial(self._reprocess, readiness)
                if self.outbound else None)
            await self.delivery.start()
            # The admin server comes up before the SMTP listener: once mail is accepted,
            # /metrics and /healthz answer (503 until the listener is serving).
            if c.admin.listen is not None:
                self.admin = AdminServer(c.admin.listen, {
                    "smtp": self._smtp_health, "workers": self._workers_health,
                    "spool": self._spool_health})
                await self.admin.start()
            harvest = self.resolver.offer_harvested \
                if self.resolver is not None and c.inbound.harvest else None
            learn = functools.partial(self.resolver.offer_capabilities,
                                      ttl=c.inbound.capabilities_ttl) \
                if self.resolver is not None and c.inbound.learn_capabilities else None
            self.front = FrontEnd(c.smtp, Acceptor(self.pool, self.spool,
                                                   hostname=c.smtp.hostname,
                                                   on_harvest=harvest,
                                                   on_capabilities=learn),
                                  outbound_check=readiness.check if readiness else None)
            await self.front.start()
        except BaseException:
            await self.stop()
            raise

    async def _reprocess(self, readiness: CertificateReadiness | None, job: Job) -> Result:
        """Delivery's hook for a refused copy that is due again: the certificates as
        RCPT would ask for them, then the crypto job in the pool."""
        assert self.pool is not None
        if readiness is not None:
            local = RelayPolicy((), self.config.smtp.local_domains)
            await readiness.refresh([r for r in job.envelope.rcpt_tos
                                     if not local.is_local(domain_of(r))])
        return await self.pool.run(job)

    def _start_outbound(self) -> CertificateReadiness:
        """Check the keys load (a precise error now, not a worker that will not start),
        create the certificate cache the workers attach to, and the resolver."""
        c = self.config
        load(WorkerContext.of(c), attach=False)
        anchors = load_trust_anchors(c.keys.trust_anchors)
        self.cache = CertCache.create(c.cache.name, c.cache.entries, c.cache.arena)
        self.resolver = CertificateResolver(c.lookup, anchors=anchors, cache=self.cache)
        # RCPT waits for one directory request (and one DNS step when discovery uses
        # DNS). A lookup that needs longer (its retries) is 451 4.4.3 at RCPT and goes on
        # in the background, so the client's retry finds its answer in the cache.
        dns = c.lookup.dns_timeout if c.lookup.srv or c.lookup.dane else 0.0
        return CertificateReadiness(self.resolver, c.lookup.timeout + dns, c.policy)

    async def stop(self) -> None:
        if self.front is not None:
            await self.front.stop()
        if self.resolver is not None:
            await self.resolver.close()
            self.resolver = None
        # Delivery before the pool: a refused copy being processed again needs it.
        if self.delivery is not None:
            await self.delivery.stop()
        if self.pool is not None:
            await self.pool.stop()
        if self.spool is not None:
            await self.spool.close()
        if self.admin is not None:
            await self.admin.stop()
        if self.cache is not None:
            self.cache.unlink()
            self.cache.close()
            self.cache = None
        self.front = self.pool = self.delivery = self.spool = self.admin = None

    def _smtp_health(self) -> tuple[bool, dict[str, object]]:
        serving = self.front is not None and self.front.serving
        return serving, {"listen": str(self.config.smtp.listen)}

    def _workers_health(self) -> tuple[bool, dict[str, object]]:
        if self.pool is None:
            return False, {}
        stats = self.pool.stats()
        return stats["alive"] > 0, {**stats, "pids": self.pool.pids()}

    def _spool_health(self) -> tuple[bool, dict[str, object]]:
        if self.spool is None:
            return False, {}
        return True, {"has_room": self.spool.has_room(), **self.spool.stats()}


# Container objects allocated (net) between young-generation collections; Python's
# default is 700. Every session in flight keeps coroutine frames, futures and buffers
# alive, and each collection walks all of them that are young: at ~100 sessions the
# default had the collector take several percent of the event loop's CPU.
GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """Once the gateway is up: what start-up made (modules, settings, keys) lives as long
    as the process, so it leaves the collector's sight (gc.freeze) and a full collection
    under load walks only what the traffic made; young collections run less often."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


async def serve(config: GatewayConfig) -> None:
    """Run the gateway until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config)
    await gateway.start()
    tune_gc()
    assert gateway.front is not None
    host, port = gateway.front.address
    admin = f", admin http://{gateway.admin.address_text}/" if gateway.admin else ""
    log.info("smimegate running: SMTP on %s:%d%s", host, port, admin)
    try:
        await stop.wait()
    finally:
        log.info("smimegate stopping")
        await gateway.stop()


# -- the command ---------------------------------------------------------------------------

def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the gateway (SMTP front end, workers, spool, delivery)")
    p.add_argument("-c", "--config", type=Path, metavar="FILE",
                   help="gateway.toml (default: embedded defaults)")
    p.add_argument("--listen", metavar="HOST:PORT", help="SMTP address (smtp.listen)")
    p.add_argument("--admin", metavar="HOST:PORT",
                   help="/metrics and /healthz address, \"\" for none (admin.listen)")
    p.add_argument("--spool", metavar="DIR", help="spool directory (spool.directory)")
    p.add_argument("--hostname", help="name in greeting and Received (smtp.hostname)")
    p.add_argument("--trusted-network", metavar="CIDR", action="append",
                   help="may relay anywhere; repeatable (smtp.trusted_networks)")
    p.add_argument("--local-domain", metavar="D", action="append",
                   help="anyone may send to it; repeatable (smtp.local_domains)")
    p.add_argument("--transport", metavar="DOMAIN=HOST:PORT", action="append",
                   help="next hop for a domain; repeatable (delivery.transport)")
    p.add_argument("--relayhost", metavar="HOST:PORT",
                   help="next hop for every other domain (delivery.relayhost)")
    p.add_argument("--workers", metavar="N", type=int, help="worker processes (workers.processes)")
    p.set_defaults(handler=run_command)


def overrides_from(args: argparse.Namespace) -> dict[str, object]:
    """Dotted-key overrides from the flags given (raw values; the loader converts)."""
    out: dict[str, object] = {}
    simple = {"listen": "smtp.listen", "admin": "admin.listen", "spool": "spool.directory",
              "hostname": "smtp.hostname", "relayhost": "delivery.relayhost",
              "workers": "workers.processes", "trusted_network": "smtp.trusted_networks",
              "local_domain": "smtp.local_domains"}
    for attr, key in simple.items():
        value = getattr(args, attr)
        if value is not None:
            out[key] = value
    if args.transport:
        table: dict[str, str] = {}
        for item in args.transport:
            domain, eq, hop = item.partition("=")
            if not eq or not domain or not hop:
                raise CliError(f"--transport: expected DOMAIN=HOST:PORT, got {item!r}")
            table[domain] = hop
        out["delivery.transport"] = table
    return out


def run_command(args: argparse.Namespace) -> int:
    try:
        config = load_gateway_config(args.config, overrides=overrides_from(args))
    except ConfigError as e:
        raise CliError(str(e)) from None
    logging.basicConfig(level=config.log.level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.log.level != "debug":
        # aiosmtpd logs every connection and command at INFO: too much, and costly.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    try:
        uvloop.run(serve(config))
    except ConfigError as e:  # a combination of settings found wrong at start
        raise CliError(str(e)) from None
    except SpoolLocked as e:
        raise CliError(f"spool {config.spool.directory}: {e}") from None
    except KeyMaterialError as e:
        raise CliError(f"keys: {e}") from None
    except OSError as e:
        raise CliError(f"cannot start: {e}") from None
    return 0
