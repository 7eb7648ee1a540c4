"""SQLite backend: the embedded default, one file in the data folder, WAL journal.

Queries run on the event loop's thread: a point lookup in SQLite takes microseconds,
less than handing it to a thread would. WAL lets `smimegate directory token create`
write while the server reads; busy_timeout makes the rare writer wait, not fail.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.directory.errors import Conflict, StorageError
from gateway.directory.storage.base import Row, Statement, Storage

DB_NAME = "directory.sqlite3"


class SqliteStorage(Storage):
    blob_type = "BLOB"
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a publish or revocation acknowledged survives power loss.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"{path}: cannot open SQLite database: {e}") from None

    @classmethod
    def in_folder(cls, folder: Path) -> SqliteStorage:
        return cls(folder / DB_NAME)

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []  # before the first migration
            raise StorageError(f"SQLite: {e}") from None

    async def _transaction(self, statements: Sequence[Statement]) -> list[int]:
        counts = []
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StorageError(f"SQLite: {e}") from None
        try:
            for sql, params in statements:
                counts.append(self._db.execute(sql, params).rowcount)
            self._db.execute("COMMIT")
        except BaseException as e:
            self._db.execute("ROLLBACK")
            if isinstance(e, sqlite3.IntegrityError) or (
                    isinstance(e, sqlite3.OperationalError) and "already exists" in str(e)):
                raise Conflict(f"SQLite: {e}") from None
            if isinstance(e, sqlite3.Error):
                raise StorageError(f"SQLite: {e}") from None
            raise
        return counts

    async def close(self) -> None:
        self._db.close()
