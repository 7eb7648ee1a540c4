"""The demo's engine act: one message from alice@alpha.test to bob@beta.test taken through
sign -> encrypt -> decrypt -> verify with the S/MIME engine (RFC 8551, RFC 5652, RFC 5083),
printing what each step made. `smimegate demo --engine-only` runs this act alone.
"""

from __future__ import annotations

import time
from pathlib import Path

from gateway.keys import KeyRing, load_certificates, load_identity, load_trust_anchors

DEMO_MESSAGE = (
    "From: Alice <alice@alpha.test>\r\n"
    "To: Bob <bob@beta.test>\r\n"
    "Subject: Quarterly figures\r\n"
    "Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
    "Message-ID: <demo-1@alpha.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/alternative; boundary=\"b1\"\r\n"
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Hi Bob,\r\n\r\nthe figures are attached. Grüße, Alice\r\n"
    "From here on it is confidential.\r\n"
    "--b1\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "<p>Hi Bob,</p><p>the figures are attached. Grüße, Alice</p>\r\n"
    "--b1--\r\n"
).encode()


def _show(step: str, data: bytes, lines: int = 8) -> None:
    print(f"\n{step} ({len(data)} bytes)")
    for line in data.split(b"\r\n")[:lines]:
        print("    " + line.decode("utf-8", "replace")[:100])
    print("    ...")


def run_engine(out: Path, pki: Path, files: list[Path]) -> int:
    """The engine on one message; the PKI is already written in pki."""
    from gateway.smime import decrypt, encrypt, sign, verify

    print(f"[1] demo PKI: {len(files)} files in {pki} (root CA, intermediate, alpha.test and "
          "beta.test domain certificates, alice and bob, OCSP responder)")
    alice = load_identity(pki / "alpha.test/alice-chain.pem", pki / "alpha.test/alice.key")
    bob = load_identity(pki / "beta.test/bob-chain.pem", pki / "beta.test/bob.key")
    bob_cert = load_certificates(pki / "beta.test/bob.pem")[0]
    anchors = load_trust_anchors([pki / "ca/root.pem"])

    _show("[2] alice writes (plaintext)", DEMO_MESSAGE)
    t0 = time.perf_counter()
    signed = sign(DEMO_MESSAGE, alice)
    t1 = time.perf_counter()
    _show(f"[3] signed with alice's certificate ({', '.join(alice.addresses)}) "
          f"in {(t1 - t0) * 1000:.1f} ms", signed, 12)
    encrypted = encrypt(signed, [bob_cert], cipher="aes128-gcm", oaep=True)
    t2 = time.perf_counter()
    _show(f"[4] encrypted to bob (AES-128-GCM, RSA-OAEP) in {(t2 - t1) * 1000:.1f} ms: "
          "this is what crosses the Internet", encrypted, 12)
    (out / "on-the-wire.eml").write_bytes(encrypted)
    decrypted = decrypt(encrypted, KeyRing([bob]))
    t3 = time.perf_counter()
    _show(f"[5] decrypted with bob's key in {(t3 - t2) * 1000:.1f} ms", decrypted, 12)
    result = verify(decrypted, anchors=anchors)
    t4 = time.perf_counter()
    signer = result.signers[0] if result.signers else None
    print(f"\n[6] verified in {(t4 - t3) * 1000:.1f} ms: ok={result.ok} ({result.code}) "
          f"signer={signer.subject if signer else '-'}")
    _show("    content bob reads", result.content, 14)
    if not result.ok:
        print(f"demo FAILED: {result.reason}")
        return 1
    print(f"\nAll steps passed; files are in {out}/")
    return 0
