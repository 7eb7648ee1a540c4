"""`POST /v1/verify`: the verdict on a signer's certificate, for any gateway to ask.

Input: the signer's chain (PEM, leaf first) or a whole CMS SignedData (RFC 5652,
base64 DER), from which the signer's certificate is picked by its SignerIdentifier
(§5.3). The message signature itself is the asking gateway's to check; this judges the
certificate: a chain to our anchors, validity, signing use and emailProtection
(gateway.keys.validate), withdrawal by the domain owner (revoked here), and revocation
by the issuing CA (our own records where the CA delegated OCSP to us, else its OCSP
responder or CRL, see revocation.py).

Verdicts: "good"; "revoked"; "invalid" (the chain fails; code says why); "unknown"
(revocation could not be learnt: the caller's strict/soft policy decides).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import TYPE_CHECKING

from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gateway.directory.errors import ApiError
from gateway.directory.revocation import RevocationStatus
from gateway.keys.validate import validate_certificate

MAX_CERTS = 20

if TYPE_CHECKING:  # app imports this module
    from gateway.directory.app import Directory


def _iso(ts: int | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def certificates_from_cms(der: bytes) -> list[x509.Certificate]:
    """The signer's certificate first, then the other certificates of a SignedData."""
    try:
        info = asn1_cms.ContentInfo.load(der)
        if info["content_type"].native != "signed_data":
            raise ApiError(400, "bad-cms", "the CMS object is not SignedData")
        signed = info["content"]
        certs = [x509.load_der_x509_certificate(c.chosen.dump())
                 for c in signed["certificates"] or () if c.name == "certificate"]
        infos = list(signed["signer_infos"])
        sid = infos[0]["sid"] if infos else None
    except ApiError:
        raise
    except Exception as e:  # asn1crypto parses lazily and raises many kinds on bad DER
        raise ApiError(400, "bad-cms", f"cannot parse the CMS SignedData: {e}") from None
    if sid is None:
        raise ApiError(400, "bad-cms", "the SignedData has no SignerInfo")
    if not certs:
        raise ApiError(400, "bad-cms", "the SignedData carries no certificates")
    signer = None
    for c in certs:
        if sid.name == "issuer_and_serial_number":
            ias = sid.chosen
            if c.serial_number == ias["serial_number"].native and \
                    c.issuer.public_bytes() == ias["issuer"].dump():
                signer = c
        else:
            try:
                ski = c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            except x509.ExtensionNotFound:
                continue
            if ski.digest == sid.chosen.native:
                signer = c
        if signer is not None:
            break
    if signer is None:
        raise ApiError(422, "no-signer-certificate",
                       "the SignedData does not carry its signer's certificate")
    return [signer, *[c for c in certs if c is not signer]]


def parse_request(body: dict[str, object]) -> tuple[list[x509.Certificate], str | None]:
    unknown = set(body) - {"chain", "cms", "address"}
    if unknown:
        raise ApiError(400, "bad-request", f"unknown fields: {', '.join(sorted(unknown))}")
    chain, cms, address = body.get("chain"), body.get("cms"), body.get("address")
    if (chain is None) == (cms is None):
        raise ApiError(400, "bad-request", "give exactly one of 'chain' (PEM strings, signer "
                       "first) and 'cms' (base64 DER SignedData)")
    if address is not None and not isinstance(address, str):
        raise ApiError(400, "bad-request", "'address' must be a string")
    if cms is not None:
        if not isinstance(cms, str):
            raise ApiError(400, "bad-request", "'cms' must be a base64 string")
        try:
            der = base64.b64decode(cms, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "bad-cms", "'cms' is not valid base64") from None
        certs = certificates_from_cms(der)
    else:
        if not isinstance(chain, list) or not chain or \
                not all(isinstance(c, str) for c in chain):
            raise ApiError(400, "bad-request", "'chain' must be a non-empty list of PEM strings")
        certs = []
        for pem in chain:
            try:
                certs += x509.load_pem_x509_certificates(pem.encode())
            except ValueError as e:
                raise ApiError(400, "bad-certificate", f"cannot parse a certificate: {e}") \
                    from None
    if len(certs) > MAX_CERTS:
        raise ApiError(400, "bad-certificate", f"at most {MAX_CERTS} certificates")
    return certs, address


async def verdict(d: Directory, certs: list[x509.Certificate],
                  address: str | None) -> dict[str, object]:
    leaf = certs[0]
    stored = [x509.load_der_x509_certificate(der) for der in await d.storage.all_issuers()]
    result = validate_certificate(leaf, anchors=d.anchors, intermediates=[*certs[1:], *stored],
                                  purpose="sign", name=address)
    fp = leaf.fingerprint(hashes.SHA256()).hex()
    out: dict[str, object] = {
        "certificate": {"fingerprint": fp, "subject": leaf.subject.rfc4514_string(),
                        "issuer": leaf.issuer.rfc4514_string(),
                        "serial": format(leaf.serial_number, "x")},
        "chain": {"ok": result.ok, "code": result.code, "reason": result.reason,
                  "path": [c.subject.rfc4514_string() for c in result.chain]},
        "revocation": None,
    }
    if not result.ok:
        out.update(verdict="invalid", code=result.code, reason=result.reason)
        return out
    record = await d.storage.get_certificate(fp)
    issuer = result.chain[1]
    if record is not None and record.state == "revoked":
        status = RevocationStatus("revoked", "directory", "withdrawn by the owner of "
                                  f"{record.domain}", _iso(record.revoked_at),
                                  record.revocation_reason)
    elif d.responder.signer_for(issuer) is not None:
        status = (RevocationStatus("good", "directory", "the CA delegated OCSP to this "
                                   "directory, which holds the certificate as good")
                  if record is not None else
                  RevocationStatus("unknown", "directory", "the CA delegated OCSP to this "
                                   "directory, which does not hold this certificate"))
    else:
        status = await d.revocation.check(leaf, issuer)
    out["revocation"] = status.json()
    if status.status == "revoked":
        out.update(verdict="revoked", code="revoked", reason=status.reason)
    elif status.status == "good":
        out.update(verdict="good", code="ok", reason="chains to a trust anchor; not revoked")
    else:
        out.update(verdict="unknown", code="revocation-unknown", reason=status.reason)
    return out
