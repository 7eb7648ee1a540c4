"""Learnt capabilities benchmark: what remembering SMIMECapabilities costs each side.

`python -m benchmarks.bench_learned_caps [--duration S] [--rounds N]`

In one process, alternating rounds, calls per CPU-second: (1) the worker's inbound side:
verify() of a signed 10 KB message alone, and verify() that then reads the signer's
capabilities (the attribute is decoded only then); (2) the worker's outbound side:
the cipher choice when the certificate settles it, when learnt capabilities must be read
from the shared-memory cache (native and pure-Python twin side by side) and when nothing
was learnt, next to encrypt() of the same message to one RSA-2048 certificate;
(3) the front end's write (learned.offer: validate, compare, put). Prints medians and
ratios, writes JSON with versions and machine to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks._rates import per_cpu_second
from benchmarks._results import write_results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=0.5, help="CPU seconds per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--json", type=Path, help="result file (default benchmarks/results/...)")
    args = p.parse_args(argv)

    from asn1crypto import cms as asn1_cms
    from cryptography import x509

    from gateway.keys import load_certificates, load_identity, load_private_key
    from gateway.keys.capabilities import SMIME_CAPABILITIES_OID
    from gateway.keys.demo import Issued, issue, name_of, new_key, write_demo_pki
    from gateway.lookup import _cache_py, learned
    from gateway.lookup import cache as certcache
    from gateway.outbound.cipher import choose
    from gateway.smime import encrypt, sign, verify

    names = ("verify", "verify_and_read_caps", "choose_by_certificate",
             "choose_learned_native", "choose_learned_python", "choose_nothing_learnt",
             "encrypt_10k_rsa2048", "offer_front_end")
    rates: dict[str, list[float]] = {k: [] for k in names}
    tag = f"{os.getpid()}-{int(time.time())}"
    native = certcache.CertCache.create(f"smimegate-bench-caps-n-{tag}", 1024, 1 << 20)
    twin = _cache_py.CertCache.create(f"smimegate-bench-caps-p-{tag}", 1024, 1 << 20)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-learned-caps-") as tmp:
            pki = Path(tmp)
            write_demo_pki(pki)
            anchors = load_certificates(pki / "ca/root.pem")
            a = pki / "alpha.test"
            body = b"0123456789abcdef" * 640  # 10 KB
            message = (b"From: alice@alpha.test\r\nTo: bob@beta.test\r\nSubject: b\r\n"
                       b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body +
                       b"\r\n")
            signed = sign(message, load_identity(a / "alice-chain.pem", a / "alice.key"))
            assert verify(signed, anchors=anchors).signers[0].capabilities
            bob = load_certificates(pki / "beta.test/bob.pem")[0]
            inter = Issued(load_private_key(pki / "ca/intermediate.key"),
                           load_certificates(pki / "ca/intermediate.pem")[0])
            ext = x509.UnrecognizedExtension(SMIME_CAPABILITIES_OID, asn1_cms.SMIMECapabilites(
                [{"capability_id": "aes128_gcm"}]).dump())
            gcm_cert = issue(name_of("gcm", "Beta", "gcm@beta.test"), new_key("rsa2048"),
                             inter, emails=("gcm@beta.test",), extensions=(ext,)).certificate
            caps = learned.Learned(("2.16.840.1.101.3.4.1.6", "2.16.840.1.101.3.4.1.2"),
                                   time.time() - 60)
            for cache in (native, twin):
                assert learned.store(cache, "bob@beta.test", caps, now=time.time(),
                                     ttl=3600.0) == "stored"
            bob_only = ("bob@beta.test",)
            assert choose("aes128-gcm", (bob,), "user", bob_only, native).by == "learned"
            assert choose("aes128-gcm", (bob,), "user", bob_only, twin).by == "learned"
            assert choose("aes128-gcm", (bob,), "user", ("carol@beta.test",),
                          native).by == "narrowed"
            assert choose("aes128-gcm", (gcm_cert,), "user", ("gcm@beta.test",),
                          native).by == "certificates"
            counter = iter(range(1, 1 << 62))

            def offer() -> None:  # always newer: every call stores
                learned.offer(native, "alice@alpha.test", caps.oids, 1e9 + next(counter),
                              now=time.time(), ttl=3600.0)

            work: dict[str, Callable[[], object]] = {
                "verify": lambda: verify(signed, anchors=anchors),
                "verify_and_read_caps":
                    lambda: verify(signed, anchors=anchors).signers[0].capabilities,
                "choose_by_certificate":
                    lambda: choose("aes128-gcm", (gcm_cert,), "user", ("gcm@beta.test",),
                                   native),
                "choose_learned_native":
                    lambda: choose("aes128-gcm", (bob,), "user", bob_only, native),
                "choose_learned_python":
                    lambda: choose("aes128-gcm", (bob,), "user", bob_only, twin),
                "choose_nothing_learnt":
                    lambda: choose("aes128-gcm", (bob,), "user", ("carol@beta.test",),
                                   native),
                "encrypt_10k_rsa2048": lambda: encrypt(message, [bob], cipher="aes128-cbc"),
                "offer_front_end": offer,
            }
            for _ in range(args.rounds):
                for name, fn in work.items():
                    rates[name].append(per_cpu_second(fn, args.duration))
    finally:
        for c in (native, twin):
            c.unlink()
            c.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:24s} {v:12,.0f} /s  ({1e6 / v:8.1f} µs)")
    ratios = {
        "verify_with_caps_over_verify": med["verify_and_read_caps"] / med["verify"],
        "learned_native_over_encrypt": med["choose_learned_native"] /
        med["encrypt_10k_rsa2048"],
        "learned_native_over_python": med["choose_learned_native"] /
        med["choose_learned_python"],
        "by_certificate_over_learned_native": med["choose_by_certificate"] /
        med["choose_learned_native"],
    }
    print(f"ratio verify+read caps ÷ verify:            "
          f"{ratios['verify_with_caps_over_verify']:.3f}x (1.0 = free)")
    print(f"ratio learnt choice (native) ÷ encrypt 10 KB: "
          f"{ratios['learned_native_over_encrypt']:.0f}x faster than the work it steers")
    print(f"ratio learnt choice native ÷ twin cache:    "
          f"{ratios['learned_native_over_python']:.2f}x")
    print(f"ratio choice by certificate ÷ learnt:       "
          f"{ratios['by_certificate_over_learned_native']:.2f}x")
    import asn1crypto
    import cryptography

    write_results("learned_caps", {
        "settings": {"duration": args.duration, "rounds": args.rounds},
        "rates": rates, "medians": med, "ratios": ratios}, args.json,
        facts={"cryptography": cryptography.__version__,
               "asn1crypto": asn1crypto.__version__, "cache": certcache.IMPLEMENTATION})
    return 0


if __name__ == "__main__":
    sys.exit(main())
