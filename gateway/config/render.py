"""The defaults as a commented TOML file: `smimegate config --defaults` and deploy examples."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

from gateway.config.declare import section_type, settings_of
from gateway.config.types import HostPort


def _toml_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, HostPort | Path | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return _toml_value(str(value))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return "{ " + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value) + " }"
    if isinstance(value, tuple):
        if not value:
            return "[]"
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


_RULE_EXAMPLE = [
    "# for example:",
    "# [[policy.rules]]",
    '# name = "confidential"',
    '# subject_keyword = ["[confidential]"]',
    "# strip_subject_keyword = true",
    '# encrypt = "required"',
    '# certificate = "user-only"',
    '# cipher = "aes256-gcm"',
    '# fallback = "reject"',
]


def render_defaults(config_cls: type) -> str:
    """Every section and setting with its default, unit and meaning as comments."""
    lines: list[str] = []
    for section in dataclasses.fields(config_cls):
        lines.append(f"[{section.name}]")
        for info in settings_of(section_type(config_cls, section.name), section.name):
            note = info.meaning
            if info.unit:
                note += f" ({info.unit})"
            if info.choices:
                note += f"; one of: {', '.join(info.choices)}"
            lines.append(f"# {note}")
            name = info.key.split(".", 1)[1]
            if info.kind == "policy-rules":
                lines += _RULE_EXAMPLE
                continue
            value = _toml_value(info.default)
            if info.kind.endswith("-map") and value == "[]":
                value = "{}"
            lines.append(f"{name} = {value}")
        lines.append("")
    return "\n".join(lines)
