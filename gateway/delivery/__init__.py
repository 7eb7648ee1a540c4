"""Delivery: from the spool to the next hop, with retries and bounces.

Owns next-hop selection (gateway.delivery.route: transport map, relayhost, MX, A/AAAA;
RFC 5321 §5.1, RFC 7505), the outbound SMTP client (gateway.delivery.client: ESMTP,
PIPELINING, 8BITMIME, SIZE, STARTTLS with the TLS policy none / opportunistic (falls
back to cleartext if the handshake fails, RFC 7435) / required / verify / dane), DANE
for MX hosts with DNSSEC-secure TLSA records (gateway.delivery.dane: RFC 7672, RFC 6698,
RFC 7671; with `delivery.dane` it trusts the resolver's AD bit), MTA-STS for MX-routed
domains (gateway.delivery.mtasts: RFC 8461, policies fetched over HTTPS and cached;
enforce keeps listed MX hosts only, over verified TLS; with `delivery.mta_sts`), scheduling
with connection reuse, per-destination concurrency and exponential backoff
(gateway.delivery.agent), what a reply means for a recipient (gateway.delivery.outcome),
and DSNs (gateway.delivery.dsn, RFC 3464).

API for `smimegate run`:

    agent = DeliveryAgent(spool, config.delivery, hostname=config.smtp.hostname)
    await agent.start()   # picks up everything due, recovered mail included
    agent.wake()          # after an enqueue: look at the spool now (also done by the
                          # spool's own listener, so calling it is cheap and optional)
    await agent.stop()    # transactions in flight finish and are recorded; the rest
                          # stays queued
"""

from gateway.delivery.agent import DeliveryAgent
from gateway.delivery.client import SmtpConnection, SmtpError
from gateway.delivery.dsn import FailedRecipient, build_dsn
from gateway.delivery.outcome import backoff
from gateway.delivery.route import Destination, RouteError, Router

__all__ = [
    "DeliveryAgent",
    "Destination",
    "FailedRecipient",
    "RouteError",
    "Router",
    "SmtpConnection",
    "SmtpError",
    "backoff",
    "build_dsn",
]
