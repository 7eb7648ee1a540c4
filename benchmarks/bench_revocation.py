"""Revocation benchmark: OCSP checks/s against a real directory, cold and cached, next to
the RSA-2048 operations they cost, and what a cached check adds to verify().

`python -m benchmarks.bench_revocation [--duration S] [--rounds N]`

In one process (the directory runs in a thread on loopback, as in the tests, so both
share one GIL and the machine's 2 cores), in alternating rounds: (1) cold checks: cache
cleared before each, so each is one POST, the directory's RSA-2048 signature over a
nonce'd answer, and our verification of it; (2) cached checks; (2b) cached CRL checks
(a leaf naming an http CRL distribution point, a 1,000-entry CRL fetched once from a
loopback server, then answered from the per-URL cache); (3) raw RSA-2048 sign and
verify with `cryptography`; (4) verify() of a signed 1 KB message with the cached check
plugged in and without any; (5) Authentication-Results formatting. Prints medians and
ratios, writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks._rates import per_wall_second
from benchmarks._results import write_results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=1.0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    p.add_argument("--json", type=Path, help="result file (default benchmarks/results/...)")
    args = p.parse_args(argv)

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from gateway.config import load_directory_config
    from gateway.keys import load_certificates, load_private_key
    from gateway.keys.demo import Issued, issue, name_of, new_key, write_demo_pki
    from gateway.revocation import (
        CrlSource,
        OcspClient,
        RevocationPolicy,
        authentication_results,
        smime_resinfo,
    )
    from gateway.smime import sign, verify
    from tests.crl_support import CrlHttp, cdp, make_crl, serve
    from tests.directory_support import DirectoryServer
    from tests.directory_world import fp, publish
    from tests.revocation_support import identity, leaf

    rates: dict[str, list[float]] = {k: [] for k in (
        "ocsp_cold", "ocsp_cached", "crl_cached", "rsa2048_sign", "rsa2048_verify",
        "verify_no_revocation",
        "verify_cached_revocation", "authres_format")}
    with tempfile.TemporaryDirectory(prefix="bench-revocation-") as tmp:
        work = Path(tmp)
        write_demo_pki(work / "pki")
        pki = work / "pki"
        inter = Issued(load_private_key(pki / "ca/intermediate.key"),
                       load_certificates(pki / "ca/intermediate.pem")[0])
        root = load_certificates(pki / "ca/root.pem")[0]
        server = DirectoryServer(load_directory_config(None, overrides={
            "server.data": str(work / "data"), "trust.anchors": [str(pki / "ca/root.pem")],
            "ocsp.signers": [str(pki / "ca/ocsp.pem")],
            "ocsp.keys": [str(pki / "ca/ocsp.key")]})).start()
        try:
            item = leaf(inter, "bench@alpha.test")
            token = server.token("alpha.test")
            assert publish(server, token, item.certificate, (inter.certificate,)).status == 201
            client = OcspClient({fp(inter.certificate): server.url + "/ocsp"})
            assert client.check(item.certificate, inter.certificate).status == "good"

            def cold() -> None:
                client.clear()
                client.check(item.certificate, inter.certificate)

            def cached() -> None:
                client.check(item.certificate, inter.certificate)

            crls = CrlHttp()
            crl_url = crls.url("/inter.crl")
            serve(crls, crl_url, make_crl(inter, [(n, None) for n in range(1, 1001)]))
            crl_leaf = issue(name_of("crl", "Alpha", "crl@alpha.test"), new_key("p256"), inter,
                             emails=("crl@alpha.test",), extensions=(cdp(crl_url),))
            crl_client = OcspClient(use_aia=False, crl=CrlSource())
            assert crl_client.check(crl_leaf.certificate, inter.certificate).status == "good"

            def crl_cached() -> None:
                crl_client.check(crl_leaf.certificate, inter.certificate)

            key = rsa.generate_private_key(65537, 2048)
            data = b"x" * 1000
            signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
            pub = key.public_key()
            signed = sign(b"From: bench@alpha.test\r\nTo: bob@beta.test\r\nSubject: b\r\n"
                          b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" +
                          b"0123456789abcdef" * 64 + b"\r\n", identity(item, inter))
            policy = RevocationPolicy("strict", client)
            result = verify(signed, anchors=[root], revocation=policy.check)
            verdict = policy.verdict(result)
            assert verdict.result == "pass", verdict
            info = smime_resinfo(verdict, from_address="bench@alpha.test")
            work_items: dict[str, Callable[[], object]] = {
                "ocsp_cold": cold,
                "ocsp_cached": cached,
                "crl_cached": crl_cached,
                "rsa2048_sign": lambda: key.sign(data, padding.PKCS1v15(), hashes.SHA256()),
                "rsa2048_verify": lambda: pub.verify(signature, data, padding.PKCS1v15(),
                                                     hashes.SHA256()),
                "verify_no_revocation": lambda: verify(signed, anchors=[root]),
                "verify_cached_revocation": lambda: verify(signed, anchors=[root],
                                                           revocation=policy.check),
                "authres_format": lambda: authentication_results("beta.test", info),
            }
            for _ in range(args.rounds):
                for name, fn in work_items.items():
                    rates[name].append(per_wall_second(fn, args.duration))
            crls.stop()
        finally:
            server.stop()
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:26s} {v:12,.0f} /s")
    ratios = {
        "cached_over_cold": med["ocsp_cached"] / med["ocsp_cold"],
        "crl_cached_over_ocsp_cached": med["crl_cached"] / med["ocsp_cached"],
        "cold_over_rsa_sign": med["ocsp_cold"] / med["rsa2048_sign"],
        "verify_cached_over_no_revocation": med["verify_cached_revocation"] /
        med["verify_no_revocation"],
    }
    print(f"ratio cached ÷ cold OCSP check:           {ratios['cached_over_cold']:.1f}x")
    print(f"ratio cached CRL ÷ cached OCSP check:     "
          f"{ratios['crl_cached_over_ocsp_cached']:.2f}x")
    print(f"ratio cold OCSP check ÷ RSA-2048 sign:    {ratios['cold_over_rsa_sign']:.2f}x "
          "(the directory signs every nonce'd answer)")
    print(f"ratio verify() with cached check ÷ none:  "
          f"{ratios['verify_cached_over_no_revocation']:.2f}x")
    import cryptography

    write_results("revocation", {
        "settings": {"duration": args.duration, "rounds": args.rounds},
        "rates": rates, "medians": med, "ratios": ratios}, args.json,
        facts={"cryptography": cryptography.__version__})
    return 0


if __name__ == "__main__":
    sys.exit(main())
