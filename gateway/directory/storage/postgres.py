"""PostgreSQL backend (psycopg 3, async, pooled), for directories that scale out.

Any number of directory replicas can share one database (DESIGN.md, past one machine).
Placeholders are written `?` once in base.py and become psycopg's `%s` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.directory.errors import Conflict, StorageError
from gateway.directory.storage.base import Row, Statement, Storage

try:
    import psycopg
    import psycopg_pool
except ImportError:  # pragma: no cover - the postgres extra is not installed
    psycopg = None  # type: ignore[assignment]
    psycopg_pool = None  # type: ignore[assignment]


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class PostgresStorage(Storage):
    blob_type = "BYTEA"
    kind = "postgresql"

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 8) -> None:
        super().__init__()
        if psycopg is None:
            raise StorageError("PostgreSQL needs psycopg: pip install 'smimegate[postgres]'")
        self.url = url
        self._pool = psycopg_pool.AsyncConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False, timeout=10.0,
            kwargs={"autocommit": True})

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=10.0)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as e:
            raise StorageError(f"cannot connect to PostgreSQL: {e}") from None

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(_pg(sql), params)
                return await cur.fetchall()
        except psycopg.errors.UndefinedTable:
            return []  # before the first migration
        except (psycopg.Error, psycopg_pool.PoolTimeout) as e:
            raise StorageError(f"PostgreSQL: {e}") from None

    async def _transaction(self, statements: Sequence[Statement]) -> list[int]:
        counts = []
        try:
            async with self._pool.connection() as conn, conn.transaction():
                for sql, params in statements:
                    cur = await conn.execute(_pg(sql), params)
                    counts.append(cur.rowcount)
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable,
                psycopg.errors.DuplicateObject) as e:
            raise Conflict(f"PostgreSQL: {e}") from None
        except (psycopg.Error, psycopg_pool.PoolTimeout) as e:
            raise StorageError(f"PostgreSQL: {e}") from None
        return counts

    async def close(self) -> None:
        await self._pool.close()
