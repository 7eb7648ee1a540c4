"""CliError: a message for stderr and the exit status it becomes."""

from __future__ import annotations

USAGE = 2  # bad usage or bad input
REFUSED = 1  # the operation ran and said no (e.g. a signature did not verify)


class CliError(Exception):
    def __init__(self, message: str, status: int = USAGE) -> None:
        super().__init__(message)
        self.status = status
