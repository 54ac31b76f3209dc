"""Connections of the SQL store: :class:`ConnectionPool`, idle connections reused.

What a connection is (``sqlite3`` or ``psycopg``) is the backend's business; the
pool only hands one to one thread at a time and keeps a few idle for the next.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import OutboxError

__all__ = ["Connection", "ConnectionPool"]

Connection = Any  # sqlite3.Connection or psycopg.Connection: both speak enough DB-API


class ConnectionPool:
    """Idle connections, handed to one thread at a time (never shared concurrently).

    A pool instead of one connection per thread: threads come and go (web
    servers, anyio's pool), connections should not. After ``fork`` the child
    drops the parent's connections unclosed (closing them would disturb the
    parent) and opens its own.
    """

    def __init__(
        self,
        connect: Callable[[], Connection],
        usable: Callable[[Connection], bool],
        *,
        keep: int = 8,
    ) -> None:
        self._connect = connect
        self._usable = usable
        self._keep = keep
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        if self._closed:
            raise OutboxError("this outbox is closed; open a new one")
        with self._lock:
            if self._pid != os.getpid():
                self._idle, self._pid = [], os.getpid()
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._lock:
                keep = not self._closed and len(self._idle) < self._keep and self._usable(conn)
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
