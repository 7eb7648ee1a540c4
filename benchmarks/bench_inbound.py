"""Inbound benchmark: the crypto job's inbound path (decrypt + verify + policy + header)
on 10 KB messages, msgs/s in one process, next to the raw RSA-2048 private-key rate.

`python -m benchmarks.bench_inbound [--duration S] [--rounds N] [--clock cpu|wall]`

In alternating rounds, in one process: (1) the job (gateway.outbound.job.process_with)
on a message alpha.test's gateway would send: signed with alpha's RSA-2048 domain key,
encrypted (AES-128-GCM, RSA key transport) to beta's RSA-2048 domain certificate;
revocation off (bench_revocation measures OCSP); (2) the same, unsigned but encrypted
(decrypt only); (3) raw RSA-2048 PKCS#1 v1.5 decryption and signing with `cryptography`.
Each inbound message costs one RSA private-key operation (the key transport) and one
public-key verify (the signature; the chain's are memoised), so (1) ÷ (3) says how close
the path is to the physical limit. Prints medians and ratios, writes JSON to benchmarks/results/.

How to read it: everything runs in this one process and never waits, so rates count
against its CPU time by default (`--clock cpu`, benchmarks/_rates.py): other work on a
shared machine then slows the figures far less than the wall clock (`--clock wall`).
Still compare runs by their ratios, not their rates. The chain check is memoised per
process (gateway/keys/chain_cache.py) and carried certificates are parsed once per DER,
as in a worker that keeps receiving from the same senders; revocation is asked per
message (off here). (1) ÷ (2) is what the signature costs on top of decryption.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._loadgen_stats import machine_facts
from benchmarks._rates import per_cpu_second, per_wall_second

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="count calls per CPU-second of this process (default) or per "
                   "wall-clock second")
    p.add_argument("--json", type=Path, help="result file (default benchmarks/results/...)")
    args = p.parse_args(argv)
    rate = per_cpu_second if args.clock == "cpu" else per_wall_second

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from gateway.config.schema import (
        InboundRevocationSection,
        InboundSection,
        KeysSection,
        PolicySection,
    )
    from gateway.envelope import Envelope
    from gateway.keys import load_certificates, load_identity, load_private_key
    from gateway.keys.demo import write_demo_pki
    from gateway.lookup import cache as certcache
    from gateway.outbound.context import WorkerContext, load
    from gateway.outbound.job import process_with
    from gateway.smime import encrypt, sign
    from gateway.workers.jobs import Job

    rates: dict[str, list[float]] = {"inbound_sign_encrypt": [], "inbound_encrypt_only": [],
                                     "rsa2048_decrypt": [], "rsa2048_sign": []}
    with tempfile.TemporaryDirectory() as tmp:
        pki = Path(tmp)
        write_demo_pki(pki)
        a, b = pki / "alpha.test", pki / "beta.test"
        cache = certcache.CertCache.create(f"smimegate-bench-inbound-{os.getpid()}", 64,
                                           1 << 16)
        try:
            keys = KeysSection(certificates=(b / "domain-rsa-chain.pem",),
                               private_keys=(b / "domain-rsa.key",),
                               trust_anchors=(pki / "ca/root.pem",))
            state = load(WorkerContext(
                keys, PolicySection(), cache.name, ("beta.test",), 3600.0, "warning",
                dataclasses.replace(InboundSection(), strip_signature=False),
                InboundRevocationSection(mode="off"), "mx.beta.test", pki / "q"))
            body = b"".join(b"line %05d of the figures, 60 characters long in all..\r\n" % i
                            for i in range(180))  # ~10 KB
            message = (b"From: alice@alpha.test\r\nTo: bob@beta.test\r\nSubject: figures\r\n"
                       b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body)
            beta_cert = load_certificates(b / "domain-rsa.pem")[:1]
            signer = load_identity(a / "domain-rsa-chain.pem", a / "domain-rsa.key")
            signed_enc = encrypt(sign(message, signer), beta_cert)
            enc_only = encrypt(message, beta_cert)
            env = Envelope("alice@alpha.test", ("bob@beta.test",), "127.0.0.1")
            for data, want in ((signed_enc, b"smime=pass"), (enc_only, b"smime=none")):
                r = process_with(state, Job(env, data))
                assert r.outputs, r
                assert want in r.outputs[0].data, r
            key = load_private_key(b / "domain-rsa.key")
            assert isinstance(key, rsa.RSAPrivateKey)
            block = key.public_key().encrypt(b"k" * 16, padding.PKCS1v15())
            work: dict[str, Callable[[], object]] = {
                "inbound_sign_encrypt": lambda: process_with(state, Job(env, signed_enc)),
                "inbound_encrypt_only": lambda: process_with(state, Job(env, enc_only)),
                "rsa2048_decrypt": lambda: key.decrypt(block, padding.PKCS1v15()),
                "rsa2048_sign": lambda: key.sign(body, padding.PKCS1v15(), hashes.SHA256()),
            }
            for _ in range(args.rounds):
                for name, fn in work.items():
                    rates[name].append(rate(fn, args.duration))
        finally:
            cache.unlink()
            cache.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:24s} {v:10,.0f} /s")
    ratios = {"inbound_over_rsa_decrypt": med["inbound_sign_encrypt"] / med["rsa2048_decrypt"],
              "encrypt_only_over_rsa_decrypt": med["inbound_encrypt_only"] /
              med["rsa2048_decrypt"]}
    print(f"ratio inbound decrypt+verify ÷ raw RSA-2048 decrypt: "
          f"{ratios['inbound_over_rsa_decrypt']:.2f}")
    print(f"ratio inbound decrypt only ÷ raw RSA-2048 decrypt:   "
          f"{ratios['encrypt_only_over_rsa_decrypt']:.2f}")
    extra = 1e6 / med["inbound_sign_encrypt"] - 1e6 / med["inbound_encrypt_only"]
    print(f"verifying costs {extra:.0f} µs per message on top of decrypting "
          f"({args.clock} clock)")
    out = args.json or RESULTS / f"bench_inbound-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    import cryptography

    facts: dict[str, Any] = machine_facts()
    facts["cryptography"] = cryptography.__version__
    out.write_text(json.dumps({"benchmark": "inbound", "settings": {
        "duration": args.duration, "rounds": args.rounds, "clock": args.clock,
        "message_bytes": len(message)},
        "machine": facts, "rates": rates, "medians": med, "ratios": ratios}, indent=2,
        default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
