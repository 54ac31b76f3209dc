"""The operator's actions in SQL: retry, cancel, resolve and purge.

Each changes an entry that no worker holds (one being sent is refused with
:class:`~reliable_smtp.EntryStateError`) through the same settlement writer as
the worker (``leases.apply_settlement``), so the entry's state is derived from
its recipients by one rule. Plain functions of the store, bound as methods of
:class:`~reliable_smtp._outbox.sql.SQLStore`.
"""

# ruff: noqa: S608 - table names and placeholders are ours; values always go as parameters

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from .errors import EntryNotFoundError, EntryStateError
from .leases import apply_settlement
from .model import EntryState, OutboxEntry, RecipientState
from .schedule import RecipientUpdate, recipient_update, settlement_of
from .store import FINAL_STATES, Resolution

if TYPE_CHECKING:
    from .sql import SQLStore

__all__ = ["cancel", "purge", "resolve", "retry"]


def _operate(
    store: SQLStore,
    entry_id: int,
    now: float,
    change: Callable[[OutboxEntry], list[RecipientUpdate]],
    *,
    expires_at: float | None = None,
) -> OutboxEntry:
    """Apply ``change`` to the recipients of an entry no worker holds, in one transaction."""
    with store._transaction() as conn:
        row = store._execute(
            conn, "SELECT state FROM {entries} WHERE id = ?" + store.lock_rows, (entry_id,)
        ).fetchone()
        if row is None:
            raise EntryNotFoundError(entry_id)
        if row[0] == EntryState.SENDING.value:
            raise EntryStateError(
                f"outbox entry {entry_id} is being sent right now; try again once the "
                "worker has recorded the result (seconds, or the lease time at most)"
            )
        entry = store._one(conn, entry_id)
        updates = change(entry)
        plan = settlement_of(entry.recipients, updates, None)
        apply_settlement(store, conn, entry_id, plan, now)
        if expires_at is not None:
            store._execute(
                conn, "UPDATE {entries} SET expires_at = ? WHERE id = ?", (expires_at, entry_id)
            )
        return store._one(conn, entry_id)


def retry(store: SQLStore, entry_id: int, *, now: float) -> OutboxEntry:
    def change(entry: OutboxEntry) -> list[RecipientUpdate]:
        again = [
            recipient_update(r, RecipientState.PENDING, due_at=now)
            for r in entry.recipients
            if r.state in (RecipientState.FAILED, RecipientState.PENDING, RecipientState.CANCELLED)
        ]
        if not again:
            raise EntryStateError(
                f"outbox entry {entry_id} ({entry.state}) has nothing to retry"
                + (
                    ": its ambiguous recipients need `resolve` (sent, failed or resend)"
                    if entry.ambiguous
                    else ""
                )
            )
        return again

    return _operate(store, entry_id, now, change, expires_at=now + store.schedule.lifetime)


def cancel(store: SQLStore, entry_id: int, *, now: float) -> OutboxEntry:
    def change(entry: OutboxEntry) -> list[RecipientUpdate]:
        return [
            recipient_update(r, RecipientState.CANCELLED, explanation="cancelled by an operator")
            for r in entry.recipients
            if r.state is RecipientState.PENDING
        ]

    return _operate(store, entry_id, now, change)


def resolve(store: SQLStore, entry_id: int, resolution: Resolution, *, now: float) -> OutboxEntry:
    targets = {
        "sent": RecipientState.SENT,
        "failed": RecipientState.FAILED,
        "resend": RecipientState.PENDING,
    }
    if resolution not in targets:
        raise ValueError(f"resolve as 'sent', 'failed' or 'resend', not {resolution!r}")
    target = targets[resolution]

    def change(entry: OutboxEntry) -> list[RecipientUpdate]:
        if not entry.ambiguous:
            raise EntryStateError(
                f"outbox entry {entry_id} ({entry.state}) has no ambiguous recipient"
            )
        return [
            recipient_update(
                r,
                target,
                due_at=now if target is RecipientState.PENDING else None,
                explanation=f"resolved by an operator as {resolution}",
            )
            for r in entry.recipients
            if r.state is RecipientState.AMBIGUOUS
        ]

    return _operate(store, entry_id, now, change)


def purge(
    store: SQLStore,
    *,
    older_than: float,
    now: float,
    states: Collection[EntryState] = FINAL_STATES,
) -> int:
    chosen = [EntryState(s).value for s in states]
    if not chosen:
        return 0
    marks = ", ".join("?" * len(chosen))
    with store._transaction() as conn:
        cursor = store._execute(
            conn,
            f"DELETE FROM {{entries}} WHERE state IN ({marks}) AND updated_at <= ?",
            (*chosen, now - older_than),
        )
        return int(cursor.rowcount)
