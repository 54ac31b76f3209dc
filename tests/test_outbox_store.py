"""The outbox store on real databases: a SQLite file and the machine's PostgreSQL.

Every test runs on both backends (see ``outbox_url`` in test_outbox_support.py).
Times are explicit ``now=`` values, so leases and schedules need no waiting.
"""

from __future__ import annotations

import multiprocessing
import secrets
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from reliable_smtp import ConfigurationError
from reliable_smtp._outbox.errors import (
    EntryNotFoundError,
    EntryStateError,
    LeaseLostError,
    OutboxError,
    OutboxUnavailableError,
)
from reliable_smtp._outbox.model import EntryState, NewEntry, RecipientState
from reliable_smtp._outbox.schedule import OutboxSchedule
from reliable_smtp._outbox.schema import SCHEMA_VERSION
from reliable_smtp._outbox.store import Store, open_store
from reliable_smtp._replies import Outcome, Phase, Reply
from reliable_smtp._result import RecipientStatus
from test_outbox_support import outbox_url, postgres_database  # noqa: F401 - fixtures

T0 = 1_700_000_000.0
LEASE = 60.0
SCHEDULE = OutboxSchedule(jitter=0.0)  # 300, 600, 1200 ... exactly


def new_entry(
    *recipients: str, key: str | None = None, message_id: str = "m1@example.com"
) -> NewEntry:
    return NewEntry(
        message_id=message_id,
        sender="app@example.com",
        recipients=recipients or ("a@example.org",),
        content=b"Subject: hi\r\nMessage-ID: <" + message_id.encode() + b">\r\n\r\nhello\r\n",
        expires_at=T0 + SCHEDULE.lifetime,
        idempotency_key=key,
        metadata={"tag": "test"},
    )


def reply_status(address: str, outcome: Outcome, code: int, **kw: Any) -> RecipientStatus:
    return RecipientStatus(
        recipient=address,
        outcome=outcome,
        phase=Phase.DATA_END if outcome is Outcome.SENT else Phase.RCPT,
        reply=Reply(code, None, "text"),
        explanation="why",
        retryable=outcome in (Outcome.TRANSIENT, Outcome.THROTTLED),
        **kw,
    )


@pytest.fixture
def store(outbox_url: str) -> Iterator[Store]:  # noqa: F811 - the imported fixture
    opened = open_store(outbox_url, schedule=SCHEDULE)
    yield opened
    opened.close()


# -- enqueue -------------------------------------------------------------------------------


def test_enqueue_is_committed_on_return(store: Store, outbox_url: str) -> None:  # noqa: F811
    (entry,) = store.enqueue([new_entry("a@example.org", "b@example.org")], now=T0)
    other = open_store(outbox_url, schedule=SCHEDULE)  # a second process would see the same
    try:
        seen = other.get(entry.id)
    finally:
        other.close()
    assert seen == entry
    assert seen.state is EntryState.QUEUED
    assert [r.address for r in seen.recipients] == ["a@example.org", "b@example.org"]
    assert all(r.state is RecipientState.PENDING and r.due_at == T0 for r in seen.recipients)
    assert seen.content.startswith(b"Subject: hi")
    assert seen.metadata == {"tag": "test"}
    assert (seen.created_at, seen.due_at, seen.expires_at) == (
        T0,
        T0,
        T0 + SCHEDULE.lifetime,
    )


def test_the_same_idempotency_key_gives_the_first_entry(store: Store) -> None:
    (first,) = store.enqueue([new_entry(key="reset-4711")], now=T0)
    second, third = store.enqueue(
        [new_entry(key="reset-4711", message_id="other@example.com"), new_entry(key="x")],
        now=T0 + 5,
    )
    assert second == first
    assert third.id != first.id
    assert len(store.list()) == 2


def test_refused_recipients_are_stored_failed(store: Store) -> None:
    refusal = reply_status("bad@", Outcome.PERMANENT, 553)
    entry = new_entry("a@example.org", "bad@")
    entry = NewEntry(**{**_fields(entry), "refused": {"bad@": refusal}})
    (stored,) = store.enqueue([entry], now=T0)
    assert stored.recipient("bad@").state is RecipientState.FAILED
    assert stored.recipient("bad@").reply == Reply(553, None, "text")
    (claim,) = store.claim("w", limit=10, lease_seconds=LEASE, now=T0)
    assert claim.recipients == ("a@example.org",)


def _fields(entry: NewEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in NewEntry.__dataclass_fields__}


def _caller_connection(store: Store, url: str) -> Any:
    if url.startswith("sqlite"):
        return sqlite3.connect(store.path)  # type: ignore[attr-defined]
    import psycopg

    return psycopg.connect(store._conninfo)  # type: ignore[attr-defined]


@pytest.mark.parametrize("commit", [False, True], ids=["rolled-back", "committed"])
def test_enqueue_in_the_callers_transaction(
    store: Store,
    outbox_url: str,  # noqa: F811
    commit: bool,
) -> None:
    conn = _caller_connection(store, outbox_url)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER)")
        conn.commit()
        conn.execute("INSERT INTO orders VALUES (1)")
        (entry,) = store.enqueue([new_entry(key="order-1")], now=T0, connection=conn)
        # Not visible outside the caller's transaction yet, so no worker can send it.
        # (A read: on SQLite the caller's transaction holds the file's write lock.)
        assert store.list() == []
        conn.commit() if commit else conn.rollback()
    finally:
        conn.close()
    claims = store.claim("w", limit=10, lease_seconds=LEASE, now=T0 + 1)
    if commit:
        assert [c.entry_id for c in claims] == [entry.id]
    else:
        assert claims == []
        with pytest.raises(EntryNotFoundError):
            store.get(entry.id)
        assert store.list() == []


def test_a_connection_to_another_database_is_refused(store: Store, tmp_path: Any) -> None:
    other = sqlite3.connect(tmp_path / "app.db")
    try:
        with pytest.raises((ValueError, TypeError)):
            store.enqueue([new_entry()], now=T0, connection=other)
    finally:
        other.close()
    assert store.list() == []


# -- claim, mark, settle -------------------------------------------------------------------


def test_claim_leases_due_entries_once(store: Store) -> None:
    entries = store.enqueue([new_entry(message_id=f"m{i}@x") for i in range(3)], now=T0)
    assert store.claim("w1", limit=10, lease_seconds=LEASE, now=T0 - 1) == []  # not due yet
    first = store.claim("w1", limit=2, lease_seconds=LEASE, now=T0)
    second = store.claim("w2", limit=10, lease_seconds=LEASE, now=T0)
    assert [c.entry_id for c in first] == [entries[0].id, entries[1].id]
    assert [c.entry_id for c in second] == [entries[2].id]
    assert store.claim("w3", limit=10, lease_seconds=LEASE, now=T0 + 1) == []
    claim = first[0]
    assert (claim.owner, claim.attempt, claim.lease_expires_at) == ("w1", 1, T0 + LEASE)
    assert claim.recipients == ("a@example.org",)
    assert claim.envelope().recipients == ("a@example.org",)
    assert claim.envelope().sender == "app@example.com"
    assert claim.content == entries[0].content
    assert len({c.token for c in first + second}) == 3
    assert store.get(claim.entry_id).state is EntryState.SENDING


def test_settle_records_each_recipient_and_retries_only_the_pending(store: Store) -> None:
    (entry,) = store.enqueue([new_entry("a@x.org", "b@x.org", "c@x.org")], now=T0)
    (claim,) = store.claim("w", limit=1, lease_seconds=LEASE, now=T0)
    store.mark_final_dot(claim, ["a@x.org", "b@x.org"], now=T0 + 1)
    assert store.get(entry.id).recipient("a@x.org").state is RecipientState.IN_FLIGHT
    settled = store.settle(
        claim,
        {
            "a@x.org": reply_status("a@x.org", Outcome.SENT, 250),
            "b@x.org": reply_status("b@x.org", Outcome.TRANSIENT, 451),
            "c@x.org": reply_status("c@x.org", Outcome.PERMANENT, 550),
        },
        now=T0 + 2,
    )
    assert settled
    after = store.get(entry.id)
    assert after.state is EntryState.DEFERRED
    assert [r.state for r in after.recipients] == [
        RecipientState.SENT,
        RecipientState.PENDING,
        RecipientState.FAILED,
    ]
    assert after.due_at == T0 + 2 + 300
    assert "b@x.org: transient 451 text" in after.last_error
    b = after.recipient("b@x.org")
    assert (b.attempts, b.reply, b.dot_at) == (1, Reply(451, None, "text"), None)
    assert store.claim("w", limit=1, lease_seconds=LEASE, now=T0 + 301) == []
    (again,) = store.claim("w", limit=1, lease_seconds=LEASE, now=T0 + 302)
    assert again.recipients == ("b@x.org",)  # never a, who has it, nor c, who refused
    assert again.attempt == 2
    assert store.settle(again, {"b@x.org": reply_status("b@x.org", Outcome.SENT, 250)}, now=T0)
    assert store.get(entry.id).state is EntryState.FAILED  # c failed for good


def test_a_lost_lease_fences_every_write(store: Store) -> None:
    (entry,) = store.enqueue([new_entry()], now=T0)
    (old,) = store.claim("slow", limit=1, lease_seconds=LEASE, now=T0)
    # The lease expires; another worker recovers and claims the entry.
    (new,) = store.claim("fast", limit=1, lease_seconds=LEASE, now=T0 + LEASE + 1)
    assert new.token != old.token
    with pytest.raises(LeaseLostError, match="not sending the final dot"):
        store.mark_final_dot(old, ["a@example.org"], now=T0 + LEASE + 2)
    assert store.get(entry.id).recipients[0].state is RecipientState.PENDING
    sent = {"a@example.org": reply_status("a@example.org", Outcome.SENT, 250)}
    assert store.settle(old, sent, now=T0 + LEASE + 3) is False
    assert store.release(old, now=T0 + LEASE + 3) is False
    assert store.renew([old, new], lease_seconds=LEASE, now=T0 + LEASE + 3) == {entry.id}
    assert store.get(entry.id).state is EntryState.SENDING
    assert store.settle(new, sent, now=T0 + LEASE + 4)
    assert store.get(entry.id).state is EntryState.SENT


def test_recovery_requeues_unmarked_and_parks_marked_recipients(store: Store) -> None:
    unmarked, marked = store.enqueue(
        [new_entry(message_id="u@x"), new_entry("a@x.org", "b@x.org", message_id="m@x")],
        now=T0,
    )
    claims = store.claim("dies", limit=2, lease_seconds=LEASE, now=T0)
    store.mark_final_dot(claims[1], ["a@x.org"], now=T0 + 1)
    assert store.recover(now=T0 + LEASE - 1) == 0  # leases still running
    assert store.recover(now=T0 + LEASE) == 2
    back = store.get(unmarked.id)
    assert (back.state, back.recipients[0].state) == (EntryState.QUEUED, RecipientState.PENDING)
    parked = store.get(marked.id)
    assert parked.recipient("a@x.org").state is RecipientState.AMBIGUOUS
    assert "resolve" in parked.recipient("a@x.org").explanation
    assert parked.recipient("b@x.org").state is RecipientState.PENDING
    assert parked.state is EntryState.QUEUED  # b was never tried: goes again, alone
    (retry,) = [
        c
        for c in store.claim("w", limit=5, lease_seconds=LEASE, now=T0 + LEASE)
        if c.entry_id == marked.id
    ]
    assert retry.recipients == ("b@x.org",)


def test_release_gives_the_entry_back(store: Store) -> None:
    (entry,) = store.enqueue([new_entry()], now=T0)
    (claim,) = store.claim("w", limit=1, lease_seconds=LEASE, now=T0)
    assert store.release(claim, now=T0 + 1)
    assert store.get(entry.id).state is EntryState.QUEUED
    assert len(store.claim("w", limit=1, lease_seconds=LEASE, now=T0 + 1)) == 1


def test_expiry_fails_the_entry_with_the_last_reply(store: Store) -> None:
    (entry,) = store.enqueue([new_entry()], now=T0)
    now = T0
    while store.get(entry.id).state is not EntryState.FAILED:
        (claim,) = store.claim("w", limit=1, lease_seconds=LEASE, now=now)
        status = reply_status("a@example.org", Outcome.TRANSIENT, 421)
        assert store.settle(claim, {"a@example.org": status}, now=now)
        now = store.get(entry.id).due_at or now
    failed = store.get(entry.id).recipients[0]
    assert failed.reply == Reply(421, None, "text")
    assert "lifetime" in failed.explanation
    assert now <= T0 + SCHEDULE.lifetime
    assert failed.attempts > 100  # five days at most 4000 s apart


# -- the operator's side -------------------------------------------------------------------


def test_stats_count_states_and_the_oldest_due_entry(store: Store) -> None:
    store.enqueue([new_entry(message_id="1@x")], now=T0)
    store.enqueue([new_entry(message_id="2@x")], now=T0 + 10)
    stats = store.stats(now=T0 + 100)
    assert stats.counts[EntryState.QUEUED] == 2
    assert stats.counts[EntryState.SENT] == 0
    assert stats.oldest_due_age == 100
    assert (stats.total, stats.ambiguous) == (2, 0)
    assert store.stats(now=T0 - 1).oldest_due_age is None


def test_retry_cancel_resolve_and_purge(store: Store) -> None:
    (entry,) = store.enqueue([new_entry("a@x.org", "b@x.org")], now=T0)
    (claim,) = store.claim("w", limit=1, lease_seconds=LEASE, now=T0)
    with pytest.raises(EntryStateError, match="being sent"):
        store.cancel(entry.id, now=T0)
    store.mark_final_dot(claim, ["a@x.org"], now=T0)
    store.settle(claim, {"b@x.org": reply_status("b@x.org", Outcome.PERMANENT, 550)}, now=T0)
    parked = store.get(entry.id)
    assert parked.state is EntryState.AMBIGUOUS  # a: dot sent, no reply recorded
    assert parked.ambiguous == ("a@x.org",)
    resolved = store.resolve(entry.id, "sent", now=T0)
    with pytest.raises(EntryStateError, match="no ambiguous recipient"):
        store.resolve(entry.id, "sent", now=T0)
    assert resolved.recipient("a@x.org").state is RecipientState.SENT
    assert "operator" in resolved.recipient("a@x.org").explanation
    assert resolved.state is EntryState.FAILED  # b refused for good
    retried = store.retry(entry.id, now=T0 + 50)
    assert retried.recipient("b@x.org").state is RecipientState.PENDING
    assert retried.recipient("a@x.org").state is RecipientState.SENT
    assert (retried.state, retried.due_at) == (EntryState.DEFERRED, T0 + 50)
    assert retried.expires_at == T0 + 50 + SCHEDULE.lifetime
    cancelled = store.cancel(entry.id, now=T0 + 60)
    assert cancelled.state is EntryState.CANCELLED
    assert cancelled.recipient("b@x.org").state is RecipientState.CANCELLED
    assert store.purge(older_than=100, now=T0 + 159) == 0
    assert store.purge(older_than=100, now=T0 + 160) == 1
    with pytest.raises(EntryNotFoundError) as caught:
        store.get(entry.id)
    assert isinstance(caught.value, KeyError)
    assert str(caught.value).startswith(f"no outbox entry with id {entry.id}")


def test_resolve_resend_queues_the_ambiguous_recipient_again(store: Store) -> None:
    (entry,) = store.enqueue([new_entry()], now=T0)
    (claim,) = store.claim("w", limit=1, lease_seconds=LEASE, now=T0)
    store.mark_final_dot(claim, ["a@example.org"], now=T0)
    store.settle(claim, {}, now=T0 + 1)
    assert store.get(entry.id).ambiguous == ("a@example.org",)
    with pytest.raises(EntryStateError, match="resolve"):
        store.retry(entry.id, now=T0 + 2)
    resent = store.resolve(entry.id, "resend", now=T0 + 2)
    assert (resent.state, resent.recipients[0].dot_at) == (EntryState.QUEUED, None)
    assert len(store.claim("w", limit=1, lease_seconds=LEASE, now=T0 + 2)) == 1
    with pytest.raises(ValueError, match="resolve as"):
        store.resolve(entry.id, "maybe", now=T0)  # type: ignore[arg-type]


def test_list_filters_by_state(store: Store) -> None:
    entries = store.enqueue([new_entry(message_id=f"{i}@x") for i in range(3)], now=T0)
    (claim,) = store.claim("w", limit=1, lease_seconds=LEASE, now=T0)
    assert [e.id for e in store.list(state=EntryState.SENDING)] == [claim.entry_id]
    assert [e.id for e in store.list(state=EntryState.QUEUED)] == [e.id for e in entries[1:]]
    assert [e.id for e in store.list(limit=2)] == [e.id for e in entries[:2]]


def test_unknown_ids_raise_entry_not_found(store: Store) -> None:
    for action in (
        lambda: store.get(999),
        lambda: store.retry(999, now=T0),
        lambda: store.cancel(999, now=T0),
        lambda: store.resolve(999, "sent", now=T0),
    ):
        with pytest.raises(EntryNotFoundError):
            action()


def test_migrate_is_idempotent(store: Store, outbox_url: str) -> None:  # noqa: F811
    assert store.migrate() == SCHEMA_VERSION
    assert open_store(outbox_url, migrate=True).migrate() == SCHEMA_VERSION


# -- several processes ---------------------------------------------------------------------


def _enqueue_keys(url: str, keys: list[str], barrier: Any, out: Any) -> None:
    store = open_store(url)
    try:
        ids = []
        for key in keys:
            barrier.wait()
            ids.append(store.enqueue([new_entry(key=key)], now=T0)[0].id)
        out.put(ids)
    finally:
        store.close()


def _claim_all(url: str, owner: str, barrier: Any, out: Any) -> None:
    store = open_store(url)
    try:
        barrier.wait()
        claimed: list[int] = []
        while batch := store.claim(owner, limit=3, lease_seconds=600, now=T0):
            claimed.extend(c.entry_id for c in batch)
        out.put(claimed)
    finally:
        store.close()


def _run_pair(target: Any, url: str, *args: Any) -> list[list[int]]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    out = context.Queue()
    processes = [
        context.Process(target=target, args=(url, *args[i], barrier, out)) for i in range(2)
    ]
    for process in processes:
        process.start()
    try:
        results = [out.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert all(p.exitcode == 0 for p in processes)
    return results


def test_two_processes_enqueueing_one_key_make_one_entry(store: Store, outbox_url: str) -> None:  # noqa: F811
    keys = [f"key-{i}" for i in range(30)]
    first, second = _run_pair(_enqueue_keys, outbox_url, (keys,), (keys,))
    assert first == second  # each call got the same entry back
    assert len(set(first)) == 30
    assert len(store.list(limit=1000)) == 30


def test_two_processes_claiming_never_take_the_same_entry(store: Store, outbox_url: str) -> None:  # noqa: F811
    entries = store.enqueue([new_entry(message_id=f"{i}@x") for i in range(200)], now=T0)
    first, second = _run_pair(_claim_all, outbox_url, ("w1",), ("w2",))
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(e.id for e in entries)
    assert len(first) == len(set(first))


# -- failures ------------------------------------------------------------------------------


def test_bad_urls_name_the_variable() -> None:
    for url in ("mysql://db/app", "", "sqlite://host/x.db", "sqlite:///:memory:"):
        with pytest.raises(ConfigurationError) as caught:
            open_store(url)
        assert caught.value.setting == "RELIABLE_SMTP_OUTBOX_URL"


def test_an_unopenable_sqlite_file_is_unavailable(tmp_path: Any) -> None:
    with pytest.raises(OutboxUnavailableError, match="directory exists"):
        open_store(f"sqlite:///{tmp_path}/missing/dir/outbox.db")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database, just text " * 100)
    with pytest.raises(OutboxUnavailableError, match="corrupt"):
        open_store(f"sqlite:///{corrupt}")


def test_a_file_locked_beyond_the_busy_timeout_is_unavailable(tmp_path: Any) -> None:
    from reliable_smtp._outbox.sqlite import SQLiteStore

    url = f"sqlite:///{tmp_path}/outbox.db"
    store = SQLiteStore(
        url, schedule=SCHEDULE, rng=__import__("random").Random(), busy_timeout=0.05
    )
    holder = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(OutboxUnavailableError, match="busy timeout"):
            store.enqueue([new_entry()], now=T0)
        holder.execute("ROLLBACK")
        assert store.enqueue([new_entry()], now=T0)  # and works again once the lock is gone
    finally:
        holder.close()
        store.close()


def test_an_unreachable_postgres_is_unavailable_and_the_password_stays_secret() -> None:
    pytest.importorskip("psycopg")
    url = "postgresql://app:s3cret-pw@127.0.0.1:1/app"  # port 1: nothing listens
    with pytest.raises(OutboxUnavailableError) as caught:
        open_store(url)
    assert "s3cret-pw" not in str(caught.value)
    assert "app:***@127.0.0.1:1" in str(caught.value)
    assert "s3cret-pw" not in caught.value.url


def test_a_newer_schema_is_refused(store: Store) -> None:
    with store._transaction() as conn:  # type: ignore[attr-defined]
        store._execute(conn, "INSERT INTO {version} (version) VALUES (99)")  # type: ignore[attr-defined]
    with pytest.raises(OutboxError, match="upgrade reliable-smtp"):
        store.migrate()


def test_a_closed_store_says_so(store: Store) -> None:
    store.close()
    with pytest.raises(OutboxError, match="closed"):
        store.get(1)


# -- wake-up -------------------------------------------------------------------------------


def test_wait_for_work_times_out_when_nothing_is_enqueued(store: Store) -> None:
    assert store.wait_for_work(0.01) is False


def _wait_in_thread(store: Store) -> tuple[Any, list[bool]]:
    import threading

    woken: list[bool] = []
    waiter = threading.Thread(target=lambda: woken.append(store.wait_for_work(60)))
    waiter.start()
    return waiter, woken


def test_an_enqueue_in_this_process_wakes_a_waiting_worker(
    store: Store,
    outbox_url: str,  # noqa: F811
) -> None:
    store.wait_for_work(0.01)  # the listener is set up
    waiter, woken = _wait_in_thread(store)
    other = open_store(outbox_url)
    try:
        other.enqueue([new_entry()], now=T0)
    finally:
        other.close()
    waiter.join(timeout=60)
    assert woken == [True]


def test_an_enqueue_by_another_process_wakes_a_waiting_worker(
    store: Store,
    outbox_url: str,  # noqa: F811
) -> None:
    import subprocess
    import sys

    store.wait_for_work(0.01)
    waiter, woken = _wait_in_thread(store)
    code = (
        "from test_outbox_store import new_entry, T0; "
        "from reliable_smtp._outbox.store import open_store; "
        f"open_store({outbox_url!r}).enqueue([new_entry()], now=T0)"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        timeout=60,
        cwd=__import__("pathlib").Path(__file__).parent,
    )
    waiter.join(timeout=60)
    assert woken == [True]


# -- the crash-consistency invariant, under random interleavings ---------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from reliable_smtp._outbox.model import Claim  # noqa: E402

STEPS = st.lists(
    st.tuples(
        st.sampled_from(["claim", "mark", "settle", "crash", "expire", "tick", "renew"]),
        st.integers(min_value=0, max_value=5),
        st.sampled_from(list(Outcome)),
    ),
    max_size=40,
)
AFTER_DOT = (Outcome.SENT, Outcome.AMBIGUOUS, Outcome.TRANSIENT, Outcome.PERMANENT)
BEFORE_DOT = (Outcome.TRANSIENT, Outcome.THROTTLED, Outcome.PERMANENT, Outcome.AUTH_OR_CONFIG)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_a_recipient_whose_dot_went_out_is_never_handed_out_again(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int, Outcome]]
) -> None:
    path = tmp_path_factory.mktemp("interleavings") / "outbox.db"
    store = open_store(f"sqlite:///{path}", schedule=OutboxSchedule.without_waits())
    try:
        store.enqueue(
            [new_entry("a@x.org", "b@x.org", message_id=f"{i}@x") for i in range(3)], now=T0
        )
        now = T0
        held: list[Claim] = []
        marked: dict[Claim, set[str]] = {}
        # (entry, address) whose final dot went out with no failure recorded since: the server
        # may have it, so handing it to a worker again could deliver it twice.
        maybe_delivered: set[tuple[int, str]] = set()
        for op, n, outcome in steps:
            if op == "claim":
                for claim in store.claim(f"w{n}", limit=n + 1, lease_seconds=LEASE, now=now):
                    handed = {(claim.entry_id, a) for a in claim.recipients}
                    assert not handed & maybe_delivered, (claim, maybe_delivered)
                    held.append(claim)
            elif op == "mark" and held:
                claim = held[n % len(held)]
                chosen = set(claim.recipients[: n % len(claim.recipients) + 1]) - marked.get(
                    claim, set()
                )
                if not chosen:
                    continue
                try:
                    store.mark_final_dot(claim, chosen, now=now)
                except LeaseLostError:
                    held.remove(claim)
                    continue
                marked.setdefault(claim, set()).update(chosen)
                maybe_delivered |= {(claim.entry_id, a) for a in chosen}
            elif op == "settle" and held:
                claim = held.pop(n % len(held))
                dotted = marked.get(claim, set())
                statuses = {}
                for i, address in enumerate(claim.recipients[: n % (len(claim.recipients) + 1)]):
                    pool = AFTER_DOT if address in dotted else BEFORE_DOT
                    statuses[address] = reply_status(
                        address, pool[(i + list(Outcome).index(outcome)) % len(pool)], 450
                    )
                if store.settle(claim, statuses, now=now):
                    for address, status in statuses.items():
                        if status.outcome in (Outcome.TRANSIENT, Outcome.PERMANENT):
                            maybe_delivered.discard((claim.entry_id, address))  # refused
            elif op == "crash":
                held.clear()  # the worker died holding its claims
            elif op == "expire":
                now += LEASE + 1
            elif op == "tick":
                now += 1
            elif op == "renew" and held:
                owned = store.renew(held, lease_seconds=LEASE, now=now)
                held = [c for c in held if c.entry_id in owned]
        # Whatever happened, every entry's recipients are accounted for.
        store.recover(now=now + 10 * LEASE)
        for entry in store.list():
            assert entry.state is not EntryState.SENDING
            for recipient in entry.recipients:
                assert recipient.state is not RecipientState.IN_FLIGHT
                if (entry.id, recipient.address) in maybe_delivered:
                    assert recipient.state in (RecipientState.SENT, RecipientState.AMBIGUOUS)
    finally:
        store.close()


def test_a_final_dot_mark_racing_a_recovery_on_postgres_waits_then_fails(
    postgres_database: str,  # noqa: F811
) -> None:
    # Without FOR SHARE in the mark's fence, the mark would land on an entry a concurrent
    # recovery is putting back in the queue, and the worker would send the dot anyway.
    import secrets
    import threading
    import time

    import psycopg

    schema = f"t_{secrets.token_hex(4)}"
    store = open_store(f"{postgres_database}?schema={schema}", schedule=SCHEDULE)
    recovery = psycopg.connect(store._conninfo)  # type: ignore[attr-defined]
    watcher = psycopg.connect(store._conninfo, autocommit=True)  # type: ignore[attr-defined]
    try:
        (entry,) = store.enqueue([new_entry()], now=T0)
        (claim,) = store.claim("w", limit=1, lease_seconds=LEASE, now=T0)
        # What recover() does first: lock the expired entry.
        recovery.execute(f"SELECT id FROM {schema}.entries WHERE id = %s FOR UPDATE", (entry.id,))
        outcome: list[str] = []

        def mark() -> None:
            try:
                store.mark_final_dot(claim, claim.recipients, now=T0 + LEASE + 1)
                outcome.append("marked")
            except LeaseLostError:
                outcome.append("lease lost")

        marker = threading.Thread(target=mark)
        marker.start()
        for _ in range(1000):  # until the mark waits on the recovery's lock
            if outcome:
                pytest.fail(f"the mark did not wait for the recovery's lock: {outcome}")
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"the mark did not wait for the recovery's lock: {outcome}")
        recovery.execute(
            f"UPDATE {schema}.entries SET state = 'queued', lease_token = NULL WHERE id = %s",
            (entry.id,),
        )
        recovery.commit()
        marker.join(timeout=30)
        assert outcome == ["lease lost"]
        assert store.get(entry.id).recipients[0].state is RecipientState.PENDING
    finally:
        recovery.close()
        watcher.close()
        store.close()


def test_the_postgresql_claim_takes_due_entries_in_index_order(
    postgres_database: str,  # noqa: F811 - the imported fixture
) -> None:
    # claim() orders by (due_at, id) and takes the first few: with the index in that order
    # PostgreSQL reads just those rows; without it, every due entry and a sort, for each
    # claim, however large the backlog an outage left.
    import psycopg

    schema = f"t_{secrets.token_hex(4)}"
    open_store(f"{postgres_database}?schema={schema}").close()
    with psycopg.connect(postgres_database) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_sort = off")  # a plan that needs a sort still shows one
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                f"EXPLAIN SELECT id FROM {schema}.entries "
                "WHERE state IN ('queued', 'deferred') AND due_at <= 1e12 "
                "ORDER BY due_at, id LIMIT 50"
            ).fetchall()
        )
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    assert "outbox_entries_due" in plan, plan
    assert "Sort" not in plan, plan
