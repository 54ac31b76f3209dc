"""The outbox on PostgreSQL, through psycopg 3: many workers on many machines.

* Tables live in their own schema (``reliable_smtp``; ``?schema=`` in the URL
  changes it), so they never collide with the application's.
* ``claim`` takes rows with ``FOR UPDATE SKIP LOCKED``: workers never wait on
  each other and never take the same entry.
* ``enqueue`` sends ``NOTIFY reliable_smtp_outbox`` (payload: the schema) inside
  its transaction, so it fires on commit and a listening worker wakes at once;
  the worker keeps a poll as the fallback, so a lost notification only delays.
* Connections are in autocommit mode; every write is an explicit transaction.
* The password never leaves the connection string: messages show the URL
  redacted.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._errors import ConfigurationError
from .errors import OutboxUnavailableError
from .schedule import OutboxSchedule
from .schema import POSTGRES
from .sql import SQLStore
from .store import OUTBOX_URL_VARIABLE, redact_url

try:
    import psycopg
    from psycopg.pq import TransactionStatus
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]

__all__ = ["NOTIFY_CHANNEL", "PostgresStore"]

NOTIFY_CHANNEL = "reliable_smtp_outbox"
DEFAULT_SCHEMA = "reliable_smtp"
CONNECT_TIMEOUT = 10
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def split_schema(url: str) -> tuple[str, str]:
    """``(connection URL without our options, schema name)`` from an outbox URL."""
    parts = urlsplit(url)
    options = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    rest = []
    for key, value in options:
        if key == "schema":
            schema = value
        else:
            rest.append((key, value))
    if not _IDENTIFIER.match(schema):
        raise ConfigurationError(
            f"{OUTBOX_URL_VARIABLE}: schema={schema!r} is not a plain PostgreSQL name "
            "(lower-case letters, digits, underscores)",
            setting=OUTBOX_URL_VARIABLE,
        )
    scheme = "postgresql" if parts.scheme.lower() == "postgres" else parts.scheme
    return urlunsplit(parts._replace(scheme=scheme, query=urlencode(rest))), schema


class PostgresStore(SQLStore):
    """An outbox in a PostgreSQL schema; any number of workers, anywhere."""

    dialect = POSTGRES
    placeholder = "%s"
    lock_rows = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    share_lock = " FOR SHARE"

    def __init__(
        self,
        url: str,
        *,
        schedule: OutboxSchedule,
        rng: random.Random,
        migrate: bool = True,
    ) -> None:
        if psycopg is None:
            raise ConfigurationError(
                f"{OUTBOX_URL_VARIABLE} names PostgreSQL, which needs psycopg: "
                "install reliable-smtp[postgres]",
                setting=OUTBOX_URL_VARIABLE,
            )
        self._conninfo, self.schema_name = split_schema(url)
        self._database: str | None = None
        self._listener: Any = None
        super().__init__(
            redact_url(url),
            tables=POSTGRES.tables(f"{self.schema_name}."),
            schedule=schedule,
            rng=rng,
        )
        if migrate:
            self.migrate()

    def _connect(self) -> Any:
        conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        self._database = conn.info.dbname
        return conn

    def wait_for_work(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._errors():
            if self._listener is None:
                listener = self._connect()
                listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self._listener = listener
            try:
                while (remaining := deadline - time.monotonic()) > 0:
                    for notify in self._listener.notifies(timeout=remaining, stop_after=1):
                        if notify.payload == self.schema_name:  # not another outbox's
                            return True
                return False
            except BaseException:
                self._listener.close()  # a broken listener is replaced on the next wait
                self._listener = None
                raise

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        super().close()

    def _usable(self, conn: Any) -> bool:
        return bool(
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == TransactionStatus.IDLE
        )

    @contextmanager
    def _write(self, conn: Any) -> Iterator[None]:
        with conn.transaction():
            yield

    @contextmanager
    def _nested(self, conn: Any) -> Iterator[None]:
        # In the caller's open transaction this is a savepoint; their rollback undoes it.
        if not conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
            # A non-autocommit connection whose transaction has not begun yet (Django's
            # atomic() before its first query): psycopg would make the block below an
            # outer transaction and COMMIT it on exit. Begin the caller's transaction as
            # their own first statement would, so their commit or rollback decides.
            conn.execute("SELECT 1")
        with conn.transaction():
            yield

    def _check_caller_connection(self, conn: Any) -> None:
        if not isinstance(conn, psycopg.Connection):
            raise TypeError(
                "connection= must be a psycopg Connection to this outbox's database, "
                f"got {type(conn).__name__}"
            )
        if self._database is None:
            with self._reading():
                pass  # learn our database's name
        if conn.info.dbname != self._database:
            raise ValueError(
                f"connection= is open on database {conn.info.dbname!r}, not on the outbox's "
                f"{self._database!r}: the entry would not be in your transaction"
            )

    def _lock_for_migration(self, conn: Any) -> None:
        # Two processes creating a new outbox at once: one creates it, the other waits.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.schema_name}.migrate",))
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema_name}"')

    def _insert_entries(
        self, conn: Any, sql: str, params: Sequence[tuple[object, ...]]
    ) -> list[int | None]:
        # One pipelined round trip for the whole batch instead of one per entry.
        cursor = conn.cursor()
        cursor.executemany(sql, params, returning=True)
        ids: list[int | None] = []
        while True:
            row = cursor.fetchone()
            ids.append(None if row is None else int(row[0]))
            if not cursor.nextset():
                break
        if len(ids) != len(params):  # pragma: no cover - psycopg's documented behaviour
            raise RuntimeError(f"{len(params)} entries inserted, {len(ids)} results")
        return ids

    def _notify(self, conn: Any) -> None:
        conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, self.schema_name))

    def _translate(self, error: Exception) -> Exception | None:
        if not isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)):
            return None
        # libpq's text can quote the connection string; never show it raw.
        text = str(error).strip().replace(self._conninfo, self.url)
        return OutboxUnavailableError(
            f"the outbox database {self.url} ({OUTBOX_URL_VARIABLE}) cannot be used: {text}: "
            "check that PostgreSQL is running and reachable, and the database, user and "
            "password in the URL",
            url=self.url,
        )
