"""The inbound path: S/MIME mail for smtp.local_domains, decrypted, verified, acted on.

open.py: decrypt (RFC 8551 §3.3, RFC 5083) and verify (RFC 8551 §3.5, RFC 8550 §3 signer
vs From) into a verdict (RFC 7281); job.py: the [inbound] policy's action per verdict;
quarantine.py: the store of kept messages; cli.py: `smimegate quarantine`.
"""
