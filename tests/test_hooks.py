"""Hooks: each send, attempt and result reported once, sync or async, and a failing hook
changes nothing; LocalSMTPServer's on_message callback."""

from __future__ import annotations

import asyncio
import logging
import threading
from email.message import EmailMessage
from typing import Any

import pytest

from conftest import relay_transport, serial_only, tls_transport
from reliable_smtp import (
    AsyncMailer,
    AttemptFinished,
    AttemptStarted,
    InvalidMessageError,
    Mailer,
    MailerHooks,
    MemoryTransport,
    Message,
    Outcome,
    PermanentError,
    RetryPolicy,
    SendFinished,
    SendResult,
    SendStarted,
    SessionEvent,
)
from reliable_smtp._hooks import HookSet, note_session_event
from reliable_smtp._transports.base import Transport
from reliable_smtp.testing import FakeClock, LocalSMTPServer


def message(*to: str, subject: str = "Hi") -> Message:
    return Message(
        sender="app@example.com", to=list(to or ["alice@example.org"]), subject=subject, text="x"
    )


class Recorder(MailerHooks):
    """Every event, in order, as (method, event)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_send(self, event: SendStarted) -> None:
        self.events.append(("on_send", event))

    async def on_attempt_start(self, event: AttemptStarted) -> None:
        await asyncio.sleep(0)  # a real await: async hooks are awaited, in order
        self.events.append(("on_attempt_start", event))

    def on_attempt(self, event: AttemptFinished) -> None:
        self.events.append(("on_attempt", event))

    async def on_result(self, event: SendFinished) -> None:
        self.events.append(("on_result", event))

    def on_session_event(self, event: SessionEvent) -> None:
        self.events.append(("on_session_event", event))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def of(self, name: str) -> list[Any]:
        return [event for method, event in self.events if method == name]


class Raising(MailerHooks):
    """A hook that raises in every method, sync and async alike."""

    def on_send(self, event: SendStarted) -> None:
        raise RuntimeError("hook bug in on_send")

    async def on_attempt_start(self, event: AttemptStarted) -> None:
        raise RuntimeError("hook bug in on_attempt_start")

    def on_attempt(self, event: AttemptFinished) -> None:
        raise RuntimeError("hook bug in on_attempt")

    async def on_result(self, event: SendFinished) -> None:
        raise RuntimeError("hook bug in on_result")

    def on_session_event(self, event: SessionEvent) -> None:
        raise RuntimeError("hook bug in on_session_event")


async def test_a_clean_send_reports_send_attempt_and_result_in_order(
    server: LocalSMTPServer,
) -> None:
    recorder = Recorder()
    async with AsyncMailer(relay_transport(server), hooks=[recorder]) as mailer:
        result = await mailer.send(message("alice@example.org", "bob@example.org"))
    assert recorder.names() == [
        "on_send",
        "on_attempt_start",
        "on_session_event",  # connect: the pool opened a connection for this attempt
        "on_attempt",
        "on_result",
    ]
    (started,) = recorder.of("on_send")
    assert started.message_id == result.message_id
    assert started.envelope.recipients == ("alice@example.org", "bob@example.org")
    assert started.transport is mailer.transport
    (attempt_start,) = recorder.of("on_attempt_start")
    assert (attempt_start.number, attempt_start.recipients) == (
        1,
        ("alice@example.org", "bob@example.org"),
    )
    (connect,) = recorder.of("on_session_event")
    assert connect.name == "connect"
    (attempt,) = recorder.of("on_attempt")
    assert attempt.attempt == result.attempts[0]
    assert attempt.pending == ()
    assert {r: s.outcome for r, s in attempt.statuses.items()} == {
        "alice@example.org": Outcome.SENT,
        "bob@example.org": Outcome.SENT,
    }
    (finished,) = recorder.of("on_result")
    assert finished.result is result
    assert finished.error is None
    assert finished.ok
    assert finished.message_id == result.message_id


async def test_transient_then_sent_reports_two_attempts_and_one_result(
    server: LocalSMTPServer, clock: FakeClock
) -> None:
    server.script("RCPT", "451 4.3.0 try again", recipient="bob@example.org")
    recorder = Recorder()
    clock.advance(100.0)
    async with AsyncMailer(
        relay_transport(server), hooks=[recorder], clock=clock, sleep=clock.sleep
    ) as mailer:
        result = await mailer.send(message("alice@example.org", "bob@example.org"))
    first, second = recorder.of("on_attempt")
    assert first.attempt.outcome is Outcome.TRANSIENT
    assert first.pending == ("bob@example.org",)
    assert first.statuses["alice@example.org"].outcome is Outcome.SENT
    assert first.statuses["bob@example.org"].reply.code == 451
    assert [e.recipients for e in recorder.of("on_attempt_start")] == [
        ("alice@example.org", "bob@example.org"),
        ("bob@example.org",),
    ]
    assert list(second.statuses) == ["bob@example.org"]
    assert second.attempt.outcome is Outcome.SENT
    assert second.pending == ()
    (finished,) = recorder.of("on_result")
    assert finished.result is result
    assert finished.ok
    # The mailer's (injected) clock: the backoff the policy chose, no real time.
    assert finished.elapsed == pytest.approx(sum(clock.sleeps))
    assert clock.sleeps
    assert finished.elapsed > 0


async def test_a_failed_send_reports_the_error_it_raises(server: LocalSMTPServer) -> None:
    server.script("RCPT", "550 5.1.1 no such user", recipient="bob@example.org")
    results: list[SendFinished] = []
    async with AsyncMailer(relay_transport(server)) as mailer:
        mailer.on_result(results.append)
        with pytest.raises(PermanentError) as raised:
            await mailer.send(message("alice@example.org", "bob@example.org"))
    (finished,) = results
    assert finished.error is raised.value
    assert finished.result is raised.value.result
    assert finished.result is not None
    assert finished.result.rejected == ("bob@example.org",)
    assert not finished.ok


@serial_only
async def test_a_raising_hook_changes_nothing_and_the_others_still_run(
    server: LocalSMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    attempts: list[AttemptFinished] = []
    with caplog.at_level(logging.ERROR, logger="reliable_smtp"):
        async with AsyncMailer(relay_transport(server), hooks=[Raising(), recorder]) as mailer:
            mailer.on_attempt(attempts.append)
            result = await mailer.send(message())
    assert result.accepted == ("alice@example.org",)
    assert server.deliveries_to("alice@example.org") == 1
    assert recorder.names() == [
        "on_send",
        "on_attempt_start",
        "on_session_event",
        "on_attempt",
        "on_result",
    ]
    assert len(attempts) == 1
    bugs = [r for r in caplog.records if "the delivery is not affected" in r.getMessage()]
    assert {r.exc_info[1].args[0] for r in bugs if r.exc_info and r.exc_info[1]} == {
        "hook bug in on_send",
        "hook bug in on_attempt_start",
        "hook bug in on_session_event",
        "hook bug in on_attempt",
        "hook bug in on_result",
    }


@serial_only
async def test_a_raising_result_hook_does_not_replace_a_delivery_error(
    server: LocalSMTPServer,
) -> None:
    server.script("RCPT", "550 5.1.1 no such user")
    async with AsyncMailer(relay_transport(server), hooks=[Raising()]) as mailer:
        with pytest.raises(PermanentError) as raised:
            await mailer.send(message())
    assert raised.value.result is not None
    assert raised.value.result.recipients["alice@example.org"].reply.code == 550


async def test_an_invalid_message_gets_a_result_without_a_send() -> None:
    recorder = Recorder()
    async with AsyncMailer(MemoryTransport(), hooks=[recorder]) as mailer:
        bad = EmailMessage()
        bad["To"] = "x@example.org"  # no From: render() refuses it, nothing is sent
        with pytest.raises(InvalidMessageError) as raised:
            await mailer.send(bad)
    assert recorder.names() == ["on_result"]
    (finished,) = recorder.of("on_result")
    assert finished.error is raised.value
    assert finished.message is bad
    assert finished.result is None
    assert finished.message_id is None


class _BuggyTransport(Transport):
    name = "buggy"

    async def deliver(self, envelope: Any, content: bytes) -> Any:
        raise KeyError("a transport bug")

    async def aclose(self) -> None:
        return None


async def test_send_many_reports_every_message_once_with_its_own_message() -> None:
    sent = [message("a@example.org", subject=str(n)) for n in range(5)]
    finished: list[SendFinished] = []
    async with AsyncMailer(MemoryTransport()) as mailer:
        mailer.on_result(finished.append)
        outcomes = await mailer.send_many(sent, concurrency=2)
    assert all(isinstance(o, SendResult) for o in outcomes)
    assert sorted(id(e.message) for e in finished) == sorted(id(m) for m in sent)
    by_message = {id(e.message): e.result for e in finished}
    assert [by_message[id(m)] for m in sent] == outcomes


async def test_a_transport_bug_is_one_result_with_the_bug() -> None:
    finished: list[SendFinished] = []
    async with AsyncMailer(_BuggyTransport()) as mailer:
        mailer.on_result(finished.append)
        (outcome,) = await mailer.send_many([message()])
    # The mailer's own handling turns the bug into an ambiguous error with a result.
    (event,) = finished
    assert event.error is outcome
    assert event.result is not None
    assert event.result.recipients["alice@example.org"].outcome is Outcome.AMBIGUOUS


@serial_only
async def test_a_cancelled_send_still_gets_its_result(server: LocalSMTPServer) -> None:
    server.script("DATA_END", hang=True)  # the server has it, and never answers
    finished: list[SendFinished] = []
    loop = asyncio.get_running_loop()
    arrived = asyncio.Event()
    server.on_message = lambda received: loop.call_soon_threadsafe(arrived.set)
    async with AsyncMailer(relay_transport(server)) as mailer:
        mailer.on_result(finished.append)
        task = asyncio.create_task(mailer.send(message()))
        await arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (event,) = finished
    assert isinstance(event.error, asyncio.CancelledError)
    assert event.result is None


async def test_session_events_come_from_the_smtp_session(tls_server: LocalSMTPServer) -> None:
    recorder = Recorder()
    async with AsyncMailer(tls_transport(tls_server), hooks=[recorder]) as mailer:
        await mailer.send(message())
        await mailer.send(message())  # the pooled connection: no new session events
    names = [e.name for e in recorder.of("on_session_event")]
    assert names == ["connect", "tls", "auth"]
    _connect, tls, auth = recorder.of("on_session_event")
    assert str(tls.attributes["version"]).startswith("TLSv1")
    assert auth.attributes == {}


def test_note_session_event_outside_an_attempt_does_nothing() -> None:
    note_session_event("connect", seconds=1.0)  # no attempt under way: no error, no effect


def test_the_sync_mailer_takes_hooks_and_decorators(server: LocalSMTPServer) -> None:
    threads: list[str] = []
    with Mailer(relay_transport(server)) as mailer:

        @mailer.on_result
        def record(event: SendFinished) -> None:
            threads.append(threading.current_thread().name)

        result = mailer.send(message())
    assert result.ok
    assert threads == ["reliable-smtp-mailer"]  # the mailer's loop thread


def test_what_is_not_a_hook_is_refused() -> None:
    with pytest.raises(TypeError, match="is not a hook"):
        HookSet([object()])

    class AsyncSession(MailerHooks):
        async def on_session_event(self, event: SessionEvent) -> None:  # type: ignore[override]
            return None

    with pytest.raises(TypeError, match="must be a plain function"):
        HookSet([AsyncSession()])


def test_an_inactive_hook_is_never_called() -> None:
    class Off(Recorder):
        active = False

    hooks = HookSet([Off()])
    assert not hooks  # the mailer then skips the hook machinery entirely


async def test_without_hooks_the_send_is_unchanged() -> None:
    async with AsyncMailer(MemoryTransport(), retry=RetryPolicy().without_waits()) as mailer:
        assert not mailer.hooks
        assert (await mailer.send(message())).ok


# -- LocalSMTPServer.on_message ----------------------------------------------------------


@serial_only
def test_on_message_runs_before_send_returns(server: LocalSMTPServer) -> None:
    seen: list[tuple[str, ...]] = []
    server.on_message = lambda received: seen.append(received.recipients)
    with Mailer(relay_transport(server)) as mailer:
        mailer.send(message("alice@example.org"))
        assert seen == [("alice@example.org",)]  # no polling, no wait
        mailer.send(message("bob@example.org"))
    assert seen == [("alice@example.org",), ("bob@example.org",)]


def test_a_raising_on_message_is_logged_and_the_message_accepted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(received: Any) -> None:
        raise ValueError("observer bug")

    with LocalSMTPServer(on_message=broken) as server:
        with (
            caplog.at_level(logging.ERROR, logger="reliable_smtp.testing"),
            Mailer(relay_transport(server)) as mailer,
        ):
            result = mailer.send(message())
        assert result.ok
        assert len(server.messages) == 1
    assert any("on_message callback" in r.getMessage() for r in caplog.records)
