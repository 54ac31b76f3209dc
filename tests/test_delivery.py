"""Delivery semantics end to end: AsyncMailer + SMTPTransport + a fault-injecting server.

Each scenario asserts the outcome class, every recipient's status, the number of
attempts, and - counted on the server - that no recipient got the message twice
and that every message ended delivered or in a typed error.
"""

from __future__ import annotations

import pytest

from conftest import relay_transport
from reliable_smtp._errors import (
    AmbiguousDeliveryError,
    AuthOrConfigError,
    ConnectionFailedError,
    DeliveryError,
    PermanentError,
    ThrottledError,
    TransientError,
)
from reliable_smtp._mailer import AsyncMailer
from reliable_smtp._message import Message
from reliable_smtp._replies import Outcome, Phase
from reliable_smtp._result import SendResult
from reliable_smtp._retry import RetryPolicy
from reliable_smtp.testing import FakeClock, LocalSMTPServer

RECIPIENTS = ["ann@example.org", "bob@example.org", "cy@example.org"]


def message(to: list[str] | None = None, **fields: object) -> Message:
    return Message(
        sender="App <app@example.com>",
        to=to or RECIPIENTS,
        subject="Your code",
        text="123456",
        **fields,  # type: ignore[arg-type]
    )


def mailer(
    server: LocalSMTPServer, clock: FakeClock, retry: RetryPolicy | None = None, **options: object
) -> AsyncMailer:
    # The transport shares the fake clock: its rate limiter must not wait for real either.
    options.setdefault("clock", clock)
    options.setdefault("sleep", clock.sleep)
    return AsyncMailer(
        relay_transport(server, **options),  # type: ignore[arg-type]
        retry=retry or RetryPolicy(),
        clock=clock,
        sleep=clock.sleep,
    )


def assert_never_twice(server: LocalSMTPServer, recipients: list[str]) -> None:
    for recipient in recipients:
        assert server.deliveries_to(recipient) <= 1, f"{recipient} got the message twice"


async def test_all_accepted_first_time(server: LocalSMTPServer, clock: FakeClock) -> None:
    async with mailer(server, clock) as m:
        result = await m.send(message(bcc=["audit@example.net"]))
    assert result.ok
    assert result.accepted == (*RECIPIENTS, "audit@example.net")
    assert len(result.attempts) == 1
    assert result.attempts[0].outcome is Outcome.SENT
    status = result.recipients["ann@example.org"]
    assert status.reply is not None
    assert status.reply.code == 250
    [received] = server.messages
    assert received.recipients == (*RECIPIENTS, "audit@example.net")
    assert b"audit@example.net" not in received.content  # Bcc only in the envelope
    assert received.message["Message-ID"].strip("<>") == result.message_id
    assert clock.sleeps == []


async def test_transient_rcpt_recovers_and_accepted_recipients_are_not_resent(
    server: LocalSMTPServer, clock: FakeClock
) -> None:
    server.script("RCPT", "451 4.3.0 temporary lookup failure", recipient="bob@example.org")
    async with mailer(server, clock) as m:
        result = await m.send(message())
    assert result.ok
    assert len(result.attempts) == 2
    assert result.attempts[1].recipients == ("bob@example.org",)
    assert result.recipients["bob@example.org"].attempts == 2
    assert result.recipients["ann@example.org"].attempts == 1
    assert [m.recipients for m in server.messages] == [
        ("ann@example.org", "cy@example.org"),
        ("bob@example.org",),
    ]
    assert_never_twice(server, RECIPIENTS)
    assert len(clock.sleeps) == 1
    assert 1.0 <= clock.sleeps[0] <= 2.0  # first backoff: 1 s + up to 1 s jitter


async def test_partial_permanent_rejection_raises_with_per_recipient_result(
    server: LocalSMTPServer, clock: FakeClock
) -> None:
    server.script("RCPT", "550 5.1.1 <bob@example.org>: no such user", recipient="bob@example.org")
    async with mailer(server, clock) as m:
        with pytest.raises(PermanentError) as caught:
            await m.send(message())
    error = caught.value
    assert error.recipient == "bob@example.org"
    assert error.code == 550
    assert error.enhanced_code == "5.1.1"
    assert error.phase is Phase.RCPT
    assert "does not exist" in str(error) or "mailbox" in str(error)
    result = error.result
    assert result is not None
    assert result.accepted == ("ann@example.org", "cy@example.org")
    assert result.rejected == ("bob@example.org",)
    assert len(result.attempts) == 1  # a 5xx is final: no retry
    assert clock.sleeps == []
    assert_never_twice(server, RECIPIENTS)


async def test_exhausted_transient_raises_last_error_not_retry_error(
    server: LocalSMTPServer, clock: FakeClock
) -> None:
    server.script("RCPT", "450 4.2.0 mailbox busy", recipient="bob@example.org", times=None)
    retry = RetryPolicy(attempts=3)
    async with mailer(server, clock, retry) as m:
        with pytest.raises(TransientError) as caught:
            await m.send(message())
    error = caught.value
    assert error.code == 450
    assert error.recipient == "bob@example.org"
    assert error.result is not None
    assert len(error.result.attempts) == 3
    assert error.result.accepted == ("ann@example.org", "cy@example.org")
    assert error.result.recipients["bob@example.org"].attempts == 3
    assert len(clock.sleeps) == 2
    # Exponential: the second wait is about twice the first (jitter <= 1 s).
    assert 2.0 <= clock.sleeps[1] <= 3.0
    assert_never_twice(server, RECIPIENTS)
    assert server.deliveries_to("bob@example.org") == 0


async def test_auth_failure_is_never_retried(clock: FakeClock) -> None:
    from conftest import tls_transport

    with LocalSMTPServer(tls="starttls", auth={"app": "right"}) as server:
        m = AsyncMailer(tls_transport(server, password="wrong"), clock=clock, sleep=clock.sleep)
        with pytest.raises(AuthOrConfigError) as caught:
            await m.send(message())
        await m.aclose()
        assert server.auth_attempts == 1
    assert caught.value.result is not None
    assert len(caught.value.result.attempts) == 1
    assert caught.value.result.accepted == ()
    assert clock.sleeps == []


async def test_connection_refused_on_first_contact_raises_connection_error_at_once(
    clock: FakeClock,
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    from reliable_smtp._transports.smtp import SMTPTransport

    m = AsyncMailer(
        SMTPTransport("127.0.0.1", port, tls="none"),
        retry=RetryPolicy(attempts=3),
        clock=clock,
        sleep=clock.sleep,
    )
    with pytest.raises(ConnectionFailedError) as caught:
        await m.send(message())
    assert isinstance(caught.value, ConnectionError)
    assert caught.value.result is not None
    # Never connected: a setting is wrong, so no retry (tests/test_first_contact.py).
    assert len(caught.value.result.attempts) == 1
    assert clock.sleeps == []


async def test_ambiguous_is_not_retried_by_default(
    server: LocalSMTPServer, clock: FakeClock
) -> None:
    server.script("DATA_END", disconnect=True)
    async with mailer(server, clock) as m:
        with pytest.raises(AmbiguousDeliveryError) as caught:
            await m.send(message())
    error = caught.value
    assert not isinstance(error, ConnectionError)  # naive retry-on-ConnectionError must not fire
    assert error.phase is Phase.DATA_END
    assert error.result is not None
    assert {s.outcome for s in error.result.recipients.values()} == {Outcome.AMBIGUOUS}
    assert len(error.result.attempts) == 1
    assert len(server.messages) == 1  # the server did get it


async def test_ambiguous_retry_resends_the_same_message_id(
    server: LocalSMTPServer, clock: FakeClock
) -> None:
    server.script("DATA_END", disconnect=True)
    retry = RetryPolicy(retry_ambiguous=True)
    async with mailer(server, clock, retry) as m:
        result = await m.send(message())
    assert result.ok
    assert len(result.attempts) == 2
    first, second = server.messages
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert first.content == second.content


async def test_too_many_recipients_splits_without_waiting(
    server: LocalSMTPServer, clock: FakeClock
) -> None:
    server.script("RCPT", "452 4.5.3 Error: too many recipients", recipient="cy@example.org")
    async with mailer(server, clock) as m:
        result = await m.send(message())
    assert result.ok
    assert [m.recipients for m in server.messages] == [
        ("ann@example.org", "bob@example.org"),
        ("cy@example.org",),
    ]
    assert clock.sleeps == [0.0]


async def test_throttled_waits_longer_and_honours_the_hint(
    server: LocalSMTPServer, clock: FakeClock
) -> None:
    server.script("MAIL", "451 4.7.1 Ratelimit exceeded, try again in 7 seconds")
    server.script("MAIL", "421 4.7.0 Try again later, closing connection.")
    async with mailer(server, clock) as m:
        result = await m.send(message())
    assert result.ok
    assert [a.outcome for a in result.attempts] == [
        Outcome.THROTTLED,
        Outcome.THROTTLED,
        Outcome.SENT,
    ]
    retry_waits = [a.delay_after for a in result.attempts[:2]]
    assert retry_waits[0] == 7.0  # the server's hint
    assert retry_waits[1] is not None
    assert retry_waits[1] >= 30.0  # the throttled minimum
    assert server.connections == 2  # the 421 closed the first one
    assert_never_twice(server, RECIPIENTS)


async def test_deadline_bounds_the_retries(server: LocalSMTPServer, clock: FakeClock) -> None:
    server.script("MAIL", "421 4.7.0 Try again later", times=None)
    retry = RetryPolicy(attempts=10, deadline=50.0)
    async with mailer(server, clock, retry) as m:
        with pytest.raises(ThrottledError) as caught:
            await m.send(message())
    result = caught.value.result
    assert result is not None
    # 30 s after the first try, the next 30 s wait would cross 50 s: stop at two tries.
    assert len(result.attempts) == 2
    assert clock.now <= 50.0


async def test_quota_is_not_retried_in_process(server: LocalSMTPServer, clock: FakeClock) -> None:
    server.script("DATA_END", "550 5.4.5 Daily user sending quota exceeded.")
    async with mailer(server, clock) as m:
        with pytest.raises(ThrottledError) as caught:
            await m.send(message())
    assert not caught.value.retryable
    assert caught.value.result is not None
    assert len(caught.value.result.attempts) == 1
    assert "quota" in str(caught.value).lower()


async def test_421_at_mail_reconnects(server: LocalSMTPServer, clock: FakeClock) -> None:
    server.script("MAIL", "421 4.3.2 Service shutting down")
    async with mailer(server, clock) as m:
        result = await m.send(message())
    assert result.ok
    assert server.connections == 2


async def test_data_end_451_retries_everyone_accepted(
    server: LocalSMTPServer, clock: FakeClock
) -> None:
    server.script("DATA_END", "451 4.3.0 Error: queue file write error")
    async with mailer(server, clock) as m:
        result = await m.send(message())
    assert result.ok
    assert len(result.attempts) == 2
    [received] = server.messages  # the 451 means the server did not keep the first copy
    assert received.recipients == tuple(RECIPIENTS)


async def test_every_message_ends_delivered_or_in_a_typed_error(
    server: LocalSMTPServer, clock: FakeClock
) -> None:
    server.script("RCPT", "550 5.1.1 no such user", recipient="bad@example.org", times=None)
    server.script("DATA_END", disconnect=True)
    messages = [message(to=[f"user{i}@example.org"]) for i in range(4)]
    messages.insert(2, message(to=["bad@example.org"]))
    async with mailer(server, clock) as m:
        outcomes = await m.send_many(messages, concurrency=2)
    assert len(outcomes) == 5
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds.count("SendResult") == 3
    assert isinstance(outcomes[2], PermanentError)
    assert sum(isinstance(o, AmbiguousDeliveryError) for o in outcomes) == 1
    for outcome in outcomes:
        assert not isinstance(outcome, DeliveryError) or outcome.result is not None


# -- every phase x every reply class ------------------------------------------------------

PHASE_COMMANDS = ["GREETING", "EHLO", "MAIL", "RCPT", "DATA", "DATA_END"]


async def connected_once(m: AsyncMailer, server: LocalSMTPServer, command: str) -> None:
    """For a fault at the greeting: make it a server that has worked before.

    The very first connection failing without a reply is a first-contact mistake
    and is not retried (tests/test_first_contact.py); these tests are about a
    server that misbehaves once after working.
    """
    if command != "GREETING":
        return
    await m.send(message(to=["warm-up@example.org"]))
    server.drop_connections()
    server.clear()


async def outcome_of(m: AsyncMailer, msg: Message) -> SendResult | DeliveryError:
    """What send() produced: its result, or the error it raised."""
    try:
        return await m.send(msg)
    except DeliveryError as error:
        return error


@pytest.mark.parametrize("command", PHASE_COMMANDS)
@pytest.mark.parametrize(
    ("reply", "expected_outcome", "tries"),
    [
        ("451 4.3.0 Temporary failure", Outcome.TRANSIENT, 2),
        ("421 4.3.2 Service not available, closing", Outcome.TRANSIENT, 2),
        ("554 5.3.0 Permanent failure", Outcome.PERMANENT, 1),
    ],
    ids=["451", "421", "554"],
)
async def test_each_phase_and_reply_class(
    server: LocalSMTPServer,
    clock: FakeClock,
    command: str,
    reply: str,
    expected_outcome: Outcome,
    tries: int,
) -> None:
    # The fault fires once: a transient failure recovers on the second try, a permanent
    # one is final after the first. Either way nobody gets the message twice.
    # At RCPT only ann's reply is scripted: bob is accepted in the first transaction,
    # unless the reply is a 421, which closes the connection for everyone.
    per_recipient = command == "RCPT" and not reply.startswith("421")
    server.script(command, reply, recipient="ann@example.org" if command == "RCPT" else None)  # type: ignore[arg-type]
    async with mailer(server, clock) as m:
        outcome = await outcome_of(m, message(to=["ann@example.org", "bob@example.org"]))
    if expected_outcome is Outcome.TRANSIENT:
        assert isinstance(outcome, SendResult), outcome
        result = outcome
        assert result.ok
    else:
        assert isinstance(outcome, DeliveryError)
        assert outcome.outcome is expected_outcome
        assert outcome.code == int(reply[:3])
        assert outcome.result is not None
        result = outcome.result
        assert result.accepted == (("bob@example.org",) if per_recipient else ())
    assert len(result.attempts) == tries
    first = result.attempts[0]
    assert first.outcome is expected_outcome
    assert first.reply is not None
    assert first.reply.code == int(reply[:3])
    assert_never_twice(server, ["ann@example.org", "bob@example.org"])
    delivered = 1 if expected_outcome is Outcome.TRANSIENT else 0
    assert len(server.messages) == delivered + per_recipient


@pytest.mark.parametrize("command", ["GREETING", "EHLO", "MAIL", "RCPT", "DATA"])
async def test_disconnect_before_the_dot_is_retried_safely(
    server: LocalSMTPServer, clock: FakeClock, command: str
) -> None:
    async with mailer(server, clock) as m:
        await connected_once(m, server, command)
        server.script(command, disconnect=True)  # type: ignore[arg-type]
        result = await m.send(message())
    assert result.ok
    assert len(result.attempts) == 2
    assert result.attempts[0].outcome is Outcome.TRANSIENT
    assert_never_twice(server, RECIPIENTS)


@pytest.mark.parametrize("command", ["GREETING", "EHLO", "MAIL", "RCPT", "DATA", "DATA_END"])
async def test_slow_replies_hit_their_timeout(
    server: LocalSMTPServer, clock: FakeClock, command: str
) -> None:
    options = {"connect_timeout": 0.3, "command_timeout": 0.3, "data_timeout": 0.3}
    async with mailer(server, clock, RetryPolicy(attempts=2), **options) as m:
        await connected_once(m, server, command)
        server.script(command, hang=True)  # type: ignore[arg-type]
        outcome = await outcome_of(m, message(to=["ann@example.org"]))
    if command == "DATA_END":
        # Only a silent final dot is ambiguous; it is not retried.
        assert isinstance(outcome, AmbiguousDeliveryError)
        assert outcome.result is not None
        assert len(outcome.result.attempts) == 1
        return
    assert isinstance(outcome, SendResult), outcome
    assert outcome.ok  # the hang fired once; the retry went through
    assert outcome.attempts[0].outcome is Outcome.TRANSIENT
    assert_never_twice(server, ["ann@example.org"])


@pytest.mark.parametrize(
    ("reply", "expected", "tries"),
    [
        ("454 4.7.0 Temporary authentication failure", Outcome.TRANSIENT, 2),
        ("421 4.7.0 Try again later, closing connection", Outcome.THROTTLED, 2),
        ("535 5.7.8 Username and Password not accepted", Outcome.AUTH_OR_CONFIG, 1),
        ("534 5.7.9 Application-specific password required", Outcome.AUTH_OR_CONFIG, 1),
    ],
)
async def test_auth_phase_replies(
    tls_server: LocalSMTPServer, clock: FakeClock, reply: str, expected: Outcome, tries: int
) -> None:
    from conftest import tls_transport

    tls_server.script("AUTH", reply)
    transport = tls_transport(tls_server, clock=clock, sleep=clock.sleep)
    async with AsyncMailer(transport, clock=clock, sleep=clock.sleep) as m:
        outcome = await outcome_of(m, message(to=["ann@example.org"]))
    result = outcome if isinstance(outcome, SendResult) else outcome.result
    assert result is not None
    assert len(result.attempts) == tries
    assert result.attempts[0].outcome is expected
    assert result.attempts[0].phase is Phase.AUTH
    assert isinstance(outcome, SendResult) is (tries == 2)
