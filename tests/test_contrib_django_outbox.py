"""``OutboxEmailBackend``: Django mail queued in the application's transaction, sent by the worker.

Every test runs on a real SQLite file and on a fresh PostgreSQL database (created
for the session, dropped after; skipped with the how-to when the server is not
reachable, failed under ``CI=true``), registered as an extra ``DATABASES`` alias
of the test project, with the project's ``Order`` table. Sending goes through
the ``reliable_smtp_worker`` management command to a real SMTP server on 127.0.0.1.
"""

from __future__ import annotations

import importlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

if not settings.configured:
    project = importlib.import_module("django_project.settings")
    settings.configure(**{k: v for k, v in vars(project).items() if k.isupper()})
    django.setup()

from django.core import mail  # noqa: E402
from django.core.management import CommandError, call_command  # noqa: E402
from django.db import DatabaseError, connections, transaction  # noqa: E402
from django.test import override_settings  # noqa: E402

from django_project.mailapp.models import Order  # noqa: E402
from django_project.mailapp.orders import place_order  # noqa: E402
from reliable_smtp import (  # noqa: E402
    ConfigurationError,
    EntryState,
    InvalidAddressError,
    Outbox,
    OutboxEntry,
    RecipientState,
)
from reliable_smtp.contrib.django import (  # noqa: E402
    IDEMPOTENCY_HEADER,
    OutboxEmailBackend,
    close_outboxes,
    migrate_outbox,
    outbox_url,
)
from reliable_smtp.testing import LocalSMTPServer  # noqa: E402
from test_outbox_support import postgres_database  # noqa: E402, F401 - fixture

OUTBOX_BACKEND = "reliable_smtp.contrib.django.OutboxEmailBackend"


def _add_database(alias: str, config: dict[str, Any]) -> None:
    """Register ``alias`` in the configured project (Django reads DATABASES once)."""
    filled = connections.configure_settings(
        {"default": settings.DATABASES["default"], alias: config}
    )
    settings.DATABASES[alias] = connections.settings[alias] = filled[alias]


def _remove_database(alias: str) -> None:
    connections[alias].close()
    del connections[alias]
    connections.settings.pop(alias, None)
    settings.DATABASES.pop(alias, None)  # often the same dict


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-server-binding"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A DATABASES alias with the Order table and the outbox tables, on a fresh database.

    PostgreSQL twice: Django's default client-side binding cursor, and
    ``server_side_binding`` (the store's queries run on the cursor class Django set).
    """
    alias = f"outbox_{request.param.replace('-', '_')}"
    if request.param == "sqlite":
        config: dict[str, Any] = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": tmp_path / "app.db",
        }
    else:
        url = urlsplit(request.getfixturevalue("postgres_database"))
        config = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": url.path.lstrip("/"),
            "USER": url.username or "",
            "HOST": url.hostname or "",
            "PORT": url.port or "",
            "OPTIONS": {"server_side_binding": request.param.endswith("server-binding")},
        }
    _add_database(alias, config)
    try:
        with connections[alias].schema_editor() as editor:
            editor.create_model(Order)
        call_command("reliable_smtp_migrate", database=alias, stdout=io.StringIO())
        with override_settings(EMAIL_BACKEND=OUTBOX_BACKEND, RELIABLE_SMTP_OUTBOX_DATABASE=alias):
            yield alias
        if request.param != "sqlite":
            with connections[alias].cursor() as cursor:  # the next test's schema is fresh
                cursor.execute("DROP SCHEMA reliable_smtp CASCADE")
                cursor.execute('DROP TABLE "mailapp_order"')
    finally:
        close_outboxes()
        _remove_database(alias)


@pytest.fixture
def smtp() -> Iterator[LocalSMTPServer]:
    with (
        LocalSMTPServer() as running,
        override_settings(EMAIL_HOST="127.0.0.1", EMAIL_PORT=running.port),
    ):
        yield running


def _entries(alias: str) -> list[OutboxEntry]:
    """What is committed in the outbox, read on a connection of its own."""
    with Outbox(outbox_url(alias)) as outbox:
        return outbox.list()


def _work(alias: str) -> str:
    out = io.StringIO()
    call_command("reliable_smtp_worker", database=alias, until_idle=True, stdout=out)
    return out.getvalue()


# -- atomicity ---------------------------------------------------------------------------


@pytest.mark.parametrize("order_first", [True, False], ids=["order-then-mail", "mail-first"])
def test_a_rolled_back_atomic_block_queues_and_sends_nothing(
    database: str, smtp: LocalSMTPServer, order_first: bool
) -> None:
    # A process that has sent before: the backend's one-time schema check (a query that
    # would begin the transaction itself) is behind it.
    assert mail.get_connection().send_messages([mail.EmailMessage("-", "-", None, [])]) == 0

    def place() -> None:
        with transaction.atomic(using=database):
            # mail-first: the mail is the transaction's first statement (on PostgreSQL,
            # psycopg had not begun it yet: a regression test for an entry committed alone).
            if order_first:
                Order.objects.using(database).create(number=1, email="ann@example.org")
            assert mail.send_mail("Order 1", "Thanks.", None, ["ann@example.org"]) == 1
            if not order_first:
                Order.objects.using(database).create(number=1, email="ann@example.org")
            raise RuntimeError("payment declined")

    with pytest.raises(RuntimeError, match="declined"):
        place()

    assert not Order.objects.using(database).exists()
    assert _entries(database) == []
    assert "0 claimed" in _work(database)
    assert smtp.messages == []


def test_a_committed_atomic_block_queues_one_entry_sent_exactly_once(
    database: str, smtp: LocalSMTPServer
) -> None:
    assert place_order(7, "ann@example.org", using=database) == 1

    (entry,) = _entries(database)
    assert entry.state is EntryState.QUEUED
    assert smtp.messages == []  # queued, not sent: the worker sends

    assert "1 claimed, 1 settled (1 sent)" in _work(database)
    assert "0 claimed" in _work(database)  # a second run finds nothing: exactly once
    (received,) = smtp.messages
    assert received.recipients == ("ann@example.org",)
    assert received.message["Subject"] == "Order 7 confirmed"
    assert received.message["Message-ID"].strip("<>") == entry.message_id.strip("<>")
    (sent,) = _entries(database)
    assert sent.state is EntryState.SENT
    assert sent.recipients[0].state is RecipientState.SENT


def test_an_order_that_fails_is_never_mailed_and_the_next_one_is(
    database: str, smtp: LocalSMTPServer
) -> None:
    with pytest.raises(RuntimeError):
        place_order(8, "bob@example.org", using=database, fail=True)
    place_order(9, "carol@example.org", using=database)
    _work(database)
    assert [m.recipients for m in smtp.messages] == [("carol@example.org",)]


def test_outside_atomic_the_entry_is_committed_at_once(database: str) -> None:
    # Django's autocommit: visible on another connection before any commit of ours.
    assert mail.send_mail("Hi", "Body.", "shop@example.com", ["ann@example.org"]) == 1
    assert [e.recipients[0].address for e in _entries(database)] == ["ann@example.org"]


def test_a_savepoint_rolled_back_drops_its_mail_and_keeps_the_outer_one(database: str) -> None:

    def inner() -> None:
        with transaction.atomic(using=database):
            mail.send_mail("Dropped", "Body.", None, ["bob@example.org"])
            raise RuntimeError("inner block fails")

    with transaction.atomic(using=database):
        mail.send_mail("Kept", "Body.", None, ["ann@example.org"])
        with pytest.raises(RuntimeError, match="inner block"):
            inner()
    assert [e.recipients[0].address for e in _entries(database)] == ["ann@example.org"]


# -- Django's mail API through the outbox ------------------------------------------------


def test_send_mass_mail_and_mail_admins_queue_and_are_sent(
    database: str, smtp: LocalSMTPServer
) -> None:
    with transaction.atomic(using=database):
        sent = mail.send_mass_mail(
            [
                ("One", "Body 1.", None, ["ann@example.org"]),
                ("Two", "Body 2.", None, ["bob@example.org"]),
                ("Nobody", "No recipients: not queued, not counted.", None, []),
            ]
        )
        mail.mail_admins("Disk full", "On db-1.")
    assert sent == 2
    assert len(_entries(database)) == 3
    _work(database)
    received = {m.recipients: m.message["Subject"] for m in smtp.messages}
    assert received == {
        ("ann@example.org",): "One",
        ("bob@example.org",): "Two",
        ("ops@example.com",): "[Django] Disk full",
    }


def test_bcc_is_envelope_only_and_each_message_carries_its_entry(
    database: str, smtp: LocalSMTPServer
) -> None:
    message = mail.EmailMessage(
        "Invoice", "Attached.", None, ["ann@example.org"], bcc=["audit@example.org"]
    )
    message.attach("invoice.txt", "total: 12 EUR", "text/plain")
    assert message.send() == 1
    entry: OutboxEntry = message.reliable_smtp_entry  # type: ignore[attr-defined]
    assert [r.address for r in entry.recipients] == ["ann@example.org", "audit@example.org"]
    _work(database)
    (received,) = smtp.messages
    assert received.recipients == ("ann@example.org", "audit@example.org")
    assert "audit@example.org" not in received.content.decode()
    assert b"total: 12 EUR" in received.content


def test_the_same_idempotency_key_twice_queues_one_message_without_the_header(
    database: str, smtp: LocalSMTPServer
) -> None:
    def confirmation() -> mail.EmailMessage:
        return mail.EmailMessage(
            "Order 5", "Thanks.", None, ["ann@example.org"], headers={IDEMPOTENCY_HEADER: "order-5"}
        )

    first, again = confirmation(), confirmation()
    assert first.send() == 1
    assert again.send() == 1  # it is in the outbox: counted
    assert again.reliable_smtp_entry.id == first.reliable_smtp_entry.id  # type: ignore[attr-defined]
    _work(database)
    (received,) = smtp.messages
    assert IDEMPOTENCY_HEADER not in received.message


# -- errors in the caller's code ---------------------------------------------------------


@pytest.mark.parametrize("fail_silently", [False, True])
def test_a_bad_address_raises_in_send_messages_and_queues_nothing(
    database: str, fail_silently: bool
) -> None:
    with pytest.raises(ValueError, match="Invalid address") as raised:
        mail.send_mail("Hi", "Body.", None, ["not an address"], fail_silently=fail_silently)
    assert isinstance(raised.value, InvalidAddressError)
    with pytest.raises(ValueError, match="Invalid address"):
        mail.send_mail(
            "Hi", "Body.", None, ["x@example.org\r\nBcc: victim@example.org"], fail_silently=True
        )
    assert _entries(database) == []


def test_a_database_that_is_down_raises_or_is_silenced(tmp_path: Path) -> None:
    alias = "outbox_down"
    _add_database(
        alias,
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "nowhere",
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": 1,  # nothing listens there
        },
    )
    try:
        with override_settings(EMAIL_BACKEND=OUTBOX_BACKEND, RELIABLE_SMTP_OUTBOX_DATABASE=alias):
            with pytest.raises(DatabaseError):
                mail.send_mail("Hi", "Body.", None, ["ann@example.org"])
            assert mail.send_mail("Hi", "Body.", None, ["ann@example.org"], fail_silently=True) == 0
    finally:
        close_outboxes()
        _remove_database(alias)


def test_tables_never_created_are_refused_with_the_command_to_run(tmp_path: Path) -> None:
    alias = "outbox_unmigrated"
    _add_database(alias, {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "new.db"})
    try:
        backend = OutboxEmailBackend(database=alias)
        with pytest.raises(ConfigurationError, match="reliable_smtp_migrate") as raised:
            backend.send_messages([mail.EmailMessage("Hi", "Body.", None, ["ann@example.org"])])
        assert "schema version 0" in str(raised.value)
        # Nothing was created behind the caller's back (no write lock taken either).
        tables = sqlite3.connect(tmp_path / "new.db").execute("SELECT name FROM sqlite_master")
        assert not [name for (name,) in tables if name.startswith("outbox_")]
        url, version = migrate_outbox(alias)
        assert version >= 1
        assert url.endswith("new.db")
        assert backend.send_messages([mail.EmailMessage("Hi", "B.", None, ["a@example.org"])]) == 1
    finally:
        close_outboxes()
        _remove_database(alias)


def test_an_in_memory_database_is_refused_with_the_fix() -> None:
    # The project's default database is SQLite :memory:, which no worker can read.
    with pytest.raises(ConfigurationError, match=r"in-memory SQLite.*TEST\['NAME'\]"):
        OutboxEmailBackend().send_messages([mail.EmailMessage("Hi", "B.", None, ["a@example.org"])])


# -- configuration -----------------------------------------------------------------------


def test_postgres_url_is_derived_from_databases_with_the_password_quoted(tmp_path: Path) -> None:
    alias = "outbox_url"
    _add_database(
        alias,
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "shop",
            "USER": "app",
            "PASSWORD": "p@ss/word",
            "HOST": "db.internal",
            "PORT": "6432",
            "OPTIONS": {"sslmode": "require", "server_side_binding": True},
        },
    )
    try:
        assert outbox_url(alias) == (
            "postgresql://app:p%40ss%2Fword@db.internal:6432/shop?sslmode=require&schema=reliable_smtp"
        )
        with override_settings(RELIABLE_SMTP_OUTBOX_SCHEMA="mail"):
            assert outbox_url(alias).endswith("?sslmode=require&schema=mail")
        with override_settings(RELIABLE_SMTP_OUTBOX_URL="postgresql://app@db.internal/shop"):
            assert outbox_url(alias) == "postgresql://app@db.internal/shop"
    finally:
        _remove_database(alias)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_an_outbox_url_naming_another_database_is_refused(database: str, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path}/elsewhere.db"
    Outbox(other).close()  # the tables exist there: only the database differs
    with (
        override_settings(RELIABLE_SMTP_OUTBOX_URL=other),
        pytest.raises(ValueError, match="would not be in your transaction"),
    ):
        mail.send_mail("Hi", "Body.", None, ["ann@example.org"])


def test_migrate_creates_the_outbox_tables_through_post_migrate(tmp_path: Path) -> None:
    alias = "outbox_migrated"
    _add_database(alias, {"ENGINE": "django.db.backends.sqlite3", "NAME": tmp_path / "m.db"})
    try:
        with override_settings(RELIABLE_SMTP_OUTBOX_DATABASE=alias):
            call_command("migrate", database=alias, run_syncdb=True, verbosity=0)
        tables = {
            n
            for (n,) in sqlite3.connect(tmp_path / "m.db").execute("SELECT name FROM sqlite_master")
        }
        assert {"outbox_entries", "outbox_recipients", "mailapp_order"} <= tables
    finally:
        _remove_database(alias)


def test_a_project_test_under_django_test_runner_sends_through_the_worker(
    smtp: LocalSMTPServer, tmp_path: Path
) -> None:
    tests_dir = Path(__file__).resolve().parent
    done = subprocess.run(
        [sys.executable, "-m", "django", "test", "django_project.mailapp.outbox_checks", "-v", "2"],
        cwd=tests_dir,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "django_project.settings",
            "MAILAPP_SMTP_PORT": str(smtp.port),
            "MAILAPP_TEST_DB": str(tmp_path / "test_app.db"),
            "PYTHONPATH": str(tests_dir),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Ran 1 test" in done.stderr
    [received] = smtp.messages
    assert received.recipients == ("ann@example.org",)


def test_the_outbox_command_acts_on_the_backends_outbox(
    database: str, smtp: LocalSMTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    mail.send_mail("Hi", "Body.", None, ["ann@example.org"])
    (entry,) = _entries(database)
    call_command("reliable_smtp_outbox", "show", str(entry.id), database=database)
    shown = capsys.readouterr().out
    assert f"entry {entry.id}: queued" in shown
    assert "ann@example.org: pending" in shown
    call_command("reliable_smtp_outbox", "cancel", str(entry.id), database=database)
    assert _entries(database)[0].state is EntryState.CANCELLED
    _work(database)
    assert smtp.messages == []
    with pytest.raises(CommandError, match="exited 1"):
        call_command("reliable_smtp_outbox", "show", "999", database=database)


def test_a_psycopg_connection_whose_transaction_has_not_begun_keeps_the_entry_in_it(
    postgres_database: str,  # noqa: F811
) -> None:
    # The store-level form of the mail-first case, for any psycopg caller: autocommit off
    # and nothing executed yet, then enqueue, then rollback.
    import psycopg

    url = f"{postgres_database}?schema=idle_{os.getpid()}"
    with Outbox(url) as outbox, psycopg.connect(postgres_database, autocommit=False) as conn:
        outbox.enqueue(_message("rolled back"), connection=conn)
        conn.rollback()
        outbox.enqueue(_message("committed"), connection=conn)
        conn.commit()
        assert [e.recipients[0].address for e in outbox.list()] == ["committed@example.org"]
        conn.execute(f"DROP SCHEMA idle_{os.getpid()} CASCADE")
        conn.commit()


def _message(local: str) -> Any:
    from reliable_smtp import Message

    address = f"{local.replace(' ', '-')}@example.org"
    return Message(sender="shop@example.com", to=[address], subject="Hi", text=".")


def test_the_worker_command_runs_until_sigterm_and_sends_what_commits_meanwhile(
    smtp: LocalSMTPServer, tmp_path: Path
) -> None:
    tests_dir = Path(__file__).resolve().parent
    app_db = tmp_path / "app.db"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "django_project.settings",
        "MAILAPP_SMTP_PORT": str(smtp.port),
        "MAILAPP_DB": str(app_db),
        "PYTHONPATH": str(tests_dir),
    }
    django_cmd = [sys.executable, "-m", "django"]
    migrated = subprocess.run(
        [*django_cmd, "migrate", "--run-syncdb", "-v", "0"],
        cwd=tests_dir, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    worker = subprocess.Popen(
        [*django_cmd, "reliable_smtp_worker", "--poll", "0.2"],
        cwd=tests_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    alias = "outbox_worker_file"
    _add_database(alias, {"ENGINE": "django.db.backends.sqlite3", "NAME": app_db})
    try:
        assert worker.stdout is not None
        assert "sending from sqlite:///" in worker.stdout.readline()  # it is up
        with override_settings(EMAIL_BACKEND=OUTBOX_BACKEND, RELIABLE_SMTP_OUTBOX_DATABASE=alias):
            with pytest.raises(RuntimeError):
                place_order(1, "bob@example.org", using=alias, fail=True)
            place_order(2, "ann@example.org", using=alias)
        deadline = time.monotonic() + 30  # a bound on waiting, not a timing assertion
        while not smtp.messages and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        close_outboxes()
        _remove_database(alias)
    assert worker.returncode == 0, err
    assert "worker stopped: 1 claimed, 1 settled (1 sent)" in out
    assert [m.recipients for m in smtp.messages] == [("ann@example.org",)]


def test_the_worker_command_refuses_mailers_instead_of_sending_elsewhere(database: str) -> None:
    mailers = {"default": {"BACKEND": OUTBOX_BACKEND, "OPTIONS": {"host": "smtp.example.com"}}}
    with override_settings(MAILERS=mailers), pytest.raises(CommandError, match="MAILERS"):
        _work(database)


def test_an_unknown_database_alias_is_refused_with_the_setting_to_change() -> None:
    with pytest.raises(ConfigurationError, match=r"'nowhere' is not in DATABASES.*default"):
        OutboxEmailBackend(database="nowhere").open()


def test_a_sqlite_store_closed_while_a_thread_waits_for_work_is_not_used_after_close(
    tmp_path: Path,
) -> None:
    # What the worker command does: its wake-up thread may still be inside
    # wait_for_work (up to a slice) when the command closes the outbox. Closing the
    # connection that thread executes on crashed the process (a segfault in sqlite3), and
    # a wait after close opened a new connection nobody would close.
    outbox = Outbox(f"sqlite:///{tmp_path}/outbox.db")
    store = outbox.store
    errors: list[BaseException] = []

    deadline = time.monotonic() + 10  # a bound on a broken store, not a timing assertion

    def wait() -> None:
        try:
            while time.monotonic() < deadline:
                store.wait_for_work(0.06)
        except BaseException as exc:  # the close ends the loop
            errors.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    store.wait_for_work(0.06)  # the watcher connection exists now
    outbox.close()
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert [type(e).__name__ for e in errors] == ["OutboxError"]
    assert "closed" in str(errors[0])
    assert store._watcher is None  # nothing reopened after close
