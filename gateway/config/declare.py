"""How a setting is declared: a frozen-dataclass field carrying kind, unit and meaning."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SettingInfo:
    """Everything known about one setting, read off its field."""

    key: str  # dotted: "smtp.listen"
    kind: str  # a key of gateway.config.types.CONVERTERS
    default: Any
    unit: str
    meaning: str
    choices: tuple[str, ...] | None
    minimum: float | None
    maximum: float | None


def setting(
    default: Any,
    kind: str,
    meaning: str,
    *,
    unit: str = "",
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """A dataclass field declaring one setting (the only place its default lives)."""
    meta = {"kind": kind, "unit": unit, "meaning": meaning, "choices": choices,
            "minimum": minimum, "maximum": maximum}
    return dataclasses.field(default=default, metadata=meta)


def settings_of(section_cls: type, prefix: str) -> Iterator[SettingInfo]:
    """The SettingInfo of each field of a section dataclass, in declaration order."""
    for f in dataclasses.fields(section_cls):
        m = f.metadata
        yield SettingInfo(
            key=f"{prefix}.{f.name}",
            kind=m["kind"],
            default=f.default,
            unit=m["unit"],
            meaning=m["meaning"],
            choices=m["choices"],
            minimum=m["minimum"],
            maximum=m["maximum"],
        )


def section_type(config_cls: type, name: str) -> type:
    """The section dataclass behind field `name` of a configuration class."""
    factory = next(f for f in dataclasses.fields(config_cls) if f.name == name).default_factory
    assert factory is not dataclasses.MISSING
    return type(factory())
