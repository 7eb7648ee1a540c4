"""`smimegate smime sign|encrypt|decrypt|verify`: the engine on one message, for debugging.

Each reads a whole RFC 5322 message on stdin and writes one on stdout. Exit 0 on success,
1 when verification or decryption failed, 2 on bad usage or input; one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cryptography import x509

from gateway.cli.errors import REFUSED, USAGE, CliError
from gateway.keys import (
    Identity,
    KeyMaterialError,
    KeyRing,
    load_certificates,
    load_identity,
    load_trust_anchors,
)
from gateway.mime.canon import canonicalize

MAX_INPUT = 256 * 1024 * 1024  # a debugging tool, but still bounded
CIPHERS = ("aes128-gcm", "aes256-gcm", "aes128-cbc", "aes256-cbc")


def register(sub: Any) -> None:
    smime = sub.add_parser("smime", help="sign, encrypt, decrypt or verify one message "
                                         "(stdin → stdout)")
    ssub = smime.add_subparsers(dest="smime_command", metavar="ACTION", required=True)

    def identity_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cert", type=Path, required=True,
                       help="our certificate: PEM (leaf first, chain after) or PKCS#12")
        p.add_argument("--key", type=Path, help="private key (PEM) when --cert is PEM")
        p.add_argument("--password", help="password of the key or PKCS#12 file")
        p.add_argument("--allow-readable-key", action="store_true",
                       help="accept a key file that group or others can read")

    p = ssub.add_parser("sign", help="sign (multipart/signed unless --opaque)")
    identity_args(p)
    p.add_argument("--opaque", action="store_true", help="opaque signed-data")
    p.add_argument("--digest", choices=("sha256", "sha384", "sha512"), default="sha256")
    p.add_argument("--pss", action="store_true", help="RSA-PSS instead of PKCS#1 v1.5")
    p.add_argument("--skip-signed", action="store_true",
                   help="leave an already signed message alone instead of signing it again")
    p.set_defaults(handler=cmd_sign)

    p = ssub.add_parser("encrypt", help="encrypt to one or more recipients")
    p.add_argument("--recipient", type=Path, action="append", required=True,
                   help="recipient certificate (PEM or DER); repeat for more recipients")
    p.add_argument("--cipher", choices=CIPHERS, default="aes128-gcm")
    p.add_argument("--oaep", action="store_true", help="RSA-OAEP key transport (SHA-256)")
    p.add_argument("--protect-headers", action="store_true",
                   help="wrap the whole message as message/rfc822 (RFC 8551 §3.1)")
    p.set_defaults(handler=cmd_encrypt)

    p = ssub.add_parser("decrypt", help="decrypt with our key")
    identity_args(p)
    p.set_defaults(handler=cmd_decrypt)

    p = ssub.add_parser("verify", help="verify the signature; writes the signed content")
    p.add_argument("--trust", type=Path, action="append", required=True,
                   help="trust anchor certificates (PEM); repeatable")
    p.set_defaults(handler=cmd_verify)


def _read_stdin() -> bytes:
    data = sys.stdin.buffer.read(MAX_INPUT + 1)
    if len(data) > MAX_INPUT:
        raise CliError(f"input larger than {MAX_INPUT} bytes")
    if not data.strip():
        raise CliError("no message on standard input")
    return canonicalize(data)


def _identity(args: argparse.Namespace) -> Identity:
    password = args.password.encode() if args.password else None
    try:
        return load_identity(args.cert, args.key, password=password,
                             allow_group_readable=args.allow_readable_key)
    except KeyMaterialError as e:
        raise CliError(str(e)) from None


def _certs(paths: list[Path]) -> list[x509.Certificate]:
    try:
        return [load_certificates(p)[0] for p in paths]
    except KeyMaterialError as e:
        raise CliError(str(e)) from None


def _write(data: bytes) -> int:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from gateway.smime import SMIMEError, sign

    signer = _identity(args)
    message = _read_stdin()
    try:
        out = sign(message, signer, digest=args.digest, pss=args.pss, opaque=args.opaque,
                   if_signed="skip" if args.skip_signed else "sign")
    except SMIMEError as e:
        raise CliError(f"cannot sign: {e.reason}") from None
    return _write(out)


def cmd_encrypt(args: argparse.Namespace) -> int:
    from gateway.smime import SMIMEError, encrypt

    recipients = _certs(args.recipient)
    message = _read_stdin()
    try:
        out = encrypt(message, recipients, cipher=args.cipher, oaep=args.oaep,
                      protect_headers=args.protect_headers)
    except SMIMEError as e:
        raise CliError(f"cannot encrypt: {e.reason}") from None
    return _write(out)


def cmd_decrypt(args: argparse.Namespace) -> int:
    from gateway.smime import SMIMEError, decrypt

    ring = KeyRing([_identity(args)])
    message = _read_stdin()
    try:
        out = decrypt(message, ring)
    except SMIMEError as e:
        status = REFUSED if e.code in ("no-recipient", "decrypt-failed") else USAGE
        raise CliError(f"cannot decrypt ({e.code}): {e.reason}", status) from None
    return _write(out)


def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.smime import SMIMEError, verify

    try:
        anchors = load_trust_anchors(args.trust)
    except KeyMaterialError as e:
        raise CliError(str(e)) from None
    message = _read_stdin()
    try:
        result = verify(message, anchors=anchors)
    except SMIMEError as e:
        raise CliError(f"cannot verify ({e.code}): {e.reason}") from None
    if not result.ok:
        raise CliError(f"verification failed ({result.code}): {result.reason}", REFUSED)
    good = next(s for s in result.signers if s.ok)
    print(f"smimegate: verified: signed by {good.subject}", file=sys.stderr)
    if good.capabilities:  # RFC 8551 §2.5.2: what the signer's software decrypts
        from gateway.smime.cms_signed import SMIME_CAPABILITIES

        names = {oid: name for name, oid in SMIME_CAPABILITIES}
        print("smimegate: the signer announces: " + ", ".join(
            names.get(oid, oid) for oid in good.capabilities), file=sys.stderr)
    return _write(result.content)
