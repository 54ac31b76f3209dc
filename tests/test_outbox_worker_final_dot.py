"""The final-dot hook: every committing transport asks the guard right before it commits.

Against a real LocalSMTPServer (serial and pipelined), a real directory and a real
sendmail executable: the guard runs after the server's 354 and before the body;
a refusing guard means the server never gets the message and the link is dropped.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conftest import relay_transport
from reliable_smtp import AsyncMailer, Message, RetryPolicy
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import DeliveryError, TransientError
from reliable_smtp._replies import Outcome, Phase
from reliable_smtp._transports._commit import (
    FinalDotForbiddenError,
    before_final_dot,
    guard_final_dot,
)
from reliable_smtp._transports.composite import FailoverTransport, RoundRobinTransport
from reliable_smtp._transports.file import FileTransport
from reliable_smtp._transports.memory import MemoryTransport
from reliable_smtp._transports.sendmail import SendmailTransport
from reliable_smtp.testing import LocalSMTPServer, MockTransport
from reliable_smtp.testing._outbox import Outbox as CapturingOutbox

CONTENT = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
ENVELOPE = Envelope("a@example.com", ("b@example.org", "c@example.org"))


class LeaseLost(Exception):  # noqa: N818 - stands for the worker's LeaseLostError
    pass


async def test_the_guard_runs_after_354_and_before_the_dot(server: LocalSMTPServer) -> None:
    seen: list[tuple[tuple[str, ...], list[str], int]] = []

    async def guard(recipients: tuple[str, ...]) -> None:
        commands = [name for _, name, _ in server.commands]
        seen.append((recipients, commands, len(server.messages)))

    async with relay_transport(server) as transport:
        with guard_final_dot(guard):
            report = await transport.deliver(ENVELOPE, CONTENT)
    assert len(seen) == 1
    recipients, commands, received = seen[0]
    assert recipients == ENVELOPE.recipients
    assert commands[-1] == "DATA"  # the server answered DATA (354), nothing after it
    assert received == 0  # and the body had not arrived
    assert all(s.outcome is Outcome.SENT for s in report.recipients.values())
    assert len(server.messages) == 1


async def test_a_refusing_guard_means_nothing_is_sent_and_the_link_is_dropped(
    server: LocalSMTPServer,
) -> None:
    async def guard(recipients: tuple[str, ...]) -> None:
        raise FinalDotForbiddenError("the outbox lease was lost")

    async with relay_transport(server) as transport:
        with guard_final_dot(guard):
            report = await transport.deliver(ENVELOPE, CONTENT)
        for status in report.recipients.values():
            assert status.outcome is Outcome.TRANSIENT
            assert status.phase is Phase.DATA
            assert status.reply is None
            assert "not sent: the outbox lease was lost" in status.explanation
        await asyncio.sleep(0.05)  # let the server thread see the close
        assert server.messages == []
        assert server.connections == 1
        # The connection was dropped, never reused: the next send opens a new one.
        await transport.deliver(ENVELOPE, CONTENT)
    assert server.connections == 2
    assert len(server.messages) == 1


async def test_any_guard_failure_forbids_the_dot(server: LocalSMTPServer) -> None:
    async def guard(recipients: tuple[str, ...]) -> None:
        raise LeaseLost("database is locked")

    async with relay_transport(server) as transport:
        with guard_final_dot(guard):
            report = await transport.deliver(ENVELOPE, CONTENT)
    assert {s.outcome for s in report.recipients.values()} == {Outcome.TRANSIENT}
    assert "database is locked" in report.recipients["b@example.org"].explanation
    assert server.messages == []


async def test_only_the_accepted_recipients_are_marked(server: LocalSMTPServer) -> None:
    server.script("RCPT", "550 5.1.1 no such user", recipient="c@example.org")
    marked: list[tuple[str, ...]] = []

    async def guard(recipients: tuple[str, ...]) -> None:
        marked.append(recipients)

    async with relay_transport(server) as transport:
        with guard_final_dot(guard):
            report = await transport.deliver(ENVELOPE, CONTENT)
    assert marked == [("b@example.org",)]
    assert report.recipients["c@example.org"].outcome is Outcome.PERMANENT


async def test_no_accepted_recipient_means_no_guard_call(server: LocalSMTPServer) -> None:
    server.script("RCPT", "550 5.1.1 no such user", times=None)
    marked: list[tuple[str, ...]] = []

    async def guard(recipients: tuple[str, ...]) -> None:
        marked.append(recipients)

    async with relay_transport(server) as transport:
        with guard_final_dot(guard):
            await transport.deliver(ENVELOPE, CONTENT)
    assert marked == []


async def test_a_refused_dot_through_the_mailer_is_transient_and_not_retried(
    server: LocalSMTPServer,
) -> None:
    calls = 0

    async def guard(recipients: tuple[str, ...]) -> None:
        nonlocal calls
        calls += 1
        raise FinalDotForbiddenError("the outbox lease was lost")

    mailer = AsyncMailer(relay_transport(server), retry=RetryPolicy().without_waits())
    async with mailer:
        with guard_final_dot(guard), pytest.raises(DeliveryError) as caught:
            await mailer.send(_message())
    assert calls == 1  # never retried in-process: nothing is known to be wrong with the server
    assert caught.value.result is not None
    assert {s.outcome for s in caught.value.result.recipients.values()} == {Outcome.TRANSIENT}
    assert server.messages == []


async def test_the_guard_stays_in_its_task() -> None:
    marked: list[str] = []

    async def guard(recipients: tuple[str, ...]) -> None:
        marked.extend(recipients)

    async def guarded() -> None:
        with guard_final_dot(guard):
            await before_final_dot(("in@example.org",))

    await asyncio.gather(guarded(), before_final_dot(("out@example.org",)))
    await before_final_dot(("after@example.org",))
    assert marked == ["in@example.org"]


# -- transports that commit everyone at once --------------------------------------------


def _message() -> Message:
    return Message(sender="a@example.com", to=["b@example.org"], subject="hi", text="body")


async def _refused(transport: MemoryTransport | FileTransport | SendmailTransport) -> None:
    async def guard(recipients: tuple[str, ...]) -> None:
        assert recipients == ENVELOPE.recipients
        raise FinalDotForbiddenError("the outbox lease was lost")

    with guard_final_dot(guard), pytest.raises(TransientError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)
    assert "the outbox lease was lost" in str(caught.value)


@pytest.mark.parametrize("kind", [MemoryTransport, CapturingOutbox])
async def test_memory_transports_ask_before_keeping(kind: type[MemoryTransport]) -> None:
    transport = kind()
    assert transport.marks_final_dot
    await _refused(transport)
    assert transport.outbox == []
    marked: list[tuple[str, ...]] = []

    async def guard(recipients: tuple[str, ...]) -> None:
        marked.append(recipients)

    with guard_final_dot(guard):
        await transport.deliver(ENVELOPE, CONTENT)
    assert marked == [ENVELOPE.recipients]
    assert len(transport.outbox) == 1


async def test_file_transport_asks_before_writing(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path / "mail")
    assert transport.marks_final_dot
    await _refused(transport)
    assert not (tmp_path / "mail").exists() or list((tmp_path / "mail").iterdir()) == []


async def test_sendmail_asks_before_starting_the_mta(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    script = tmp_path / "sendmail"
    script.write_text(f"#!/bin/sh\ncat > '{ran}'\n")
    script.chmod(0o755)
    transport = SendmailTransport(str(script))
    assert transport.marks_final_dot
    await _refused(transport)
    assert not ran.exists()
    await transport.deliver(ENVELOPE, CONTENT)
    assert ran.read_bytes().startswith(b"From: a@example.com")


def test_which_transports_mark_the_dot(server: LocalSMTPServer) -> None:
    smtp = relay_transport(server)
    mock = MockTransport(lambda envelope, content: None)
    assert smtp.marks_final_dot
    assert not mock.marks_final_dot
    assert FailoverTransport([smtp, MemoryTransport()]).marks_final_dot
    assert RoundRobinTransport([relay_transport(server), MemoryTransport()]).marks_final_dot
    # One member that does not call the hook makes the whole composite untrustworthy.
    assert not FailoverTransport([relay_transport(server), mock]).marks_final_dot
