"""Opening a session with a next hop under its TLS policy, counted (delivery's part that
talks TLS; the agent decides which host and policy).

connect(): STARTTLS per policy (none / opportunistic / required / verify / dane, with the
DANE expectations of gateway.delivery.dane), the result counted in
smimegate_delivery_tls_total{result}. connect_sts(): the same under the MTA-STS mode the
host was chosen with (RFC 8461 §5, gateway.delivery.mtasts).
"""

from __future__ import annotations

import logging

from gateway.config.schema import DeliverySection
from gateway.delivery import metrics, mtasts
from gateway.delivery.client import SmtpConnection, SmtpError, TlsContexts
from gateway.delivery.dane import Expected
from gateway.delivery.route import Host

log = logging.getLogger("smimegate.delivery")


class Connector:
    """Opens SMTP sessions for the delivery agent."""

    def __init__(self, config: DeliverySection, hostname: str) -> None:
        self._config = config
        self._hostname = hostname
        self._tls = TlsContexts(config.tls_ca_file)

    async def connect(self, host: Host, tls: str,
                      expected: Expected | None = None) -> SmtpConnection:
        try:
            conn = await SmtpConnection.connect(
                host.name, host.address, host.port, helo=self._hostname, tls=tls,
                tls_context=self._tls.get(tls), connect_timeout=self._config.connect_timeout,
                command_timeout=self._config.command_timeout,
                data_timeout=self._config.data_timeout, expected=expected)
        except SmtpError as e:
            if e.reply.status == "4.7.5":  # no STARTTLS, handshake or authentication
                metrics.TLS.labels("failed").inc()
            raise
        metrics.TLS.labels(
            "clear" if not conn.tls else "dane-verified" if tls == "dane"
            else "pkix-verified" if tls == "verify" else "unauthenticated").inc()
        return conn

    async def connect_sts(self, host: Host, tls: str,
                          expected: Expected | None) -> SmtpConnection:
        """connect(), under the MTA-STS mode the host was chosen with (RFC 8461 §5):
        enforce counts sessions verified and refused; testing tries "verify" first and
        logs and counts what enforce would have refused before connecting as before."""
        if host.sts == mtasts.TESTING and tls not in ("verify", "dane", "none"):
            try:
                return await self.connect(host, "verify")
            except SmtpError as e:
                if e.reply.status != "4.7.5":
                    raise
                metrics.MTA_STS.labels("testing-refused").inc()
                log.warning("delivery: MTA-STS (testing): enforce would refuse %s: %s",
                            host.name, e)
        try:
            conn = await self.connect(host, tls, expected)
        except SmtpError as e:
            if host.sts == mtasts.ENFORCE and e.reply.status == "4.7.5":
                metrics.MTA_STS.labels("refused").inc()
                log.warning("delivery: MTA-STS: %s (RFC 8461 enforce: not sent)", e)
            raise
        if host.sts == mtasts.ENFORCE:
            metrics.MTA_STS.labels("enforced").inc()
        return conn
