"""The one place that decides whether native (Cython) modules are used.

Every module in _native/ has a pure-Python twin that is its specification. Setting
SMIMEGATE_NO_EXTENSIONS=1 forces the twins; otherwise the native module is used when it
was built. Nothing else in the package reads this environment variable.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS: bool = os.environ.get("SMIMEGATE_NO_EXTENSIONS", "") not in ("", "0")


def load(name: str) -> ModuleType | None:
    """The compiled gateway._ext.<name>, or None when it is disabled or not built."""
    if NO_EXTENSIONS:
        return None
    try:
        return importlib.import_module(f"gateway._ext.{name}")
    except ImportError:
        return None


def active(name: str) -> str:
    """'native' or 'python': which implementation of <name> this process runs."""
    return "python" if load(name) is None else "native"
