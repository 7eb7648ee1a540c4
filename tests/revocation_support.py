"""Helpers of the revocation tests: a scriptable OCSP responder on loopback that answers
what a test tells it to (good answers signed by the CA itself, answers signed by the wrong
key, stale, about another certificate, replayed), counting requests; fresh leaf
certificates under the demo intermediate; and a port where nothing listens."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Callable, Iterator
from http import server as httpserver

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from prometheus_client import REGISTRY

from gateway.keys import Identity
from gateway.keys.demo import Issued, issue, name_of, new_key
from tests.directory_support import DirectoryServer

Answer = Callable[[ocsp.OCSPRequest, bytes], tuple[int, bytes]]  # (HTTP status, body)


class ScriptedResponder(httpserver.ThreadingHTTPServer):
    """POST /ocsp → answer(request, raw body); requests counts every POST."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests = 0
        self.answer: Answer = lambda req, raw: (500, b"no script")
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/ocsp"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(10)


class _Handler(httpserver.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server = self.server
        assert isinstance(server, ScriptedResponder)
        server.requests += 1
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, body = server.answer(ocsp.load_der_ocsp_request(raw), raw)
        self.send_response(status)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(name="scripted")
def scripted_fixture() -> Iterator[ScriptedResponder]:
    s = ScriptedResponder()
    yield s
    s.stop()


def closed_port_url() -> str:
    """An http URL on loopback where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/ocsp"


def respond(req: ocsp.OCSPRequest, signer: Issued, *, status: str = "good",
            include: tuple[x509.Certificate, ...] = (), serial_delta: int = 0,
            this_update: dt.timedelta = dt.timedelta(0),
            next_update: dt.timedelta | None = dt.timedelta(hours=1),
            nonce: bool = True) -> bytes:
    """A signed OCSPResponse to req, bent as the arguments say."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                   "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status]
    revoked = status == "revoked"
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        req.issuer_name_hash, req.issuer_key_hash, req.serial_number + serial_delta,
        req.hash_algorithm, cert_status, now + this_update,
        None if next_update is None else now + next_update,
        now - dt.timedelta(minutes=5) if revoked else None,
        x509.ReasonFlags.key_compromise if revoked else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
    if include:
        builder = builder.certificates(list(include))
    if nonce:
        try:
            value = req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            builder = builder.add_extension(x509.OCSPNonce(value), critical=False)
        except x509.ExtensionNotFound:
            pass
    return builder.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER)


def leaf(inter: Issued, email: str, ocsp_url: str | None = None) -> Issued:
    """A fresh P-256 signing certificate under the demo intermediate."""
    return issue(name_of(email.split("@")[0], "Alpha", email), new_key("p256"), inter,
                 emails=(email,), ocsp_url=ocsp_url)


def identity(item: Issued, inter: Issued) -> Identity:
    return Identity.create(item.key, item.certificate, (inter.certificate,))


def directory_ocsp_answers(server: DirectoryServer) -> float:
    """OCSP answers the directory has given (all statuses): its own request count."""
    assert server.directory is not None
    total = 0.0
    for metric in server.directory.metrics.registry.collect():
        if metric.name == "smimegate_directory_ocsp_responses":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


def counter(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name + "_total", labels) or 0.0
