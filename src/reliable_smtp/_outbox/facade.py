"""What applications use: :class:`Outbox` (sync) and :class:`AsyncOutbox` (awaited).

``enqueue()`` validates and renders the message in the caller's code - exactly
as ``AsyncMailer.send`` does: ``render()`` (Message-ID fixed now), then
``Envelope.build``, then ``RecipientPolicy.check`` - and writes it in one
transaction, so a bad address fails here and never hours later in a worker, and
every retry sends the same bytes. It returns once the entry is committed (or
written in the caller's transaction with ``connection=``).

:class:`AsyncOutbox` runs the same synchronous code on a small pool of threads
of its own (4), not on anyio's or asyncio's shared pool: each thread borrows a
database connection from the store's pool, and a fixed set of threads keeps the
set of connections small and warm. Cancelling an awaiting task does not undo a
write that is already under way in its thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from functools import partial
from types import TracebackType
from typing import Any, TypeAlias, TypeVar

from .._envelope import Envelope
from .._errors import ConfigurationError
from .._mailer.values import DEFAULT, _Default
from .._message import Message, render
from .._validation import RecipientPolicy
from .errors import OutboxError
from .model import EntryState, NewEntry, OutboxEntry, OutboxStats
from .schedule import OutboxSchedule
from .store import FINAL_STATES, OUTBOX_URL_VARIABLE, Resolution, Store, open_store

__all__ = ["AsyncOutbox", "Outbox"]

T = TypeVar("T")
AnyMessage: TypeAlias = "Message | EmailMessage"


class Outbox:
    """A durable queue of messages, sent by ``reliable-smtp worker`` (or ``OutboxWorker``).

    ``url`` is ``sqlite:///relative.db``, ``sqlite:////absolute/outbox.db`` or
    ``postgresql://user@host/db`` (``?schema=`` to move the tables out of
    ``reliable_smtp``). ``recipient_policy`` and ``message_id_domain`` mean what
    they mean for :class:`~reliable_smtp.AsyncMailer`; ``schedule`` is the
    :class:`~reliable_smtp.OutboxSchedule` (retry waits, lifetime); ``clock``
    (epoch seconds, default ``time.time``) is for tests. The schema is created or
    upgraded on first use; with ``migrate=False`` it is not (call :meth:`migrate`
    ahead, e.g. at deploy time): opening then takes no lock, which matters inside a
    transaction that already holds the SQLite file's write lock.
    """

    def __init__(
        self,
        url: str,
        *,
        recipient_policy: RecipientPolicy | _Default | None = DEFAULT,
        schedule: OutboxSchedule | None = None,
        clock: Callable[[], float] | None = None,
        message_id_domain: str | None = None,
        rng: random.Random | None = None,
        migrate: bool = True,
    ) -> None:
        self.schedule = schedule if schedule is not None else OutboxSchedule()
        self.recipient_policy: RecipientPolicy | None = (
            RecipientPolicy() if recipient_policy is DEFAULT else recipient_policy
        )
        self._clock = clock or time.time
        self._message_id_domain = message_id_domain
        self.store: Store = open_store(url, schedule=self.schedule, rng=rng, migrate=migrate)
        """The store underneath, for the worker and the CLI."""

    @classmethod
    def from_env(cls, **options: Any) -> Outbox:
        """The outbox ``RELIABLE_SMTP_OUTBOX_URL`` names (environment or ``.env``).

        ``options`` are this class's keyword arguments.
        """
        return cls(_url_from_env(), **options)

    @property
    def url(self) -> str:
        """The URL with its password redacted."""
        return self.store.url

    def now(self) -> float:
        """The outbox's clock (epoch seconds)."""
        return self._clock()

    # -- the application's side ----------------------------------------------------------

    def prepare(
        self,
        message: AnyMessage,
        *,
        idempotency_key: str | None = None,
        envelope: Envelope | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> NewEntry:
        """Validate and render ``message`` into the entry ``enqueue`` would write.

        Raises :class:`~reliable_smtp.InvalidMessageError` (or a subclass, such as
        :class:`~reliable_smtp.RecipientsRejectedError`) when it cannot be sent.
        """
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not idempotency_key
        ):
            raise TypeError(f"idempotency_key must be a non-empty str, got {idempotency_key!r}")
        rendered = render(message, domain=self._message_id_domain)
        if envelope is None:
            envelope = Envelope.build(rendered.sender, rendered.recipients)
        refused = {}
        policy = self.recipient_policy
        if policy is not None:
            # Raises RecipientsRejectedError (nothing queued) unless the policy skips.
            checked = policy.check(envelope.sender, envelope.recipients)
            if (checked.sender, checked.recipients) != (envelope.sender, envelope.recipients):
                envelope = checked.envelope()  # normalized: a new (checked) envelope
            refused = checked.refused_statuses(transport_name="recipient-policy")
        return NewEntry(
            message_id=rendered.message_id,
            sender=envelope.sender,
            recipients=(*envelope.recipients, *refused),
            content=rendered.content,
            expires_at=self._clock() + self.schedule.lifetime,
            idempotency_key=idempotency_key,
            refused=refused,
            # The caller's trace context goes with the entry, for the worker's send span.
            metadata=_otel().with_trace_context(metadata),
        )

    def enqueue(
        self,
        message: AnyMessage,
        *,
        idempotency_key: str | None = None,
        connection: Any = None,
        envelope: Envelope | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> OutboxEntry:
        """Queue ``message``; durable when this returns. Returns the stored entry.

        The same ``idempotency_key`` twice (also from two processes at once)
        gives one entry: the second call returns the first entry. With
        ``connection`` (a ``sqlite3.Connection`` to the outbox file, or a psycopg
        connection to its database) the entry is written in that connection's
        transaction and not committed: if it rolls back, nothing is ever sent.
        ``envelope`` overrides MAIL FROM / RCPT TO; ``metadata`` (JSON values) is
        kept with the entry.
        """
        new = self.prepare(
            message, idempotency_key=idempotency_key, envelope=envelope, metadata=metadata
        )
        (entry,) = self.store.enqueue([new], now=self._clock(), connection=connection)
        _otel().note_enqueued(1)
        return entry

    def enqueue_many(
        self,
        messages: Iterable[AnyMessage],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        connection: Any = None,
    ) -> list[OutboxEntry]:
        """Queue every message in one transaction (all or none); return the entries in order.

        Every message is validated before anything is written: one bad message
        raises and queues nothing. ``idempotency_keys``, when given, has one key
        (or ``None``) per message.
        """
        batch = list(messages)
        keys: Sequence[str | None] = (
            idempotency_keys if idempotency_keys is not None else [None] * len(batch)
        )
        if len(keys) != len(batch):
            raise ValueError(
                f"{len(keys)} idempotency keys for {len(batch)} messages: give one per message"
            )
        entries = [self.prepare(m, idempotency_key=k) for m, k in zip(batch, keys, strict=True)]
        if not entries:
            return []
        written = self.store.enqueue(entries, now=self._clock(), connection=connection)
        _otel().note_enqueued(len(written))
        return written

    # -- the operator's side -------------------------------------------------------------

    def get(self, entry_id: int) -> OutboxEntry:
        """The entry: state, per-recipient status, attempts (``EntryNotFoundError`` if none)."""
        return self.store.get(entry_id)

    def stats(self) -> OutboxStats:
        """Counts by state, the age of the oldest due entry, how many are ambiguous."""
        return self.store.stats(now=self._clock())

    def retry(self, entry_id: int) -> OutboxEntry:
        """Send the failed, cancelled and deferred recipients again now, with a new lifetime."""
        return self.store.retry(entry_id, now=self._clock())

    def cancel(self, entry_id: int) -> OutboxEntry:
        """Never send to the recipients still pending (refused while a worker is sending)."""
        return self.store.cancel(entry_id, now=self._clock())

    def resolve(self, entry_id: int, as_: Resolution) -> OutboxEntry:
        """Decide an ambiguous entry: ``"sent"``, ``"failed"`` or ``"resend"``.

        Ambiguous means the final dot went out and the reply was lost: ask the
        recipient or check the provider's logs for the Message-ID before
        choosing ``"resend"``, which may deliver it twice.
        """
        return self.store.resolve(entry_id, as_, now=self._clock())

    def purge(self, *, older_than: float, states: Collection[EntryState] = FINAL_STATES) -> int:
        """Delete final entries untouched for ``older_than`` seconds; return how many."""
        return self.store.purge(older_than=older_than, now=self._clock(), states=states)

    def migrate(self) -> int:
        """Create or upgrade the schema; return its version."""
        return self.store.migrate()

    def close(self) -> None:
        """Close the database connections."""
        self.store.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Last in the class: a method named `list` would shadow the builtin in later annotations.
    def list(self, *, state: EntryState | None = None, limit: int = 100) -> list[OutboxEntry]:
        """Entries, oldest first; only those in ``state`` when given."""
        return self.store.list(state=state, limit=limit)


def _otel() -> Any:
    # Imported on first use: it imports the OpenTelemetry API when that is installed.
    from .. import _otel

    return _otel


def _url_from_env() -> str:
    from .._settings import MailerSettings

    url = MailerSettings().outbox_url
    if url is None or not url.get_secret_value():
        raise ConfigurationError(
            f"{OUTBOX_URL_VARIABLE} is not set: give the outbox's URL, e.g. "
            "sqlite:////var/lib/app/outbox.db or postgresql://app@db/app",
            setting=OUTBOX_URL_VARIABLE,
        )
    return url.get_secret_value()


class AsyncOutbox:
    """:class:`Outbox` for async code: the same methods, awaited.

    The database work runs on the outbox's own threads, never on the event
    loop. Constructing it opens (and, unless ``migrate=False``, migrates) the store:
    do it at startup.
    """

    def __init__(
        self,
        url: str,
        *,
        recipient_policy: RecipientPolicy | _Default | None = DEFAULT,
        schedule: OutboxSchedule | None = None,
        clock: Callable[[], float] | None = None,
        message_id_domain: str | None = None,
        rng: random.Random | None = None,
        migrate: bool = True,
    ) -> None:
        self.sync = Outbox(
            url,
            recipient_policy=recipient_policy,
            schedule=schedule,
            clock=clock,
            message_id_domain=message_id_domain,
            rng=rng,
            migrate=migrate,
        )
        """The synchronous outbox underneath (same store)."""
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="reliable-smtp-outbox")
        self._closed = False

    @classmethod
    def from_env(cls, **options: Any) -> AsyncOutbox:
        """The outbox ``RELIABLE_SMTP_OUTBOX_URL`` names; ``options`` as for the constructor."""
        return cls(_url_from_env(), **options)

    @property
    def store(self) -> Store:
        return self.sync.store

    @property
    def url(self) -> str:
        return self.sync.url

    async def _run(self, call: Callable[[], T]) -> T:
        if self._closed:
            # The threads are gone; say so in the library's terms, not the executor's.
            raise OutboxError("this outbox is closed; open a new one")
        # In the caller's context (run_in_executor does not copy it): the current trace
        # span is what enqueue() stores for the worker.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, partial(context.run, call)
        )

    async def enqueue(
        self,
        message: AnyMessage,
        *,
        idempotency_key: str | None = None,
        connection: Any = None,
        envelope: Envelope | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> OutboxEntry:
        """See :meth:`Outbox.enqueue`."""
        return await self._run(
            partial(
                self.sync.enqueue,
                message,
                idempotency_key=idempotency_key,
                connection=connection,
                envelope=envelope,
                metadata=metadata,
            )
        )

    async def enqueue_many(
        self,
        messages: Iterable[AnyMessage],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        connection: Any = None,
    ) -> list[OutboxEntry]:
        """See :meth:`Outbox.enqueue_many`."""
        batch = list(messages)
        return await self._run(
            partial(
                self.sync.enqueue_many,
                batch,
                idempotency_keys=idempotency_keys,
                connection=connection,
            )
        )

    async def get(self, entry_id: int) -> OutboxEntry:
        """See :meth:`Outbox.get`."""
        return await self._run(partial(self.sync.get, entry_id))

    async def stats(self) -> OutboxStats:
        """See :meth:`Outbox.stats`."""
        return await self._run(self.sync.stats)

    async def retry(self, entry_id: int) -> OutboxEntry:
        """See :meth:`Outbox.retry`."""
        return await self._run(partial(self.sync.retry, entry_id))

    async def cancel(self, entry_id: int) -> OutboxEntry:
        """See :meth:`Outbox.cancel`."""
        return await self._run(partial(self.sync.cancel, entry_id))

    async def resolve(self, entry_id: int, as_: Resolution) -> OutboxEntry:
        """See :meth:`Outbox.resolve`."""
        return await self._run(partial(self.sync.resolve, entry_id, as_))

    async def purge(
        self, *, older_than: float, states: Collection[EntryState] = FINAL_STATES
    ) -> int:
        """See :meth:`Outbox.purge`."""
        return await self._run(partial(self.sync.purge, older_than=older_than, states=states))

    async def migrate(self) -> int:
        """See :meth:`Outbox.migrate`."""
        return await self._run(self.sync.migrate)

    async def close(self) -> None:
        """Close the database connections and the outbox's threads."""
        if self._closed:
            return
        await self._run(self.sync.close)
        self._closed = True
        self._threads.shutdown(wait=False)

    async def __aenter__(self) -> AsyncOutbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # Last in the class: a method named `list` would shadow the builtin in later annotations.
    async def list(self, *, state: EntryState | None = None, limit: int = 100) -> list[OutboxEntry]:
        """See :meth:`Outbox.list`."""
        return await self._run(partial(self.sync.list, state=state, limit=limit))
