"""One test body, two implementations: the pure-Python twin and the native module.

`implementations("canon", "gateway.mime._canon_py")` gives pytest params with ids
py-canon and c-canon. The native one is required unless SMIMEGATE_NO_EXTENSIONS=1, so a
broken build fails loudly instead of being skipped.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from gateway import native


def implementations(native_name: str, twin_module: str) -> list[Any]:
    params = [pytest.param(importlib.import_module(twin_module), id=f"py-{native_name}")]
    if not native.NO_EXTENSIONS:
        module = native.load(native_name)
        if module is None:
            raise RuntimeError(f"native module gateway._ext.{native_name} is not built")
        params.append(pytest.param(module, id=f"c-{native_name}"))
    return params
