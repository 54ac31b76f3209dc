"""The shared limits in SQL: limiter rows (the shared rate) and connection-slot rows.

Every worker of an outbox reserves its messages on the same limiter rows and
leases its connections from the same slot rows, so an
:class:`~reliable_smtp.OutboxLimits` cap holds for all of them together. The
arithmetic (GCRA step, lowered rate) is the pure code of ``limits``; these plain
functions of the store, bound as methods of
:class:`~reliable_smtp._outbox.sql.SQLStore`, only read and write the rows, under
their locks.
"""

# ruff: noqa: S608 - table names and placeholders are ours; values always go as parameters

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .limits import lowered_shared_rate, reserve_slot, shared_rate
from .pool import Connection

if TYPE_CHECKING:
    from .sql import SQLStore

__all__ = ["acquire_slots", "release_slots", "reserve", "throttle"]


def _limiter(
    store: SQLStore, conn: Connection, name: str
) -> tuple[float, float | None, float | None]:
    """The limiter's row, locked for this transaction (created when first used)."""
    store._execute(
        conn,
        "INSERT INTO {limiters} (name, next_free_at) VALUES (?, 0) ON CONFLICT (name) DO NOTHING",
        (name,),
    )
    row = store._execute(
        conn,
        "SELECT next_free_at, lowered_rate, lowered_at FROM {limiters} WHERE name = ?"
        + store.lock_rows,
        (name,),
    ).fetchone()
    return float(row[0]), row[1], row[2]


def reserve(
    store: SQLStore,
    names: Mapping[str, tuple[float, int]],
    *,
    now: float,
    cooldown: float = 10.0,
) -> float:
    wait = 0.0
    with store._transaction() as conn:
        for name in sorted(names):  # one lock order for every worker: no deadlock
            configured, burst = names[name]
            tat, lowered, lowered_at = _limiter(store, conn, name)
            rate = shared_rate(configured, lowered, lowered_at, now=now, cooldown=cooldown)
            step = reserve_slot(tat, now=now, interval=1.0 / rate, burst=burst)
            store._execute(
                conn,
                "UPDATE {limiters} SET next_free_at = ? WHERE name = ?",
                (step.tat, name),
            )
            wait = max(wait, step.wait)
    return wait


def throttle(
    store: SQLStore,
    names: Mapping[str, tuple[float, int]],
    *,
    reserved_at: float,
    now: float,
    cooldown: float = 10.0,
) -> None:
    with store._transaction() as conn:
        for name in sorted(names):
            configured, _burst = names[name]
            _tat, lowered, lowered_at = _limiter(store, conn, name)
            change = lowered_shared_rate(
                configured,
                lowered,
                lowered_at,
                reserved_at=reserved_at,
                now=now,
                cooldown=cooldown,
            )
            if change is not None:
                store._execute(
                    conn,
                    "UPDATE {limiters} SET lowered_rate = ?, lowered_at = ? WHERE name = ?",
                    (*change, name),
                )


def acquire_slots(
    store: SQLStore,
    name: str,
    owner: str,
    *,
    want: int,
    total: int,
    lease_seconds: float,
    now: float,
) -> int:
    expires = now + lease_seconds
    with store._transaction() as conn:
        conn.cursor().executemany(
            store._q(
                "INSERT INTO {slots} (name, slot) VALUES (?, ?) ON CONFLICT (name, slot) DO NOTHING"
            ),
            [(name, slot) for slot in range(total)],
        )
        held = store._execute(
            conn,
            "UPDATE {slots} SET expires_at = ? WHERE name = ? AND owner = ? AND slot < ?",
            (expires, name, owner, total),
        ).rowcount
        if held < want:
            # Free slots, and the expired leases of workers that died holding them.
            free = store._execute(
                conn,
                "SELECT slot FROM {slots} WHERE name = ? AND slot < ? "
                "AND (owner IS NULL OR expires_at <= ?) ORDER BY slot LIMIT ?" + store.skip_locked,
                (name, total, now, want - held),
            ).fetchall()
            for (slot,) in free:
                store._execute(
                    conn,
                    "UPDATE {slots} SET owner = ?, expires_at = ? WHERE name = ? AND slot = ?",
                    (owner, expires, name, slot),
                )
            held += len(free)
        return int(held)


def release_slots(store: SQLStore, name: str, owner: str) -> None:
    with store._transaction() as conn:
        store._execute(
            conn,
            "UPDATE {slots} SET owner = NULL, expires_at = NULL WHERE name = ? AND owner = ?",
            (name, owner),
        )
