"""The outbox store: the one interface the facade, the worker and the CLI use.

:class:`Store` is the contract (sync; the async facade runs it in threads);
``sqlite.SQLiteStore`` and ``postgres.PostgresStore`` implement it on top of the
shared SQL in ``sql.SQLStore``. :func:`open_store` picks one from a URL:

* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` - the embedded
  default, nothing to run;
* ``postgresql://user@host:5432/db?schema=reliable_smtp`` (or ``postgres://``) -
  many workers on many machines; needs ``reliable-smtp[postgres]``.

Every time is a float of epoch seconds passed in by the caller (``now=``): the
store never reads a clock, so tests run a day of outage in milliseconds.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from .._errors import ConfigurationError
from .._result import RecipientStatus
from .errors import LeaseLostError
from .model import Claim, EntryState, NewEntry, OutboxEntry, OutboxStats
from .schedule import OutboxSchedule

__all__ = ["OUTBOX_URL_VARIABLE", "Resolution", "Store", "open_store", "redact_url"]

OUTBOX_URL_VARIABLE = "RELIABLE_SMTP_OUTBOX_URL"

Resolution = Literal["sent", "failed", "resend"]
"""What an operator decided about an ambiguous recipient."""

FINAL_STATES = (EntryState.SENT, EntryState.FAILED, EntryState.CANCELLED)


class Store(ABC):
    """Durable storage of outbox entries. Every method is one transaction.

    Writes are fenced where a worker is involved: ``mark_final_dot``, ``settle``,
    ``release`` and ``renew`` check the claim's lease token, so a worker whose
    lease expired (and whose entry another worker may now hold) changes nothing.
    """

    url: str
    """The URL, password redacted: safe to log."""
    schedule: OutboxSchedule

    # -- the application's side ----------------------------------------------------------

    @abstractmethod
    def enqueue(
        self, entries: Sequence[NewEntry], *, now: float, connection: Any = None
    ) -> list[OutboxEntry]:
        """Write ``entries`` in one transaction; return them as stored, in order.

        An entry whose ``idempotency_key`` is already stored is not written: the
        stored entry is returned instead. Without ``connection`` the transaction
        is committed before this returns; with it (the caller's connection to the
        same database) the rows are written in the caller's transaction and
        committed, or rolled back, with it.
        """

    # -- the worker's side ---------------------------------------------------------------

    @abstractmethod
    def claim(self, owner: str, *, limit: int, lease_seconds: float, now: float) -> list[Claim]:
        """Lease up to ``limit`` due entries to ``owner`` (after recovering expired leases)."""

    @abstractmethod
    def recover(self, *, now: float) -> int:
        """Take back every entry whose lease expired; return how many."""

    @abstractmethod
    def mark_final_dot(self, claim: Claim, recipients: Collection[str], *, now: float) -> None:
        """Record, durably, that the final dot is about to go to ``recipients``.

        One fenced UPDATE and its commit: the worker calls it inside the SMTP
        transaction, right before the dot. Raises
        :class:`~reliable_smtp.LeaseLostError` when the lease is gone; the worker
        must then drop the connection without sending the dot.
        """

    @abstractmethod
    def settle(self, claim: Claim, statuses: Mapping[str, RecipientStatus], *, now: float) -> bool:
        """Record a send's per-recipient results and release the lease.

        Returns ``False`` (and writes nothing) when the lease was lost.
        """

    @abstractmethod
    def release(self, claim: Claim, *, now: float) -> bool:
        """Give a lease back without results (shutdown): as if recovered at once."""

    def mark_final_dot_many(
        self, marks: Sequence[tuple[Claim, Collection[str]]], *, now: float
    ) -> list[bool]:
        """:meth:`mark_final_dot` for several claims in ONE durable commit (group commit).

        Returns, per item, whether it was marked (``False``: that lease is gone).
        The worker batches the marks of transactions that reach their dot together.
        """
        done = []
        for claim, recipients in marks:
            try:
                self.mark_final_dot(claim, recipients, now=now)
            except LeaseLostError:
                done.append(False)
            else:
                done.append(True)
        return done

    def settle_many(
        self, results: Sequence[tuple[Claim, Mapping[str, RecipientStatus]]], *, now: float
    ) -> list[bool]:
        """:meth:`settle` for several claims in one transaction; per item, as ``settle``."""
        return [self.settle(claim, statuses, now=now) for claim, statuses in results]

    @abstractmethod
    def renew(self, claims: Iterable[Claim], *, lease_seconds: float, now: float) -> set[int]:
        """Extend the leases still owned; return their entry ids."""

    @abstractmethod
    def wait_for_work(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for an enqueue; ``True`` if one happened.

        PostgreSQL: ``LISTEN``; SQLite: a notification within the process, and
        ``PRAGMA data_version`` polled every 50 ms for commits by other processes.
        A spurious or missed wake-up only changes when the next claim runs, never
        what it finds.
        """

    # -- the shared limits (OutboxLimits) ------------------------------------------------

    @abstractmethod
    def reserve(
        self, names: Mapping[str, tuple[float, int]], *, now: float, cooldown: float = 10.0
    ) -> float:
        """Reserve one message on every limiter in ``names`` (name -> (configured rate in
        messages/s, burst)); return the seconds to wait before sending it.

        One transaction under the limiters' row locks: the GCRA step of
        ``limits.reserve_slot`` at the rate in force (``limits.shared_rate``).
        """

    @abstractmethod
    def throttle(
        self,
        names: Mapping[str, tuple[float, int]],
        *,
        reserved_at: float,
        now: float,
        cooldown: float = 10.0,
    ) -> None:
        """A THROTTLED reply to a message reserved at ``reserved_at``: lower the shared
        rate of every limiter in ``names`` (``limits.lowered_shared_rate``)."""

    @abstractmethod
    def acquire_slots(
        self, name: str, owner: str, *, want: int, total: int, lease_seconds: float, now: float
    ) -> int:
        """Lease connection slots of ``name`` (``total`` in all) to ``owner``, up to ``want``
        held, renewing the ones it holds; free and expired slots are taken. Returns how
        many ``owner`` holds now."""

    @abstractmethod
    def release_slots(self, name: str, owner: str) -> None:
        """Give back every slot of ``name`` that ``owner`` holds (shutdown)."""

    # -- the operator's side -------------------------------------------------------------

    @abstractmethod
    def get(self, entry_id: int) -> OutboxEntry:
        """The entry (``EntryNotFoundError`` if there is none)."""

    @abstractmethod
    def list(self, *, state: EntryState | None = None, limit: int = 100) -> list[OutboxEntry]:
        """Entries, oldest first, optionally only those in ``state``."""

    @abstractmethod
    def stats(self, *, now: float) -> OutboxStats:
        """Counts by state and the age of the oldest due entry."""

    @abstractmethod
    def retry(self, entry_id: int, *, now: float) -> OutboxEntry:
        """Failed, cancelled and deferred recipients become due now, with a fresh lifetime."""

    @abstractmethod
    def cancel(self, entry_id: int, *, now: float) -> OutboxEntry:
        """Pending recipients become CANCELLED (refused while a worker is sending it)."""

    @abstractmethod
    def resolve(self, entry_id: int, resolution: Resolution, *, now: float) -> OutboxEntry:
        """Decide the ambiguous recipients: ``sent``, ``failed``, or ``resend`` (due now)."""

    @abstractmethod
    def purge(
        self, *, older_than: float, now: float, states: Collection[EntryState] = FINAL_STATES
    ) -> int:
        """Delete entries in ``states`` (final ones) untouched for ``older_than`` seconds."""

    # -- housekeeping --------------------------------------------------------------------

    @abstractmethod
    def migrate(self) -> int:
        """Create or upgrade the schema; return the version it is at."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection the store opened."""


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: the only form we print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def open_store(
    url: str,
    *,
    schedule: OutboxSchedule | None = None,
    rng: random.Random | None = None,
    migrate: bool = True,
) -> Store:
    """The store a URL names, its schema created or upgraded when ``migrate`` is true.

    Raises :class:`~reliable_smtp.ConfigurationError` (naming
    ``RELIABLE_SMTP_OUTBOX_URL``) for a URL of no known form, and
    :class:`~reliable_smtp.OutboxUnavailableError` when the database cannot be
    opened.
    """
    if not isinstance(url, str) or not url:
        raise ConfigurationError(
            f"the outbox URL is empty or not a string ({url!r}): set {OUTBOX_URL_VARIABLE}, "
            "e.g. sqlite:///var/lib/app/outbox.db or postgresql://app@db/app",
            setting=OUTBOX_URL_VARIABLE,
        )
    scheme = url.partition(":")[0].lower()
    schedule = schedule or OutboxSchedule()
    rng = rng or random.Random()
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url, schedule=schedule, rng=rng, migrate=migrate)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(url, schedule=schedule, rng=rng, migrate=migrate)
    raise ConfigurationError(
        f"unsupported outbox URL {redact_url(url)!r}: {OUTBOX_URL_VARIABLE} must start with "
        "sqlite:/// (e.g. sqlite:///var/lib/app/outbox.db) or postgresql://",
        setting=OUTBOX_URL_VARIABLE,
    )
