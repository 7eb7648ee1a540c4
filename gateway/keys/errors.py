"""The one error loading key material raises: which file, and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class KeyMaterialError(ValueError):
    """A key or certificate file is missing, unreadable, malformed or too exposed."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
