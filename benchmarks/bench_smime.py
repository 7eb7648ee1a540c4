"""S/MIME engine throughput per core: sign, encrypt, sign+encrypt.

Run: `python -m benchmarks.bench_smime` (--rounds, --seconds, --sizes for longer runs).

For 2 KB, 10 KB and 100 KB messages (the load generator's seeded multipart mix) and an
RSA-2048 and a P-256 signing key, in one process (= one core), this measures messages/s
of:
  - raw       the key's bare signature rate (one private-key operation over ~230 bytes,
              the size of our signed attributes): the physical limit of signing;
  - ours      gateway.smime.sign / encrypt / sign_and_encrypt (= encrypt(sign(...)),
              as the crypto job calls it), whole message in and out;
  - crypto    `cryptography`'s PKCS#7 builders doing the same job: PKCS7SignatureBuilder
              with Encoding.SMIME + DetachedSignature, PKCS7EnvelopeBuilder with
              Encoding.SMIME, and the envelope around the signed output; the routing
              headers are put back on top so the output is the same kind of message.
Encryption is to one RSA-2048 recipient (the only kind the envelope builder takes), with
AES-128-CBC on both sides so the comparison is like for like, and with our default
AES-128-GCM as well. Every operation is measured once per round, rounds alternate, and
each figure is the median over rounds, so drift on a shared machine hits all alike.
Ratios printed: ours/raw and ours/crypto. Targets (issue 2): sign+encrypt of 10 KB at
≥ 85 % of the raw RSA-2048 rate, and ≥ 4,000 msgs/s with P-256.
JSON with versions and machine goes to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import asn1crypto
import cryptography
from cryptography import x509
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from benchmarks._loadgen_mail import build_body
from benchmarks._loadgen_stats import machine_facts
from benchmarks._rates import per_cpu_second
from gateway import native
from gateway.keys import Identity, load_certificates, load_identity
from gateway.keys.demo import write_demo_pki
from gateway.mime.canon import canonicalize
from gateway.smime import encrypt, sign, sign_and_encrypt
from gateway.smime.message import parse_message

RESULTS = Path(__file__).parent / "results"
SIZES = (2 * 1024, 10 * 1024, 100 * 1024)
ROUTING = (b"From: Alice <alice@alpha.test>\r\nTo: bob@beta.test\r\nSubject: benchmark\r\n"
           b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <bench@alpha.test>\r\n")
RAW_INPUT = bytes(range(230))  # about the size of our DER signed attributes

Op = Callable[[], object]


def make_message(size: int, seed: int = 1) -> bytes:
    return ROUTING + build_body(size - len(ROUTING), random.Random(seed), "bench")


def crypto_sign(message: bytes, ident: Identity) -> bytes:
    """cryptography's builder on the entity, our routing headers on top, CRLF."""
    msg = parse_message(message)
    out = (pkcs7.PKCS7SignatureBuilder().set_data(msg.entity())
           .add_signer(ident.certificate, ident.key, hashes.SHA256())
           .sign(Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature]))
    return b"".join(h.raw for h in msg.routing_headers()) + canonicalize(out)


def crypto_encrypt(message: bytes, recipient: x509.Certificate) -> bytes:
    msg = parse_message(message)
    out = (pkcs7.PKCS7EnvelopeBuilder().set_data(msg.entity()).add_recipient(recipient)
           .encrypt(Encoding.SMIME, []))
    return b"".join(h.raw for h in msg.routing_headers()) + canonicalize(out)


def sign_encrypt(message: bytes, ident: Identity, rcpt: list[x509.Certificate],
                 cipher: str) -> bytes:
    # What the crypto job calls: encrypt(sign(...)) without reading the signed copy back.
    return sign_and_encrypt(message, ident, rcpt, cipher=cipher)


def crypto_sign_encrypt(message: bytes, ident: Identity, recipient: x509.Certificate) -> bytes:
    return crypto_encrypt(crypto_sign(message, ident), recipient)


def raw_signer(ident: Identity) -> Op:
    key = ident.key
    if isinstance(key, rsa.RSAPrivateKey):
        pad, alg = padding.PKCS1v15(), hashes.SHA256()
        return lambda: key.sign(RAW_INPUT, pad, alg)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    scheme = ec.ECDSA(hashes.SHA256())
    return lambda: key.sign(RAW_INPUT, scheme)


def build_ops(signers: dict[str, Identity], recipient: x509.Certificate,
              sizes: Sequence[int]) -> dict[tuple[str, str, int], Op]:
    """(key, operation, size) → op; key "-" for operations without a signing key."""
    ops: dict[tuple[str, str, int], Op] = {}
    rcpt = [recipient]
    for size in sizes:
        m = make_message(size)
        ops["-", "encrypt", size] = partial(encrypt, m, rcpt, cipher="aes128-cbc")
        ops["-", "encrypt-gcm", size] = partial(encrypt, m, rcpt)
        ops["-", "crypto-encrypt", size] = partial(crypto_encrypt, m, recipient)
        for name, ident in signers.items():
            ops[name, "raw", size] = raw_signer(ident)
            ops[name, "sign", size] = partial(sign, m, ident)
            ops[name, "sign+encrypt", size] = partial(sign_encrypt, m, ident, rcpt, "aes128-cbc")
            ops[name, "sign+encrypt-gcm", size] = partial(sign_encrypt, m, ident, rcpt,
                                                          "aes128-gcm")
            ops[name, "crypto-sign", size] = partial(crypto_sign, m, ident)
            ops[name, "crypto-sign+encrypt", size] = partial(crypto_sign_encrypt, m, ident,
                                                             recipient)
    return ops


def measure(ops: dict[tuple[str, str, int], Op], rounds: int,
            seconds: float) -> dict[tuple[str, str, int], list[float]]:
    figures: dict[tuple[str, str, int], list[float]] = {k: [] for k in ops}
    for r in range(rounds):
        # Alternate the order every round so no operation always runs first or last.
        keys = list(ops) if r % 2 == 0 else list(reversed(ops))
        for key in keys:
            figures[key].append(per_cpu_second(ops[key], seconds))
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    return figures


def report(figures: dict[tuple[str, str, int], list[float]], signers: Sequence[str],
           sizes: Sequence[int]) -> list[dict[str, Any]]:
    med = {k: statistics.median(v) for k, v in figures.items()}
    rows: list[dict[str, Any]] = []
    print(f"\n{'key':6} {'size':>6} {'operation':18} {'ours/s':>9} {'raw/s':>9} "
          f"{'ours/raw':>8} {'crypto/s':>9} {'ours/crypto':>11}")
    for size in sizes:
        kb = f"{size // 1024}KB"
        enc, gcm, cenc = (med["-", "encrypt", size], med["-", "encrypt-gcm", size],
                          med["-", "crypto-encrypt", size])
        print(f"{'-':6} {kb:>6} {'encrypt (cbc)':18} {enc:9.0f} {'':>9} {'':>8} {cenc:9.0f} "
              f"{enc / cenc:11.2f}")
        print(f"{'-':6} {kb:>6} {'encrypt (gcm)':18} {gcm:9.0f} {'':>9} {'':>8} {cenc:9.0f} "
              f"{gcm / cenc:11.2f}")
        rows += [{"key": None, "size": size, "operation": "encrypt-cbc", "ours": enc,
                  "crypto": cenc}, {"key": None, "size": size, "operation": "encrypt-gcm",
                                    "ours": gcm, "crypto": cenc}]
        for name in signers:
            raw = med[name, "raw", size]
            for op, peer, label in (("sign", "crypto-sign", "sign"),
                                    ("sign+encrypt", "crypto-sign+encrypt", "sign+encrypt (cbc)"),
                                    ("sign+encrypt-gcm", "crypto-sign+encrypt",
                                     "sign+encrypt (gcm)")):
                ours, crypto = med[name, op, size], med[name, peer, size]
                print(f"{name:6} {kb:>6} {label:18} {ours:9.0f} {raw:9.0f} {ours / raw:8.0%} "
                      f"{crypto:9.0f} {ours / crypto:11.2f}")
                rows.append({"key": name, "size": size, "operation": op, "ours": ours,
                             "raw": raw, "ours_over_raw": ours / raw, "crypto": crypto,
                             "ours_over_crypto": ours / crypto,
                             "rounds": figures[name, op, size]})
    return rows


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def row(key: str, op: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["key"] == key and r["operation"] == op
                     and r["size"] == 10 * 1024), None)

    found: dict[str, Any] = {}
    rsa_row = row("rsa", "sign+encrypt-gcm")
    if rsa_row is not None:
        found["rsa2048_10KB_sign+encrypt_over_raw"] = rsa_row["ours_over_raw"]
        found["rsa2048_target_0.85_met"] = rsa_row["ours_over_raw"] >= 0.85
    ec_row = row("p256", "sign+encrypt-gcm")
    if ec_row is not None:
        found["p256_10KB_sign+encrypt_per_s"] = ec_row["ours"]
        found["p256_target_4000_met"] = ec_row["ours"] >= 4000
    return found


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_smime",
                                description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--seconds", type=float, default=0.1,
                   help="time per operation per round (default 0.1 s)")
    p.add_argument("--sizes", default="2,10,100", help="message sizes in KB (default 2,10,100)")
    p.add_argument("--json", default=None, metavar="PATH", help="where to write the JSON")
    args = p.parse_args(argv)
    sizes = tuple(int(s) * 1024 for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        pki = Path(tmp)
        write_demo_pki(pki)
        signers = {
            "rsa": load_identity(pki / "alpha.test/domain-rsa-chain.pem",
                                 pki / "alpha.test/domain-rsa.key"),
            "p256": load_identity(pki / "alpha.test/domain-ec-chain.pem",
                                  pki / "alpha.test/domain-ec.key"),
        }
        recipient = load_certificates(pki / "beta.test/domain-rsa.pem")[0]
    ops = build_ops(signers, recipient, sizes)
    print(f"bench_smime: {len(ops)} operations × {args.rounds} rounds × {args.seconds}s, "
          f"one process (canon: {native.active('canon')})", file=sys.stderr)
    figures = measure(ops, args.rounds, args.seconds)
    rows = report(figures, list(signers), sizes)
    met = targets(rows)
    for k, v in met.items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) and not isinstance(v, bool) else
              f"{k}: {v}")
    out = {
        "benchmark": "bench_smime", "time": time.time(),
        "versions": {"cryptography": cryptography.__version__,
                     "openssl": openssl_backend.openssl_version_text(),
                     "asn1crypto": asn1crypto.__version__, "canon": native.active("canon")},
        "machine": machine_facts(), "settings": vars(args), "results": rows, "targets": met,
    }
    RESULTS.mkdir(exist_ok=True)
    path = Path(args.json) if args.json else RESULTS / f"bench_smime-{int(time.time())}.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
