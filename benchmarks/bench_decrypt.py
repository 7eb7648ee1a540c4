"""Decrypt micro-benchmark: gateway.smime.decrypt on 10 KB messages, and its envelope
reader, next to the private-key operation each message needs.

`python -m benchmarks.bench_decrypt [--duration S] [--rounds N]`

In alternating rounds, in one process, counted per CPU-second (benchmarks/_rates.py):
- the envelope reader: the asn1crypto schema reader (gateway.smime.cms_open, the
  specification) and the fast reader the decrypt path uses (gateway.smime.cms_open_fast),
  on an RSA key-transport envelope (AES-128-GCM) and an ECDH P-256 one;
- decrypt() of a whole message: RSA-2048 key transport, ECDH P-256, and RSA with our
  recipient listed after nine others (mail to many organisations);
- the physical limit: raw RSA-2048 PKCS#1 v1.5 decryption, and raw ECDH P-256 with the
  X9.63 KDF and AES key unwrap, with `cryptography`.
Prints medians and the ratios decrypt ÷ raw and schema ÷ fast reader; writes JSON to
benchmarks/results/. gateway.smime.decrypt is the whole inbound decrypt step but for the
job around it (bench_inbound measures that).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks._rates import per_cpu_second
from benchmarks._results import write_results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=1.0, help="CPU seconds per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--json", type=Path, help="result file (default benchmarks/results/...)")
    args = p.parse_args(argv)

    import cryptography
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

    from gateway.keys import KeyRing, load_certificates, load_identity
    from gateway.keys.demo import issue, name_of, new_key, write_demo_pki
    from gateway.smime import decrypt, encrypt
    from gateway.smime.cms_open import parse_envelope as schema_reader
    from gateway.smime.cms_open_fast import parse_envelope as fast_reader
    from gateway.smime.message import decode_base64_body, parse_message
    from gateway.smime.recipients import shared_info

    body = b"".join(b"line %05d of the figures, 60 characters long in all..\r\n" % i
                    for i in range(180))  # ~10 KB
    message = (b"From: alice@alpha.test\r\nTo: bob@beta.test\r\nSubject: figures\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body)
    with tempfile.TemporaryDirectory() as tmp:
        pki = Path(tmp)
        write_demo_pki(pki)
        b = pki / "beta.test"
        rsa_id = load_identity(b / "domain-rsa-chain.pem", b / "domain-rsa.key")
        ec_id = load_identity(b / "domain-ec-chain.pem", b / "domain-ec.key")
        rsa_cert = load_certificates(b / "domain-rsa.pem")[0]
        ec_cert = load_certificates(b / "domain-ec.pem")[0]
    # Nine other organisations' RSA certificates (self-issued: only their keys matter).
    others = []
    for i in range(9):
        item = issue(name_of(f"Org {i}", f"Org {i}", f"gw@org{i}.test"), new_key("rsa2048"), None,
                     emails=(f"gw@org{i}.test",))
        others.append(item.certificate)
    rsa_ring, ec_ring = KeyRing([rsa_id]), KeyRing([ec_id])
    rsa_msg = encrypt(message, [rsa_cert])
    ec_msg = encrypt(message, [ec_cert])
    many_msg = encrypt(message, [*others, rsa_cert])
    for m, ring in ((rsa_msg, rsa_ring), (ec_msg, ec_ring), (many_msg, rsa_ring)):
        assert decrypt(m, ring) == message
    rsa_der = decode_base64_body(parse_message(rsa_msg).body)
    ec_der = decode_base64_body(parse_message(ec_msg).body)
    for data in (rsa_der, ec_der):
        assert fast_reader(data) == schema_reader(data)

    rsa_key = rsa_id.key
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    block = rsa_key.public_key().encrypt(b"k" * 16, padding.PKCS1v15())
    ec_key = ec_id.key
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    info = shared_info("2.16.840.1.101.3.4.1.5", 16)
    kek = X963KDF(hashes.SHA256(), 16, info).derive(ec_key.exchange(ec.ECDH(), peer))
    wrapped = aes_key_wrap(kek, b"k" * 16)

    def raw_ecdh() -> bytes:
        z = ec_key.exchange(ec.ECDH(), peer)
        return aes_key_unwrap(X963KDF(hashes.SHA256(), 16, info).derive(z), wrapped)

    work: dict[str, Callable[[], object]] = {
        "schema_reader_rsa": lambda: schema_reader(rsa_der),
        "fast_reader_rsa": lambda: fast_reader(rsa_der),
        "schema_reader_ec": lambda: schema_reader(ec_der),
        "fast_reader_ec": lambda: fast_reader(ec_der),
        "decrypt_rsa": lambda: decrypt(rsa_msg, rsa_ring),
        "decrypt_rsa_10_recipients": lambda: decrypt(many_msg, rsa_ring),
        "raw_rsa2048_decrypt": lambda: rsa_key.decrypt(block, padding.PKCS1v15()),
        "decrypt_ec": lambda: decrypt(ec_msg, ec_ring),
        "raw_ecdh_p256_kdf_unwrap": raw_ecdh,
    }
    rates: dict[str, list[float]] = {k: [] for k in work}
    for _ in range(args.rounds):
        for name, fn in work.items():
            rates[name].append(per_cpu_second(fn, args.duration))
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:28s} {v:10,.0f} /s  {1e6 / v:8.1f} µs")
    ratios = {
        "decrypt_rsa_over_raw_rsa": med["decrypt_rsa"] / med["raw_rsa2048_decrypt"],
        "decrypt_rsa_10_over_raw_rsa": med["decrypt_rsa_10_recipients"] /
        med["raw_rsa2048_decrypt"],
        "decrypt_ec_over_raw_ecdh": med["decrypt_ec"] / med["raw_ecdh_p256_kdf_unwrap"],
        "fast_over_schema_reader_rsa": med["fast_reader_rsa"] / med["schema_reader_rsa"],
        "fast_over_schema_reader_ec": med["fast_reader_ec"] / med["schema_reader_ec"],
    }
    for k, r in ratios.items():
        print(f"ratio {k:30s} {r:6.2f}")
    write_results("decrypt", {
        "settings": {"duration": args.duration, "rounds": args.rounds, "clock": "cpu",
                     "message_bytes": len(message)},
        "rates": rates, "medians": med, "ratios": ratios}, args.json,
        facts={"cryptography": cryptography.__version__})
    return 0


if __name__ == "__main__":
    sys.exit(main())
