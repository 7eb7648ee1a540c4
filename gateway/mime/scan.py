"""The MIME scanner: native (gateway._ext.mimescan) when built, else the pure-Python twin.

Callers use `scan(data, limits=...)`, which returns a ScannedMessage (gateway.mime.scanned)
or raises MimeError; both implementations give the same results and the same errors.
"""

from __future__ import annotations

from typing import Protocol

from gateway import native
from gateway.mime import _scan_py
from gateway.mime.scanned import (
    DEFAULT_LIMITS,
    Defect,
    HeaderField,
    MimeError,
    Part,
    ScanLimits,
    ScannedMessage,
    SmimeFinding,
)

__all__ = [
    "DEFAULT_LIMITS",
    "IMPLEMENTATION",
    "Defect",
    "HeaderField",
    "MimeError",
    "Part",
    "ScanLimits",
    "ScannedMessage",
    "SmimeFinding",
    "scan",
]


class _Scan(Protocol):
    def __call__(self, data: bytes, *, limits: ScanLimits = ...) -> ScannedMessage: ...


_native = native.load("mimescan")

scan: _Scan
if _native is not None:
    scan = _native.scan
    IMPLEMENTATION = "native"
else:
    scan = _scan_py.scan
    IMPLEMENTATION = "python"
