"""Golden vectors: tests/vectors/*.eml against their *.json, on both scanners, and
against Python's `email` package wherever the RFCs and `email` agree.

Regenerate the expected files after a deliberate change (then read the diff!):
    .venv/bin/python -m tests.test_mimescan_vectors --regen
Where each vector comes from is in tests/vectors/README.md.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gateway.mime import _scan_py
from gateway.mime.addresses import addresses
from gateway.mime.decode import decoded_bytes, decoded_text
from gateway.mime.scanned import MimeError, ScannedMessage
from tests.impls import implementations

pytestmark = pytest.mark.native
IMPLS = implementations("mimescan", "gateway.mime._scan_py")
VECTORS = Path(__file__).parent / "vectors"
EML = sorted(VECTORS.glob("*.eml"))
BIG = 1 << 30


def _error(exc: MimeError) -> list[Any]:
    return [exc.status, exc.reason, exc.offset]


def summary(msg: ScannedMessage) -> dict[str, Any]:
    """Everything a vector pins down, as JSON-able data."""
    parts = []
    for part in msg.walk():
        entry: dict[str, Any] = {
            "path": list(part.path),
            "content_type": part.content_type,
            "params": [list(p) for p in part.params],
            "transfer_encoding": part.transfer_encoding,
            "disposition": part.disposition,
            "filename": part.filename,
            "fields": [f.name for f in part.header_fields()],
            "header": [part.start, part.header_end],
            "body": [part.body_start, part.end],
            "smime": part.smime,
        }
        if not part.children and not part.is_multipart:
            try:
                raw = decoded_bytes(part, BIG).data
                entry["decoded"] = {"length": len(raw),
                                    "sha256": hashlib.sha256(raw).hexdigest()}
                if part.maintype == "text":
                    entry["text"] = decoded_text(part, 120).text
            except MimeError as exc:
                entry["decoded"] = {"error": _error(exc)}
        parts.append(entry)
    try:
        addrs: Any = [[a.display_name, a.addr_spec, a.group]
                      for a in addresses(msg.root, "from", "to", "cc")]
    except MimeError as exc:
        addrs = {"error": _error(exc)}
    return {
        "subject": msg.decoded_header("subject"),
        "addresses": addrs,
        "smime": [[f.kind, list(f.path)] for f in msg.smime_findings],
        "defects": [[d.offset, d.reason] for d in msg.defects],
        "parts": parts,
    }


def result(impl: ModuleType, data: bytes) -> dict[str, Any]:
    try:
        return summary(impl.scan(data))
    except MimeError as exc:
        return {"error": _error(exc)}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("path", EML, ids=[p.stem for p in EML])
def test_vector(impl: ModuleType, path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    got = result(impl, path.read_bytes())
    assert got == expected["result"]


def test_every_vector_has_a_note_and_errors_are_named_so() -> None:
    assert len(EML) >= 15
    for path in EML:
        expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        assert expected["note"].strip()
        failed = "error" in expected["result"] or any(
            "error" in part.get("decoded", {}) for part in expected["result"]["parts"])
        assert failed == path.stem.startswith("error_"), path.stem


# --- agreement with the standard library --------------------------------------------

AGREE = [p for p in EML if not p.stem.startswith("error_")]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("path", AGREE, ids=[p.stem for p in AGREE])
def test_vector_matches_email_package(impl: ModuleType, path: Path) -> None:
    data = path.read_bytes()
    ours = impl.scan(data)
    theirs = email.message_from_bytes(data, policy=email.policy.default)
    mine = list(ours.walk())
    std = list(theirs.walk())
    assert [p.content_type for p in mine] == [p.get_content_type() for p in std]
    for part, ref in zip(mine, std, strict=True):
        assert part.filename == ref.get_filename()
        assert part.param("boundary") == ref.get_param("boundary")
        if part.maintype == "text":
            assert part.charset == (ref.get_content_charset() or "us-ascii")
        if not part.children and not part.is_multipart:
            assert decoded_bytes(part, BIG).data == ref.get_payload(decode=True)
    raw_subject = ours.root.header_fields("subject")[0].raw_value
    if bytes(raw_subject).isascii():  # the bytes parser of `email` does not do RFC 6532
        assert ours.decoded_header("subject") == str(theirs["subject"])
    for name in ("from", "to", "cc"):
        if theirs[name] is None or not bytes(ours.root.header_fields(name)[0].raw_value).isascii():
            continue
        expect = [(a.display_name, a.username, a.domain) for a in theirs[name].addresses]
        got = [(a.display_name, a.local_part, a.domain) for a in addresses(ours.root, name)]
        assert got == expect


def _regen() -> None:
    """Rewrite every expected result from the twin, keeping each vector's note."""
    for path in EML:
        target = path.with_suffix(".json")
        note = "FILL IN: where this vector comes from"
        if target.exists():
            note = json.loads(target.read_text(encoding="utf-8"))["note"]
        out = {"note": note, "result": result(_scan_py, path.read_bytes())}
        target.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print("wrote", target.name)


if __name__ == "__main__" and "--regen" in sys.argv:
    _regen()
