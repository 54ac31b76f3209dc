"""The embedded outbox: one SQLite file, through the standard library's ``sqlite3``.

Settings, and why (see docs/design.md, "Durable outbox"):

* ``journal_mode=WAL`` - readers never block the writer; workers and the
  application share the file.
* ``synchronous=FULL`` - in WAL mode NORMAL keeps commits across an application
  crash but may lose the last ones on power loss; "durable when ``enqueue()``
  returns" and the final-dot mark must survive that too. Costs one fsync per
  commit.
* ``busy_timeout`` (5 s default) - several processes on one file wait for the
  write lock instead of failing with "database is locked".
* ``BEGIN IMMEDIATE`` for every read-modify-write - the write lock is taken up
  front, so two workers never read the same due row and both claim it, and a
  deferred transaction never fails half-way on lock upgrade.
* ``foreign_keys=ON`` - deleting an entry deletes its recipients.

Connections are opened in autocommit mode (``isolation_level=None``): every
transaction is explicit.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from .._errors import ConfigurationError
from .errors import OutboxError, OutboxUnavailableError
from .schedule import OutboxSchedule
from .schema import SQLITE
from .sql import SQLStore
from .store import OUTBOX_URL_VARIABLE

__all__ = ["SQLiteStore", "sqlite_path"]

BUSY_TIMEOUT = 5.0
WAKE_POLL = 0.05
"""Seconds between checks for commits by other processes (``wait_for_work``)."""


class _Wakeup:
    """Enqueues in this process, counted per outbox file, for ``wait_for_work``."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.count = 0

    def notify(self) -> None:
        with self.condition:
            self.count += 1
            self.condition.notify_all()


_WAKEUPS: dict[str, _Wakeup] = {}
_WAKEUPS_LOCK = threading.Lock()


def _wakeup_for(path: str) -> _Wakeup:
    key = os.path.realpath(path)
    with _WAKEUPS_LOCK:
        return _WAKEUPS.setdefault(key, _Wakeup())


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:///...`` URL names (three slashes: relative; four: absolute)."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.scheme.lower() != "sqlite" or parts.netloc or not path.startswith("/") or path == "/":
        raise ConfigurationError(
            f"bad SQLite outbox URL {url!r}: {OUTBOX_URL_VARIABLE} is sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db",
            setting=OUTBOX_URL_VARIABLE,
        )
    path = path[1:]  # sqlite:///x.db -> x.db; sqlite:////var/x.db -> /var/x.db
    if path == ":memory:":
        raise ConfigurationError(
            f"{OUTBOX_URL_VARIABLE}={url!r}: an in-memory database is not durable and not shared "
            "with workers; give a file path",
            setting=OUTBOX_URL_VARIABLE,
        )
    return path


class SQLiteStore(SQLStore):
    """An outbox in one SQLite file; safe for several processes on one machine."""

    dialect = SQLITE
    due_index = " INDEXED BY outbox_entries_due"

    def __init__(
        self,
        url: str,
        *,
        schedule: OutboxSchedule,
        rng: random.Random,
        migrate: bool = True,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        self.path = sqlite_path(url)
        self.busy_timeout = busy_timeout
        super().__init__(url, tables=SQLITE.tables("outbox_"), schedule=schedule, rng=rng)
        self._wakeup = _wakeup_for(self.path)
        self._seen = self._wakeup.count
        self._watcher: sqlite3.Connection | None = None
        self._watched_version: int | None = None
        # close() may run while another thread is inside wait_for_work (a worker's
        # wake-up thread outlives run() by up to a slice): closing a sqlite3 connection
        # another thread is executing on crashes the process, so the two take turns.
        self._watcher_lock = threading.Lock()
        self._watcher_closed = False
        if migrate:
            self.migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,  # the pool hands a connection to one thread at a time
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise OutboxUnavailableError(
                    f"the outbox file {self.path} cannot use WAL mode (got {mode!r}): put it on "
                    "a local file system, not a network share",
                    url=self.url,
                )
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _notify(self, conn: sqlite3.Connection) -> None:
        # Before the commit: a woken worker's BEGIN IMMEDIATE waits for it anyway.
        self._wakeup.notify()

    def _data_version(self) -> int:
        """Changes whenever another connection commits to the file."""
        with self._watcher_lock:
            if self._watcher_closed:
                raise OutboxError("this outbox is closed; open a new one")
            if self._watcher is None:
                self._watcher = self._connect()
            row = self._watcher.execute("PRAGMA data_version").fetchone()
            return int(row[0])

    def wait_for_work(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._errors():
            if self._watched_version is None:
                self._watched_version = self._data_version()
            while True:
                with self._wakeup.condition:
                    if self._wakeup.count != self._seen:
                        self._seen = self._wakeup.count
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._wakeup.condition.wait(min(remaining, WAKE_POLL))
                version = self._data_version()
                if version != self._watched_version:
                    self._watched_version = version
                    return True

    def close(self) -> None:
        with self._watcher_lock:
            self._watcher_closed = True
            if self._watcher is not None:
                self._watcher.close()
                self._watcher = None
        super().close()

    def _usable(self, conn: sqlite3.Connection) -> bool:
        return not conn.in_transaction

    @contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    @contextmanager
    def _nested(self, conn: sqlite3.Connection) -> Iterator[None]:
        # A savepoint: inside the caller's transaction it nests (their rollback undoes it);
        # outside one it is a transaction of its own, committed on release.
        if (
            not conn.in_transaction
            and conn.isolation_level is not None
            and getattr(conn, "autocommit", -1) is not True
        ):
            # The caller's connection opens transactions implicitly (sqlite3's default), but
            # only before INSERT/UPDATE/DELETE, never before SAVEPOINT: open it as sqlite3
            # would, so that the caller's commit or rollback decides, as for their own rows.
            conn.execute("BEGIN")
        conn.execute("SAVEPOINT reliable_smtp_enqueue")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO reliable_smtp_enqueue")
            conn.execute("RELEASE reliable_smtp_enqueue")
            raise
        conn.execute("RELEASE reliable_smtp_enqueue")

    def _check_caller_connection(self, conn: Any) -> None:
        if not isinstance(conn, sqlite3.Connection):
            raise TypeError(
                f"connection= must be a sqlite3.Connection to {self.path} for this outbox, "
                f"got {type(conn).__name__}"
            )
        main = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
        if not main or not main[0] or not os.path.samefile(main[0], self.path):
            raise ValueError(
                f"connection= is open on {main[0] if main else 'no file'!r}, not on the outbox "
                f"file {self.path}: the entry would not be in your transaction"
            )

    def _lock_for_migration(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE already holds the file's write lock."""

    def _translate(self, error: Exception) -> Exception | None:
        if not isinstance(error, sqlite3.DatabaseError) or isinstance(
            error, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
        ):
            return None
        text = str(error)
        if "locked" in text or "busy" in text:
            hint = (
                f"another process held the write lock longer than the busy timeout "
                f"({self.busy_timeout:g} s); look for a long transaction on this file"
            )
        elif "unable to open" in text:
            hint = "check that the directory exists and this process may write to it"
        elif "not a database" in text or "malformed" in text or "corrupt" in text:
            hint = "the file is corrupt or not an outbox; restore it from a backup"
        elif "readonly" in text:
            hint = "the file or its directory is read-only for this process"
        else:
            hint = "check the file, its directory and the disk"
        return OutboxUnavailableError(
            f"the outbox database {self.path} ({OUTBOX_URL_VARIABLE}={self.url}) cannot be "
            f"used: {text}: {hint}",
            url=self.url,
        )
