"""ApiError: what went wrong, as the HTTP status and JSON body it becomes."""

from __future__ import annotations


class ApiError(Exception):
    """An answer other than success: status, a short machine code and a sentence."""

    def __init__(self, status: int, code: str, reason: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"error": self.code, "reason": self.reason, "status": self.status}


class StorageError(Exception):
    """The database refused or is unreachable; becomes 503 at the edge."""


class Conflict(StorageError):
    """A write collided with an existing row (a unique key, a concurrent migration)."""
