"""The sync Mailer and the async facade: same behaviour, private loop thread, threads, fork."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage

import pytest

from conftest import relay_transport, serial_only, tls_transport
from reliable_smtp._errors import (
    InvalidMessageError,
    PermanentError,
    TransportClosedError,
)
from reliable_smtp._mailer import AsyncMailer, Mailer
from reliable_smtp._message import Message
from reliable_smtp._result import SendResult
from reliable_smtp._retry import RetryPolicy
from reliable_smtp.testing import FakeClock, LocalSMTPServer


def message(to: str = "bob@example.org", **fields: object) -> Message:
    fields = {"subject": "hi", "text": "body", **fields}
    return Message(sender="App <app@example.com>", to=[to], **fields)  # type: ignore[arg-type]


def mailer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "reliable-smtp-mailer"]


def test_sync_send_over_starttls_and_auth(tls_server: LocalSMTPServer) -> None:
    with Mailer(tls_transport(tls_server)) as mailer:
        result = mailer.send(message(cc=["carol@example.org"], bcc=["audit@example.net"]))
    assert isinstance(result, SendResult)
    assert result.accepted == ("bob@example.org", "carol@example.org", "audit@example.net")
    [received] = tls_server.messages
    parsed = received.message
    assert parsed["Subject"] == "hi"
    assert "Bcc" not in parsed
    assert b"audit@example.net" not in received.content


def test_sync_connection_stays_warm_between_sends(server: LocalSMTPServer) -> None:
    with Mailer(relay_transport(server)) as mailer:
        for _ in range(5):
            mailer.send(message())
    assert server.connections == 1
    assert len(server.messages) == 5


def test_one_loop_thread_shared_by_many_calling_threads(server: LocalSMTPServer) -> None:
    before = len(mailer_threads())
    with Mailer(relay_transport(server)) as mailer:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda i: mailer.send(message(f"u{i}@example.org")), range(40)))
        assert len(mailer_threads()) == before + 1
    assert all(r.ok for r in results)
    assert sorted(m.recipients[0] for m in server.messages) == sorted(
        f"u{i}@example.org" for i in range(40)
    )
    assert len(mailer_threads()) == before  # close() stopped it


async def test_sync_mailer_works_inside_a_running_event_loop(server: LocalSMTPServer) -> None:
    # Legacy code calling the sync API from an async handler: it must not touch this loop.
    with Mailer(relay_transport(server)) as mailer:
        result = mailer.send(message())
        assert result.ok
        # ... and from the loop's default thread pool.
        result = await asyncio.get_running_loop().run_in_executor(None, mailer.send, message())
    assert result.ok
    assert len(server.messages) == 2


def test_sync_and_async_have_the_same_methods() -> None:
    public = {n for n in dir(AsyncMailer) if not n.startswith("_")}
    sync_public = {n for n in dir(Mailer) if not n.startswith("_")}
    assert public - {"aclose"} <= sync_public
    assert "close" in sync_public


def test_sync_errors_carry_the_result(server: LocalSMTPServer) -> None:
    server.script("RCPT", "550 5.1.1 no such user", recipient="nobody@example.org")
    with Mailer(relay_transport(server)) as mailer, pytest.raises(PermanentError) as caught:
        mailer.send(Message(sender="a@example.com", to=["ok@example.org", "nobody@example.org"]))
    assert caught.value.result is not None
    assert caught.value.result.accepted == ("ok@example.org",)


@serial_only
def test_invalid_message_sends_nothing(server: LocalSMTPServer) -> None:
    with Mailer(relay_transport(server)) as mailer:
        with pytest.raises(InvalidMessageError):
            mailer.send(message(subject="hi\r\nBcc: everyone@example.org"))
        with pytest.raises(InvalidMessageError):
            mailer.send(Message(sender="a@example.com", to=[]))
    assert server.commands == []
    assert server.connections == 0


def test_close_twice_and_use_after_close(server: LocalSMTPServer) -> None:
    mailer = Mailer(relay_transport(server))
    mailer.send(message())
    mailer.close()
    mailer.close()
    with pytest.raises(TransportClosedError):
        mailer.send(message())
    assert [c[1] for c in server.commands].count("QUIT") == 1


@serial_only
def test_close_without_any_send_closes_the_transport(server: LocalSMTPServer) -> None:
    transport = relay_transport(server)
    Mailer(transport).close()
    assert transport.closed


def test_stdlib_email_message_is_accepted(server: LocalSMTPServer) -> None:
    email = EmailMessage()
    email["From"] = "a@example.com"
    email["To"] = "b@example.org"
    email["Bcc"] = "hidden@example.org"
    email["Subject"] = "stdlib"
    email.set_content("hello")
    with Mailer(relay_transport(server)) as mailer:
        result = mailer.send(email)
    assert result.accepted == ("b@example.org", "hidden@example.org")
    assert b"hidden@example.org" not in server.messages[0].content
    assert email["Bcc"] == "hidden@example.org"  # the caller's object is untouched


def test_send_many_returns_one_outcome_per_message_in_order(server: LocalSMTPServer) -> None:
    server.script("RCPT", "550 5.1.1 no such user", recipient="u3@example.org")
    with Mailer(relay_transport(server)) as mailer:
        outcomes = mailer.send_many((message(f"u{i}@example.org") for i in range(6)), concurrency=3)
    assert [type(o).__name__ for o in outcomes] == [
        "SendResult",
        "SendResult",
        "SendResult",
        "PermanentError",
        "SendResult",
        "SendResult",
    ]
    assert len(server.messages) == 5


async def test_async_send_many_accepts_async_iterables(
    server: LocalSMTPServer, clock: FakeClock
) -> None:
    async def generate():  # type: ignore[no-untyped-def]
        for i in range(3):
            yield message(f"u{i}@example.org")

    async with AsyncMailer(relay_transport(server), clock=clock, sleep=clock.sleep) as mailer:
        outcomes = await mailer.send_many(generate())
    # One result per message, in the order generated, each for its own recipient...
    recipients = [f"u{i}@example.org" for i in range(3)]
    assert [type(o) for o in outcomes] == [SendResult] * 3
    results = [o for o in outcomes if isinstance(o, SendResult)]
    assert [r.accepted for r in results] == [(r,) for r in recipients]
    assert all(r.ok for r in results)
    # ... and each result is the message the server received, once.
    assert len(server.messages) == 3
    received = {m.message["Message-ID"].strip("<>"): m.recipients for m in server.messages}
    assert [received[r.message_id] for r in results] == [(r,) for r in recipients]


@serial_only
def test_send_many_rejects_bad_concurrency(server: LocalSMTPServer) -> None:
    with Mailer(relay_transport(server)) as mailer, pytest.raises(ValueError, match="concurrency"):
        mailer.send_many([message()], concurrency=0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_mailer_keeps_working_in_a_forked_child(server: LocalSMTPServer) -> None:
    mailer = Mailer(relay_transport(server), retry=RetryPolicy.never())
    mailer.send(message("parent1@example.org"))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = 0 if mailer.send(message("child@example.org")).ok else 2
            mailer.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connection was not disturbed by the child.
    mailer.send(message("parent2@example.org"))
    mailer.close()
    recipients = [m.recipients[0] for m in server.messages]
    assert sorted(recipients) == ["child@example.org", "parent1@example.org", "parent2@example.org"]
    assert server.connections == 2


@serial_only  # about the loop thread at interpreter exit, not the wire
def test_unclosed_mailer_does_not_block_interpreter_exit(
    server: LocalSMTPServer, tmp_path: object
) -> None:
    import subprocess
    import sys

    script = (
        "from reliable_smtp import Mailer, Message, SMTPTransport\n"
        f"m = Mailer(SMTPTransport('127.0.0.1', {server.port}, tls='none'))\n"
        "print(m.send(Message(sender='a@example.com', to=['b@example.org'])).ok)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_stream_yields_in_order_and_stops_cleanly(server: LocalSMTPServer) -> None:
    server.script("RCPT", "550 5.1.1 no such user", recipient="u1@example.org")
    with Mailer(relay_transport(server)) as mailer:
        outcomes = mailer.stream((message(f"u{i}@example.org") for i in range(5)), concurrency=2)
        first, second = next(outcomes), next(outcomes)
        outcomes.close()  # stop early: nothing left running
        assert isinstance(first, SendResult)
        assert isinstance(second, PermanentError)
        assert mailer.send(message("after@example.org")).ok
