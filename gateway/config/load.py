"""TOML → GatewayConfig / DirectoryConfig, naming the key of every problem."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from gateway.config.declare import SettingInfo, section_type, settings_of
from gateway.config.errors import ConfigError
from gateway.config.schema import DirectoryConfig, GatewayConfig
from gateway.config.types import CONVERTERS

C = TypeVar("C", GatewayConfig, DirectoryConfig)

# Kinds where an empty string means "not set" (None), e.g. admin.listen = "" turns it off.
_NULLABLE_KINDS = frozenset({"hostport", "path"})


def all_settings(config_cls: type) -> Iterator[SettingInfo]:
    """Every setting of a configuration class, section by section."""
    for section in dataclasses.fields(config_cls):
        yield from settings_of(section_type(config_cls, section.name), section.name)


def _convert(info: SettingInfo, raw: object) -> Any:
    if raw == "" and info.kind in _NULLABLE_KINDS:
        return None
    try:
        value = CONVERTERS[info.kind](raw)
    except ValueError as e:
        raise ConfigError(info.key, str(e)) from None
    if info.choices is not None and value not in info.choices:
        raise ConfigError(info.key, f"must be one of {', '.join(info.choices)}; got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if info.minimum is not None and value < info.minimum:
            raise ConfigError(info.key, f"must be at least {info.minimum:g}; got {value!r}")
        if info.maximum is not None and value > info.maximum:
            raise ConfigError(info.key, f"must be at most {info.maximum:g}; got {value!r}")
    return value


def parse_config(config_cls: type[C], data: Mapping[str, object], *,
                 overrides: Mapping[str, object] | None = None) -> C:
    """A frozen config from a parsed TOML mapping, with dotted-key overrides applied on top.

    Overrides (from command-line flags) take already-typed values or raw TOML values.
    """
    sections: dict[str, Any] = {}
    known_sections = {f.name for f in dataclasses.fields(config_cls)}
    for name in data:
        if name not in known_sections:
            raise ConfigError(name, f"unknown section; known: {', '.join(sorted(known_sections))}")
    for section in dataclasses.fields(config_cls):
        raw_section = data.get(section.name, {})
        if not isinstance(raw_section, dict):
            raise ConfigError(section.name, "expected a table ([" + section.name + "])")
        infos = {i.key.split(".", 1)[1]: i for i in settings_of(
            section_type(config_cls, section.name), section.name)}
        for key in raw_section:
            if key not in infos:
                raise ConfigError(f"{section.name}.{key}",
                                  f"unknown setting; [{section.name}] has: "
                                  f"{', '.join(infos)}")
        values = {name: _convert(info, raw_section[name])
                  for name, info in infos.items() if name in raw_section}
        sections[section.name] = section_type(config_cls, section.name)(**values)
    config = config_cls(**sections)
    for dotted, value in (overrides or {}).items():
        config = _override(config, dotted, value)
    return config


def _override(config: C, dotted: str, value: object) -> C:
    section_name, _, key = dotted.partition(".")
    info = next((i for i in all_settings(type(config)) if i.key == dotted), None)
    if info is None:
        raise ConfigError(dotted, "unknown setting")
    if isinstance(value, str | int | float | bool | list | dict):
        value = _convert(info, value)
    section = getattr(config, section_name)
    new_section = dataclasses.replace(section, **{key: value})
    return dataclasses.replace(config, **{section_name: new_section})


def _load(config_cls: type[C], path: Path | None, overrides: Mapping[str, object] | None) -> C:
    if path is None:
        return parse_config(config_cls, {}, overrides=overrides)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError("", f"cannot read: {e.strerror}", str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("", "is not UTF-8 text", str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"not valid TOML: {e}", str(path)) from None
    try:
        return parse_config(config_cls, data, overrides=overrides)
    except ConfigError as e:
        raise ConfigError(e.key, e.problem, str(path)) from None


def load_gateway_config(path: Path | None = None, *,
                        overrides: Mapping[str, object] | None = None) -> GatewayConfig:
    """gateway.toml (or the embedded defaults when path is None), with flag overrides."""
    return _load(GatewayConfig, path, overrides)


def load_directory_config(path: Path | None = None, *,
                          overrides: Mapping[str, object] | None = None) -> DirectoryConfig:
    """directory.toml (or the embedded defaults when path is None), with flag overrides."""
    return _load(DirectoryConfig, path, overrides)
