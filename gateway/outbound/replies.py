"""The replies the outbound path refuses a copy with (RFC 5321 §4.2, RFC 3463).

When no recipient group of a message goes anywhere, the whole message is refused in the
session, with one reply:
- a permanent refusal (fallback "reject") wins over a temporary one, since retrying
  could never deliver the message as written: the sender learns it at once;
- otherwise the temporary refusal: the client keeps the message and retries, by which
  time the directory may answer.
When other groups go on, the message is accepted and each refused group's original is
queued with its reply (Output.refused): delivery bounces a 5yz with a DSN and runs the
job again for a 4yz when it is due.
"""

from __future__ import annotations

from gateway.envelope import Reply

# Fallback "defer": RFC 3463 X.7.0,
# "other or undefined security status" — the certificate may be found on a retry.
NO_CERTIFICATE_DEFER = Reply(451, "4.7.0",
                             "No usable recipient certificate yet, try again later")
# Fallback "reject": RFC 3463 X.7.1, "delivery not authorized, message refused".
NO_CERTIFICATE_REJECT = Reply(550, "5.7.1",
                              "Policy requires encryption and the recipient has no "
                              "usable certificate")
# sign = "required" with no identity to sign with: RFC 3463 X.7.5, "cryptographic
# failure". Temporary: the operator can add the key; the client keeps the message.
NO_SIGNING_IDENTITY = Reply(451, "4.7.5", "Policy requires a signature and no signing "
                            "certificate is configured for the sender, try again later")
# The message could not be signed or encrypted (SMIMEError): X.7.5 as well.
CRYPTO_FAILED = Reply(451, "4.7.5", "Cannot sign or encrypt the message, try again later")
# RCPT time: the certificate lookup did not finish in time (RFC 3463 X.4.3, "directory
# server failure").
LOOKUP_TIMEOUT = Reply(451, "4.4.3", "Recipient certificate lookup timed out, try again "
                       "later")
# `smimegate quarantine release` of an outbound message: queued as a refused original
# that is due at once, so the job runs again for it (gateway/inbound/cli.py).
RELEASED = Reply(451, "4.7.0", "Released from quarantine: to be signed and encrypted again")
