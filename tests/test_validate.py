"""The trust gate: every way a certificate can be unfit gets its own code."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.keys.demo import Issued, issue, name_of, new_key
from gateway.keys.validate import names_match, validate_certificate

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def ca() -> tuple[Issued, Issued]:
    root = issue(name_of("root"), new_key("p256"), None, ca=True)
    inter = issue(name_of("inter"), new_key("p256"), root, ca=True, path_length=0)
    return root, inter


def leaf(inter: Issued, **kw: object) -> x509.Certificate:
    kw.setdefault("dns", ("alpha.test",))
    return issue(name_of("leaf"), new_key("p256"), inter, **kw).certificate  # type: ignore[arg-type]


def check(ca: tuple[Issued, Issued], cert: x509.Certificate, **kw: object) -> str:
    root, inter = ca
    r = validate_certificate(cert, anchors=[root.certificate],
                             intermediates=[inter.certificate], **kw)  # type: ignore[arg-type]
    assert r.ok == (r.code == "ok")
    assert r.reason
    return r.code


def test_good_chain(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    cert = leaf(inter)
    r = validate_certificate(cert, anchors=[root.certificate], intermediates=[inter.certificate],
                             purpose="sign", name="alpha.test")
    assert r.ok
    assert r.chain == (cert, inter.certificate, root.certificate)


def test_codes(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    assert check(ca, leaf(inter), name="beta.test") == "wrong-name"
    assert check(ca, leaf(inter, not_after=NOW - dt.timedelta(days=1),
                       not_before=NOW - dt.timedelta(days=9))) == "expired"
    assert check(ca, leaf(inter, not_before=NOW + dt.timedelta(days=1))) == "not-yet-valid"
    assert check(ca, leaf(inter, eku=(ExtendedKeyUsageOID.SERVER_AUTH,))) == "bad-usage"
    assert check(ca, leaf(inter), purpose="encrypt") == "ok"  # EC leaf: keyAgreement
    stranger = issue(name_of("inter"), new_key("p256"), None, ca=True)
    assert check(ca, leaf(stranger)) == "untrusted"
    self_signed = issue(name_of("self"), new_key("p256"), None, dns=("alpha.test",))
    assert check(ca, self_signed.certificate) == "untrusted"
    # a CA under a pathlen-0 intermediate may not issue
    sub = issue(name_of("sub"), new_key("p256"), inter, ca=True)
    r = validate_certificate(leaf(sub), anchors=[root.certificate],
                             intermediates=[inter.certificate, sub.certificate])
    assert r.code == "path-too-long"


def test_missing_intermediate_is_untrusted(ca: tuple[Issued, Issued]) -> None:
    root, inter = ca
    r = validate_certificate(leaf(inter), anchors=[root.certificate])
    assert r.code == "untrusted"


def test_names() -> None:
    inter = issue(name_of("i"), new_key("p256"), None, ca=True)
    user = issue(name_of("u"), new_key("p256"), inter, emails=("alice@alpha.test",)).certificate
    dom = issue(name_of("d"), new_key("p256"), inter, dns=("alpha.test",)).certificate
    assert names_match(user, "ALICE@alpha.test")
    assert names_match(user, "alpha.test")
    assert not names_match(user, "bob@alpha.test")
    assert names_match(dom, "bob@alpha.test")  # a domain certificate speaks for its domain
    assert not names_match(dom, "bob@beta.test")
