"""Envelope micro-benchmark: encrypt and decrypt per core, next to the limits and a peer.

`python -m benchmarks.bench_envelope [--full] [--json PATH]`

For 2 KB, 10 KB and 100 KB messages: gateway.smime.encrypt / decrypt with an RSA-2048
and an EC P-256 recipient (AES-128-GCM and AES-128-CBC), measured in alternating rounds
next to (a) the raw public-key operation each recipient costs (RSA-2048 PKCS#1 v1.5
encryption; P-256 ephemeral key + ECDH) and its private-key twin for decrypt, and (b)
`cryptography`'s own PKCS#7 envelope builder (AES-128-CBC, RSA, DER and S/MIME output)
and its DER decryption. Prints figures and ratios; writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import cryptography
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from benchmarks._loadgen_stats import machine_facts
from benchmarks._rates import per_wall_second
from gateway.keys import Identity, KeyRing
from gateway.keys.demo import issue, name_of, new_key
from gateway.smime import decrypt, encrypt
from gateway.smime.message import base64_lines

RESULTS = Path(__file__).parent / "results"
SIZES = (2048, 10240, 102400)


def make_message(size: int, seed: int = 1) -> bytes:
    """A multipart message of about size octets: text part plus a base64 attachment."""
    rng = random.Random(seed)
    words = [b"invoice", b"quarter", b"figures", b"caf\xc3\xa9", b"the", b"and", b"of"]
    text = b""
    while len(text) < size // 3:
        text += b" ".join(rng.choice(words) for _ in range(12)) + b"\r\n"
    blob = base64_lines(rng.randbytes(max(size - len(text) - 600, 0) * 3 // 4))
    return (b"From: Alice <alice@alpha.test>\r\nTo: Bob <bob@beta.test>\r\n"
            b"Subject: figures\r\nDate: Sat, 28 Nov 2026 17:00:00 +0000\r\n"
            b"Message-ID: <1@alpha.test>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + text + b"\r\n--b\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"\r\n--b--\r\n")


def peer_encrypt(entity: bytes, cert: x509.Certificate, encoding: serialization.Encoding
                 ) -> bytes:
    """cryptography's own envelope builder (AES-128-CBC, RSA PKCS#1 v1.5)."""
    return pkcs7.PKCS7EnvelopeBuilder().set_data(entity).add_recipient(cert) \
        .encrypt(encoding, [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="5 rounds of 1 s (default 3 × 0.25 s)")
    parser.add_argument("--json", help="result file (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    rounds, seconds = (5, 1.0) if args.full else (3, 0.25)

    ca = issue(name_of("bench CA"), new_key("p256"), None, ca=True)
    rsa_item = issue(name_of("bench rsa"), new_key("rsa2048"), ca)
    ec_item = issue(name_of("bench ec"), new_key("p256"), ca)
    ring = KeyRing([Identity.create(rsa_item.key, rsa_item.certificate),
                    Identity.create(ec_item.key, ec_item.certificate)])
    rsa_cert, ec_cert = rsa_item.certificate, ec_item.certificate
    rsa_pub = rsa_cert.public_key()
    ec_pub = ec_cert.public_key()
    assert isinstance(rsa_pub, rsa.RSAPublicKey)
    assert isinstance(ec_pub, ec.EllipticCurvePublicKey)
    assert isinstance(rsa_item.key, rsa.RSAPrivateKey)
    assert isinstance(ec_item.key, ec.EllipticCurvePrivateKey)
    rsa_key, ec_key = rsa_item.key, ec_item.key
    wrapped = rsa_pub.encrypt(os.urandom(16), padding.PKCS1v15())

    def ecdh() -> bytes:
        return ec.generate_private_key(ec.SECP256R1()).exchange(ec.ECDH(), ec_pub)

    limits: dict[str, Callable[[], object]] = {
        "raw RSA-2048 encrypt": lambda: rsa_pub.encrypt(b"k" * 16, padding.PKCS1v15()),
        "raw RSA-2048 decrypt": lambda: rsa_key.decrypt(wrapped, padding.PKCS1v15()),
        "raw P-256 ephemeral ECDH": ecdh,
        "raw P-256 static ECDH": lambda: ec_key.exchange(ec.ECDH(), ec_pub),
    }
    rows: list[dict[str, Any]] = []
    for size in SIZES:
        message = make_message(size)
        entity = message[message.index(b"Content-Type"):]
        opened = {(who, c): encrypt(message, [cert], cipher=c)
                  for who, cert in (("rsa", rsa_cert), ("p256", ec_cert))
                  for c in ("aes128-gcm", "aes128-cbc")}
        peer_der = peer_encrypt(entity, rsa_cert, serialization.Encoding.DER)
        cases: dict[str, Callable[[], object]] = dict(limits)
        for who, cert in (("rsa", rsa_cert), ("p256", ec_cert)):
            for c in ("aes128-gcm", "aes128-cbc"):
                cases[f"encrypt {who} {c}"] = partial(encrypt, message, [cert], cipher=c)
                cases[f"decrypt {who} {c}"] = partial(decrypt, opened[(who, c)], ring)
        for label, enc in (("DER", serialization.Encoding.DER),
                           ("SMIME", serialization.Encoding.SMIME)):
            cases[f"cryptography encrypt rsa aes128-cbc {label}"] = partial(
                peer_encrypt, entity, rsa_cert, enc)
        cases["cryptography decrypt rsa aes128-cbc DER"] = partial(
            pkcs7.pkcs7_decrypt_der, peer_der, rsa_cert, rsa_key, [])
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):  # alternate, so drift hits every case alike
            for name, fn in cases.items():
                samples[name].append(per_wall_second(fn, seconds))
        med = {name: statistics.median(v) for name, v in samples.items()}
        print(f"\n{size // 1024} KB message ({len(message)} octets), per second, one core:")
        for name, value in med.items():
            print(f"  {name:45s} {value:10,.0f}")
        ratios = {
            "encrypt rsa gcm / raw RSA encrypt": med["encrypt rsa aes128-gcm"]
            / med["raw RSA-2048 encrypt"],
            "encrypt p256 gcm / raw ephemeral ECDH": med["encrypt p256 aes128-gcm"]
            / med["raw P-256 ephemeral ECDH"],
            "encrypt rsa cbc / cryptography DER": med["encrypt rsa aes128-cbc"]
            / med["cryptography encrypt rsa aes128-cbc DER"],
            "encrypt rsa cbc / cryptography SMIME": med["encrypt rsa aes128-cbc"]
            / med["cryptography encrypt rsa aes128-cbc SMIME"],
            "decrypt rsa cbc / raw RSA decrypt": med["decrypt rsa aes128-cbc"]
            / med["raw RSA-2048 decrypt"],
            "decrypt rsa cbc / cryptography DER": med["decrypt rsa aes128-cbc"]
            / med["cryptography decrypt rsa aes128-cbc DER"],
        }
        for name, value in ratios.items():
            print(f"  ratio {name:39s} {value:10.2f}")
        rows.append({"size": size, "octets": len(message), "per_second": med,
                     "ratios": ratios, "rounds": rounds, "seconds_per_round": seconds})
    report = {"benchmark": "bench_envelope", "mode": "full" if args.full else "quick",
              "machine": machine_facts(), "cryptography": cryptography.__version__,
              "results": rows, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = Path(args.json) if args.json else RESULTS / f"bench_envelope-{int(time.time())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
