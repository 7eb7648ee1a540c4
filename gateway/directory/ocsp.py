"""The OCSP responder (RFC 6960) for CAs that delegated OCSP signing to this directory.

A CA delegates by issuing us a responder certificate with the id-kp-OCSPSigning EKU
(RFC 6960 §4.2.2.2). A request's CertID names the issuer by the hashes of its name and
key (§4.1.1); we find the issuer among the CAs we know (trust anchors, the responders'
own chain files, the intermediates of published certificates), then the responder it
delegated to, then the certificate by serial: good, revoked (time and reason) or
unknown. A nonce in the request is echoed (§4.4.1). An issuer we do not answer for gets
the unsigned "unauthorized" status (§2.3), a request we cannot parse "malformedRequest".

Signing costs a private-key operation (about 1 ms with RSA-2048), so an answer to a
request without a nonce is kept and served again for up to `reuse` seconds, as RFC 5019
§2.2 allows pre-produced responses; forget() drops them when a certificate changes.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.directory.records import CertRecord, fingerprint, issuer_key_id, key_bits
from gateway.keys.identity import PrivateKey

# Hash algorithms a CertID may use; SHA-1 is what most clients (openssl) send.
CERTID_HASHES: tuple[hashes.HashAlgorithm, ...] = (
    hashes.SHA1(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512())  # noqa: S303
RELOAD_INTERVAL = 5.0  # seconds between re-reading issuers from storage on a miss


class ResponderConfigError(ValueError):
    """A responder certificate or key the operator gave cannot be used."""


@dataclass
class Signer:
    certificate: x509.Certificate
    key: PrivateKey
    issuer: x509.Certificate | None = None


@dataclass
class Responder:
    """OCSP answers for the CAs whose responders we hold."""

    signers: list[Signer]
    validity: float = 3600.0
    _issuers: dict[tuple[str, bytes, bytes], x509.Certificate] = field(default_factory=dict)
    _known: set[str] = field(default_factory=set)
    _last_reload: float = 0.0
    reuse: float = 60.0  # seconds a nonce-less answer is served again
    _answers: dict[tuple[str, bytes, bytes, int], tuple[float, bytes, str]] = field(
        default_factory=dict)

    _generation: int = 0

    def forget(self) -> None:
        """A certificate was published or revoked: no kept answer may outlive that (nor
        may an answer being built from what was read before it)."""
        self._generation += 1
        self._answers.clear()

    @staticmethod
    def check_signer(cert: x509.Certificate, key: PrivateKey, source: str) -> Signer:
        """A Signer, or ResponderConfigError saying why cert/key cannot sign OCSP answers."""
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(serialization.Encoding.DER, pub) != \
                cert.public_key().public_bytes(serialization.Encoding.DER, pub):
            raise ResponderConfigError(f"{source}: the key does not belong to the certificate")
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = None
        if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise ResponderConfigError(
                f"{source}: lacks the id-kp-OCSPSigning extended key usage, so clients "
                "would refuse its answers (RFC 6960 §4.2.2.2)")
        return Signer(cert, key)

    def learn(self, candidates: Iterable[x509.Certificate]) -> None:
        """Index CA certificates by their CertID hashes; attach the responders they issued."""
        for ca in candidates:
            fp = fingerprint(ca.public_bytes(serialization.Encoding.DER))
            if fp in self._known:
                continue
            self._known.add(fp)
            name_der, bits = ca.subject.public_bytes(), key_bits(ca.public_key())
            for alg in CERTID_HASHES:
                self._issuers[(alg.name, _digest(alg, name_der), _digest(alg, bits))] = ca
            for s in self.signers:
                if s.issuer is None and _issued(s.certificate, ca):
                    s.issuer = ca

    def signer_for(self, issuer: x509.Certificate) -> Signer | None:
        for s in self.signers:
            if s.issuer is not None and s.issuer == issuer:
                return s
        return None

    def unresolved(self) -> list[x509.Certificate]:
        """Responder certificates whose issuing CA is not known yet."""
        return [s.certificate for s in self.signers if s.issuer is None]

    async def respond(self, der: bytes,
                      find: Callable[[str, str], Awaitable[CertRecord | None]],
                      reload: Callable[[], Awaitable[list[x509.Certificate]]]) -> tuple[
                          bytes, str]:
        """The DER OCSPResponse for a DER OCSPRequest, and a status word for metrics.

        find(issuer_key_id, serial_hex) looks a certificate up; reload() reads the CA
        certificates stored since we last looked (another replica may have learnt one).
        """
        try:
            req = ocsp.load_der_ocsp_request(der)
            key = (req.hash_algorithm.name, req.issuer_name_hash, req.issuer_key_hash)
            nonce = _nonce(req)
        except (ValueError, TypeError, x509.UnsupportedGeneralNameType):
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST), "malformed"
        except Exception:  # UnsupportedAlgorithm: a CertID hash we do not know
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST), "malformed"
        answer_key = (*key, req.serial_number)
        generation = self._generation
        kept = self._answers.get(answer_key) if nonce is None else None
        if kept is not None and kept[0] > time.monotonic():
            return kept[1], kept[2]
        issuer = self._issuers.get(key)
        if issuer is None and time.monotonic() - self._last_reload > RELOAD_INTERVAL:
            self._last_reload = time.monotonic()
            self.learn(await reload())
            issuer = self._issuers.get(key)
        signer = self.signer_for(issuer) if issuer is not None else None
        if issuer is None or signer is None:
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED), "unauthorized"
        record = await find(issuer_key_id(issuer), format(req.serial_number, "x"))
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        status, rtime, reason = ocsp.OCSPCertStatus.UNKNOWN, None, None
        if record is not None and record.state == "revoked" and record.revoked_at is not None:
            status = ocsp.OCSPCertStatus.REVOKED
            rtime = dt.datetime.fromtimestamp(record.revoked_at, dt.UTC)
            reason = x509.ReasonFlags(record.revocation_reason or "unspecified")
        elif record is not None:
            status = ocsp.OCSPCertStatus.GOOD
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            req.issuer_name_hash, req.issuer_key_hash, req.serial_number, req.hash_algorithm,
            status, now, now + dt.timedelta(seconds=self.validity), rtime, reason,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate).certificates(
            [signer.certificate])
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        out = builder.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        if nonce is None and self.reuse > 0 and generation == self._generation:
            if len(self._answers) > 100_000:
                self._answers.clear()
            self._answers[answer_key] = (time.monotonic() + min(self.reuse, self.validity / 2),
                                         out, status.name.lower())
        return out, status.name.lower()


def _digest(alg: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(alg)
    h.update(data)
    return h.finalize()


def _issued(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _nonce(req: ocsp.OCSPRequest) -> bytes | None:
    try:
        return req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER)
