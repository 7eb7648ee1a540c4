"""The one error the S/MIME engine raises for input it cannot use, with a code per cause."""

from __future__ import annotations


class SMIMEError(ValueError):
    """Malformed, unsupported or undecryptable S/MIME input (never another exception type).

    code is short and stable, for metrics and policy:
      malformed          not parseable (bad MIME framing, bad base64, bad DER/BER)
      not-smime          the message carries no S/MIME structure of the kind asked for
      unsupported        a well-formed structure using an algorithm we do not implement
      no-recipient       no RecipientInfo matches any of our keys
      decrypt-failed     the key matched but decryption or the GCM tag check failed
      already-protected  asked to protect a message that already is (and told not to)
      bad-key            a key or certificate that cannot do what was asked
    """

    def __init__(self, reason: str, code: str = "malformed") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
