"""The outbox's tables, for SQLite and PostgreSQL, and their versioned migrations.

One DDL text serves both databases: the placeholders (``{pk}``, ``{blob}``,
``{real}``, ``{bigint}`` and the table names) are filled per backend by
:func:`ddl`. ``MIGRATIONS[n - 1]`` takes a database from version ``n - 1`` to
``n``; a later release appends to the tuple and never edits an earlier step.
The stores apply what is missing under a lock (SQLite ``BEGIN IMMEDIATE``,
PostgreSQL an advisory lock), so several processes opening a new outbox at
once create it once.

SQLite tables carry an ``outbox_`` prefix because they may share a file with
the application's own tables (``enqueue(connection=...)``); on PostgreSQL they
live in their own schema (``reliable_smtp`` by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["MIGRATIONS", "POSTGRES", "SCHEMA_VERSION", "SQLITE", "Dialect", "ddl"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialect:
    """What differs between the two databases in the outbox's DDL."""

    pk: str
    blob: str
    real: str
    bigint: str

    def tables(self, prefix: str) -> Mapping[str, str]:
        return {
            "entries": f"{prefix}entries",
            "recipients": f"{prefix}recipients",
            "limiters": f"{prefix}limiters",
            "slots": f"{prefix}slots",
            "version": f"{prefix}schema_version",
            # Index names: on PostgreSQL an index lives in its table's schema, so
            # DROP INDEX names it there; SQLite's are unqualified.
            "indexes": prefix if prefix.endswith(".") else "",
        }


SQLITE = Dialect(
    # AUTOINCREMENT: an id is never reused after a purge, so an id in a log or a
    # ticket always names the same message.
    pk="INTEGER PRIMARY KEY AUTOINCREMENT",
    blob="BLOB",
    real="REAL",
    bigint="INTEGER",
)
POSTGRES = Dialect(
    pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    blob="BYTEA",
    real="DOUBLE PRECISION",
    bigint="BIGINT",
)

_V1 = (
    """CREATE TABLE {entries} (
        id {pk},
        idempotency_key TEXT UNIQUE,
        message_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        content {blob} NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL,
        due_at {real},
        expires_at {real} NOT NULL,
        lease_owner TEXT,
        lease_token TEXT,
        lease_expires_at {real},
        last_error TEXT NOT NULL DEFAULT '',
        metadata TEXT NOT NULL DEFAULT '{{}}'
    )""",
    # What claim() scans: only the entries that can be due, in due order.
    "CREATE INDEX outbox_entries_due ON {entries} (due_at) WHERE state IN ('queued', 'deferred')",
    # What recover() scans: only leased entries.
    "CREATE INDEX outbox_entries_leased ON {entries} (lease_expires_at) WHERE state = 'sending'",
    # list(state=...), stats() and purge().
    "CREATE INDEX outbox_entries_state ON {entries} (state, updated_at)",
    """CREATE TABLE {recipients} (
        entry_id {bigint} NOT NULL REFERENCES {entries} (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        address TEXT NOT NULL,
        state TEXT NOT NULL,
        outcome TEXT,
        reply_code INTEGER,
        enhanced_code TEXT,
        reply_text TEXT,
        phase TEXT,
        explanation TEXT NOT NULL DEFAULT '',
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at {real},
        dot_at {real},
        dot_token TEXT,
        updated_at {real} NOT NULL,
        PRIMARY KEY (entry_id, position)
    )""",
    # The shared rate limit of every worker of an outbox (GCRA: one row per limiter).
    """CREATE TABLE {limiters} (
        name TEXT PRIMARY KEY,
        next_free_at {real} NOT NULL
    )""",
)

# Version 2: the shared limits (OutboxLimits). A limiter row keeps, besides its GCRA
# theoretical arrival time, the rate a THROTTLED reply lowered it to and when, so one
# worker's throttle slows every worker; a slot row is one of the outbox's shared SMTP
# connections, leased to a worker (a dead worker's slots come back when they expire).
_V2 = (
    "ALTER TABLE {limiters} ADD COLUMN lowered_rate {real}",
    "ALTER TABLE {limiters} ADD COLUMN lowered_at {real}",
    """CREATE TABLE {slots} (
        name TEXT NOT NULL,
        slot INTEGER NOT NULL,
        owner TEXT,
        expires_at {real},
        PRIMARY KEY (name, slot)
    )""",
)

# Version 3: claim()'s ORDER BY due_at, id comes straight from the index. With only
# (due_at), PostgreSQL read every due entry and sorted them for each claim (a top-N sort:
# 3 ms at 5,000 queued, growing with the backlog a day-long outage leaves); SQLite's
# (due_at) index already ends with the rowid, so nothing changes there but the name's
# columns.
_V3 = (
    "DROP INDEX {indexes}outbox_entries_due",
    "CREATE INDEX outbox_entries_due ON {entries} (due_at, id) "
    "WHERE state IN ('queued', 'deferred')",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3)
SCHEMA_VERSION = len(MIGRATIONS)

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS {version} (version INTEGER NOT NULL)"


def ddl(statement: str, dialect: Dialect, tables: Mapping[str, str]) -> str:
    """``statement`` with the dialect's types and the backend's table names."""
    return statement.format(
        pk=dialect.pk, blob=dialect.blob, real=dialect.real, bigint=dialect.bigint, **tables
    )
