"""Certificate revocation lists (RFC 5280 §5) read, judged, and asked about one certificate.

Pure functions and values, no I/O (gateway.revocation.crlsource fetches and caches):

- distribution_points(): the http:// URLs a certificate's CRL distribution points name
  (§4.2.1.13) as full-name URIs. Skipped, with a note saying why: ldap:// and https://
  URIs (the CRL is signed; https would need its own revocation check, RFC 5280 §8), a
  point with cRLIssuer (an indirect CRL signed by someone other than the issuing CA,
  §5.2.5: refused), one limited to some reasons (§6.3.3 (b)(2)(ii): it alone never
  covers every reason) and one named relative to the issuer.
- Crl.load(): a CRL body (DER or PEM) checked once, whoever asks: nextUpdate present
  (§5.1.2.5: conforming CAs include it) and thisUpdate / nextUpdate within the clock
  skew of now (§6.3.3 (a)(2)); not a delta CRL (§5.2.4: it lists only changes); no
  unrecognised critical extension (§5.2); an issuing distribution point neither
  indirect, nor limited to some reasons, nor to attribute certificates (§5.2.5).
- Crl.issuer_problem(): the CRL's issuer is the subject of the CA that issued the
  certificate, its signature verifies with that CA's key, and the CA may sign CRLs
  (keyUsage cRLSign, §6.3.3 (f)). A separate CRL signer is not accepted.
- Crl.scope_problem(): the issuing distribution point covers this certificate
  (onlyContainsUserCerts / onlyContainsCACerts, and its name matches the point the
  certificate named, §6.3.3 (b)(2)(i), (iii), (iv)).
- Crl.lookup(): the certificate's serial on the list → revoked, with date and reason;
  an entry with an unrecognised critical extension → unusable (§5.3).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from gateway.revocation.fetch import FetchFailure, is_http_url
from gateway.revocation.outcome import iso

# §5.2: extensions this reader understands; another one marked critical makes the CRL
# unusable. The delta CRL indicator is understood, and refused.
_KNOWN_CRL_EXTENSIONS = frozenset({
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER, ExtensionOID.ISSUER_ALTERNATIVE_NAME,
    ExtensionOID.CRL_NUMBER, ExtensionOID.DELTA_CRL_INDICATOR,
    ExtensionOID.ISSUING_DISTRIBUTION_POINT, ExtensionOID.FRESHEST_CRL,
    ExtensionOID.AUTHORITY_INFORMATION_ACCESS})
_KNOWN_ENTRY_EXTENSIONS = frozenset({
    CRLEntryExtensionOID.CRL_REASON, CRLEntryExtensionOID.INVALIDITY_DATE})
_MEMO = 64  # issuers whose verdict on one CRL is remembered


@dataclass(frozen=True)
class Point:
    """One usable distribution point: the http URL to fetch, and every full name the
    certificate gave that point (matched against the CRL's issuing distribution point)."""

    url: str
    names: frozenset[str]


def distribution_points(cert: x509.Certificate) -> tuple[list[Point], list[str]]:
    """(usable points in the certificate's order, notes on what was skipped and why)."""
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return [], []
    except ValueError as e:
        return [], [f"unreadable CRL distribution points: {e}"]
    points: list[Point] = []
    notes: list[str] = []
    for dp in cdp:
        if dp.crl_issuer:
            notes.append("an indirect CRL (cRLIssuer) is not accepted")
            continue
        if dp.reasons:
            notes.append("a CRL for only some revocation reasons is not used")
            continue
        if dp.full_name is None:
            notes.append("a distribution point named relative to the issuer is not used")
            continue
        uris = [n.value for n in dp.full_name if isinstance(n, x509.UniformResourceIdentifier)]
        names = frozenset(uris)
        for uri in uris:
            if is_http_url(uri):
                points.append(Point(uri, names))
            else:
                scheme = uri.split(":", 1)[0].lower() if ":" in uri else "no scheme"
                notes.append(f"{uri} skipped ({scheme}: only http CRLs are fetched)")
        if not uris:
            notes.append("a distribution point without a URI is not used")
    return points, notes


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


@dataclass(frozen=True)
class Listed:
    """The answer of one CRL about one serial."""

    revoked: bool
    reason: str  # RFC 5280 §5.3.1 name, e.g. "keyCompromise"; "" when not revoked
    revoked_at: dt.datetime | None = None
    problem: str = ""  # set: the entry cannot be used (status unknown)


class Crl:
    """A CRL that passed the checks that do not depend on who asks (see the module doc)."""

    def __init__(self, crl: x509.CertificateRevocationList, size: int,
                 idp: x509.IssuingDistributionPoint | None, next_update: dt.datetime) -> None:
        self.crl = crl
        self.size = size
        self.idp = idp
        self.this_update = crl.last_update_utc
        self.this_update_iso = iso(self.this_update)
        self.next_update = next_update
        # One pass at load: a lookup is then a set probe, not a scan of the list.
        self.serials = frozenset(r.serial_number for r in crl)
        self._issuers: dict[x509.Certificate, tuple[str, str]] = {}  # issuer → problem

    @classmethod
    def load(cls, body: bytes, now: dt.datetime, skew: dt.timedelta) -> Crl:
        """Parse and check body; FetchFailure(kind: malformed | stale | unusable)."""
        try:
            if body.lstrip()[:11] == b"-----BEGIN ":
                crl = x509.load_pem_x509_crl(body)
            else:
                crl = x509.load_der_x509_crl(body)
            extensions = crl.extensions
        except ValueError as e:
            raise FetchFailure("malformed", f"not a CRL: {e}") from None
        idp: x509.IssuingDistributionPoint | None = None
        for ext in extensions:
            if ext.oid == ExtensionOID.DELTA_CRL_INDICATOR:
                raise FetchFailure("unusable", "a delta CRL, which lists only changes "
                                   "(RFC 5280 §5.2.4)")
            if ext.critical and ext.oid not in _KNOWN_CRL_EXTENSIONS:
                raise FetchFailure("unusable", "an unrecognised critical extension "
                                   f"{ext.oid.dotted_string} (RFC 5280 §5.2)")
            if isinstance(ext.value, x509.IssuingDistributionPoint):
                idp = ext.value
        if idp is not None:
            if idp.indirect_crl:
                raise FetchFailure("unusable", "an indirect CRL (RFC 5280 §5.2.5) is not "
                                   "accepted")
            if idp.only_some_reasons:
                raise FetchFailure("unusable", "a CRL for only some revocation reasons")
            if idp.only_contains_attribute_certs:
                raise FetchFailure("unusable", "a CRL of attribute certificates")
        this_update, next_update = crl.last_update_utc, crl.next_update_utc
        if this_update > now + skew:
            raise FetchFailure("stale", f"thisUpdate {iso(this_update)} is in the future")
        if next_update is None:
            raise FetchFailure("stale", "no nextUpdate (RFC 5280 §5.1.2.5)")
        if next_update < now - skew:
            raise FetchFailure("stale", f"expired: nextUpdate {iso(next_update)} has passed")
        return cls(crl, len(body), idp, next_update)

    def stale_problem(self, now: dt.datetime, skew: dt.timedelta) -> str:
        if self.next_update < now - skew:
            return f"expired: nextUpdate {iso(self.next_update)} has passed"
        return ""

    def issuer_problem(self, issuer: x509.Certificate) -> tuple[str, str]:
        """("", "") when issuer (the CA that issued the certificate asked about) signed this
        CRL; else (kind: wrong-issuer | bad-signature, why). Remembered per issuer, so the
        signature is checked once per CRL and CA."""
        key = issuer  # certificates hash and compare by their DER: no digest needed
        known = self._issuers.get(key)
        if known is not None:
            return known
        problem = self._issuer_problem(issuer)
        if len(self._issuers) >= _MEMO:
            self._issuers.clear()
        self._issuers[key] = problem
        return problem

    def _issuer_problem(self, issuer: x509.Certificate) -> tuple[str, str]:
        ca = issuer.subject.rfc4514_string()
        if self.crl.issuer != issuer.subject:
            return "wrong-issuer", f"issued by {self.crl.issuer.rfc4514_string()}, not by " \
                f"the issuing CA {ca}"
        try:
            usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
            if not usage.crl_sign:
                return "bad-signature", f"the issuing CA {ca} may not sign CRLs (no cRLSign " \
                    "key usage)"
        except x509.ExtensionNotFound:
            pass
        except ValueError as e:
            return "bad-signature", f"the issuing CA's key usage is unreadable: {e}"
        try:
            ok = self.crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        except (TypeError, ValueError, UnsupportedAlgorithm):
            ok = False
        if not ok:
            return "bad-signature", "the signature does not verify with the key of the " \
                f"issuing CA {ca} (a separate CRL signer is not accepted)"
        return "", ""

    def scope_problem(self, cert: x509.Certificate, point: Point) -> str:
        """"" when the CRL's issuing distribution point covers cert, else why not."""
        idp = self.idp
        if idp is None:
            return ""
        if idp.only_contains_user_certs and is_ca(cert):
            return "the CRL covers only end-entity certificates, and this is a CA's"
        if idp.only_contains_ca_certs and not is_ca(cert):
            return "the CRL covers only CA certificates, and this is an end entity's"
        if idp.relative_name is not None:
            return "the CRL names its distribution point relative to the issuer, which " \
                "does not match the certificate's full name"
        if idp.full_name is not None:
            names = {n.value for n in idp.full_name
                     if isinstance(n, x509.UniformResourceIdentifier)}
            if not names & point.names:
                return "the CRL's issuing distribution point does not name the point the " \
                    f"certificate gave ({point.url})"
        return ""

    def lookup(self, serial: int) -> Listed:
        if serial not in self.serials:
            return Listed(False, "")
        entry = self.crl.get_revoked_certificate_by_serial_number(serial)
        if entry is None:  # cannot happen: serials was read from this list
            return Listed(False, "", problem="the entry vanished from the CRL")
        try:
            extensions = entry.extensions
        except ValueError as e:
            return Listed(True, "", problem=f"the CRL entry is unreadable: {e}")
        reason = "unspecified"
        for ext in extensions:
            if ext.critical and ext.oid not in _KNOWN_ENTRY_EXTENSIONS:
                return Listed(True, "", problem="the CRL entry has an unrecognised critical "
                              f"extension {ext.oid.dotted_string} (RFC 5280 §5.3)")
            if isinstance(ext.value, x509.CRLReason):
                reason = ext.value.reason.value
        if reason == x509.ReasonFlags.remove_from_crl.value:  # §5.3.1: it is back in force
            return Listed(False, "")
        return Listed(True, reason, entry.revocation_date_utc)
