"""The one error a configuration problem raises: it names the key (or the file)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is unknown, has the wrong type or an impossible value."""

    def __init__(self, key: str, problem: str, source: str = "") -> None:
        self.key = key
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")
