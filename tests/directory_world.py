"""Shared world of the directory's HTTP tests: the demo PKI plus odd certificates, a
CRL server, a directory on loopback, and small request helpers."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http import server as httpserver
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from gateway.config import load_directory_config
from gateway.keys import load_certificates, load_private_key
from gateway.keys.demo import Issued, issue, new_key, write_demo_pki
from tests.directory_support import DirectoryServer, Reply, http

PEM = serialization.Encoding.PEM


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(PEM).decode()


def fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class CrlServer(httpserver.ThreadingHTTPServer):
    crl = b""


class _CrlHandler(httpserver.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.crl  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/pkix-crl")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class World:
    dir: Path
    root: x509.Certificate
    inter: Issued
    alice: x509.Certificate
    bob: x509.Certificate
    domain_rsa: x509.Certificate
    domain_ec: x509.Certificate
    bob_key: Issued
    other_root: Issued
    carol: x509.Certificate  # chains to other_root; its CRL lists it as revoked
    dave: x509.Certificate  # chains to other_root; not on the CRL
    crl_server: CrlServer


def _crl_leaf(ca: Issued, email: str, crl_url: str) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    key = new_key("p256")
    return (x509.CertificateBuilder().subject_name(_name(email)).issuer_name(
        ca.certificate.subject).public_key(key.public_key()).serial_number(
        x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(crl_url)], None, None, None)]), critical=False)
        .sign(ca.key, hashes.SHA256()))


@pytest.fixture(scope="module", name="world")
def world_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d = tmp_path_factory.mktemp("pki")
    write_demo_pki(d)
    inter = Issued(load_private_key(d / "ca/intermediate.key"),
                   load_certificates(d / "ca/intermediate.pem")[0])
    other_root = issue(_name("other root CA"), new_key("p256"), None, ca=True)
    (d / "other-root.pem").write_bytes(other_root.certificate.public_bytes(PEM))
    crl_server = CrlServer(("127.0.0.1", 0), _CrlHandler)
    threading.Thread(target=crl_server.serve_forever, daemon=True).start()
    crl_url = f"http://127.0.0.1:{crl_server.server_address[1]}/other.crl"
    carol = _crl_leaf(other_root, "carol@alpha.test", crl_url)
    dave = _crl_leaf(other_root, "dave@alpha.test", crl_url)
    now = dt.datetime.now(dt.UTC)
    crl_server.crl = (
        x509.CertificateRevocationListBuilder().issuer_name(other_root.certificate.subject)
        .last_update(now - dt.timedelta(minutes=1)).next_update(now + dt.timedelta(days=1))
        .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(
            carol.serial_number).revocation_date(now - dt.timedelta(minutes=1)).build())
        .sign(other_root.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    yield World(d, load_certificates(d / "ca/root.pem")[0], inter,
                load_certificates(d / "alpha.test/alice.pem")[0],
                load_certificates(d / "beta.test/bob.pem")[0],
                load_certificates(d / "alpha.test/domain-rsa.pem")[0],
                load_certificates(d / "alpha.test/domain-ec.pem")[0],
                Issued(load_private_key(d / "beta.test/bob.key"),
                       load_certificates(d / "beta.test/bob.pem")[0]),
                other_root, carol, dave, crl_server)
    crl_server.shutdown()
    crl_server.server_close()


def start_server(world: World, data: Path, **overrides: object) -> DirectoryServer:
    config = load_directory_config(None, overrides={
        "server.data": str(data),
        "server.max_body": 65536,
        "trust.anchors": [str(world.dir / "ca/root.pem"), str(world.dir / "other-root.pem")],
        "ocsp.signers": [str(world.dir / "ca/ocsp.pem")],
        "ocsp.keys": [str(world.dir / "ca/ocsp.key")],
        "ratelimit.auth_failures": 1000,
        **overrides})
    return DirectoryServer(config).start()


@pytest.fixture(scope="module", name="server")
def server_fixture(world: World,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectoryServer]:
    s = start_server(world, tmp_path_factory.mktemp("data"))
    yield s
    s.stop()


@pytest.fixture(scope="module", name="alpha")
def alpha_fixture(server: DirectoryServer) -> str:
    return server.token("alpha.test")


def publish(server: DirectoryServer, token: str, cert: x509.Certificate,
            chain: tuple[x509.Certificate, ...] = ()) -> Reply:
    return http("POST", server.url + "/v1/certificates",
                {"certificate": pem(cert), "chain": [pem(c) for c in chain]},
                {"Authorization": f"Bearer {token}"})


def revoke(server: DirectoryServer, token: str, fingerprint: str,
           reason: str = "keyCompromise") -> Reply:
    return http("POST", server.url + f"/v1/certificates/{fingerprint}/revoke",
                {"reason": reason}, {"Authorization": f"Bearer {token}"})


def openssl_ocsp(world: World, server: DirectoryServer, cert: str) -> str:
    out = subprocess.run(
        ["openssl", "ocsp", "-issuer", str(world.dir / "ca/intermediate.pem"),
         "-cert", str(world.dir / cert), "-url", server.url + "/ocsp",
         "-CAfile", str(world.dir / "ca/root.pem")],
        capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert "Response verify OK" in out.stderr + out.stdout, out.stderr
    assert "nonce" not in (out.stderr + out.stdout).lower(), out.stderr  # echoed, checked
    return out.stdout

