"""The storage interface of the directory, written once over three SQL primitives.

`Storage` is the contract (tests/test_directory_storage.py runs it against every
backend and ends with check_consistency). A backend supplies only how to run a query,
how to run statements in one transaction, and which errors mean "someone else got
there first"; every query is written here once, with `?` placeholders.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from gateway.directory.errors import Conflict, StorageError
from gateway.directory.records import CertRecord, TokenRecord, fingerprint, make_record
from gateway.directory.storage.schema import CREATE_VERSION_TABLE, CURRENT_VERSION, MIGRATIONS

Row = tuple[Any, ...]
Statement = tuple[str, tuple[Any, ...]]

CERT_COLUMNS = ("fingerprint", "der", "chain", "domain", "names", "serial", "issuer_key_id",
                "subject", "issuer", "common_name", "not_before", "not_after", "usage",
                "capabilities", "cert_sha1", "subject_hash", "issuer_hash", "iands_hash",
                "skid_hash", "published_at", "state", "revoked_at", "revocation_reason")
# Built from the constant column list above, never from input (hence the noqa).
_SELECT = "SELECT " + ", ".join("c." + c for c in CERT_COLUMNS) + " FROM certificates c"  # noqa: S608
_INSERT = ("INSERT INTO certificates (" + ", ".join(CERT_COLUMNS) + ") VALUES ("  # noqa: S608
           + ", ".join("?" for _ in CERT_COLUMNS) + ") ON CONFLICT (fingerprint) DO NOTHING")

# RFC 4387 attribute → the column holding its search key.
SEARCH_COLUMNS = {"certHash": "cert_sha1", "sHash": "subject_hash", "iHash": "issuer_hash",
                  "iAndSHash": "iands_hash", "sKIDHash": "skid_hash", "name": "common_name"}

MAX_BATCH = 1000  # names per find_many; the API allows fewer


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


def _row_to_record(row: Row) -> CertRecord:
    (fp, der, chain, domain, names, serial, ikid, subject, issuer, cn, nb, na, usage, caps,
     sha1, sh, ih, iash, skh, pub, state, rat, reason) = row
    return CertRecord(
        fingerprint=fp, der=bytes(der), chain=_split(chain), domain=domain, names=_split(names),
        serial=serial, issuer_key_id=ikid, subject=subject, issuer=issuer, common_name=cn,
        not_before=int(nb), not_after=int(na), usage=_split(usage),
        capabilities=None if caps is None else _split(caps), cert_sha1=sha1,
        subject_hash=sh, issuer_hash=ih, iands_hash=iash, skid_hash=skh,
        published_at=int(pub), state=state, revoked_at=None if rat is None else int(rat),
        revocation_reason=reason)


def _record_to_row(r: CertRecord) -> tuple[Any, ...]:
    return (r.fingerprint, r.der, " ".join(r.chain), r.domain, " ".join(r.names), r.serial,
            r.issuer_key_id, r.subject, r.issuer, r.common_name, r.not_before, r.not_after,
            " ".join(r.usage), None if r.capabilities is None else " ".join(r.capabilities),
            r.cert_sha1, r.subject_hash, r.issuer_hash, r.iands_hash, r.skid_hash,
            r.published_at, r.state, r.revoked_at, r.revocation_reason)


class Storage(ABC):
    """Certificates, their issuers, their names, and the hashed write tokens."""

    blob_type = "BLOB"
    kind = "sql"

    def __init__(self) -> None:
        self._issuers: dict[str, bytes] = {}  # issuers never change: cached for good
        self.observe: Callable[[str, float], None] | None = None  # storage latency hook

    # -- the primitives a backend supplies -------------------------------------------
    @abstractmethod
    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]: ...

    @abstractmethod
    async def _transaction(self, statements: Sequence[Statement]) -> list[int]:
        """Run statements in one transaction; the row count of each. A unique-key
        collision or a concurrent schema change raises Conflict, other failures
        StorageError; either way nothing was written."""

    @abstractmethod
    async def close(self) -> None: ...

    async def _timed_query(self, op: str, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        start = time.perf_counter()
        try:
            return await self._query(sql, params)
        finally:
            if self.observe is not None:
                self.observe(op, time.perf_counter() - start)

    async def _timed_tx(self, op: str, statements: Sequence[Statement]) -> list[int]:
        start = time.perf_counter()
        try:
            return await self._transaction(statements)
        finally:
            if self.observe is not None:
                self.observe(op, time.perf_counter() - start)

    # -- schema ------------------------------------------------------------------------
    async def schema_version(self) -> int:
        rows = await self._query("SELECT MAX(version) FROM schema_migrations")
        return int(rows[0][0] or 0) if rows else 0

    async def migrate(self) -> int:
        """Apply missing migrations in order; the version reached."""
        with contextlib.suppress(Conflict):  # another process created it just now
            await self._transaction([(CREATE_VERSION_TABLE, ())])
        for _ in range(len(MIGRATIONS) + 3):
            version = await self.schema_version()
            if version > CURRENT_VERSION:
                raise StorageError(f"the database is at schema version {version}, newer than "
                                   f"this program's {CURRENT_VERSION}: upgrade smimegate")
            if version == CURRENT_VERSION:
                return version
            number, description, stmts = MIGRATIONS[version]
            todo: list[Statement] = [(s.format(blob=self.blob_type), ()) for s in stmts]
            todo.append(("INSERT INTO schema_migrations (version, description, applied_at) "
                         "VALUES (?, ?, ?)", (number, description, int(time.time()))))
            try:
                await self._transaction(todo)
            except Conflict:
                continue  # another process migrated at the same moment: read again
        raise StorageError("schema migration did not converge")

    # -- certificates --------------------------------------------------------------------
    async def put_certificate(self, record: CertRecord, issuers: Sequence[bytes]) -> bool:
        """Store record (and the DER of its issuers); False if it was already there."""
        stmts: list[Statement] = [
            ("INSERT INTO issuers (fingerprint, der) VALUES (?, ?) "
             "ON CONFLICT (fingerprint) DO NOTHING", (fingerprint(der), der))
            for der in issuers]
        stmts.append((_INSERT, _record_to_row(record)))
        stmts += [("INSERT INTO certificate_names (name, fingerprint) VALUES (?, ?) "
                   "ON CONFLICT (name, fingerprint) DO NOTHING", (n, record.fingerprint))
                  for n in record.names]
        counts = await self._timed_tx("publish", stmts)
        for der in issuers:
            self._issuers[fingerprint(der)] = der
        return counts[len(issuers)] == 1

    async def get_certificate(self, fp: str) -> CertRecord | None:
        rows = await self._timed_query("get", _SELECT + " WHERE c.fingerprint = ?", (fp,))
        return _row_to_record(rows[0]) if rows else None

    async def find(self, name: str, *, at: int | None = None) -> list[CertRecord]:
        """Current certificates listed under name (a domain or an address)."""
        return (await self.find_many([name], at=at)).get(name, [])

    async def find_many(self, names: Sequence[str], *,
                        at: int | None = None) -> dict[str, list[CertRecord]]:
        """Current (active, unexpired) certificates per name; names with none are absent."""
        if not names:
            return {}
        if len(names) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} names per query")
        at = int(time.time()) if at is None else at
        marks = ", ".join("?" for _ in names)
        rows = await self._timed_query(
            "lookup",
            "SELECT n.name, " + _SELECT[len("SELECT "):] +
            " JOIN certificate_names n ON n.fingerprint = c.fingerprint"
            f" WHERE n.name IN ({marks}) AND c.state = 'active' AND c.not_after >= ?"
            " AND c.not_before <= ? ORDER BY n.name, c.not_after DESC, c.fingerprint",
            (*names, at, at))
        out: dict[str, list[CertRecord]] = {}
        for row in rows:
            out.setdefault(row[0], []).append(_row_to_record(row[1:]))
        return out

    async def find_by_serial(self, issuer_key_id: str, serial: str) -> CertRecord | None:
        """The certificate an OCSP CertID names, active or revoked."""
        rows = await self._timed_query(
            "ocsp", _SELECT + " WHERE c.issuer_key_id = ? AND c.serial = ?",
            (issuer_key_id, serial))
        return _row_to_record(rows[0]) if rows else None

    async def search(self, attribute: str, value: str, *, limit: int = 100) -> list[CertRecord]:
        """Active certificates by RFC 4387 attribute (certHash, sHash, ..., name, email)."""
        if attribute in ("email", "uri"):
            sql = (_SELECT + " JOIN certificate_names n ON n.fingerprint = c.fingerprint"
                   " WHERE n.name = ? AND c.state = 'active'")
        elif attribute in SEARCH_COLUMNS:
            sql = _SELECT + f" WHERE c.{SEARCH_COLUMNS[attribute]} = ? AND c.state = 'active'"
        else:
            raise ValueError(f"unknown search attribute {attribute!r}")
        rows = await self._timed_query("search", sql + f" ORDER BY c.fingerprint LIMIT {limit:d}",
                                       (value,))
        return [_row_to_record(r) for r in rows]

    async def revoke(self, fp: str, at: int, reason: str) -> CertRecord | None:
        """Mark fp revoked (the first revocation's time and reason stay); None if unknown."""
        await self._timed_tx("revoke", [(
            "UPDATE certificates SET state = 'revoked', revoked_at = ?, revocation_reason = ?"
            " WHERE fingerprint = ? AND state = 'active'", (at, reason, fp))])
        return await self.get_certificate(fp)

    async def issuer(self, fp: str) -> bytes | None:
        if fp not in self._issuers:
            rows = await self._query("SELECT der FROM issuers WHERE fingerprint = ?", (fp,))
            if not rows:
                return None
            self._issuers[fp] = bytes(rows[0][0])
        return self._issuers[fp]

    async def all_issuers(self) -> list[bytes]:
        rows = await self._query("SELECT fingerprint, der FROM issuers ORDER BY fingerprint")
        for fp, der in rows:
            self._issuers[fp] = bytes(der)
        return [bytes(r[1]) for r in rows]

    async def counts(self, *, at: int | None = None) -> dict[str, int]:
        """Certificates by state: active, expired (active but past notAfter), revoked."""
        at = int(time.time()) if at is None else at
        rows = await self._query(
            "SELECT state, SUM(CASE WHEN not_after < ? THEN 1 ELSE 0 END), COUNT(*) "
            "FROM certificates GROUP BY state", (at,))
        out = {"active": 0, "expired": 0, "revoked": 0}
        for state, expired, n in rows:
            if state == "active":
                out["expired"] += int(expired)
                out["active"] += int(n) - int(expired)
            else:
                out[state] += int(n)
        return out

    # -- tokens ------------------------------------------------------------------------
    async def add_token(self, token: TokenRecord) -> None:
        await self._timed_tx("token", [(
            "INSERT INTO tokens (id, domain, hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?)",
            (token.id, token.domain, token.hash, token.created_at, token.revoked_at))])

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        rows = await self._timed_query(
            "token", "SELECT id, domain, hash, created_at, revoked_at FROM tokens WHERE hash = ?",
            (token_hash,))
        return TokenRecord(*rows[0]) if rows else None

    async def list_tokens(self, domain: str | None = None) -> list[TokenRecord]:
        sql = "SELECT id, domain, hash, created_at, revoked_at FROM tokens"
        params: tuple[Any, ...] = ()
        if domain is not None:
            sql, params = sql + " WHERE domain = ?", (domain,)
        return [TokenRecord(*r) for r in await self._query(sql + " ORDER BY created_at, id",
                                                           params)]

    async def revoke_tokens(self, at: int, *, token_id: str | None = None,
                            domain: str | None = None) -> int:
        """Revoke one token by id, or every token of a domain; how many were revoked."""
        if (token_id is None) == (domain is None):
            raise ValueError("give exactly one of token_id and domain")
        column, value = ("id", token_id) if token_id is not None else ("domain", domain)
        counts = await self._timed_tx("token", [(
            f"UPDATE tokens SET revoked_at = ? WHERE {column} = ? AND revoked_at IS NULL",  # noqa: S608
            (at, value))])
        return counts[0]

    # -- consistency ---------------------------------------------------------------------
    async def check_consistency(self) -> list[str]:
        """Every invariant the data must satisfy; the problems found (empty when sound)."""
        from cryptography import x509

        problems: list[str] = []
        names: dict[str, set[str]] = {}
        for name, fp in await self._query("SELECT name, fingerprint FROM certificate_names"):
            names.setdefault(fp, set()).add(name)
        issuers = {fp for (fp,) in await self._query("SELECT fingerprint FROM issuers")}
        for fp, der in await self._query("SELECT fingerprint, der FROM issuers"):
            if fingerprint(bytes(der)) != fp:
                problems.append(f"issuer {fp}: fingerprint does not match its DER")
        seen: set[str] = set()
        for row in await self._query(_SELECT):
            rec = _row_to_record(row)
            seen.add(rec.fingerprint)
            if fingerprint(rec.der) != rec.fingerprint:
                problems.append(f"{rec.fingerprint}: fingerprint does not match its DER")
            if set(rec.names) != names.get(rec.fingerprint, set()):
                problems.append(f"{rec.fingerprint}: names {rec.names} but index has "
                                f"{sorted(names.get(rec.fingerprint, set()))}")
            for c in rec.chain:
                if c not in issuers:
                    problems.append(f"{rec.fingerprint}: issuer {c} missing")
            if (rec.state == "revoked") != (rec.revoked_at is not None
                                            and rec.revocation_reason is not None):
                problems.append(f"{rec.fingerprint}: state {rec.state} disagrees with its "
                                "revocation time and reason")
            try:
                cert = x509.load_der_x509_certificate(rec.der)
            except ValueError:
                problems.append(f"{rec.fingerprint}: DER does not parse")
                continue
            chain_ders = [self._issuers.get(c) or await self.issuer(c) for c in rec.chain]
            chain = tuple(x509.load_der_x509_certificate(d) for d in chain_ders if d)
            if chain and len(chain) == len(rec.chain):
                again = make_record(cert, (*chain, chain[-1]), rec.domain, rec.published_at)
                if (again.serial, again.names, again.issuer_key_id, again.cert_sha1) != (
                        rec.serial, rec.names, rec.issuer_key_id, rec.cert_sha1):
                    problems.append(f"{rec.fingerprint}: stored facts differ from the "
                                    "certificate's")
        for fp in names:
            if fp not in seen:
                problems.append(f"name index points at missing certificate {fp}")
        return problems
