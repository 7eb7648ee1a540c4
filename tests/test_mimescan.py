"""The MIME scanner, one test body for both implementations (py-mimescan / c-mimescan)."""

from __future__ import annotations

import pickle
from types import ModuleType

import pytest

from gateway.mime import scan as scan_module
from gateway.mime.scanned import (
    SMIME_AUTH_ENVELOPED,
    SMIME_COMPRESSED,
    SMIME_ENVELOPED,
    SMIME_NONE,
    SMIME_OPAQUE_SIGNED,
    SMIME_SIGNED,
    SMIME_UNKNOWN,
    MimeError,
    Part,
    ScanLimits,
    ScannedMessage,
)
from tests.impls import implementations

pytestmark = pytest.mark.native
IMPLS = implementations("mimescan", "gateway.mime._scan_py")


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def mixed(*parts: str, boundary: str = "B", preamble: str = "", epilogue: str = "") -> bytes:
    body = preamble
    for part in parts:
        body += f"--{boundary}\n{part}\n"
    body += f"--{boundary}--\n{epilogue}"
    return crlf(f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n{body}')


def error_of(impl: ModuleType, data: bytes, limits: ScanLimits | None = None) -> MimeError:
    with pytest.raises(MimeError) as info:
        impl.scan(data, limits=limits or ScanLimits())
    return info.value


# --- header block ---------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_fields_folding_and_lookup(impl: ModuleType) -> None:
    data = crlf("Subject: one\n  two\n\tthree\nX-Empty:\nsubject: again\nTo: a@b\n\nbody\n")
    msg = impl.scan(data)
    root = msg.root
    assert [f.name for f in root.header_fields()] == ["Subject", "X-Empty", "subject", "To"]
    assert root.header("SUBJECT") == "one  two\tthree"
    assert root.headers("subject") == ["one  two\tthree", "again"]
    assert bytes(root.header_fields("subject")[0].raw_value) == b" one\r\n  two\r\n\tthree"
    assert root.header("x-empty") == ""
    assert root.header("missing") is None
    assert bytes(root.body) == b"body\r\n"
    assert bytes(root.header_block) == data[: data.index(b"\r\n\r\n") + 2]
    assert root.content_type == "text/plain"
    assert root.transfer_encoding == "7bit"
    assert msg.defects == ()


@pytest.mark.parametrize("impl", IMPLS)
def test_slices_are_views_of_the_original_buffer(impl: ModuleType) -> None:
    data = mixed("Content-Type: text/plain\n\nhello")
    part = impl.scan(data).root.children[0]
    assert part.body.obj is data
    assert bytes(part.body) == b"hello"
    assert bytes(part.raw) == b"Content-Type: text/plain\r\n\r\nhello"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("data", "header_end", "body_start"),
    [
        (b"", 0, 0),
        (b"\r\nbody", 0, 2),
        (b"\nbody", 0, 1),
        (b"A: b", 4, 4),  # header only, no line break at all
        (b"A: b\r\n", 6, 6),
        (b"A: b\nB: c\n\nx", 10, 11),  # bare LF line ends
    ],
)
def test_block_boundaries(impl: ModuleType, data: bytes, header_end: int,
                          body_start: int) -> None:
    root = impl.scan(data).root
    assert (root.header_end, root.body_start, root.end) == (header_end, body_start, len(data))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("line", [b"no colon here", b":empty name", b"Bad Name: x",
                                  b"From sender Mon Jan 1"])
def test_a_line_that_is_not_a_field_starts_the_body(impl: ModuleType, line: bytes) -> None:
    data = b"Subject: x\r\n" + line + b"\r\nmore\r\n"
    msg = impl.scan(data)
    assert msg.root.body_start == 12
    assert msg.defects[0].offset == 12
    assert "not a field" in msg.defects[0].reason


@pytest.mark.parametrize("impl", IMPLS)
def test_a_continuation_first_is_body(impl: ModuleType) -> None:
    msg = impl.scan(b" continued\r\nSubject: x\r\n\r\n")
    assert (msg.root.fields, msg.root.body_start) == ((), 0)
    assert msg.defects[0].offset == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_nul_in_a_header_is_refused(impl: ModuleType) -> None:
    err = error_of(impl, b"Subject: a\x00b\r\n\r\n")
    assert (err.status, err.offset) == ("5.6.0", 10)
    impl.scan(b"Subject: ok\r\n\r\nNUL in a body is the canon module's business: \x00")


@pytest.mark.parametrize("impl", IMPLS)
def test_header_limits(impl: ModuleType) -> None:
    fields = b"".join(b"X-%d: value\r\n" % i for i in range(20)) + b"\r\n"
    err = error_of(impl, fields, ScanLimits(max_header_count=10))
    assert err.status == "5.3.4"
    assert "more than 10 header fields" in err.reason
    err = error_of(impl, fields, ScanLimits(max_header_bytes=100))
    assert err.status == "5.3.4"
    assert err.reply.code == 552
    huge = b"Subject: " + b"x" * 200_000 + b"\r\n\r\n"
    assert error_of(impl, huge).status == "5.3.4"
    impl.scan(fields, limits=ScanLimits(max_header_count=20, max_header_bytes=len(fields)))


@pytest.mark.parametrize("impl", IMPLS)
def test_duplicate_content_fields_are_refused(impl: ModuleType) -> None:
    err = error_of(impl, b"Content-Type: text/plain\r\ncontent-type: text/html\r\n\r\n")
    assert err.reason == "two Content-Type fields in one entity"
    err = error_of(impl, b"Content-Transfer-Encoding: 7bit\r\n"
                         b"Content-Transfer-Encoding: base64\r\n\r\n")
    assert err.status == "5.6.0"
    # a second Content-Disposition is harmless: the first counts
    root = impl.scan(b"Content-Disposition: inline\r\nContent-Disposition: attachment\r\n\r\n").root
    assert root.disposition == "inline"


# --- Content-Type, Content-Disposition, Content-Transfer-Encoding -------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("value", "ctype", "params"),
    [
        ("text/plain", "text/plain", ()),
        ("TEXT/HTML; CHARSET=UTF-8", "text/html", (("charset", "UTF-8"),)),
        (' text / plain ; charset = "us-ascii" (comment) ; format=flowed',
         "text/plain", (("charset", "us-ascii"), ("format", "flowed"))),
        ('application/x-y; name="a \\"quoted\\" \\\\ name"', "application/x-y",
         (("name", 'a "quoted" \\ name'),)),
        ("text/plain (a (nested) comment); a=1;; b=2; junk; c", "text/plain",
         (("a", "1"), ("b", "2"))),
        ('text/plain; name="unterminated', "text/plain", (("name", "unterminated"),)),
        ("text/plain; name=\"caf\u00e9.txt\"", "text/plain", (("name", "caf\u00e9.txt"),)),
        ("text/plain;\n\tcharset=utf-8", "text/plain", (("charset", "utf-8"),)),
        ('text/plain; name="folded\n value"', "text/plain", (("name", "folded value"),)),
    ],
)
def test_content_type_parameters(impl: ModuleType, value: str, ctype: str,
                                 params: tuple[tuple[str, str], ...]) -> None:
    root = impl.scan(crlf(f"Content-Type: {value}\n\n")).root
    assert (root.content_type, root.params) == (ctype, params)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("title*=us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A",
         "This is ***fun***"),  # RFC 2231 §4
        ('title*0="This is "; title*1="even more "; title*2="***fun***"',
         "This is even more ***fun***"),  # §3
        ("title*0*=us-ascii'en'This%20is%20even%20more%20; title*1*=%2A%2A%2Afun%2A%2A%2A%20;"
         ' title*2="isn\'t it!"', "This is even more ***fun*** isn't it!"),  # §4.1
        ("title*=iso-8859-1''caf%E9", "caf\u00e9"),
        ("title*=utf-8''%C3%A9%zz%4", "\u00e9%zz%4"),  # broken escapes kept as they are
        ("title*=no-such-charset''%C3%A9", "\u00e9"),  # unknown charset read as UTF-8
        ('title="fallback"; title*=utf-8\'\'%C3%A9', "\u00e9"),  # extended value wins
        ("title*0=a; title*2=c", "a"),  # sections stop at the first gap
    ],
)
def test_rfc2231(impl: ModuleType, params: str, expected: str) -> None:
    root = impl.scan(crlf(f"Content-Type: message/external-body; {params}\n\n")).root
    assert root.param("title") == expected
    assert [name for name, _ in root.params].count("title") == 1


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("value", ["text", "/plain", "text/", "text/pla(in", "@/x", ""])
def test_invalid_content_type_reads_as_text_plain(impl: ModuleType, value: str) -> None:
    msg = impl.scan(crlf(f"Content-Type: {value}; boundary=x\n\n--x\n"))
    assert msg.root.content_type in ("text/plain", "text/pla")
    if msg.root.content_type == "text/plain" and value != "text/pla(in":
        assert msg.defects[0].reason == "invalid Content-Type; read as text/plain"
        assert msg.root.params == ()


@pytest.mark.parametrize("impl", IMPLS)
def test_disposition_and_filename(impl: ModuleType) -> None:
    root = impl.scan(crlf(
        "Content-Type: application/pdf; name=ignored.pdf\n"
        'Content-Disposition: ATTACHMENT; filename="=?utf-8?q?r=C3=A9sum=C3=A9?=.pdf"\n'
        "Content-Transfer-Encoding:  Base64 (comment)\n\n")).root
    assert root.disposition == "attachment"
    assert root.filename == "r\u00e9sum\u00e9.pdf"
    assert root.transfer_encoding == "base64"
    named = impl.scan(b"Content-Type: image/png; name=\"x.png\"\r\n\r\n").root
    assert (named.disposition, named.filename) == ("", "x.png")


# --- multipart ------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_multipart_offsets_preamble_epilogue(impl: ModuleType) -> None:
    data = mixed("Content-Type: text/plain\n\none", "\ntwo\n", preamble="pre\n",
                 epilogue="epi\n")
    root = impl.scan(data).root
    first, second = root.children
    assert (first.path, second.path) == ((0,), (1,))
    assert bytes(first.body) == b"one"  # the CRLF before "--B" belongs to the delimiter
    assert second.fields == ()
    assert bytes(second.body) == b"two\r\n"
    assert second.content_type == "text/plain"
    assert data[root.body_start : first.start] == b"pre\r\n--B\r\n"


@pytest.mark.parametrize("impl", IMPLS)
def test_delimiter_recognition(impl: ModuleType) -> None:
    body = ("--B \t\n\nfirst\n--Bnot a delimiter\n x--B\n--B-x\n--B--  \nepilogue --B\n")
    data = crlf('Content-Type: multipart/mixed; boundary=B\n\n' + body)
    root = impl.scan(data).root
    assert len(root.children) == 1
    assert bytes(root.children[0].body) == b"first\r\n--Bnot a delimiter\r\n x--B\r\n--B-x"


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_parts_and_delimiter_at_body_start(impl: ModuleType) -> None:
    data = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n--B\r\n\r\nx\r\n--B--"
    root = impl.scan(data).root
    assert [bytes(c.raw) for c in root.children] == [b"", b"\r\nx"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"Content-Type: multipart/mixed\r\n\r\n--B--\r\n",
         "multipart/mixed without a boundary parameter"),
        (b'Content-Type: multipart/mixed; boundary=""\r\n\r\n--\r\n',
         "multipart/mixed without a boundary parameter"),
        (b"Content-Type: multipart/mixed; boundary=B; boundary=C\r\n\r\n--B\r\n",
         "two boundary parameters in multipart/mixed"),
        (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--C\r\n",
         "no delimiter line for the boundary of multipart/mixed"),
        (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B--\r\n",
         "multipart/mixed has no body part"),
        (b"Content-Type: multipart/mixed; boundary=" + b"b" * 201 + b"\r\n\r\n",
         "boundary longer than 200 octets"),
    ],
)
def test_multipart_errors(impl: ModuleType, data: bytes, reason: str) -> None:
    err = error_of(impl, data)
    assert (err.status, err.reason) == ("5.6.0", reason)


@pytest.mark.parametrize("impl", IMPLS)
def test_nesting_and_part_limits(impl: ModuleType) -> None:
    inner = "Content-Type: text/plain\n\nx"
    for level in range(4):
        inner = (f"Content-Type: multipart/mixed; boundary=L{level}\n\n"
                 f"--L{level}\n{inner}\n--L{level}--")
    data = crlf(inner)
    assert max(p.depth for p in impl.scan(data).walk()) == 4
    err = error_of(impl, data, ScanLimits(max_depth=3))
    assert (err.status, err.reason) == ("5.6.0", "MIME nesting deeper than 3")
    err = error_of(impl, data, ScanLimits(max_parts=4))
    assert (err.status, err.reason) == ("5.3.4", "more than 4 MIME parts")


@pytest.mark.parametrize("impl", IMPLS)
def test_message_rfc822_and_digest(impl: ModuleType) -> None:
    data = crlf("Content-Type: multipart/digest; boundary=D\n\n--D\n\nSubject: one\n\nbody one\n"
                "--D\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
                "U3ViamVjdDogdHdvDQoNCg==\n--D\nContent-Type: text/plain\n\nplain\n--D--\n")
    msg = impl.scan(data)
    first, second, third = msg.root.children
    assert first.content_type == "message/rfc822"  # RFC 2046 §5.1.5 default in a digest
    assert first.children[0].header("subject") == "one"
    assert first.children[0].path == (0, 0)
    assert second.children == ()  # encoded: not looked into
    assert "not scanned inside" in msg.defects[0].reason
    assert third.content_type == "text/plain"


@pytest.mark.parametrize("impl", IMPLS)
def test_multipart_with_transfer_encoding_is_a_defect(impl: ModuleType) -> None:
    data = (b"Content-Type: multipart/mixed; boundary=B\r\nContent-Transfer-Encoding: base64"
            b"\r\n\r\n--B\r\n\r\nx\r\n--B--\r\n")
    msg = impl.scan(data)
    assert len(msg.root.children) == 1
    assert "RFC 2045 §6.4" in msg.defects[0].reason


# --- S/MIME ------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ('multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; '
         "boundary=B", SMIME_SIGNED),
        ('multipart/signed; protocol="application/pgp-signature"; boundary=B', SMIME_NONE),
        ("application/pkcs7-mime; smime-type=enveloped-data", SMIME_ENVELOPED),
        ("application/x-pkcs7-mime; smime-type=Signed-Data", SMIME_OPAQUE_SIGNED),
        ("application/pkcs7-mime; smime-type=authEnveloped-data", SMIME_AUTH_ENVELOPED),
        ("application/pkcs7-mime; smime-type=compressed-data", SMIME_COMPRESSED),
        ("application/pkcs7-mime; name=smime.p7m", SMIME_UNKNOWN),
        ("application/octet-stream; name=smime.p7m", SMIME_UNKNOWN),
        ("application/octet-stream; name=smime.pdf", SMIME_NONE),
    ],
)
def test_smime_classification(impl: ModuleType, header: str, kind: str) -> None:
    body = "--B\n\nx\n--B\n\ny\n--B--\n" if "boundary" in header else "MIIB\n"
    msg = impl.scan(crlf(f"Content-Type: {header}\n\n{body}"))
    assert msg.smime == kind
    assert msg.root.smime == kind


@pytest.mark.parametrize("impl", IMPLS)
def test_smime_found_at_depth(impl: ModuleType) -> None:
    inner = "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\n\nMIIB"
    data = mixed("Content-Type: text/plain\n\nsee attached",
                 f"Content-Type: message/rfc822\n\nSubject: inner\n{inner}")
    msg = impl.scan(data)
    assert [(f.kind, f.path) for f in msg.smime_findings] == [(SMIME_ENVELOPED, (1, 0))]


# --- the API around the scanners -----------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_results_are_the_twins_types(impl: ModuleType) -> None:
    msg = impl.scan(mixed("\nx"))
    assert type(msg) is ScannedMessage
    assert {type(part) for part in msg.walk()} == {Part}


@pytest.mark.parametrize("impl", IMPLS)
def test_only_bytes(impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        impl.scan("text")


def test_error_reply_and_pickling() -> None:
    err = MimeError("5.6.0", "bad thing", 12)
    assert str(err) == "5.6.0 bad thing at offset 12"
    assert str(err.reply) == "554 5.6.0 bad thing"
    again = pickle.loads(pickle.dumps(err))  # noqa: S301 (our own bytes)
    assert (again.status, again.reason, again.offset) == ("5.6.0", "bad thing", 12)
    assert MimeError("5.3.4", "too big").reply.code == 552


@pytest.mark.parametrize("field", ["max_header_bytes", "max_header_count", "max_depth",
                                   "max_parts"])
def test_limits_are_validated(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ScanLimits(**{field: 0})
    with pytest.raises(ValueError, match="at most 100"):
        ScanLimits(max_depth=101)


def test_the_selected_implementation_is_reported() -> None:
    from gateway import native

    assert native.active("mimescan") == scan_module.IMPLEMENTATION
    assert scan_module.scan(b"A: b\r\n\r\n").header("a") == "b"


@pytest.mark.timeout(60)  # a hang guard: each input below is quadratic for a naive scanner
@pytest.mark.parametrize("impl", IMPLS)
def test_hostile_inputs_stay_linear(impl: ModuleType) -> None:
    near_misses = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\n" + (
        b"--Bx --B --B-\r\n" * 50_000) + b"--B--\r\n"
    assert len(impl.scan(near_misses).root.children) == 1
    folds = b"Subject: x" + b"\r\n y" * 20_000 + b"\r\n\r\n"
    assert len(impl.scan(folds).root.header("subject") or "") == 40_001
    comments = b"Content-Type: text/plain" + b"; (" * 30_000 + b"\r\n\r\n"
    assert impl.scan(comments).root.params == ()
    many = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + b"--B\r\n" * 5000
    assert error_of(impl, many).status == "5.3.4"
    no_line_ends = b"X: " + b"=?a?q?" * 15_000
    root = impl.scan(no_line_ends).root
    assert root.body_start == len(no_line_ends)
    assert root.decoded_header("x") == no_line_ends[3:].decode()
