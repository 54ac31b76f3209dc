"""Bulk sending without head-of-line blocking: ``as_completed()`` next to ordered ``stream()``.

Against a real :class:`~reliable_smtp.testing.LocalSMTPServer`, one message is made
slow by a scripted fault (its RCPT is never answered until the test lets go), and the
tests show what each form yields meanwhile: ``as_completed()`` every other message,
tagged with its input; ``stream()`` nothing past the slow one. Also: the memory bound,
cancellation (connections given back), a foreign exception, the sync ``Mailer`` form
and the CLI's bulk send, whose results file is written as sends end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from conftest import relay_transport
from rawsmtp import wait_until
from reliable_smtp import Completed, SendFinished
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import AmbiguousDeliveryError, InvalidMessageError, PermanentError
from reliable_smtp._mailer import AsyncMailer, Mailer
from reliable_smtp._message import Message
from reliable_smtp._result import DeliveryReport, SendResult
from reliable_smtp._retry import RetryPolicy
from reliable_smtp._transports.smtp import SMTPTransport
from reliable_smtp.testing import LocalSMTPServer
from test_cli import cli_env, relay, run_cli

SLOW = "slow@example.org"


def message(to: str) -> Message:
    return Message(sender="app@example.com", to=[to], subject="bulk", text="hello")


def batch(count: int, *, slow_at: int | None = 0) -> list[Message]:
    return [message(SLOW if i == slow_at else f"user{i}@example.org") for i in range(count)]


def mailer_for(server: LocalSMTPServer, connections: int) -> AsyncMailer:
    # A short pool_timeout: a connection not given back fails the next send quickly.
    transport = relay_transport(server, max_connections=connections, pool_timeout=5.0)
    return AsyncMailer(transport, retry=RetryPolicy.never())


def as_completed_sends() -> list[asyncio.Task[object]]:
    return [
        task
        for task in asyncio.all_tasks()
        if "as_completed.<locals>.outcome" in task.get_coro().__qualname__ and not task.done()
    ]


# -- head-of-line blocking ------------------------------------------------------------


async def test_as_completed_yields_later_messages_while_a_slow_one_is_unanswered(
    server: LocalSMTPServer,
) -> None:
    server.script("RCPT", hang=True, recipient=SLOW)
    messages = batch(8)
    mailer = mailer_for(server, connections=3)
    results = mailer.as_completed(messages, concurrency=3)

    early = [await results.__anext__() for _ in range(7)]

    # Every other message came out while the slow one's RCPT is still unanswered,
    # each tagged with its input.
    assert sorted(done.index for done in early) == list(range(1, 8))
    assert all(done.message is messages[done.index] for done in early)
    assert all(done.ok and done.error is None for done in early)
    assert [done.result.accepted for done in early if done.result is not None] == [
        (f"user{done.index}@example.org",) for done in early
    ]
    assert server.deliveries_to(SLOW) == 0

    # Abandoned with the slow send in flight: cancelled, and its connection given back
    # before aclose() returns (the 3 connections serve 3 sends at once again).
    await results.aclose()
    assert as_completed_sends() == []
    again = await mailer.send_many(batch(3, slow_at=None), concurrency=3)
    assert all(isinstance(outcome, SendResult) for outcome in again)
    await mailer.aclose()


async def test_ordered_stream_holds_back_every_result_after_a_slow_message(
    server: LocalSMTPServer,
) -> None:
    server.script("RCPT", hang=True, recipient=SLOW)
    mailer = mailer_for(server, connections=3)
    finished: list[SendFinished] = []
    mailer.on_result(finished.append)
    outcomes = mailer.stream(batch(8), concurrency=3)

    first = asyncio.ensure_future(outcomes.__anext__())
    # The 7 other sends have ended (their hooks ran) ...
    assert await wait_until(lambda: len(finished) == 7)
    # ... and still stream() yields nothing: its first result is the slow message's.
    done, _ = await asyncio.wait({first}, timeout=0.2)
    assert not done
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await outcomes.aclose()
    await mailer.aclose()


# -- the memory bound -----------------------------------------------------------------


async def test_as_completed_holds_at_most_twice_the_concurrency(server: LocalSMTPServer) -> None:
    pulled = 0

    def messages() -> Iterator[Message]:
        nonlocal pulled
        for i in range(40):
            pulled += 1
            yield message(f"user{i}@example.org")

    mailer = mailer_for(server, connections=2)
    finished: list[SendFinished] = []
    mailer.on_result(finished.append)
    results = mailer.as_completed(messages(), concurrency=2)
    taken = [await results.__anext__()]
    # The consumer pauses: the sends already started end, and no new message is pulled
    # while their results wait to be taken.
    assert pulled == 4
    assert await wait_until(lambda: len(finished) == 4)
    assert pulled == 4

    ahead = [pulled - len(taken)]
    async for done in results:
        taken.append(done)
        ahead.append(pulled - len(taken))
    assert max(ahead) <= 4
    assert sorted(done.index for done in taken) == list(range(40))
    assert len(server.messages) == 40
    await mailer.aclose()


# -- one message's failure --------------------------------------------------------------


class BuggyTransport(SMTPTransport):
    """The real SMTP transport, except that it crashes for bug@example.org."""

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        if "bug@example.org" in envelope.recipients:
            raise KeyError("a bug in a transport")
        return await super().deliver(envelope, content)


async def test_a_failure_or_a_foreign_exception_is_that_messages_outcome(
    server: LocalSMTPServer,
) -> None:
    server.script("RCPT", "550 5.1.1 no such user", recipient="gone@example.org")
    messages = [message(to) for to in ("a@example.org", "bug@example.org", "gone@example.org")]
    messages += batch(3, slow_at=None)
    transport = BuggyTransport("127.0.0.1", server.port, tls="none", local_hostname="client.test")
    async with AsyncMailer(transport, retry=RetryPolicy.never()) as mailer:
        by_index = {done.index: done async for done in mailer.as_completed(messages)}

    assert sorted(by_index) == list(range(6))
    bug = by_index[1].error
    assert isinstance(bug, AmbiguousDeliveryError)
    assert isinstance(bug.__cause__, KeyError)
    assert by_index[1].result_or_error is bug
    refused = by_index[2]
    assert isinstance(refused.error, PermanentError)
    # The result is the error's own: every recipient's status, as send() would tell.
    assert refused.result is refused.error.result
    assert refused.result is not None
    assert refused.result.recipients["gone@example.org"].reply is not None
    assert isinstance(by_index[0].result_or_error, SendResult)
    assert [i for i, done in sorted(by_index.items()) if done.ok] == [0, 3, 4, 5]


async def test_a_message_refused_before_sending_has_an_error_and_no_result(
    server: LocalSMTPServer,
) -> None:
    nobody = EmailMessage()
    nobody["From"] = "app@example.com"  # no recipient: invalid, nothing is tried
    messages = [message("a@example.org"), nobody]
    async with mailer_for(server, connections=1) as mailer:
        by_index = {done.index: done async for done in mailer.as_completed(messages)}
    assert by_index[0].ok
    invalid = by_index[1]
    assert isinstance(invalid.error, InvalidMessageError)
    assert invalid.result is None
    assert invalid.result_or_error is invalid.error
    assert len(server.messages) == 1


async def test_concurrency_must_be_a_positive_int() -> None:
    mailer = AsyncMailer(SMTPTransport("127.0.0.1", 1, tls="none"))
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="concurrency must be a positive int"):
            await mailer.as_completed([], concurrency=bad).__anext__()  # type: ignore[arg-type]


# -- the sync Mailer --------------------------------------------------------------------


def test_sync_as_completed_yields_as_sends_end_and_stops_cleanly(
    server: LocalSMTPServer,
) -> None:
    server.script("RCPT", hang=True, recipient=SLOW)
    messages = batch(5)
    transport = relay_transport(server, max_connections=2, pool_timeout=5.0)
    with Mailer(transport, retry=RetryPolicy.never()) as mailer:
        results = mailer.as_completed(messages, concurrency=2)
        early: list[Completed] = [next(results) for _ in range(4)]
        assert sorted(done.index for done in early) == [1, 2, 3, 4]
        assert all(done.ok and done.message is messages[done.index] for done in early)
        results.close()  # the slow send is cancelled; its connection is given back
        assert all(isinstance(o, SendResult) for o in mailer.send_many(batch(2, slow_at=None)))


# -- the CLI's bulk send ----------------------------------------------------------------


def test_cli_bulk_send_writes_each_row_as_its_send_ends(
    tmp_path: Path, server: LocalSMTPServer
) -> None:
    server.script("RCPT", hang=True, recipient=SLOW)
    work = tmp_path / "work"
    work.mkdir()
    emails = [SLOW] + [f"user{i}@example.org" for i in range(1, 6)]
    (work / "list.csv").write_text("email\n" + "\n".join(emails) + "\n")
    out = work / "out.jsonl"
    # --concurrency 2 opens two connections (RELIABLE_SMTP_MAX_CONNECTIONS is not set):
    # one is held by the slow row, the other serves the rest.

    arguments = [
        "send", *relay(server), "--attempts", "1", "--from", "app@example.com", "--text", "hi",
        "--recipients", "list.csv", "--concurrency", "2", "--results", "out.jsonl",
    ]  # fmt: skip
    finished: list[subprocess.CompletedProcess[str]] = []

    def send() -> None:
        finished.append(run_cli(work, *arguments, env=cli_env()))

    def rows() -> list[dict[str, object]]:
        text = out.read_text() if out.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    sender = threading.Thread(target=send)
    sender.start()
    try:
        deadline = time.monotonic() + 10
        while len(rows()) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Rows 3-7 are written while row 2 (the slow one, first in the file) is unanswered.
        assert sorted(row["line"] for row in rows()) == [3, 4, 5, 6, 7]  # type: ignore[type-var]
        assert all(row["outcome"] == "sent" for row in rows())
    finally:
        server.stop()  # the slow RCPT is let go: its connection closes unanswered
        sender.join(timeout=30)
    assert [done.returncode for done in finished] == [1]
    final = rows()
    assert len(final) == 6
    assert final[-1]["line"] == 2
    assert final[-1]["recipient"] == SLOW
    assert final[-1]["outcome"] != "sent"


def test_cli_bulk_send_keeps_a_configured_connection_cap(
    tmp_path: Path, server: LocalSMTPServer
) -> None:
    emails = [f"user{i}@example.org" for i in range(6)]
    (tmp_path / "list.csv").write_text("email\n" + "\n".join(emails) + "\n")
    done = run_cli(
        tmp_path, "send", *relay(server), "--from", "app@example.com", "--text", "hi",
        "--recipients", "list.csv", "--concurrency", "4",
        env=cli_env(RELIABLE_SMTP_MAX_CONNECTIONS="1"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(server.messages) == 6
    assert server.connections == 1


async def test_an_input_that_raises_ends_after_the_sends_it_started(
    server: LocalSMTPServer,
) -> None:
    def messages() -> Iterator[Message]:
        yield from batch(3, slow_at=None)
        raise LookupError("the recipient list broke")

    async with mailer_for(server, connections=2) as mailer:
        taken: list[Completed] = []

        async def take_all() -> None:
            async for done in mailer.as_completed(messages(), concurrency=2):
                taken.append(done)

        with pytest.raises(LookupError, match="recipient list broke"):
            await take_all()
    # The three messages taken before the input broke were sent, and said so.
    assert sorted(done.index for done in taken) == [0, 1, 2]
    assert all(done.ok for done in taken)
    assert len(server.messages) == 3
