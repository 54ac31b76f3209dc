"""``reliable-smtp worker`` and ``reliable-smtp outbox ...`` on real SQLite files.

Most run ``main(argv)`` in-process; one runs the worker as a real subprocess and
stops it with SIGTERM while a transaction is in flight.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from outbox_sink import CountingSink, worker_command, worker_environment
from reliable_smtp import EntryState, Message, Outbox, RecipientState
from reliable_smtp._cli import main
from reliable_smtp.testing import LocalSMTPServer


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.db'}"


def message(*to: str) -> Message:
    return Message(sender="app@example.com", to=list(to), subject="hi", text="body")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def ambiguous_entry(outbox: Outbox) -> int:
    """An entry whose worker died between the final dot and its reply (enqueue it first)."""
    entry = outbox.enqueue(message("maybe@example.org"))
    now = time.time()
    (claim,) = outbox.store.claim("dead-worker", limit=1, lease_seconds=1.0, now=now)
    outbox.store.mark_final_dot(claim, claim.recipients, now=now)
    outbox.store.recover(now=now + 5)
    assert outbox.get(entry.id).state is EntryState.AMBIGUOUS
    return entry.id


def test_stats_counts_states_and_points_at_ambiguous_entries(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Outbox(url) as outbox:
        ambiguous_entry(outbox)
        outbox.enqueue(message("a@example.org"))
    status, out, _ = run(capsys, "outbox", "stats", "--outbox", url)
    assert status == 0
    assert "2 entries" in out
    assert "ambiguous" in out
    assert "need a decision" in out
    assert "oldest due entry: due" in out
    status, out, _ = run(capsys, "outbox", "stats", "--outbox", url, "--json")
    data = json.loads(out)
    assert data["counts"]["queued"] == 1
    assert data["ambiguous"] == 1
    assert data["oldest_due_age"] >= 0


def test_show_says_what_an_ambiguous_entry_needs(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Outbox(url) as outbox:
        entry_id = ambiguous_entry(outbox)
        message_id = outbox.get(entry_id).message_id
    status, out, _ = run(capsys, "outbox", "show", str(entry_id), "--outbox", url)
    assert status == 0
    assert "AMBIGUOUS" in out
    assert message_id in out
    for choice in ("sent", "failed", "resend"):
        assert f"reliable-smtp outbox resolve {entry_id} --as {choice}" in out


def test_resolve_retry_cancel_and_purge(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Outbox(url) as outbox:
        entry_id = ambiguous_entry(outbox)
        pending = outbox.enqueue(message("later@example.org")).id
    status, out, _ = run(
        capsys, "outbox", "resolve", str(entry_id), "--as", "sent", "--outbox", url
    )
    assert status == 0
    assert "-> sent" in out
    status, out, _ = run(capsys, "outbox", "cancel", str(pending), "--outbox", url)
    assert status == 0
    assert "-> cancelled" in out
    status, out, _ = run(capsys, "outbox", "retry", str(pending), "--outbox", url)
    assert status == 0
    with Outbox(url) as outbox:
        assert outbox.get(entry_id).recipients[0].state is RecipientState.SENT
        assert outbox.get(pending).state is EntryState.QUEUED
    status, out, _ = run(capsys, "outbox", "purge", "--older-than", "0s", "--outbox", url)
    assert status == 0
    assert "purged 1 final entry" in out
    status, out, _ = run(capsys, "outbox", "list", "--outbox", url, "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [pending]


def test_an_unknown_id_and_a_missing_url_say_what_to_do(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Outbox(url).close()
    status, _, err = run(capsys, "outbox", "show", "999", "--outbox", url)
    assert status == 1
    assert "no outbox entry with id 999" in err
    monkeypatch.delenv("RELIABLE_SMTP_OUTBOX_URL", raising=False)
    status, _, err = run(capsys, "outbox", "stats")
    assert status == 2
    assert "RELIABLE_SMTP_OUTBOX_URL" in err
    with pytest.raises(SystemExit):
        main(["outbox", "purge", "--older-than", "soon", "--outbox", url])
    assert "30d" in capsys.readouterr().err


def test_the_url_comes_from_the_environment(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELIABLE_SMTP_OUTBOX_URL", url)
    status, out, _ = run(capsys, "outbox", "migrate")
    assert status == 0
    assert "schema version" in out


def test_worker_until_idle_sends_everything(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Outbox(url) as outbox:
        ids = [outbox.enqueue(message(f"u{i}@example.org")).id for i in range(4)]
    with LocalSMTPServer() as server:
        status, out, _ = run(
            capsys,
            "worker",
            "--outbox",
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            "--tls",
            "none",
            "--env-file",
            "none",
            "--until-idle",
        )
        assert len(server.messages) == 4
    assert status == 0
    assert "4 claimed, 4 settled (4 sent)" in out
    with Outbox(url) as outbox:
        assert {outbox.get(i).state for i in ids} == {EntryState.SENT}


@contextmanager
def worker_at_a_delayed_dot(
    url: str, cwd: Path, *extra: str, delay: float, stdout: int = subprocess.PIPE
) -> Iterator[tuple[CountingSink, subprocess.Popen[str]]]:
    """A ``reliable-smtp worker`` process whose final dot gets its reply ``delay`` seconds
    late; yields once that dot arrived. A worker still running at the end is killed."""
    with CountingSink(delay_share=1.0, delay=delay) as sink:
        at_dot = threading.Event()
        sink.on_delayed_dot = at_dot.set
        worker = subprocess.Popen(
            worker_command(url, sink.port, *extra),
            cwd=cwd,
            env=worker_environment(),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert at_dot.wait(30), "the worker never sent the final dot"
            yield sink, worker
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def test_sigterm_finishes_the_transaction_in_flight_and_exits_0(url: str, tmp_path: Path) -> None:
    with Outbox(url) as outbox:
        entry = outbox.enqueue(message("a@example.org"))
    with worker_at_a_delayed_dot(url, tmp_path, delay=1.0) as (sink, worker):
        worker.send_signal(signal.SIGTERM)  # the reply to the dot is still a second away
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "1 settled (1 sent)" in out
    with Outbox(url) as outbox:
        assert outbox.get(entry.id).state is EntryState.SENT
    assert sink.deliveries == {(entry.message_id, "a@example.org"): 1}


def test_a_second_sigterm_stops_at_once_and_recovery_makes_the_entry_ambiguous(
    url: str, tmp_path: Path
) -> None:
    # An operator who signals twice wants out now: the worker must not wait for a reply
    # that is 30 s away, and the entry it leaves must be recovered, never lost or resent.
    with Outbox(url) as outbox:
        entry = outbox.enqueue(message("a@example.org"))
    lines: queue.Queue[str] = queue.Queue()
    with worker_at_a_delayed_dot(
        url, tmp_path, "--lease", "2", delay=30.0, stdout=subprocess.DEVNULL
    ) as (_, worker):
        reader = threading.Thread(
            target=lambda: [lines.put(line) for line in worker.stderr or ()], daemon=True
        )
        reader.start()
        worker.send_signal(signal.SIGTERM)
        first = lines.get(timeout=30)
        assert "SIGTERM received: finishing in-flight transactions" in first
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        returncode = worker.wait(timeout=20)
        stopped_after = time.monotonic() - started
    reader.join(5)
    assert returncode == -signal.SIGTERM  # ended as SIGTERM ends a process
    assert stopped_after < 20  # not after the 30 s reply
    assert "SIGTERM again: stopping now" in lines.get(timeout=5)
    with Outbox(url) as outbox:
        assert outbox.get(entry.id).state is EntryState.SENDING  # still leased, not lost
        outbox.store.recover(now=time.time() + 5)  # the lease (2 s) is over
        assert outbox.get(entry.id).state is EntryState.AMBIGUOUS  # its dot went out
