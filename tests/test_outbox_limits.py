"""The outbox's shared limits: one cap for every worker (contract line 6).

* the GCRA arithmetic and the THROTTLED rule, as Hypothesis properties of pure
  functions (no clock);
* the store's reservations and connection slots on both backends (real SQLite
  files, the real PostgreSQL), including a dead worker's slots coming back;
* the worker in-process with an injected clock: it waits what the reservation
  says, and a THROTTLED reply lowers the rate every worker shares;
* real worker processes (four on PostgreSQL, two on one SQLite file) against the
  counting sink: the rate the sink saw, over its own timestamps, within 10% of
  the cap in the steady part of the run (start-up excluded).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbox_sink import CountingSink, start_worker
from reliable_smtp import (
    AsyncMailer,
    ConfigurationError,
    MailerSettings,
    Message,
    Outbox,
    OutboxLimits,
    RecipientPolicy,
)
from reliable_smtp._outbox.limits import lowered_shared_rate, reserve_slot, shared_rate
from reliable_smtp._outbox.schema import MIGRATIONS, SCHEMA_VERSION, SQLITE, VERSION_TABLE, ddl
from reliable_smtp._outbox.store import Store, open_store
from reliable_smtp._outbox.worker import OutboxWorker
from reliable_smtp._outbox.worker_limits import SharedLimits
from reliable_smtp._ratelimit import FLOOR_RATE
from reliable_smtp._transports.smtp import SMTPTransport
from reliable_smtp.testing import FakeClock
from test_outbox_crash import LEASE, _drain, _fill, _reconcile, _stop
from test_outbox_support import outbox_url, postgres_database  # noqa: F401 - fixtures

T0 = 1_700_000_000.0
START = 1_000.0
"""The arithmetic's properties start here: near an epoch time floats round at 2e-7 s,
which would blur what the properties check (the store tests use epoch times)."""

# -- the arithmetic ------------------------------------------------------------------------

intervals = st.floats(min_value=1e-3, max_value=100.0)
bursts = st.integers(min_value=1, max_value=20)
gaps = st.lists(st.floats(min_value=0.0, max_value=50.0), min_size=1, max_size=60)


def _start_times(gaps: list[float], interval: float, burst: int) -> list[float]:
    """Reserve at each arrival (``gaps`` apart) and return when each message may start."""
    tat, now, starts = 0.0, START, []
    for gap in gaps:
        now += gap
        step = reserve_slot(tat, now=now, interval=interval, burst=burst)
        tat = step.tat
        starts.append(now + step.wait)
    return starts


@given(gaps, intervals, bursts)
def test_no_span_starts_more_than_its_share_plus_the_burst(
    gaps: list[float], interval: float, burst: int
) -> None:
    starts = sorted(_start_times(gaps, interval, burst))
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            span = starts[j] - first
            # j - i + 1 messages started within `span`: at most span / interval + burst
            # (a microsecond of slack: epoch floats round at about 2e-7 s).
            assert j - i + 1 <= (span + 1e-6) / interval + burst


@given(gaps, intervals, bursts)
def test_a_message_waits_only_as_long_as_the_rate_requires(
    gaps: list[float], interval: float, burst: int
) -> None:
    tat, now = 0.0, START
    for gap in gaps:
        now += gap
        step = reserve_slot(tat, now=now, interval=interval, burst=burst)
        assert step.wait >= 0
        # Never later than one interval after the previous reservation's slot...
        assert now + step.wait <= max(now, tat - (burst - 1) * interval) + 1e-6
        # ...and not at all while the limiter has room for the burst.
        if tat - now <= (burst - 1) * interval:
            assert step.wait == 0
        tat = step.tat


@given(intervals, bursts)
def test_after_a_quiet_period_the_burst_goes_at_once_then_one_per_interval(
    interval: float, burst: int
) -> None:
    waits = []
    tat = 0.0
    for _ in range(burst + 3):
        step = reserve_slot(tat, now=START, interval=interval, burst=burst)
        tat = step.tat
        waits.append(step.wait)
    assert waits[:burst] == pytest.approx([0.0] * burst, abs=1e-9)  # float rounding only
    assert waits[burst:] == pytest.approx([interval * k for k in (1, 2, 3)])


rates = st.floats(min_value=0.05, max_value=10_000.0)


@given(rates, st.floats(min_value=0.0, max_value=1_000.0), st.floats(min_value=1, max_value=60))
def test_a_throttle_halves_the_shared_rate_and_it_recovers_to_the_cap(
    configured: float, later: float, cooldown: float
) -> None:
    change = lowered_shared_rate(
        configured, None, None, reserved_at=T0 - 1, now=T0, cooldown=cooldown
    )
    assert change is not None
    lowered, since = change
    assert lowered == max(FLOOR_RATE, configured / 2) or lowered == configured
    assert since == T0
    rate = shared_rate(configured, lowered, since, now=T0 + later, cooldown=cooldown)
    assert lowered <= rate <= configured
    # Doubling every cool-down: back at the cap once log2(cap / lowered) cool-downs passed.
    back = shared_rate(configured, lowered, since, now=T0 + 64 * cooldown, cooldown=cooldown)
    assert back == configured


@given(rates, st.floats(min_value=0.0, max_value=100.0))
def test_one_lowering_per_episode(configured: float, before: float) -> None:
    """A reply to a message reserved before the last lowering does not lower it again."""
    lowered = configured / 2
    assert (
        lowered_shared_rate(
            configured, lowered, T0, reserved_at=T0 - before, now=T0 + 1, cooldown=10
        )
        is None
    )
    again = lowered_shared_rate(
        configured, lowered, T0, reserved_at=T0 + 0.5, now=T0 + 1, cooldown=10
    )
    assert (again is not None and again[0] < lowered) or lowered / 2 < FLOOR_RATE


def test_limits_are_checked_and_read_from_the_environment() -> None:
    assert OutboxLimits.from_env({}) == OutboxLimits()
    assert not OutboxLimits().limited
    limits = OutboxLimits.from_env({
        "RELIABLE_SMTP_OUTBOX_RATE_PER_SECOND": "100",
        "RELIABLE_SMTP_OUTBOX_RATE_PER_DAY": "50000",
        "RELIABLE_SMTP_OUTBOX_MAX_CONNECTIONS": "4",
        "RELIABLE_SMTP_OUTBOX_BURST": "5",
    })  # fmt: skip
    assert limits == OutboxLimits(per_second=100, per_day=50_000, max_connections=4, burst=5)
    assert limits.rates == {"rate/per_second": 100.0, "rate/per_day": 50_000 / 86_400}
    settings_limits = MailerSettings(
        outbox_rate_per_minute=30, outbox_max_connections=3, _env_file=None
    ).outbox_limits()
    assert settings_limits == OutboxLimits(per_minute=30, max_connections=3)
    with pytest.raises(ConfigurationError, match="RELIABLE_SMTP_OUTBOX_RATE_PER_SECOND"):
        OutboxLimits(per_second=0)
    with pytest.raises(ConfigurationError, match="RELIABLE_SMTP_OUTBOX_MAX_CONNECTIONS"):
        OutboxLimits.from_env({"RELIABLE_SMTP_OUTBOX_MAX_CONNECTIONS": "four"})
    with pytest.raises(ConfigurationError, match="RELIABLE_SMTP_OUTBOX_MAX_CONNECTIONS"):
        OutboxLimits(max_connections=0)


# -- the store, both backends ------------------------------------------------------------


@pytest.fixture
def store(outbox_url: str) -> Iterator[Store]:  # noqa: F811 - the imported fixture
    opened = open_store(outbox_url)
    yield opened
    opened.close()


def test_reservations_are_shared_by_every_store_of_an_outbox(
    store: Store,
    outbox_url: str,  # noqa: F811
) -> None:
    other = open_store(outbox_url)  # another worker's connection to the same outbox
    try:
        rate = {"rate/per_second": (10.0, 1)}
        waits = [(store if i % 2 else other).reserve(rate, now=T0) for i in range(6)]
        assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], abs=1e-6)
        # A quiet second later the limiter has room again.
        assert store.reserve(rate, now=T0 + 2) == 0.0
        # Several caps: the wait is the longest any of them asks for.
        both = {"rate/per_second": (10.0, 1), "rate/per_minute": (1.0, 1)}
        assert other.reserve(both, now=T0 + 10) == 0.0
        assert other.reserve(both, now=T0 + 10) == pytest.approx(1.0)
    finally:
        other.close()


def test_a_throttle_lowers_the_rate_for_every_store_until_it_recovers(
    store: Store,
    outbox_url: str,  # noqa: F811
) -> None:
    other = open_store(outbox_url)
    try:
        rate = {"rate/per_second": (10.0, 1)}
        assert store.reserve(rate, now=T0) == 0.0
        store.throttle(rate, reserved_at=T0, now=T0 + 0.1, cooldown=10)
        # The same episode's other replies do not lower it again.
        other.throttle(rate, reserved_at=T0, now=T0 + 0.1, cooldown=10)
        start = T0 + 1
        waits = [other.reserve(rate, now=start, cooldown=10) for _ in range(3)]
        assert waits == pytest.approx([0.0, 0.2, 0.4], abs=1e-6)  # 5 messages/s: half of 10
        # Two cool-downs later (5 -> 10 -> 20, capped at 10) the configured rate is back.
        later = T0 + 21
        waits = [store.reserve(rate, now=later, cooldown=10) for _ in range(3)]
        assert waits == pytest.approx([0.0, 0.1, 0.2], abs=1e-6)
    finally:
        other.close()


def test_connection_slots_are_shared_and_a_dead_workers_come_back(store: Store) -> None:
    lease = 5.0
    take = store.acquire_slots
    assert take("connections", "w1", want=3, total=4, lease_seconds=lease, now=T0) == 3
    assert take("connections", "w2", want=3, total=4, lease_seconds=lease, now=T0) == 1
    # Renewal keeps what is held and cannot take more than is free.
    assert take("connections", "w2", want=3, total=4, lease_seconds=lease, now=T0 + 4) == 1
    # w1 dies (no more renewals): after its lease w2 gets its slots, never more than 4.
    assert take("connections", "w2", want=3, total=4, lease_seconds=lease, now=T0 + 5.5) == 3
    assert take("connections", "w3", want=4, total=4, lease_seconds=lease, now=T0 + 5.5) == 1
    # w2 shuts down cleanly: its slots are free at once.
    store.release_slots("connections", "w2")
    assert take("connections", "w3", want=4, total=4, lease_seconds=lease, now=T0 + 6) == 4
    # The cap lowered in the configuration: slots above it are not renewed.
    assert take("connections", "w3", want=4, total=2, lease_seconds=lease, now=T0 + 7) == 2


def _shared_limits(
    store: Store,
    slots: int,
    limit_connections: Callable[[int], Awaitable[None]],
    clock: Callable[[], float],
) -> SharedLimits:
    """One worker's share of a ``slots``-connection cap, its store calls made inline."""

    async def call(method: Callable[..., object], *args: object, **kwargs: object) -> object:
        return method(*args, **kwargs)

    async def wait(seconds: float) -> None:
        pass

    return SharedLimits(
        OutboxLimits(max_connections=slots),
        store=store,
        owner="w1",
        concurrency=slots,
        lease_seconds=5.0,
        poll_interval=0.0,
        call=call,
        clock=clock,
        wait=wait,
        limit_connections=limit_connections,
    )


async def test_slots_lost_to_another_worker_are_connections_the_transport_closes(
    store: Store,
) -> None:
    # A stall past the lease (a late heartbeat) lets another worker take slots while our
    # connections are still open: the renewal tells the transport to close the surplus.
    now = T0
    told: list[int] = []

    async def limit_connections(maximum: int) -> None:
        told.append(maximum)

    shared = _shared_limits(store, 3, limit_connections, lambda: now)
    await shared.acquire_slots()
    await asyncio.sleep(0)  # told in a task of its own
    assert (shared.slots, told) == (3, [3])
    now = T0 + 1
    await shared.renew_slots()  # nothing changed: nothing to tell
    await asyncio.sleep(0)
    assert told == [3]
    now = T0 + 6
    take = store.acquire_slots
    assert take("connections", "w2", want=2, total=3, lease_seconds=5.0, now=now) == 2
    await shared.renew_slots()
    await asyncio.sleep(0)
    assert (shared.slots, told) == (1, [3, 1])


async def test_a_transport_failing_to_close_connections_is_logged_not_raised(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async def limit_connections(maximum: int) -> None:
        raise OSError("the socket is gone")

    shared = _shared_limits(store, 2, limit_connections, lambda: T0)
    with caplog.at_level("WARNING", logger="reliable_smtp"):
        await shared.acquire_slots()
        await asyncio.sleep(0)
    assert shared.slots == 2
    assert "closing the connections beyond 2 slot(s) failed (the socket is gone)" in caplog.text


async def test_the_worker_tells_its_transport_of_its_slots(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    with CountingSink() as sink:
        clock = FakeClock(time.time())
        async with _worker(url, sink.port, clock, OutboxLimits(max_connections=1)) as worker:
            transport = worker._mailer.transport
            assert worker._shared._limit_connections == transport.limit_connections


# -- the worker, in-process, injected clock --------------------------------------------


@contextlib.asynccontextmanager
async def _worker(
    url: str, port: int, clock: FakeClock, limits: OutboxLimits
) -> AsyncIterator[OutboxWorker]:
    """One worker on its own store, one connection at a time, on the injected clock."""
    store = open_store(url)
    transport = SMTPTransport("127.0.0.1", port, tls="none", max_connections=1)
    try:
        async with AsyncMailer(transport) as mailer:
            yield OutboxWorker(
                store,
                mailer,
                concurrency=1,
                batch=1,
                poll_interval=0.05,
                limits=limits,
                clock=clock,
                sleep=clock.sleep,
            )
    finally:
        store.close()


async def test_the_worker_waits_what_each_reservation_says(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    clock = FakeClock(time.time() + 1)  # after the enqueue: the entries are due
    with Outbox(url) as outbox, CountingSink() as sink:
        _fill(outbox, 20, seed=1)
        async with _worker(url, sink.port, clock, OutboxLimits(per_second=10)) as worker:
            await worker.run_until_idle()
        assert sum(sink.deliveries.values()) == sum(len(e.recipients) for e in outbox.list())
    # One message at once, then one every 0.1 s of the injected clock: 20 in 1.9 s.
    assert [s for s in clock.sleeps if s > 0] == pytest.approx([0.1] * 19, abs=1e-6)


async def test_a_throttled_reply_slows_every_worker_of_the_outbox(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    clock = FakeClock(time.time() + 1)  # after the enqueue: the entries are due
    limits = OutboxLimits(per_second=10)
    with Outbox(url) as outbox, CountingSink() as sink:
        _fill(outbox, 1, seed=2)
        sink.refuse = lambda address: "451 4.7.1 rate limit exceeded, slow down"
        async with _worker(url, sink.port, clock, limits) as worker:
            await worker.run_until_idle()
        # Another worker of the outbox now reserves at 5 messages/s, not 10.
        other = open_store(url)
        try:
            now = clock.now + 1
            waits = [other.reserve(worker._rates, now=now) for _ in range(3)]
        finally:
            other.close()
    assert waits == pytest.approx([0.0, 0.2, 0.4], abs=1e-6)


async def test_a_worker_without_a_slot_claims_nothing_until_one_is_free(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    with Outbox(url) as outbox, CountingSink() as sink:
        _fill(outbox, 3, seed=3)
        outbox.store.acquire_slots(  # another worker holds the only connection
            "connections", "elsewhere", want=1, total=1, lease_seconds=60, now=time.time()
        )
        clock = FakeClock(time.time())
        polls = 0

        async def sleep(seconds: float) -> None:
            nonlocal polls
            polls += 1
            if polls == 5:  # the other worker dies: its lease runs out
                clock.advance(120)
            await asyncio.sleep(0.01)  # looking again costs a little real time, as in a worker

        clock.sleep = sleep  # type: ignore[method-assign]
        async with _worker(url, sink.port, clock, OutboxLimits(max_connections=1)) as worker:
            await asyncio.wait_for(worker.run_until_idle(), 30)
        assert polls >= 5
        assert sum(sink.deliveries.values()) == sum(len(e.recipients) for e in outbox.list())


# -- real worker processes -----------------------------------------------------------------

#: Below what 4 worker processes, PostgreSQL and the sink can do together on 2 shared
#: cores: at 100/s the steady rate once fell to 89.5/s in CI (the workers could not keep
#: up), which says nothing about the cap. The test is of the cap.
CAP = 80.0
CONNECTIONS = 6


def _start_worker(
    url: str, port: int, cwd: Path, *, env: Mapping[str, str], lease: str = LEASE
) -> subprocess.Popen[bytes]:
    """``reliable-smtp worker`` as in the crash tests, with the limits in its environment."""
    return start_worker(url, port, cwd, lease=lease, env=env)


#: The capped runs' lease (entries and connection slots). Nobody is killed there, so it
#: need not be the crash tests' 1 s: with 4 workers, PostgreSQL and the sink on 2 cores, a
#: worker's heartbeat came late once in CI, its slots expired while its connections were
#: still open, another worker took them, and the sink saw 10 connections for 6 slots.
CAPPED_LEASE = "10"


def _steady_rate(arrivals: list[float], *, skip: int, tail: int) -> tuple[float, int]:
    """The average rate between the skip-th and the (n - tail)-th arrival, and the most
    arrivals any one-second window of that part held."""
    steady = sorted(arrivals)[skip : len(arrivals) - tail]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    most, start = 0, 0
    for end, moment in enumerate(steady):
        while steady[start] <= moment - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return rate, most


#: The outbox's burst in the capped runs: how far ahead of the rate a late worker may catch up.
BURST = 5


def _capped_run(url: str, cwd: Path, *, workers: int, count: int, cap: float = CAP) -> None:
    # Each worker would open 4 connections; the outbox allows 6 over all of them (enough
    # that a loaded 2-core machine still keeps up with the cap: the test is of the cap).
    extra_env = {
        "RELIABLE_SMTP_OUTBOX_RATE_PER_SECOND": str(cap),
        "RELIABLE_SMTP_OUTBOX_MAX_CONNECTIONS": str(CONNECTIONS),
        # A worker that starts a transaction late (a loaded machine) may make up for it
        # within BURST messages.
        "RELIABLE_SMTP_OUTBOX_BURST": str(BURST),
    }
    with Outbox(url) as outbox:
        _fill(outbox, count, seed=workers)
        with CountingSink(seed=workers) as sink:
            running = [
                _start_worker(url, sink.port, cwd, env=extra_env, lease=CAPPED_LEASE)
                for _ in range(workers)
            ]
            try:
                _drain(outbox, running, within=120)
            finally:
                codes = [_stop(worker) for worker in running]
            assert codes == [0] * workers
            states = _reconcile(outbox, sink, count)
            arrivals = list(sink.arrivals)
            most_connections = sink.most_connections
    assert states == {"sent": count}
    assert len(arrivals) == count
    assert most_connections <= CONNECTIONS
    # Start-up (workers connecting) and the last few (workers running dry) excluded.
    rate, most = _steady_rate(arrivals, skip=count // 6, tail=count // 12)
    print(f"\n{workers} workers, cap {cap:.0f}/s: steady {rate:.1f}/s, busiest second {most}")
    assert 0.9 * cap <= rate <= 1.1 * cap
    # The reservations allow at most cap + BURST in any second; the sink sees arrivals,
    # each a little after its reservation (a worker process scheduled late on 2 shared
    # cores), so a second can also hold messages reserved just before it: 10% of the
    # cap for that lag. (cap 50 once gave 57 in a second here: cap + BURST + 2.)
    assert most <= 1.1 * cap + BURST


def test_four_workers_on_postgresql_hold_the_shared_rate(
    postgres_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    _capped_run(f"{postgres_database}?schema=capped", tmp_path, workers=4, count=600)


def test_two_workers_on_sqlite_hold_the_shared_rate(tmp_path: Path) -> None:
    # 50/s: every reservation is a write on the one file the workers share, and on a
    # loaded 2-core machine two workers keep up with 100/s only just (the test is of the cap).
    _capped_run(f"sqlite:///{tmp_path / 'outbox.db'}", tmp_path, workers=2, count=400, cap=50)


def test_a_killed_workers_connection_slots_come_back_after_its_lease(tmp_path: Path) -> None:
    """One shared connection: worker A holds it and is SIGKILLed; B sends once A's lease
    (1 s) has run out. Without reclaiming, B would never get a slot and nothing drains."""
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    env = {
        "RELIABLE_SMTP_OUTBOX_MAX_CONNECTIONS": "1",
        "RELIABLE_SMTP_OUTBOX_RATE_PER_SECOND": "50",
    }
    with Outbox(url) as outbox, CountingSink() as sink:
        _fill(outbox, 200, seed=4)
        first = _start_worker(url, sink.port, tmp_path, env=env)
        try:
            deadline = time.monotonic() + 60
            while len(sink.arrivals) < 20:  # A is sending: it holds the slot
                assert time.monotonic() < deadline, "the first worker sent nothing"
                assert first.poll() is None
                time.sleep(0.02)
        finally:
            first.kill()
            first.wait()
        second = _start_worker(url, sink.port, tmp_path, env=env)
        try:
            _drain(outbox, [second], within=60)
        finally:
            assert _stop(second) == 0
        states = _reconcile(outbox, sink, 200, kills=1)
        most_connections = sink.most_connections
    assert set(states) <= {"sent", "ambiguous"}
    assert states["sent"] >= 190
    assert most_connections == 1


def test_an_outbox_at_schema_version_1_is_upgraded_in_place(tmp_path: Path) -> None:
    """A database made by the previous release (version 1) gets the limits' columns and
    the slots table on first use, keeping its entries."""
    path = tmp_path / "outbox.db"
    tables = SQLITE.tables("outbox_")
    with sqlite3.connect(path) as conn:
        for statement in (VERSION_TABLE, *MIGRATIONS[0]):
            conn.execute(ddl(statement, SQLITE, tables))
        conn.execute("INSERT INTO outbox_schema_version (version) VALUES (1)")
        conn.execute("INSERT INTO outbox_limiters (name, next_free_at) VALUES ('old', 5)")
    conn.close()
    store = open_store(f"sqlite:///{path}")
    try:
        assert store.migrate() == SCHEMA_VERSION == 3
        assert store.reserve({"rate/per_second": (10.0, 1)}, now=T0) == 0.0
        assert store.acquire_slots("connections", "w", want=1, total=1, lease_seconds=1, now=T0)
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        kept = conn.execute("SELECT next_free_at FROM outbox_limiters WHERE name = 'old'")
        assert kept.fetchall() == [(5.0,)]
    conn.close()


async def test_a_stop_while_waiting_for_the_rate_gives_the_entry_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    clock = FakeClock(time.time() + 1)
    with Outbox(url) as outbox, CountingSink() as sink:
        _fill(outbox, 2, seed=5)
        # Another worker reserved the next hour of a 1-a-minute cap.
        rate = {"rate/per_minute": (1 / 60, 1)}
        for _ in range(60):
            outbox.store.reserve(rate, now=clock.now)
        async with _worker(url, sink.port, clock, OutboxLimits(per_minute=1)) as worker:
            waited = asyncio.Event()

            async def sleep(seconds: float) -> None:
                waited.set()
                await asyncio.sleep(3600)  # the reservation's wait: a stop must cut it short

            worker._sleep = sleep
            running = asyncio.create_task(worker.arun())
            await asyncio.wait_for(waited.wait(), 10)
            worker.stop()
            await asyncio.wait_for(running, 10)
        assert sink.deliveries == {}
        assert {e.state.value for e in outbox.list()} == {"queued"}


@pytest.mark.parametrize("split", ["policy", "452"], ids=["one-per-transaction", "452-split"])
async def test_each_transaction_of_a_claim_reserves_its_place_in_the_shared_rate(
    tmp_path: Path, split: str
) -> None:
    # A claim can take several transactions: a policy that allows one recipient per
    # transaction, or a "452 too many recipients" resent at once. The provider counts
    # each, so each reserves: 3 transactions at 10/s wait 0.1 s twice (the claim's
    # first was reserved before it started).
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    clock = FakeClock(time.time() + 1)  # after the enqueue: the entry is due
    refused_once: set[str] = set()

    def too_many(address: str) -> str | None:
        if split == "452" and address != "a@example.org" and address not in refused_once:
            refused_once.add(address)
            return "452 4.5.3 too many recipients"
        return None

    policy = RecipientPolicy(max_recipients_per_transaction=1 if split == "policy" else None)
    recipients = ["a@example.org", "b@example.org", "c@example.org"]
    with Outbox(url) as outbox, CountingSink() as sink:
        outbox.enqueue(Message(sender="app@example.com", to=recipients, subject="hi", text="body"))
        sink.refuse = too_many
        store = open_store(url)
        transport = SMTPTransport("127.0.0.1", sink.port, tls="none", max_connections=1)
        try:
            async with AsyncMailer(transport, recipient_policy=policy) as mailer:
                worker = OutboxWorker(
                    store,
                    mailer,
                    concurrency=1,
                    batch=1,
                    poll_interval=0.05,
                    limits=OutboxLimits(per_second=10),
                    clock=clock,
                    sleep=clock.sleep,
                )
                stats = await worker.run_until_idle()
        finally:
            store.close()
        delivered = sum(sink.deliveries.values())
    assert stats.recipients == {"sent": 3}
    assert delivered == 3
    transactions = 3 if split == "policy" else 2  # 452: a alone, then b and c together
    assert [s for s in clock.sleeps if s > 0] == pytest.approx([0.1] * (transactions - 1), abs=1e-6)
