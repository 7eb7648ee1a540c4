"""Helpers of the CRL tests: an HTTP server on loopback serving CRLs by path (counting
requests per path), a port that accepts connections and never answers, a small PKI under
the demo root whose certificates name CRL distribution points on that server, and CRLs
made with cryptography's CertificateRevocationListBuilder, bent as a test asks."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http import server as httpserver

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gateway.keys import load_certificates, load_private_key
from gateway.keys.demo import Issued, issue, name_of, new_key
from gateway.keys.identity import PrivateKey
from tests.directory_world import World


class CrlHttp(httpserver.ThreadingHTTPServer):
    """GET /path → routes[path] = (HTTP status, body); hits counts GETs per path."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.hits: Counter[str] = Counter()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(10)


class _Handler(httpserver.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, CrlHttp)
        server.hits[self.path] += 1
        status, body = server.routes.get(self.path, (404, b"no such CRL"))
        self.send_response(status)
        self.send_header("Content-Type", "application/pkix-crl")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(name="crls")
def crls_fixture() -> Iterator[CrlHttp]:
    s = CrlHttp()
    yield s
    s.stop()


@pytest.fixture(name="silent")
def silent_fixture() -> Iterator[str]:
    """An http URL whose server accepts the connection (the kernel's backlog) and never
    answers: a fetch from it can only time out."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/never.crl"


def cdp(*uris: str, crl_issuer: x509.Name | None = None,
        reasons: frozenset[x509.ReasonFlags] | None = None) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([x509.DistributionPoint(
        [x509.UniformResourceIdentifier(u) for u in uris], None, reasons,
        [x509.DirectoryName(crl_issuer)] if crl_issuer is not None else None)])


@dataclass
class Pki:
    """root (the demo root, a trust anchor) → inter (names root_crl) → leaves (inter_crl)."""

    root: Issued
    inter: Issued
    root_crl: str
    inter_crl: str

    def leaf(self, email: str, *points: x509.ExtensionType) -> Issued:
        """A P-256 signing certificate for email under inter; by default it names
        inter_crl as its only CRL distribution point."""
        extensions = points or (cdp(self.inter_crl),)
        return issue(name_of(email.split("@")[0], "Alpha", email), new_key("p256"),
                     self.inter, emails=(email,), extensions=extensions)


def make_pki(world: World, crls: CrlHttp, tag: str) -> Pki:
    """A fresh intermediate under the demo root, with its own CRL paths /tag-*.crl."""
    root = Issued(load_private_key(world.dir / "ca/root.key"),
                  load_certificates(world.dir / "ca/root.pem")[0])
    root_crl, inter_crl = crls.url(f"/{tag}-root.crl"), crls.url(f"/{tag}-inter.crl")
    inter = issue(name_of(f"CRL test intermediate {tag}"), new_key("p256"), root, ca=True,
                  path_length=0, extensions=(cdp(root_crl),))
    return Pki(root, inter, root_crl, inter_crl)


def make_crl(ca: Issued, revoked: Iterable[tuple[int, x509.ReasonFlags | None]] = (), *,
             this_update: dt.timedelta = dt.timedelta(minutes=-1),
             next_update: dt.timedelta = dt.timedelta(hours=1),
             key: PrivateKey | None = None, issuer: x509.Name | None = None,
             extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
             entry_extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
             pem: bool = False) -> bytes:
    """A CRL of ca listing revoked (serial, reason), bent as the keywords say."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer or ca.certificate.subject)
               .last_update(now + this_update).next_update(now + next_update)
               .add_extension(x509.CRLNumber(1), critical=False))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    for serial, reason in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(
            now - dt.timedelta(minutes=10))
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        for ext, critical in entry_extensions:
            entry = entry.add_extension(ext, critical=critical)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(key or ca.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)


def serve(crls: CrlHttp, url: str, body: bytes, status: int = 200) -> None:
    crls.routes[url.split(str(crls.server_address[1]), 1)[1]] = (status, body)


def hits(crls: CrlHttp, url: str) -> int:
    return crls.hits[url.split(str(crls.server_address[1]), 1)[1]]
