"""Crash tests: real worker processes SIGKILLed at random moments, real sockets, real databases.

A counting SMTP sink in this process takes every final dot as a delivery (the
instant a real server takes responsibility) and sometimes waits before replying,
so kills land between the dot and its reply. Whatever the kills, at the end:

* no (Message-ID, recipient) was delivered twice;
* every entry is in a final state (SENT) or parked (AMBIGUOUS);
* AMBIGUOUS only for recipients whose transaction had reached DATA (354), and
  only for entries whose DATA body the server had seen: the worker writes the body,
  then commits the dot mark, then writes the final dot alone, so a kill can leave a
  mark only once the body is on the wire (a kill between the mark and the dot is a
  false "ambiguous", which the contract allows; a duplicate never is);
* every recipient the outbox calls SENT was delivered exactly once, and every
  delivery the server counted belongs to a SENT or AMBIGUOUS recipient.

Then several workers on one outbox (four on PostgreSQL, two on SQLite): no
duplicates either. Timings are printed (``pytest -s``) for the report.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from outbox_sink import CountingSink, start_worker
from reliable_smtp import EntryState, Message, Outbox, RecipientState
from test_outbox_support import postgres_database  # noqa: F401 - fixture

LEASE = "1"


def _fill(outbox: Outbox, count: int, seed: int, *, first: int = 0) -> None:
    rng = random.Random(seed + first)
    messages = [
        Message(
            sender="app@example.com",
            to=[f"r{i}-{k}@example.org" for k in range(rng.randint(1, 3))],
            subject=f"message {i}",
            text="body\n" * rng.randint(1, 20),
        )
        for i in range(first, first + count)
    ]
    for start in range(0, count, 500):
        outbox.enqueue_many(messages[start : start + 500])


def _start_worker(url: str, port: int, cwd: Path, *extra: str) -> subprocess.Popen[bytes]:
    return start_worker(url, port, cwd, *extra, lease=LEASE)


def _stop(worker: subprocess.Popen[bytes], *, timeout: float = 30) -> int:
    """SIGTERM, then wait: the worker must exit 0 on its own."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return worker.returncode


def _outstanding(outbox: Outbox) -> int:
    counts = outbox.stats().counts
    return counts[EntryState.QUEUED] + counts[EntryState.DEFERRED] + counts[EntryState.SENDING]


def _drain(outbox: Outbox, workers: list[subprocess.Popen[bytes]], *, within: float) -> None:
    deadline = time.monotonic() + within
    while _outstanding(outbox):
        assert time.monotonic() < deadline, f"not drained in {within} s: {outbox.stats()}"
        for worker in workers:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        time.sleep(0.1)


def _reconcile(outbox: Outbox, sink: CountingSink, count: int, *, kills: int = 0) -> Counter[str]:
    entries = outbox.list(limit=count + 10)
    assert len(entries) == count
    deliveries = sink.deliveries
    seen = sink.seen_in_data
    answered = sink.answered_data
    twice = {key: n for key, n in deliveries.items() if n > 1}
    assert not twice, f"delivered more than once: {twice}"
    states: Counter[str] = Counter()
    accounted = 0
    for entry in entries:
        states[entry.state.value] += 1
        assert entry.state in (EntryState.SENT, EntryState.AMBIGUOUS), entry
        if entry.state is EntryState.AMBIGUOUS and entry.message_id not in seen:
            states["ambiguous, body never seen"] += 1
        for recipient in entry.recipients:
            if recipient.state is RecipientState.AMBIGUOUS:
                assert recipient.address in answered, f"ambiguous before DATA: {entry}"
            key = (entry.message_id, recipient.address)
            if recipient.state is RecipientState.SENT:
                assert deliveries[key] == 1, (key, recipient)
                accounted += 1
            else:
                assert recipient.state is RecipientState.AMBIGUOUS, (key, recipient)
                accounted += deliveries[key]
    assert accounted == sum(deliveries.values())  # every delivery belongs to an entry
    # The mark is committed only after the body was written (transports/smtp.py).
    assert states["ambiguous, body never seen"] == 0, states
    return states


def _crash_run(url: str, cwd: Path, *, seed: int, count: int = 2000, kills: int = 24) -> None:
    rng = random.Random(seed)
    started = time.monotonic()
    with Outbox(url) as outbox:
        _fill(outbox, count, seed)
        with CountingSink(seed=seed, delay_share=0.03, delay=0.3) as sink:
            at_dot = threading.Event()
            sink.on_delayed_dot = at_dot.set
            between = 0
            for number in range(kills):
                if _outstanding(outbox) < 200:
                    # A fast machine may drain the queue before the last kill: keep every
                    # kill landing on a busy worker (the totals below include these).
                    _fill(outbox, 200, seed, first=count)
                    count += 200
                worker = _start_worker(url, sink.port, cwd)
                try:
                    if number % 2 == 0:
                        at_dot.clear()
                        at_dot.wait(10)  # a final dot whose reply is held back: kill now
                    else:
                        time.sleep(rng.uniform(0.05, 0.8))
                    between += sink.replies_pending > 0
                    worker.kill()
                finally:
                    worker.wait()
            assert between >= kills // 3, f"only {between} kills between a dot and its reply"
            final = _start_worker(url, sink.port, cwd)
            try:
                _drain(outbox, [final], within=60)
            finally:
                assert _stop(final) == 0
            states = _reconcile(outbox, sink, count, kills=kills)
    print(
        f"\ncrash test {url.partition(':')[0]}: {count} messages, {kills} SIGKILLs "
        f"({between} between a dot and its reply), {dict(states)}, "
        f"{time.monotonic() - started:.1f} s"
    )


def test_crash_sqlite(tmp_path: Path) -> None:
    _crash_run(f"sqlite:///{tmp_path / 'outbox.db'}", tmp_path, seed=13)


def test_crash_postgresql(postgres_database: str, tmp_path: Path) -> None:  # noqa: F811
    _crash_run(f"{postgres_database}?schema=crash", tmp_path, seed=31)


def _many_workers(url: str, cwd: Path, *, workers: int, count: int) -> None:
    with Outbox(url) as outbox:
        _fill(outbox, count, seed=workers)
        with CountingSink(seed=workers) as sink:
            started = time.monotonic()
            # Nobody is killed here, so a lease long enough that a starved heartbeat on a
            # loaded machine cannot lose one (a lost lease after a dot is rightly AMBIGUOUS).
            running = [start_worker(url, sink.port, cwd, lease="30") for _ in range(workers)]
            try:
                _drain(outbox, running, within=120)
                elapsed = time.monotonic() - started
            finally:
                codes = [_stop(worker) for worker in running]
            assert codes == [0] * workers
            states = _reconcile(outbox, sink, count)
    assert states == {"sent": count}
    print(
        f"\n{workers} workers on {url.partition(':')[0]}: {count} messages in {elapsed:.1f} s "
        f"({count / elapsed:.0f} msg/s, worker start-up included)"
    )


def test_four_workers_on_postgresql(postgres_database: str, tmp_path: Path) -> None:  # noqa: F811
    _many_workers(f"{postgres_database}?schema=four", tmp_path, workers=4, count=2000)


def test_two_workers_on_sqlite(tmp_path: Path) -> None:
    _many_workers(f"sqlite:///{tmp_path / 'outbox.db'}", tmp_path, workers=2, count=2000)
