"""The lease life cycle in SQL: the worker's writes, each fenced by the claim's token.

``claim`` (after ``recover``) -> ``mark_final_dot``/``mark_final_dot_many`` ->
``settle``/``settle_many`` or ``release``, with ``renew`` keeping the lease alive
meanwhile; and :func:`apply_settlement`, the one writer of a settlement plan (the
operator's actions use it too). Plain functions of the store, bound as methods of
:class:`~reliable_smtp._outbox.sql.SQLStore`; what a reply does to a recipient is
decided in ``schedule.plan_settlement``/``plan_recovery``, not here.
"""

# ruff: noqa: S608 - table names and placeholders are ours; values always go as parameters

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .._result import RecipientStatus
from .errors import LeaseLostError
from .model import Claim, OutboxEntry, OutboxRecipient
from .pool import Connection
from .rows import RECIPIENT_COLUMNS, metadata_of, recipient_of, update_row
from .schedule import Settlement, plan_recovery, plan_settlement

if TYPE_CHECKING:
    from .sql import SQLStore

__all__ = [
    "apply_settlement",
    "claim",
    "mark_final_dot",
    "mark_final_dot_many",
    "recover",
    "release",
    "renew",
    "settle",
    "settle_many",
]


def claim(
    store: SQLStore, owner: str, *, limit: int, lease_seconds: float, now: float
) -> list[Claim]:
    store.recover(now=now)
    claims: list[Claim] = []
    with store._transaction() as conn:
        rows = store._execute(
            conn,
            "SELECT id, message_id, sender, content, attempts, metadata FROM {entries}"
            + store.due_index
            + " WHERE state IN ('queued', 'deferred') AND due_at <= ? "
            "ORDER BY due_at, id LIMIT ?" + store.skip_locked,
            (now, limit),
        ).fetchall()
        if not rows:
            return claims
        expires = now + lease_seconds
        ids = [int(r[0]) for r in rows]
        due = _due_recipients(store, conn, ids, now)
        for entry_id, message_id, sender, content, attempts, metadata in rows:
            token = secrets.token_hex(16)
            store._execute(
                conn,
                "UPDATE {entries} SET state = 'sending', lease_owner = ?, lease_token = ?, "
                "lease_expires_at = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (owner, token, expires, now, entry_id),
            )
            claims.append(
                Claim(
                    entry_id=int(entry_id),
                    token=token,
                    owner=owner,
                    message_id=message_id,
                    sender=sender,
                    recipients=tuple(due.get(int(entry_id), ())),
                    content=bytes(content),
                    lease_expires_at=expires,
                    attempt=int(attempts) + 1,
                    metadata=metadata_of(metadata),
                )
            )
    return claims


def _due_recipients(
    store: SQLStore, conn: Connection, ids: Sequence[int], now: float
) -> dict[int, list[str]]:
    marks = ", ".join("?" * len(ids))
    due: dict[int, list[str]] = {}
    for entry_id, address in store._execute(
        conn,
        f"SELECT entry_id, address FROM {{recipients}} WHERE entry_id IN ({marks}) "
        "AND state = 'pending' AND due_at <= ? ORDER BY entry_id, position",
        (*ids, now),
    ).fetchall():
        due.setdefault(int(entry_id), []).append(address)
    return due


def recover(store: SQLStore, *, now: float) -> int:
    with store._transaction() as conn:
        rows = store._execute(
            conn,
            "SELECT id FROM {entries} WHERE state = 'sending' AND lease_expires_at <= ?"
            + store.skip_locked,
            (now,),
        ).fetchall()
        for (entry_id,) in rows:
            recipients = _recipients(store, conn, int(entry_id))
            plan = plan_recovery(recipients, now=now, schedule=store.schedule)
            apply_settlement(store, conn, int(entry_id), plan, now)
        return len(rows)


def _recipients(store: SQLStore, conn: Connection, entry_id: int) -> list[OutboxRecipient]:
    return [
        recipient_of(row)
        for row in store._execute(
            conn,
            f"SELECT {RECIPIENT_COLUMNS} FROM {{recipients}} WHERE entry_id = ? ORDER BY position",
            (entry_id,),
        ).fetchall()
    ]


def mark_final_dot(
    store: SQLStore, claim: Claim, recipients: Collection[str], *, now: float
) -> None:
    if not recipients:
        return
    # One statement in its own (autocommitted) transaction: fenced by the lease token.
    with store._reading() as conn:
        if _mark(store, conn, claim, list(recipients), now=now, remark=False) == 0:
            raise LeaseLostError(
                f"outbox entry {claim.entry_id}: the lease of {claim.owner!r} is gone "
                "(expired and recovered, or the entry was changed by an operator); "
                "not sending the final dot. Raise the worker's lease time if this recurs."
            )


def mark_final_dot_many(
    store: SQLStore, marks: Sequence[tuple[Claim, Collection[str]]], *, now: float
) -> list[bool]:
    # Group commit for the worker: the marks of every transaction that reached its
    # dot meanwhile share one commit (one fsync), each still fenced by its own token.
    # A recipient marked already in this claim (a failover member re-sending after a
    # 421) stays marked: only a lost lease makes an item fail.
    done: list[bool] = []
    with store._transaction() as conn:
        for claim, recipients in marks:
            addresses = list(recipients)
            done.append(
                not addresses or _mark(store, conn, claim, addresses, now=now, remark=True) > 0
            )
    return done


def _mark(
    store: SQLStore,
    conn: Connection,
    claim: Claim,
    addresses: Sequence[str],
    *,
    now: float,
    remark: bool,
) -> int:
    """Mark ``addresses`` ``in_flight`` if the claim's lease holds; how many rows changed.

    ``remark``: recipients already ``in_flight`` count as marked (the group commit's
    rule); without it only pending ones are, as the single mark always did.
    """
    states = "state IN ('pending', 'in_flight')" if remark else "state = 'pending'"
    places = ", ".join("?" * len(addresses))
    cursor = store._execute(
        conn,
        "UPDATE {recipients} SET state = 'in_flight', dot_at = ?, dot_token = ?, "
        f"updated_at = ? WHERE entry_id = ? AND {states} AND address IN ({places}) "
        "AND EXISTS (SELECT 1 FROM {entries} WHERE id = ? AND lease_token = ? "
        "AND state = 'sending'" + store.share_lock + ")",
        (now, claim.token, now, claim.entry_id, *addresses, claim.entry_id, claim.token),
    )
    return int(cursor.rowcount)


def settle_many(
    store: SQLStore,
    results: Sequence[tuple[Claim, Mapping[str, RecipientStatus]]],
    *,
    now: float,
) -> list[bool]:
    settled: list[bool] = []
    with store._transaction() as conn:
        for claim, statuses in results:
            entry = _fenced(store, conn, claim)
            if entry is None:
                settled.append(False)
                continue
            plan = plan_settlement(
                entry.recipients,
                statuses,
                claimed=set(claim.recipients),
                now=now,
                expires_at=entry.expires_at,
                schedule=store.schedule,
                rng=store._rng,
            )
            apply_settlement(store, conn, claim.entry_id, plan, now)
            settled.append(True)
    return settled


def settle(
    store: SQLStore, claim: Claim, statuses: Mapping[str, RecipientStatus], *, now: float
) -> bool:
    # One claim is a batch of one: the same fenced plan, in one transaction.
    return store.settle_many([(claim, statuses)], now=now)[0]


def _fenced(store: SQLStore, conn: Connection, claim: Claim) -> OutboxEntry | None:
    """The claimed entry, locked, if the claim still holds its lease; else None."""
    row = store._execute(
        conn,
        "SELECT id FROM {entries} WHERE id = ? AND lease_token = ? AND state = 'sending'"
        + store.lock_rows,
        (claim.entry_id, claim.token),
    ).fetchone()
    return None if row is None else store._one(conn, claim.entry_id)


def release(store: SQLStore, claim: Claim, *, now: float) -> bool:
    with store._transaction() as conn:
        entry = _fenced(store, conn, claim)
        if entry is None:
            return False
        plan = plan_recovery(entry.recipients, now=now, schedule=store.schedule)
        apply_settlement(store, conn, claim.entry_id, plan, now)
        return True


def renew(
    store: SQLStore, claims: Iterable[Claim], *, lease_seconds: float, now: float
) -> set[int]:
    owned: set[int] = set()
    with store._transaction() as conn:
        for claim in claims:
            cursor = store._execute(
                conn,
                "UPDATE {entries} SET lease_expires_at = ? "
                "WHERE id = ? AND lease_token = ? AND state = 'sending'",
                (now + lease_seconds, claim.entry_id, claim.token),
            )
            if cursor.rowcount:
                owned.add(claim.entry_id)
    return owned


def apply_settlement(
    store: SQLStore, conn: Connection, entry_id: int, plan: Settlement, now: float
) -> None:
    """Write a settlement: the recipients that change, then the entry (lease cleared)."""
    if plan.updates:
        conn.cursor().executemany(
            store._q(
                "UPDATE {recipients} SET state = ?, outcome = ?, reply_code = ?, "
                "enhanced_code = ?, reply_text = ?, phase = ?, explanation = ?, "
                "attempts = ?, due_at = ?, dot_at = ?, "
                "dot_token = CASE WHEN ? = 1 THEN NULL ELSE dot_token END, "
                "updated_at = ? WHERE entry_id = ? AND position = ?"
            ),
            [update_row(u, entry_id, now) for u in plan.updates],
        )
    store._execute(
        conn,
        "UPDATE {entries} SET state = ?, due_at = ?, "
        "last_error = COALESCE(?, last_error), lease_owner = NULL, lease_token = NULL, "
        "lease_expires_at = NULL, updated_at = ? WHERE id = ?",
        (plan.state.value, plan.due_at, plan.last_error, now, entry_id),
    )
