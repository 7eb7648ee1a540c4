"""Reading certificates (PEM, DER, PKCS#12) and private keys with permission checks.

A private key file that group or others may read or write is refused unless the caller
allows it (keys.allow_group_readable_keys): a key that others can read is not private.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.keys.errors import KeyMaterialError
from gateway.keys.identity import Identity, PrivateKey

_MAX_FILE = 4 * 1024 * 1024  # no certificate bundle or key is this large


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_FILE + 1)
    except FileNotFoundError:
        raise KeyMaterialError(path, "no such file") from None
    except OSError as e:
        raise KeyMaterialError(path, f"cannot read: {e.strerror}") from None
    if len(data) > _MAX_FILE:
        raise KeyMaterialError(path, f"larger than {_MAX_FILE} bytes; not key material")
    return data


def check_private_permissions(path: Path, *, allow_group_readable: bool = False) -> None:
    """Refuse a secret file that anyone but its owner may read or write."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyMaterialError(path, "no such file") from None
    except OSError as e:
        raise KeyMaterialError(path, f"cannot stat: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyMaterialError(path, "not a regular file")
    exposed = st.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    if exposed and not allow_group_readable:
        raise KeyMaterialError(
            path,
            f"mode {stat.S_IMODE(st.st_mode):04o} lets group or others read it; "
            "run chmod 600 on it (or set keys.allow_group_readable_keys = true)",
        )


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, or the one in a DER file, in file order."""
    data = _read(path)
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as e:
        raise KeyMaterialError(path, f"not a certificate (PEM or DER): {e}") from None
    if not certs:
        raise KeyMaterialError(path, "contains no certificate")
    return certs


def load_private_key(path: Path, *, password: bytes | None = None,
                     allow_group_readable: bool = False) -> PrivateKey:
    """An RSA or EC private key from PEM (PKCS#8 or traditional) or DER."""
    check_private_permissions(path, allow_group_readable=allow_group_readable)
    data = _read(path)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password)
        else:
            key = serialization.load_der_private_key(data, password)
    except TypeError as e:  # password missing or given for an unencrypted key
        raise KeyMaterialError(path, str(e)) from None
    except ValueError:
        raise KeyMaterialError(path, "not a private key, or the password is wrong") from None
    except Exception as e:  # cryptography raises UnsupportedAlgorithm for odd key types
        raise KeyMaterialError(path, f"unsupported private key: {e}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyMaterialError(path, f"{type(key).__name__} keys are not used for S/MIME here")
    return key


def load_pkcs12(path: Path, *, password: bytes | None = None,
                allow_group_readable: bool = False) -> Identity:
    """A key, its certificate and the chain that came with it, from a PKCS#12 file."""
    check_private_permissions(path, allow_group_readable=allow_group_readable)
    data = _read(path)
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        raise KeyMaterialError(path, "not PKCS#12, or the password is wrong") from None
    if key is None or cert is None:
        raise KeyMaterialError(path, "PKCS#12 file lacks a private key or its certificate")
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyMaterialError(path, f"{type(key).__name__} keys are not used for S/MIME here")
    return Identity.create(key, cert, tuple(extra), source=str(path))


def load_identity(cert_path: Path, key_path: Path | None = None, *,
                  password: bytes | None = None, allow_group_readable: bool = False) -> Identity:
    """An identity from a PKCS#12 file, or from a PEM chain (leaf first) and its key."""
    if cert_path.suffix.lower() in (".p12", ".pfx"):
        return load_pkcs12(cert_path, password=password, allow_group_readable=allow_group_readable)
    if key_path is None:
        raise KeyMaterialError(cert_path, "a PEM certificate needs its private key file")
    chain = load_certificates(cert_path)
    key = load_private_key(key_path, password=password,
                           allow_group_readable=allow_group_readable)
    try:
        return Identity.create(key, chain[0], tuple(chain[1:]), source=str(cert_path))
    except ValueError as e:
        raise KeyMaterialError(key_path, str(e)) from None


def load_trust_anchors(paths: list[Path] | tuple[Path, ...]) -> tuple[x509.Certificate, ...]:
    """Every CA certificate in the given PEM files; each must be a CA."""
    anchors: list[x509.Certificate] = []
    for path in paths:
        for cert in load_certificates(path):
            try:
                bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            except x509.ExtensionNotFound:
                bc = None
            if bc is None or not bc.ca:
                raise KeyMaterialError(path, f"{cert.subject.rfc4514_string()} is not a CA "
                                             "certificate (basicConstraints cA)")
            anchors.append(cert)
    return tuple(anchors)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only, never briefly exposed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
