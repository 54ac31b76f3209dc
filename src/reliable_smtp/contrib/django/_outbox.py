"""``OutboxEmailBackend``: Django's mail API, queued in the application's own transaction.

``send_messages()`` validates and renders each message in the caller's code (a
bad address raises there, as with :class:`EmailBackend`) and writes it into the
durable outbox **through Django's own database connection**, inside whatever
transaction is open on it::

    with transaction.atomic():
        order.save()
        send_mail("Order confirmed", body, None, [order.email])   # queued, not sent
    # committed: the worker sends it; rolled back: it never existed

Outside ``atomic()`` (Django's autocommit) the entry is committed at once.
``python manage.py reliable_smtp_worker`` sends what is queued, with the
``EMAIL_*`` / ``RELIABLE_SMTP_*`` settings of :class:`EmailBackend`.

Which database, highest first:

1. the ``database`` keyword / ``RELIABLE_SMTP_OUTBOX_DATABASE`` setting names the
   ``DATABASES`` alias (default ``"default"``): the outbox lives in that database
   because the entry must be written in that connection's transaction;
2. the outbox URL is derived from that alias (SQLite: its file; PostgreSQL: its
   NAME/USER/PASSWORD/HOST/PORT/OPTIONS, tables in the schema
   ``RELIABLE_SMTP_OUTBOX_SCHEMA``, default ``reliable_smtp``);
   ``RELIABLE_SMTP_OUTBOX_URL`` (a Django setting, never the environment) replaces
   it - it must name the same database, which every enqueue checks.

The tables are not Django models: they are created by the outbox's own versioned
schema code (what ``reliable-smtp outbox migrate`` and the worker apply), run by
``manage.py migrate`` when ``reliable_smtp.contrib.django`` is in
``INSTALLED_APPS`` (a ``post_migrate`` hook), or by ``manage.py
reliable_smtp_migrate``. docs/design.md says why.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.mail.message import EmailMessage
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from reliable_smtp import ConfigurationError, Envelope, Outbox, OutboxError

from ..._outbox.schema import POSTGRES, SCHEMA_VERSION, SQLITE
from ._backend import EmailBackend

__all__ = [
    "IDEMPOTENCY_HEADER",
    "OutboxEmailBackend",
    "close_outboxes",
    "migrate_outbox",
    "outbox_url",
]

#: An extra header (``EmailMessage(headers={IDEMPOTENCY_HEADER: "order-7"})``) that
#: becomes the entry's idempotency key: the same key twice queues one message. It is
#: removed before the message is stored, so it never reaches the recipients.
IDEMPOTENCY_HEADER = "Reliable-SMTP-Idempotency-Key"

DEFAULT_SCHEMA = "reliable_smtp"

# Django settings and psycopg connection keywords that are not libpq parameters: they
# shape Django's connection, not where the database is.
_NOT_LIBPQ = frozenset({
    "assume_role", "context", "cursor_factory", "isolation_level", "pool",
    "prepare_threshold", "server_side_binding",
})  # fmt: skip

_OUTBOXES: dict[tuple[str, str, int], Outbox] = {}
_CHECKED: set[tuple[str, str]] = set()
_OUTBOXES_LOCK = threading.Lock()


def close_outboxes() -> None:
    """Close the outboxes the backends opened (their own connections, not Django's)."""
    with _OUTBOXES_LOCK:
        outboxes = list(_OUTBOXES.values())
        _OUTBOXES.clear()
        _CHECKED.clear()
    for outbox in outboxes:
        outbox.close()


atexit.register(close_outboxes)


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def outbox_url(database: str | None = None) -> str:
    """The outbox URL for the ``DATABASES`` alias ``database`` (see the module docstring).

    Read at call time from the live connection settings, so under Django's test
    runner it names the test database.
    """
    alias = database or _setting("RELIABLE_SMTP_OUTBOX_DATABASE", DEFAULT_DB_ALIAS)
    explicit = _setting("RELIABLE_SMTP_OUTBOX_URL", None)
    if explicit:
        return str(explicit)
    if alias not in connections:
        raise ConfigurationError(
            f"the outbox database {alias!r} is not in DATABASES ({', '.join(connections)}): "
            "set RELIABLE_SMTP_OUTBOX_DATABASE (or the backend's database=) to one of those",
            setting="RELIABLE_SMTP_OUTBOX_DATABASE",
        )
    connection = connections[alias]
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        if connection.is_in_memory_db():  # type: ignore[attr-defined]
            raise ConfigurationError(
                f"DATABASES[{alias!r}] is an in-memory SQLite database: the outbox worker "
                "cannot see it. Use a file (NAME, and TEST['NAME'] for the test runner), or "
                "point RELIABLE_SMTP_OUTBOX_DATABASE at a file or PostgreSQL database",
                setting="RELIABLE_SMTP_OUTBOX_DATABASE",
            )
        return "sqlite:///" + os.path.abspath(str(params["NAME"]))
    if connection.vendor == "postgresql":
        user = quote(str(params.get("USER") or ""), safe="")
        password = params.get("PASSWORD") or ""
        auth = f"{user}:{quote(str(password), safe='')}@" if password else ""
        if user and not password:
            auth = f"{user}@"
        host = str(params.get("HOST") or "")
        query: dict[str, str] = {
            key: str(value)
            for key, value in (params.get("OPTIONS") or {}).items()
            if key not in _NOT_LIBPQ and isinstance(value, (str, int, float))
        }
        if host.startswith("/"):  # a Unix socket directory
            query["host"], host = host, ""
        port = f":{params['PORT']}" if params.get("PORT") else ""
        query["schema"] = str(_setting("RELIABLE_SMTP_OUTBOX_SCHEMA", DEFAULT_SCHEMA))
        name = quote(str(params.get("NAME") or ""), safe="")
        return f"postgresql://{auth}{quote(host, safe='')}{port}/{name}?{urlencode(query)}"
    raise ConfigurationError(
        f"DATABASES[{alias!r}] is {connection.vendor}: the outbox runs on SQLite and "
        "PostgreSQL; set RELIABLE_SMTP_OUTBOX_DATABASE to one of those",
        setting="RELIABLE_SMTP_OUTBOX_DATABASE",
    )


def migrate_outbox(database: str | None = None) -> tuple[str, int]:
    """Create or upgrade the outbox tables in ``database``; ``(redacted URL, version)``.

    Runs on the outbox's own connection and commits: call it outside a transaction
    (``manage.py migrate`` and ``reliable_smtp_migrate`` do).
    """
    with Outbox(outbox_url(database)) as outbox:
        return outbox.url, outbox.migrate()


def _migrate_hook(*, using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    """``post_migrate``: create the outbox tables in the database the outbox uses."""
    if using != _setting("RELIABLE_SMTP_OUTBOX_DATABASE", DEFAULT_DB_ALIAS):
        return
    connection = connections[using]
    if connection.vendor not in ("sqlite", "postgresql"):
        return
    if connection.vendor == "sqlite" and connection.is_in_memory_db():  # type: ignore[attr-defined]
        # An in-memory test database with the locmem backend: there is nothing to queue
        # into, and the backend says what to change if someone tries.
        return
    migrate_outbox(using)


class OutboxEmailBackend(EmailBackend):
    """:class:`EmailBackend`'s interface; ``send_messages()`` queues into the outbox.

    Keywords and settings are :class:`EmailBackend`'s (they configure the worker's
    sending), plus ``database`` (``RELIABLE_SMTP_OUTBOX_DATABASE``). Each queued
    Django message gets ``message.reliable_smtp_entry``, the stored
    :class:`~reliable_smtp.OutboxEntry` (its ``id`` is what ``reliable-smtp outbox
    show`` takes). ``send_messages()`` returns how many messages were queued - one
    whose idempotency key is already queued counts: it is in the outbox.

    ``fail_silently`` silences what Django's backend silences at send time, here a
    database that cannot take the entry (:class:`~reliable_smtp.OutboxError`); an
    invalid address or message raises its ``ValueError`` regardless, as in Django.
    """

    def __init__(self, *args: Any, database: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.database: str = database or _setting("RELIABLE_SMTP_OUTBOX_DATABASE", DEFAULT_DB_ALIAS)
        self.outbox: Outbox | None = None

    def open(self) -> bool | None:
        """Find the outbox (opened once per process, on its own connections); True if
        this call did, False if it was already open."""
        if self.outbox is not None:
            return False
        url = outbox_url(self.database)
        key = (self.database, url, id(self.recipient_policy))
        with _OUTBOXES_LOCK:
            outbox = _OUTBOXES.get(key)
            if outbox is None:
                # migrate=False: creating tables here would take the SQLite write lock,
                # which the caller's open transaction may already hold (a deadlock until
                # the busy timeout). The schema comes from `migrate`; _check_schema says so.
                outbox = _OUTBOXES[key] = Outbox(
                    url, recipient_policy=self.recipient_policy, migrate=False
                )
        self.outbox = outbox
        return True

    def close(self) -> None:
        """Forget the outbox; it stays open for the process's other backends."""
        self.outbox = None

    def send_messages(self, email_messages: Iterable[EmailMessage]) -> int:
        """Queue the messages in the current transaction of the database connection;
        return how many were queued."""
        if not email_messages:
            return 0
        with self._lock:
            new_connection = self.open()
            outbox = self.outbox
            assert outbox is not None
            try:
                connection = connections[self.database]
                try:
                    connection.ensure_connection()
                except DatabaseError:  # the database is down: what fail_silently is for
                    if self.fail_silently:
                        return 0
                    raise
                self._check_schema(connection, outbox)
                queued = 0
                for message in email_messages:
                    if self._enqueue(outbox, connection.connection, message):
                        queued += 1
            finally:
                if new_connection:
                    self.close()
        return queued

    def _enqueue(self, outbox: Outbox, raw_connection: Any, email_message: EmailMessage) -> bool:
        if not email_message.recipients():
            return False
        envelope = Envelope.build(
            self.prep_address(email_message.from_email),
            [self.prep_address(address) for address in email_message.recipients()],
        )
        key = self.idempotency_key(email_message)
        try:
            entry = outbox.enqueue(
                self.convert(email_message, envelope),
                envelope=envelope,
                idempotency_key=key,
                connection=raw_connection,
            )
        except OutboxError:
            if self.fail_silently:
                return False
            raise
        email_message.reliable_smtp_entry = entry  # type: ignore[attr-defined]
        return True

    def idempotency_key(self, email_message: EmailMessage) -> str | None:
        """The message's :data:`IDEMPOTENCY_HEADER` value (``None`` without one).

        A subclass may derive a key otherwise (from the subject, a model's id...).
        """
        for name, value in email_message.extra_headers.items():
            if name.lower() == IDEMPOTENCY_HEADER.lower():
                return str(value) or None
        return None

    def convert(self, email_message: EmailMessage, envelope: Envelope) -> Any:
        stdlib = super().convert(email_message, envelope)
        del stdlib[IDEMPOTENCY_HEADER]  # a key for the outbox, not for the recipients
        return stdlib

    def _check_schema(self, connection: Any, outbox: Outbox) -> None:
        """Refuse, with the fix, an outbox whose tables were never created (once per process).

        Asked on Django's connection, with queries that cannot fail: an error there
        would abort the caller's PostgreSQL transaction.
        """
        key = (self.database, outbox.url)
        if key in _CHECKED:
            return
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                table = SQLITE.tables("outbox_")["version"]
                cursor.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = %s",
                    [table],
                )
            else:
                table = POSTGRES.tables(f"{getattr(outbox.store, 'schema_name', '')}.")["version"]
                cursor.execute("SELECT count(*) FROM pg_class WHERE oid = to_regclass(%s)", [table])
            version = 0
            if cursor.fetchone()[0]:
                # The name is ours: a fixed prefix, or a schema split_schema() validated.
                cursor.execute(f"SELECT max(version) FROM {table}")  # noqa: S608
                version = cursor.fetchone()[0] or 0
        if version < SCHEMA_VERSION:
            raise ConfigurationError(
                f"the outbox tables in DATABASES[{self.database!r}] are at schema version "
                f"{version}, this reliable-smtp needs {SCHEMA_VERSION}: run `python manage.py "
                "migrate` with 'reliable_smtp.contrib.django' in INSTALLED_APPS, or `python "
                "manage.py reliable_smtp_migrate`",
                setting="RELIABLE_SMTP_OUTBOX_DATABASE",
            )
        _CHECKED.add(key)
