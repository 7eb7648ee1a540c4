"""Real peers for interop tests: `openssl cms` and `gpgsm`, run as subprocesses.

A gpgsm home lives in a temporary directory: the demo root imported and marked trusted
in trustlist.txt, CRL, policy and dirmngr checks off (no network), secret keys imported
from a legacy-PBE PKCS#12 (what gpgsm 2.2 reads) with a known passphrase given through
loopback pinentry. Leaving the context kills that home's gpg-agent (and only it).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

OPENSSL = shutil.which("openssl")
GPGSM = shutil.which("gpgsm")
PASSPHRASE = "peer-test"  # protects the keys inside the throwaway gpgsm home
TIMEOUT = 60


class PeerError(RuntimeError):
    """The peer tool refused: its exit status and stderr."""

    def __init__(self, cmd: Sequence[str], returncode: int, stderr: bytes) -> None:
        super().__init__(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} exited {returncode}: "
                         f"{stderr.decode(errors='replace')[-600:]}")
        self.returncode = returncode
        self.stderr = stderr


def run(cmd: Sequence[str], data: bytes | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[bytes]:
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(f"{cmd[0]} is not installed (make test installs it)")
    proc = subprocess.run(list(cmd), input=data, capture_output=True, env=env,
                          timeout=TIMEOUT, check=False)
    if check and proc.returncode != 0:
        raise PeerError(cmd, proc.returncode, proc.stderr)
    return proc


def openssl(*args: str, data: bytes | None = None) -> bytes:
    """stdout of `openssl ARGS` (raises PeerError on a non-zero exit)."""
    return run(["openssl", *args], data).stdout


def openssl_cms(*args: str, data: bytes | None = None) -> bytes:
    return openssl("cms", *args, data=data)


def sha1_fingerprint(cert_pem: Path) -> str:
    out = openssl("x509", "-in", str(cert_pem), "-noout", "-fingerprint", "-sha1")
    return out.decode().strip().partition("=")[2]


class Gpgsm:
    """One throwaway gpgsm home. Use through gpgsm_home()."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "GNUPGHOME": str(home)}

    def gpgsm(self, *args: str, data: bytes | None = None, check: bool = True,
              passphrase: bool = False) -> subprocess.CompletedProcess[bytes]:
        base = ["gpgsm", "--batch", "--no-tty", "--pinentry-mode", "loopback"]
        if passphrase:
            # loopback pinentry reads the passphrase from fd 0; the data comes as a file
            base += ["--passphrase-fd", "0"]
        return run([*base, *args], data, self.env, check)

    def trust_root(self, root_pem: Path, intermediates: Sequence[Path] = ()) -> None:
        self.gpgsm("--import", str(root_pem), *map(str, intermediates))
        (self.home / "trustlist.txt").write_text(f"{sha1_fingerprint(root_pem)} S relax\n")

    def import_identity(self, cert_pem: Path, key_pem: Path) -> None:
        """Import a secret key: re-packed as a 3DES/SHA-1 PKCS#12, which gpgsm 2.2 reads."""
        p12 = self.home / f"{cert_pem.stem}-import.p12"
        openssl("pkcs12", "-export", "-in", str(cert_pem), "-inkey", str(key_pem),
                "-passout", f"pass:{PASSPHRASE}", "-out", str(p12),
                "-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1")
        # loopback asks for the PKCS#12 passphrase, then the new protection passphrase
        # (twice); the same one each time keeps decrypt() simple.
        self.gpgsm("--passphrase-fd", "0", "--import", str(p12),
                   data=f"{PASSPHRASE}\n{PASSPHRASE}\n{PASSPHRASE}\n".encode())

    def import_certificate(self, cert_pem: Path) -> None:
        self.gpgsm("--import", str(cert_pem))

    def encrypt(self, data: bytes, recipients: Sequence[str]) -> bytes:
        """Raw CMS (indefinite-length BER) for recipients (addresses or fingerprints)."""
        source = self.home / "encrypt-in"
        source.write_bytes(data)
        args = [a for r in recipients for a in ("-r", r)]
        return self.gpgsm("--encrypt", *args, str(source)).stdout

    def decrypt(self, cms: bytes, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Decrypt raw CMS (DER/BER or base64) with the imported keys."""
        source = self.home / "decrypt-in"
        source.write_bytes(cms)
        return self.gpgsm("--decrypt", str(source), data=f"{PASSPHRASE}\n".encode(),
                          check=check, passphrase=True)

    def sign(self, content: bytes, signer: str, *, detached: bool,
             digest: str = "SHA256") -> bytes:
        """Raw CMS signed-data (BER) over content by signer (fingerprint or address),
        carrying the whole chain."""
        source = self.home / "sign-in"
        source.write_bytes(content)
        return self.gpgsm("--local-user", signer, "--include-certs", "-1",
                          "--digest-algo", digest,
                          "--detach-sign" if detached else "--sign", str(source),
                          data=f"{PASSPHRASE}\n".encode(), passphrase=True).stdout

    def verify_detached(self, signature: bytes, content: bytes
                        ) -> subprocess.CompletedProcess[bytes]:
        sig, body = self.home / "verify.p7s", self.home / "verify-content"
        sig.write_bytes(signature)
        body.write_bytes(content)
        return self.gpgsm("--verify", str(sig), str(body), check=False)

    def verify_opaque(self, cms: bytes) -> subprocess.CompletedProcess[bytes]:
        """Verify opaque signed-data; stdout is the content gpgsm extracted."""
        source = self.home / "verify.p7m"
        source.write_bytes(cms)
        return self.gpgsm("--verify", "--output", "-", str(source), check=False)

    def close(self) -> None:
        run(["gpgconf", "--kill", "gpg-agent"], env=self.env, check=False)


@contextmanager
def gpgsm_home(directory: Path, root_pem: Path,
               intermediates: Sequence[Path] = ()) -> Iterator[Gpgsm]:
    """A gpgsm home in directory that trusts root_pem, offline; its agent is stopped after."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / "gpgsm.conf").write_text(
        "disable-crl-checks\ndisable-policy-checks\ndisable-dirmngr\n")
    (directory / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
    home = Gpgsm(directory)
    try:
        home.trust_root(root_pem, intermediates)
        yield home
    finally:
        home.close()


# --- S/MIME framing of raw peer output, and taking ours apart without our parser -------


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def multipart_signed(headers: bytes, entity: bytes, signature: bytes, micalg: str) -> bytes:
    """A peer's detached DER signature framed as RFC 1847 multipart/signed."""
    boundary = b"peer-" + os.urandom(8).hex().encode()
    return (headers + b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; "
            b'protocol="application/pkcs7-signature"; micalg=' + micalg.encode()
            + b'; boundary="' + boundary + b'"\r\n\r\n--' + boundary + b"\r\n" + entity
            + b"\r\n--" + boundary + b"\r\nContent-Type: application/pkcs7-signature; "
            b'name="smime.p7s"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            + _b64(signature) + b"--" + boundary + b"--\r\n")


def opaque_signed(headers: bytes, cms: bytes) -> bytes:
    """A peer's signed-data framed as application/pkcs7-mime."""
    return (headers + b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; "
            b'smime-type=signed-data; name="smime.p7m"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + _b64(cms))


def split_multipart_signed(message: bytes) -> tuple[bytes, bytes]:
    """(signed entity, signature DER) of a multipart/signed, by plain byte search."""
    found = re.search(rb'boundary="([^"]+)"', message)
    if found is None:
        raise ValueError("no boundary")
    delim = b"--" + found.group(1)
    start = message.index(delim + b"\r\n") + len(delim) + 2
    end = message.index(b"\r\n" + delim, start)
    sig_start = message.index(b"\r\n\r\n", end + 2 + len(delim)) + 4
    sig_end = message.index(delim + b"--", sig_start)
    return message[start:end], base64.b64decode(message[sig_start:sig_end])


def opaque_der(message: bytes) -> bytes:
    """The DER of an application/pkcs7-mime message (base64 body)."""
    return base64.b64decode(message.split(b"\r\n\r\n", 1)[1])
