"""The ESMTP front end (RFC 5321 with RFC 1870, 2034, 2920, 3207, 6152) on aiosmtpd.

server.FrontEnd listens and owns the limits; session.Session is one connection;
handler.Handler holds the MAIL/RCPT hooks; relay.RelayPolicy says who may send where;
data reads DATA; accept.Acceptor takes a message through the workers to the spool.
"""

from gateway.handoff import Store
from gateway.smtp.accept import Acceptor, Processor
from gateway.smtp.relay import RelayPolicy
from gateway.smtp.server import FrontEnd

__all__ = ["Acceptor", "FrontEnd", "Processor", "RelayPolicy", "Store"]
