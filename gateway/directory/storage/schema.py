"""The directory's schema as numbered migrations, shared by SQLite and PostgreSQL.

A database records each migration applied in schema_migrations; opening a database
applies the missing ones in order, each in its own transaction, and refuses a database
written by a newer program. `{blob}` is the binary column type of the dialect.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "certificates, names, issuers, tokens", (
        """CREATE TABLE issuers (
            fingerprint TEXT PRIMARY KEY,
            der {blob} NOT NULL
        )""",
        """CREATE TABLE certificates (
            fingerprint TEXT PRIMARY KEY,
            der {blob} NOT NULL,
            chain TEXT NOT NULL,
            domain TEXT NOT NULL,
            names TEXT NOT NULL,
            serial TEXT NOT NULL,
            issuer_key_id TEXT NOT NULL,
            subject TEXT NOT NULL,
            issuer TEXT NOT NULL,
            common_name TEXT NOT NULL,
            not_before BIGINT NOT NULL,
            not_after BIGINT NOT NULL,
            usage TEXT NOT NULL,
            capabilities TEXT,
            cert_sha1 TEXT NOT NULL,
            subject_hash TEXT NOT NULL,
            issuer_hash TEXT NOT NULL,
            iands_hash TEXT NOT NULL,
            skid_hash TEXT NOT NULL,
            published_at BIGINT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
            revoked_at BIGINT,
            revocation_reason TEXT
        )""",
        "CREATE INDEX certificates_issuer_serial ON certificates (issuer_key_id, serial)",
        "CREATE INDEX certificates_domain ON certificates (domain)",
        "CREATE INDEX certificates_cert_sha1 ON certificates (cert_sha1)",
        "CREATE INDEX certificates_subject_hash ON certificates (subject_hash)",
        "CREATE INDEX certificates_issuer_hash ON certificates (issuer_hash)",
        "CREATE INDEX certificates_iands_hash ON certificates (iands_hash)",
        "CREATE INDEX certificates_skid_hash ON certificates (skid_hash)",
        "CREATE INDEX certificates_common_name ON certificates (common_name)",
        """CREATE TABLE certificate_names (
            name TEXT NOT NULL,
            fingerprint TEXT NOT NULL REFERENCES certificates (fingerprint),
            PRIMARY KEY (name, fingerprint)
        )""",
        """CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            domain TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            created_at BIGINT NOT NULL,
            revoked_at BIGINT
        )""",
        "CREATE INDEX tokens_domain ON tokens (domain)",
    )),
)

CURRENT_VERSION = MIGRATIONS[-1][0]

CREATE_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)"""


def statements(version: int, blob: str) -> tuple[str, ...]:
    for v, _, stmts in MIGRATIONS:
        if v == version:
            return tuple(s.format(blob=blob) for s in stmts)
    raise KeyError(version)
