"""Authentication-Results formatting (RFC 8601 §2.2, RFC 7281): the exact text, folding to
78 columns, and untrusted text (addresses, reasons quoting a subject) that must never
inject a header field or break out of its quoted-string or comment."""

from __future__ import annotations

import email.parser
import email.policy
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.keys.demo import issue, name_of, new_key
from gateway.revocation import ResInfo, Verdict, authentication_results, smime_resinfo
from gateway.smime import SignerInfoResult

BODY = b"MIME-Version: 1.0\r\n\r\nbody\r\n"
EVIL = [
    "x\r\nX-Injected: yes",
    "x\nX-Injected: yes",
    "x\rX-Injected: yes",
    "x\r\n\r\nbody takeover",
    'quote " and backslash \\ and (paren)',
    "nul \x00 bell \x07 del \x7f c1 \x85 ls \u2028 ps \u2029",
    "ünïcödé → 漢字",
    "a" * 500,
    "  spaces   everywhere  ",
]


def _parse(field: str) -> email.message.Message:
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        field.encode("utf-8") + BODY)


def _unfold(field: str) -> str:
    return re.sub(r"\r\n(?=[ \t])", "", field)


def _balanced(value: str) -> bool:
    """Quotes close and comments nest outside quoted-strings, escapes honoured."""
    depth, quoted, i = 0, False, 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            i += 2
            continue
        if quoted:
            quoted = c != '"'
        elif c == '"' and depth == 0:
            quoted = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0 and not quoted


def _check(field: str) -> None:
    assert field.endswith("\r\n")
    lines = field[:-2].split("\r\n")
    assert lines[0].startswith("Authentication-Results: ")
    for line in lines:
        assert len(line) <= 78, line
        assert "\r" not in line
        assert "\n" not in line
        assert all(0x20 <= ord(c) < 0x7F for c in line), line
    assert all(line.startswith(" ") for line in lines[1:])
    parsed = _parse(field)
    assert parsed.keys() == ["Authentication-Results", "MIME-Version"]
    assert _balanced(_unfold(field)[len("Authentication-Results:"):])


def test_exact_text() -> None:
    field = authentication_results("beta.test", ResInfo(
        "smime", "pass", properties=(("body.smime-identifier", "alice@alpha.test"),
                                     ("body.smime-serial", "1A2B"),
                                     ("body.smime-issuer", "CN=Demo CA,O=smimegate demo"))))
    assert field == (
        "Authentication-Results: beta.test; smime=pass\r\n"
        " body.smime-identifier=alice@alpha.test body.smime-serial=1A2B\r\n"
        ' body.smime-issuer="CN=Demo CA,O=smimegate demo"\r\n')
    _check(field)


def test_none_and_several_results() -> None:
    assert authentication_results("mx.beta.test", []) == \
        "Authentication-Results: mx.beta.test; none\r\n"
    field = authentication_results("mx.beta.test", [
        ResInfo("smime", "temperror", reason="OCSP server down"),
        ResInfo("smime", "pass", comment="second signature")])
    assert _unfold(field) == ('Authentication-Results: mx.beta.test; smime=temperror '
                              'reason="OCSP server down"; smime=pass (second signature)\r\n')


@pytest.mark.parametrize("evil", EVIL, ids=range(len(EVIL)))
def test_untrusted_text_cannot_inject(evil: str) -> None:
    field = authentication_results("beta.test", ResInfo(
        "smime", "fail", reason=f"signer {evil} revoked", comment=evil,
        properties=(("body.smime-identifier", evil), ("body.smime-issuer", evil))))
    _check(field)
    assert "X-Injected" not in _parse(field)


def test_bad_authserv_id_method_and_property_are_refused() -> None:
    for bad in ("", "beta.test; smime=pass", "a b", "x\r\nY: z", "é.test"):
        with pytest.raises(ValueError, match="authserv-id"):
            authentication_results(bad, [])
    with pytest.raises(ValueError, match="method=result"):
        authentication_results("b.test", ResInfo("smime", "excellent"))
    with pytest.raises(ValueError, match=r"ptype\.property"):
        authentication_results("b.test", ResInfo("smime", "pass",
                                                 properties=(("x=y; z", "v"),)))


def test_utf8_kept_only_when_allowed() -> None:
    info = ResInfo("smime", "fail", reason="Zürich")
    assert 'reason="Z?rich"' in authentication_results("b.test", info)
    assert 'reason="Zürich"' in authentication_results("b.test", info, ascii_only=False)


def test_smime_resinfo_names_the_signer_per_rfc7281() -> None:
    ca = issue(name_of("Weird \"CA\", (Inc)"), new_key("p256"), None, ca=True)
    cert = issue(name_of("Eve", email="eve@alpha.test"), new_key("p256"), ca,
                 emails=("eve@alpha.test",), dns=("alpha.test",)).certificate
    signer = SignerInfoResult(True, "ok", "", cert, (cert,), "sha256", "ecdsa", None,
                              ("eve@alpha.test",), ("alpha.test",), "good")
    info = smime_resinfo(Verdict("pass", "", signer, "good"), from_address="x@alpha.test",
                         part="1")
    props = dict(info.properties)
    assert props["body.smime-identifier"] == "x@alpha.test"  # the domain speaks for From
    assert props["body.smime-part"] == "1"
    assert props["body.smime-serial"] == format(cert.serial_number, "X")
    assert props["body.smime-issuer"] == cert.issuer.rfc4514_string()
    info = smime_resinfo(Verdict("pass", "", signer, "good"), from_address="x@other.test")
    assert dict(info.properties)["body.smime-identifier"] == "eve@alpha.test"
    field = authentication_results("beta.test", info)
    _check(field)
    issuer = cert.issuer.rfc4514_string()
    assert "\\" in issuer
    assert '"' in issuer
    quoted = issuer.replace("\\", "\\\\").replace('"', '\\"')
    assert f'body.smime-issuer="{quoted}"' in _unfold(field)
    none = smime_resinfo(Verdict("none", ""))
    assert none.properties == ()
    assert none.result == "none"


@settings(max_examples=300, deadline=None)
@given(reason=st.text(max_size=400), comment=st.text(max_size=200),
       ident=st.text(max_size=120), issuer=st.text(max_size=200))
def test_any_text_gives_a_wellformed_field(reason: str, comment: str, ident: str,
                                           issuer: str) -> None:
    field = authentication_results("beta.test", ResInfo(
        "smime", "neutral", reason=reason, comment=comment,
        properties=(("body.smime-identifier", ident), ("body.smime-issuer", issuer))))
    _check(field)
