"""Value types of settings and how each is read from TOML.

A converter takes the raw TOML value and returns the typed one or raises ValueError
with a message for the operator; the loader adds the key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class HostPort:
    """A host (name or address) and a TCP port, written HOST:PORT or [V6]:PORT."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_hostport(text: str) -> HostPort:
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not m:
        raise ValueError(f"expected HOST:PORT or [IPV6]:PORT, got {text!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0..65535")
    return HostPort(host, port)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
               "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0,
                   "d": 86400.0}


def parse_size(value: object) -> int:
    """Bytes, from an integer or a string such as "10MB" (binary multiples)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    raise ValueError(f"expected a size such as 10485760 or \"10MB\", got {value!r}")


def parse_duration(value: object) -> float:
    """Seconds, from a number or a string such as "30s", "5m", "250ms", "5d"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value)
        if m and m.group(2) in _DURATION_UNITS:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"expected a duration such as 30, \"30s\", \"5m\" or \"250ms\", got {value!r}")


def parse_network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"expected a network such as 10.0.0.0/8 or ::1/128, got {text!r}") from None


def _expect(kind: type, name: str) -> Callable[[object], Any]:
    def check(value: object) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"expected {name}, got {type(value).__name__} {value!r}")
        return value

    return check


def _str_then(parse: Callable[[str], Any], name: str) -> Callable[[object], Any]:
    def conv(value: object) -> Any:
        return parse(_expect(str, name)(value))

    return conv


def _list_of(item: Callable[[object], Any]) -> Callable[[object], Any]:
    def conv(value: object) -> Any:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {type(value).__name__} {value!r}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except ValueError as e:
                raise ValueError(f"item {i}: {e}") from None
        return tuple(out)

    return conv


def _map_of(item: Callable[[object], Any]) -> Callable[[object], Any]:
    def conv(value: object) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {type(value).__name__} {value!r}")
        out = {}
        for k, v in value.items():
            try:
                out[str(k).lower()] = item(v)
            except ValueError as e:
                raise ValueError(f"entry {k!r}: {e}") from None
        return tuple(sorted(out.items()))

    return conv


def _float(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")


def _policy_rules(value: object) -> Any:
    # Imported here: policy depends on config types, not the other way round at import.
    from gateway.policy.rules import PolicyError, compile_rules

    try:
        return compile_rules(value)
    except PolicyError as e:
        raise ValueError(str(e)) from None


# How each declared kind is read. "kind" is what a Setting says it is.
CONVERTERS: dict[str, Callable[[object], Any]] = {
    "str": _expect(str, "a string"),
    "int": _expect(int, "an integer"),
    "float": _float,
    "bool": _expect(bool, "true or false"),
    "path": _str_then(Path, "a path"),
    "size": parse_size,
    "duration": parse_duration,
    "hostport": _str_then(parse_hostport, "HOST:PORT"),
    "str-list": _list_of(_expect(str, "a string")),
    "path-list": _list_of(_str_then(Path, "a path")),
    "network-list": _list_of(_str_then(parse_network, "a network")),
    "hostport-list": _list_of(_str_then(parse_hostport, "HOST:PORT")),
    "hostport-map": _map_of(_str_then(parse_hostport, "HOST:PORT")),
    "str-map": _map_of(_expect(str, "a string")),
    "policy-rules": _policy_rules,
}
