"""Directory storage: one interface (base.Storage), SQLite and PostgreSQL behind it."""

from __future__ import annotations

from pathlib import Path

from gateway.directory.errors import StorageError
from gateway.directory.storage.base import Storage
from gateway.directory.storage.sqlite import SqliteStorage

__all__ = ["SqliteStorage", "Storage", "StorageError", "open_storage"]


async def open_storage(data: Path, database_url: str = "") -> Storage:
    """The configured backend, opened and migrated to the current schema."""
    storage: Storage
    if database_url:
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise StorageError(f"database_url must start with postgresql://, got "
                               f"{database_url.split(':', 1)[0]!r}")
        from gateway.directory.storage.postgres import PostgresStorage

        pg = PostgresStorage(database_url)
        await pg.open()
        storage = pg
    else:
        storage = SqliteStorage.in_folder(data)
    try:
        await storage.migrate()
    except BaseException:
        await storage.close()
        raise
    return storage
