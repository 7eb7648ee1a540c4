"""`smimegate smime ...` and `smimegate demo` as an operator runs them: real processes,
stdin → stdout, exit 0 / 1 (verification or decryption said no) / 2 (bad input)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.keys.demo import write_demo_pki

MESSAGE = (b"From: alice@alpha.test\r\nTo: bob@beta.test\r\nSubject: hi\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
           b"From the start.\r\n")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    write_demo_pki(d)
    return d


def smimegate(*args: str | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "gateway", *map(str, args)], input=stdin,
                          capture_output=True, timeout=60, check=False)


def test_sign_then_verify(pki: Path) -> None:
    signed = smimegate("smime", "sign", "--cert", pki / "alpha.test/alice-chain.pem",
                       "--key", pki / "alpha.test/alice.key", stdin=MESSAGE)
    assert signed.returncode == 0, signed.stderr
    assert b"multipart/signed" in signed.stdout
    ok = smimegate("smime", "verify", "--trust", pki / "ca/root.pem", stdin=signed.stdout)
    assert ok.returncode == 0, ok.stderr
    assert b"verified" in ok.stderr
    assert b"Gr\xc3\xbc\xc3\x9fe\r\nFrom the start." in ok.stdout  # byte-exact, no >From
    tampered = signed.stdout.replace(b"From the start.", b"From the stars.")
    bad = smimegate("smime", "verify", "--trust", pki / "ca/root.pem", stdin=tampered)
    assert bad.returncode == 1
    assert b"digest-mismatch" in bad.stderr
    assert bad.stdout == b""


def test_encrypt_then_decrypt(pki: Path) -> None:
    enc = smimegate("smime", "encrypt", "--recipient", pki / "beta.test/bob.pem",
                    "--cipher", "aes256-gcm", "--oaep", stdin=MESSAGE)
    assert enc.returncode == 0, enc.stderr
    assert b"authEnveloped-data" in enc.stdout
    dec = smimegate("smime", "decrypt", "--cert", pki / "beta.test/bob.p12",
                    "--password", "demo", stdin=enc.stdout)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout.endswith(b"From the start.\r\n")
    wrong = smimegate("smime", "decrypt", "--cert", pki / "alpha.test/alice.pem",
                      "--key", pki / "alpha.test/alice.key", stdin=enc.stdout)
    assert wrong.returncode == 1
    assert b"no-recipient" in wrong.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "words"),
    [
        (["smime", "verify", "--trust", "{pki}/ca/root.pem"], b"garbage", b"cannot verify"),
        (["smime", "verify", "--trust", "{pki}/ca/root.pem"], b"", b"no message"),
        (["smime", "decrypt", "--cert", "{pki}/beta.test/bob.pem", "--key",
          "{pki}/beta.test/bob.key"], MESSAGE, b"cannot decrypt"),
        (["smime", "encrypt", "--recipient", "{pki}/missing.pem"], MESSAGE, b"no such file"),
        (["smime", "sign", "--cert", "{pki}/alpha.test/alice.pem"], MESSAGE, b"private key"),
        (["smime", "verify", "--trust", "{pki}/alpha.test/alice.pem"], MESSAGE, b"not a CA"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(pki: Path, args: list[str], stdin: bytes,
                                          words: bytes) -> None:
    r = smimegate(*[a.format(pki=pki) for a in args], stdin=stdin)
    assert r.returncode == 2, r.stderr
    assert words in r.stderr
    assert r.stderr.count(b"\n") == 1  # one line, no traceback


def test_demo_engine_only(tmp_path: Path) -> None:
    r = smimegate("demo", "--engine-only", "--dir", tmp_path / "demo")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert b"All steps passed" in r.stdout
    assert b"authEnveloped-data" in (tmp_path / "demo/on-the-wire.eml").read_bytes()
