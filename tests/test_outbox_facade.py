"""Outbox and AsyncOutbox: validation and rendering at enqueue, the caller's transaction,
batches, the operator's actions, configuration from the environment."""

from __future__ import annotations

import inspect
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reliable_smtp import (
    AsyncMailer,
    AsyncOutbox,
    ConfigurationError,
    EntryState,
    EntryStateError,
    InvalidAddressError,
    InvalidMessageError,
    Mailer,
    Message,
    Outbox,
    OutboxError,
    OutboxSchedule,
    RecipientPolicy,
    RecipientState,
)
from reliable_smtp._outbox.schema import SCHEMA_VERSION
from reliable_smtp.testing import FakeClock
from test_outbox_support import outbox_url, postgres_database  # noqa: F401 - fixtures

T0 = 1_700_000_000.0


def message(*to: str, subject: str = "Your receipt") -> Message:
    return Message(
        sender="Shop <shop@example.com>",
        to=list(to or ("alice@example.org",)),
        bcc=["audit@example.com"],
        subject=subject,
        text="Thank you for your order.",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def outbox(outbox_url: str, clock: FakeClock) -> Any:  # noqa: F811 - the imported fixture
    with Outbox(outbox_url, clock=clock, schedule=OutboxSchedule(jitter=0.0)) as opened:
        yield opened


def test_enqueue_stores_the_message_exactly_as_it_will_go_out(outbox: Outbox) -> None:
    entry = outbox.enqueue(message(), idempotency_key="receipt-1", metadata={"order": 1})
    assert entry.state is EntryState.QUEUED
    assert entry.sender == "shop@example.com"
    assert [r.address for r in entry.recipients] == ["alice@example.org", "audit@example.com"]
    assert f"Message-ID: <{entry.message_id}>".encode() in entry.content
    assert b"audit@example.com" not in entry.content  # Bcc is envelope only
    assert (entry.created_at, entry.expires_at) == (T0, T0 + 5 * 86400)
    assert entry.metadata == {"order": 1}
    assert outbox.get(entry.id) == entry
    (claim,) = outbox.store.claim("w", limit=1, lease_seconds=60, now=T0)
    assert claim.content == entry.content  # every retry sends the same bytes
    assert claim.message_id == entry.message_id


def test_a_second_enqueue_with_the_key_returns_the_first_entry(outbox: Outbox) -> None:
    first = outbox.enqueue(message(), idempotency_key="reset-4711")
    again = outbox.enqueue(message(subject="changed"), idempotency_key="reset-4711")
    assert again == first
    assert len(outbox.list()) == 1


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (lambda: message("not an address"), InvalidAddressError),
        (lambda: message(subject="line\r\nBcc: victim@example.org"), InvalidMessageError),
    ],
    ids=["address", "header"],
)
def test_a_bad_message_fails_at_enqueue_and_queues_nothing(
    outbox: Outbox, bad: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        outbox.enqueue(bad())
    assert outbox.list() == []


def test_skipped_recipients_are_recorded_failed(outbox_url: str) -> None:  # noqa: F811
    policy = RecipientPolicy(on_invalid="skip", denied_domains={"blocked.example"})
    with Outbox(outbox_url, recipient_policy=policy) as outbox:
        entry = outbox.enqueue(message("alice@example.org", "bob@blocked.example"))
    refused = entry.recipient("bob@blocked.example")
    assert refused.state is RecipientState.FAILED
    assert refused.explanation
    assert entry.state is EntryState.QUEUED  # alice and audit are still to be sent


def test_enqueue_many_is_one_transaction(outbox: Outbox) -> None:
    entries = outbox.enqueue_many(
        [message(f"u{i}@example.org") for i in range(50)],
        idempotency_keys=[f"k{i}" for i in range(50)],
    )
    assert [e.idempotency_key for e in entries] == [f"k{i}" for i in range(50)]
    assert len({e.message_id for e in entries}) == 50
    with pytest.raises(InvalidAddressError):
        outbox.enqueue_many([message("new@example.org"), message("broken")])
    assert len(outbox.list(limit=1000)) == 50  # the good one of the bad batch was not written
    with pytest.raises(ValueError, match="one per message"):
        outbox.enqueue_many([message()], idempotency_keys=[])
    assert outbox.enqueue_many([]) == []


def test_save_the_order_and_send_the_receipt_atomically(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "app.db"
    with Outbox(f"sqlite:///{path}", clock=clock) as outbox:
        app = sqlite3.connect(path)
        try:
            app.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
            with app:  # commits
                app.execute("INSERT INTO orders VALUES (1)")
                kept = outbox.enqueue(message(), connection=app)
            try:
                with app:  # rolls back
                    app.execute("INSERT INTO orders VALUES (2)")
                    lost = outbox.enqueue(message(), connection=app)
                    raise RuntimeError("payment failed")
            except RuntimeError:
                pass
        finally:
            app.close()
        assert [e.id for e in outbox.list()] == [kept.id]
        assert lost.id not in {
            c.entry_id for c in outbox.store.claim("w", limit=9, lease_seconds=9, now=T0)
        }


def test_operator_actions_use_the_clock(outbox: Outbox, clock: FakeClock) -> None:
    entry = outbox.enqueue(message("a@example.org"))
    clock.advance(30)
    stats = outbox.stats()
    assert (stats.counts[EntryState.QUEUED], stats.oldest_due_age) == (1, 30)
    cancelled = outbox.cancel(entry.id)
    assert cancelled.state is EntryState.CANCELLED
    with pytest.raises(EntryStateError, match="no ambiguous"):
        outbox.resolve(entry.id, "sent")
    retried = outbox.retry(entry.id)
    assert (retried.state, retried.due_at) == (EntryState.QUEUED, T0 + 30)
    outbox.cancel(entry.id)
    clock.advance(100)
    assert outbox.purge(older_than=100) == 1
    assert outbox.migrate() == SCHEMA_VERSION


def test_from_env_reads_the_outbox_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("RELIABLE_SMTP_OUTBOX_URL", raising=False)
    with pytest.raises(ConfigurationError) as caught:
        Outbox.from_env()
    assert caught.value.setting == "RELIABLE_SMTP_OUTBOX_URL"
    monkeypatch.setenv("RELIABLE_SMTP_OUTBOX_URL", f"sqlite:///{tmp_path}/env.db")
    with Outbox.from_env() as outbox:
        outbox.enqueue(message())
    assert (tmp_path / "env.db").exists()
    (tmp_path / ".env").write_text(f"RELIABLE_SMTP_OUTBOX_URL=sqlite:///{tmp_path}/dotenv.db\n")
    monkeypatch.delenv("RELIABLE_SMTP_OUTBOX_URL")
    with Outbox.from_env() as outbox:
        assert outbox.url.endswith("dotenv.db")


def test_async_outbox_has_every_method_of_outbox() -> None:
    sync_only = {"prepare", "now", "from_env"}
    names = {n for n, _ in inspect.getmembers(Outbox, inspect.isfunction) if not n.startswith("_")}
    for name in names - sync_only:
        assert inspect.iscoroutinefunction(getattr(AsyncOutbox, name)), name
    assert hasattr(AsyncOutbox, "from_env")


def test_the_twins_take_the_same_keywords() -> None:
    # AsyncOutbox is Outbox awaited: a keyword missing from one of them (migrate= was) is a
    # setting async code cannot make.
    for sync, twin in ((Outbox, AsyncOutbox), (Mailer, AsyncMailer)):
        expected = inspect.signature(sync.__init__).parameters
        assert inspect.signature(twin.__init__).parameters == expected, twin.__name__


async def test_an_async_outbox_opened_without_migrating_migrates_on_demand(
    tmp_path: Path,
) -> None:
    async with AsyncOutbox(f"sqlite:///{tmp_path}/late.db", migrate=False) as outbox:
        assert await outbox.migrate() == SCHEMA_VERSION
        assert (await outbox.enqueue(message())).state is EntryState.QUEUED


async def test_async_outbox_round_trip(outbox_url: str, clock: FakeClock) -> None:  # noqa: F811
    async with AsyncOutbox(outbox_url, clock=clock) as outbox:
        entry = await outbox.enqueue(message(), idempotency_key="a")
        assert await outbox.enqueue(message(), idempotency_key="a") == entry
        batch = await outbox.enqueue_many([message(), message()])
        assert await outbox.get(entry.id) == entry
        assert [e.id for e in await outbox.list()] == [entry.id] + [e.id for e in batch]
        assert (await outbox.stats()).counts[EntryState.QUEUED] == 3
        assert (await outbox.cancel(entry.id)).state is EntryState.CANCELLED
        assert (await outbox.retry(entry.id)).state is EntryState.QUEUED
        with pytest.raises(EntryStateError):
            await outbox.resolve(entry.id, "failed")
        assert await outbox.purge(older_than=0) == 0
        assert await outbox.migrate() == SCHEMA_VERSION


async def test_a_closed_async_outbox_says_so(outbox_url: str) -> None:  # noqa: F811
    outbox = AsyncOutbox(outbox_url)
    await outbox.close()
    await outbox.close()  # closing twice is fine
    with pytest.raises(OutboxError, match="closed"):  # not the executor's RuntimeError
        await outbox.get(1)


SKIP_PROBE = """
from test_outbox_support import postgres_database

def test_needs_postgres(postgres_database):
    pass
"""


@pytest.mark.parametrize("ci", [False, True], ids=["developer", "ci"])
def test_without_postgres_the_tests_skip_except_in_ci(tmp_path: Path, ci: bool) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(SKIP_PROBE)
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parent),
        "RELIABLE_SMTP_TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/test",
        "CI": "true" if ci else "",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            str(probe),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ci:
        assert done.returncode == 1, done.stdout
        assert "CI=true, so the PostgreSQL tests must run" in done.stdout
    else:
        assert done.returncode == 0, done.stdout
        assert "1 skipped" in done.stdout
        assert "set RELIABLE_SMTP_TEST_POSTGRES_URL" in done.stdout


def test_an_outbox_on_a_corrupt_file_raises_a_typed_error(tmp_path: Path) -> None:
    from reliable_smtp import OutboxUnavailableError

    corrupt = tmp_path / "outbox.db"
    corrupt.write_bytes(b"\x00garbage" * 512)
    with pytest.raises(OutboxUnavailableError, match="corrupt") as caught:
        Outbox(f"sqlite:///{corrupt}")
    assert "RELIABLE_SMTP_OUTBOX_URL" in str(caught.value)


def test_enqueue_after_postgres_went_away_raises_a_typed_error(
    postgres_database: str,  # noqa: F811 - proves PostgreSQL is reachable (or skips)
) -> None:
    import psycopg

    from reliable_smtp import OutboxUnavailableError
    from test_outbox_support import ADMIN_URL

    name = f"reliable_smtp_gone_{os.getpid()}"
    base = postgres_database.rpartition("/")[0]
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            outbox = Outbox(f"{base}/{name}")
            outbox.enqueue(message())
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # kills our connections
            with pytest.raises(OutboxUnavailableError, match="cannot be used") as caught:
                outbox.enqueue(message())
            assert name in caught.value.url
            outbox.close()
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
