"""Pipelining across messages: the next MAIL, RCPT and DATA follow a final dot before its reply.

Against the raw asyncio server (tests/rawsmtp.py) over real sockets. Most servers here
*hold* the reply to a final dot (``Answer(hold=True)``: counted, but sent only with
the next reply), so a client that waited for it before writing the next message would
wait until ``data_timeout``: every test below that sends more than one message fails
if the connection is not handed over after the dot (the first test shows both sides).

The rules pinned (see ``_transports/_handoff.py``): every reply is matched to its own
command; the next envelope's failure never touches the message before it; a link lost
after a dot is AMBIGUOUS for that message only and the next one, never sent, goes on a
fresh connection; a 421 or a refusal of a dot is that message's alone; a connection that
owes a reply is never checked, reset or closed by the pool; a cancelled send's reply is
still read, and a successor cancelled while reading it gives it back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import pytest

from conftest import relay_transport
from rawsmtp import OK, Answer, RawSMTPServer, Session, normal, wait_until
from rawsmtp import raw_transport as transport
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import PermanentError, TransientError
from reliable_smtp._mailer import AsyncMailer
from reliable_smtp._message import Message
from reliable_smtp._replies import Outcome, Phase
from reliable_smtp._result import DeliveryReport, SendResult
from reliable_smtp._retry import RetryPolicy
from reliable_smtp._settings import MailerSettings
from reliable_smtp._transports._wire import BODY_PIECE
from reliable_smtp._transports.smtp import SMTPTransport
from reliable_smtp.testing import LocalSMTPServer

Decide = Callable[[Session, str, bytes], Answer]


def held_dots(decide: Decide = normal, *, last: int) -> Decide:
    """``decide``, but on the first connection the reply to every final dot before
    transaction ``last`` is held (a connection opened afterwards answers at once)."""

    def held(session: Session, verb: str, argument: bytes) -> Answer:
        answer = decide(session, verb, argument)
        hold = session.number == 1 and session.transactions < last
        if verb == "DATA_END" and hold and answer.reply:
            return Answer(reply=answer.reply, hold=True, keep=answer.keep)
        return answer

    return held


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., object]]:
    servers: list[RawSMTPServer] = []

    async def start(decide: Decide = normal) -> RawSMTPServer:
        server = await RawSMTPServer(decide, pipelining=lambda n: True).start()
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        await server.stop()


def envelope(n: int) -> Envelope:
    return Envelope.build("app@example.com", [f"user{n}@example.org"])


def content(n: int) -> bytes:
    return b"Message-ID: <m%d@example.com>\r\nSubject: x\r\n\r\nbody\r\n" % n


async def deliver_all(smtp: SMTPTransport, count: int) -> list[DeliveryReport | BaseException]:
    """``count`` deliveries at once: one holds the connection, the others wait for it."""
    return await asyncio.gather(
        *(smtp.deliver(envelope(n), content(n)) for n in range(count)), return_exceptions=True
    )


def numbered_messages(count: int) -> list[Message]:
    """Messages 0 to ``count - 1``, each to its own recipient, with the ids ``kept`` expects."""
    return [
        Message(
            sender="app@example.com",
            to=[f"user{n}@example.org"],
            subject=f"n{n}",
            text="x",
            message_id=f"m{n}@example.com",
        )
        for n in range(count)
    ]


def outcome(result: DeliveryReport | BaseException, n: int) -> Outcome:
    assert isinstance(result, DeliveryReport), result
    return result.recipients[f"user{n}@example.org"].outcome


def kept(*numbers: int) -> dict[tuple[str, str], int]:
    return {(f"m{n}@example.com", f"user{n}@example.org"): 1 for n in numbers}


def verbs(server: RawSMTPServer, connection: int = 1) -> list[str]:
    return [verb for number, verb, _ in server.commands if number == connection]


# -- the hand-over itself ----------------------------------------------------------------


@pytest.mark.parametrize("across", [True, False], ids=["across-messages", "within-one"])
async def test_the_next_message_is_written_before_the_final_reply_of_the_one_before(
    serve: Callable[..., object], across: bool
) -> None:
    # Every dot's reply but the last is held until the next command's reply: only a
    # client that writes the next MAIL before that reply gets it in time.
    server: RawSMTPServer = await serve(held_dots(last=3))  # type: ignore[misc]
    async with transport(server, pipeline_across_messages=across, data_timeout=0.5) as smtp:
        results = await deliver_all(smtp, 4)
    if across:
        assert [outcome(r, n) for n, r in enumerate(results)] == [Outcome.SENT] * 4
        assert server.opened == 1
        assert verbs(server) == ["EHLO"] + ["MAIL", "RCPT", "DATA"] * 4 + ["QUIT"]
        assert server.across == 3  # each dot but the last arrived with the next MAIL
    else:
        # Waiting for the held reply: it never comes in time, the message is ambiguous.
        assert outcome(results[0], 0) is Outcome.AMBIGUOUS
        assert server.across == 0
    assert server.deliveries == kept(0, 1, 2, 3)


async def test_a_send_alone_reads_its_own_reply_and_hands_nothing_over(
    serve: Callable[..., object],
) -> None:
    # Nobody waits for the connection: the reply is read as before, the connection idles.
    server: RawSMTPServer = await serve()  # type: ignore[misc]
    async with transport(server) as smtp:
        for n in range(3):
            assert outcome(await smtp.deliver(envelope(n), content(n)), n) is Outcome.SENT
        assert smtp.connections.idle == 1
    assert server.deliveries == kept(0, 1, 2)
    assert server.across == 0


async def test_every_reply_goes_to_its_own_message(serve: Callable[..., object]) -> None:
    finals = {
        0: b"250 2.0.0 Ok: queued as A\r\n",
        1: b"550 5.7.1 Message content rejected\r\n",
        2: b"451 4.3.0 Local error in processing\r\n",
        3: b"250 2.0.0 Ok: queued as D\r\n",
        4: b"250 2.0.0 Ok: queued as E\r\n",
    }

    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "DATA_END":
            return Answer(reply=finals[session.transactions])
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(held_dots(decide, last=4))  # type: ignore[misc]
    async with transport(server) as smtp:
        results = await deliver_all(smtp, 5)
    replies = []
    for n, result in enumerate(results):
        assert isinstance(result, DeliveryReport), result
        status = result.recipients[f"user{n}@example.org"]
        assert status.reply is not None
        replies.append(f"{status.reply.code} {status.reply.text}")
    assert replies == [
        "250 Ok: queued as A",
        "550 Message content rejected",
        "451 Local error in processing",
        "250 Ok: queued as D",
        "250 Ok: queued as E",
    ]
    assert [outcome(r, n) for n, r in enumerate(results)] == [
        Outcome.SENT,
        Outcome.PERMANENT,
        Outcome.TRANSIENT,
        Outcome.SENT,
        Outcome.SENT,
    ]
    assert server.opened == 1  # a refused dot ends only its own transaction
    assert server.deliveries == kept(0, 3, 4)


async def test_many_messages_on_one_connection_through_the_mailer(
    serve: Callable[..., object],
) -> None:
    server: RawSMTPServer = await serve(held_dots(last=29))  # type: ignore[misc]
    messages = numbered_messages(30)
    async with AsyncMailer(transport(server), retry=RetryPolicy.never()) as mailer:
        outcomes = await mailer.send_many(messages, concurrency=4)
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes
    assert server.opened == 1
    assert server.deliveries == kept(*range(30))
    assert server.across == 29


async def test_a_bulk_send_one_message_ahead_keeps_the_chain_going(
    serve: Callable[..., object],
) -> None:
    # concurrency=2 on one connection: when a send reaches its body, the next message's
    # send is still behind the window (it gets its place only when the send before ends,
    # whose reply we have just read). Waiting two loop turns lets it reach the pool and
    # take the connection: every dot goes with the next MAIL. Ending the chain instead
    # would wait for a held reply until data_timeout (AMBIGUOUS).
    server: RawSMTPServer = await serve(held_dots(last=9))  # type: ignore[misc]
    messages = numbered_messages(10)
    smtp = transport(server, data_timeout=0.5)
    async with AsyncMailer(smtp, retry=RetryPolicy.never()) as mailer:
        outcomes = await mailer.send_many(messages, concurrency=2)
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes
    assert server.opened == 1
    assert server.across == 9


async def test_the_local_test_server_takes_messages_across_transactions() -> None:
    # aiosmtpd (LocalSMTPServer) with PIPELINING: commands after the dot in one stream.
    with LocalSMTPServer(pipelining=True) as server:
        async with relay_transport(server, max_connections=1) as smtp:
            results = await deliver_all(smtp, 6)
        assert [outcome(r, n) for n, r in enumerate(results)] == [Outcome.SENT] * 6
        assert sorted(m.recipients[0] for m in server.messages) == sorted(
            f"user{n}@example.org" for n in range(6)
        )


# -- the next envelope never touches the message before it -------------------------------


@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA"])
async def test_a_refused_next_envelope_leaves_the_message_before_it_alone(
    serve: Callable[..., object], command: str
) -> None:
    seen: list[str] = []

    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        seen.append(verb)
        if verb == command and seen.count(command) == 2:  # message 1's
            return Answer(reply=b"550 5.7.1 Not today\r\n")
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(held_dots(decide, last=1))  # type: ignore[misc]
    async with transport(server) as smtp:
        results = await deliver_all(smtp, 3)
    assert outcome(results[0], 0) is Outcome.SENT
    if command == "MAIL":
        assert isinstance(results[1], PermanentError)
        assert results[1].phase is Phase.MAIL
    else:
        assert outcome(results[1], 1) is Outcome.PERMANENT
    assert outcome(results[2], 2) is Outcome.SENT
    assert server.opened == 1  # reset and reused, as after any refused envelope
    assert server.deliveries == kept(0, 2)


# -- faults after a dot with the next message in flight ----------------------------------


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "not-kept"])
async def test_a_link_lost_after_a_dot_is_ambiguous_for_that_message_only(
    serve: Callable[..., object], keep: bool, caplog: pytest.LogCaptureFixture
) -> None:
    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "DATA_END" and session.number == 1:
            # Long enough for the next message's commands to be on the wire.
            return Answer(close=True, keep=keep, delay=0.2)
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(decide)  # type: ignore[misc]
    with caplog.at_level(logging.DEBUG, logger="reliable_smtp.transcript"):
        async with transport(server) as smtp:
            results = await deliver_all(smtp, 2)
    first = results[0]
    assert isinstance(first, DeliveryReport)
    status = first.recipients["user0@example.org"]
    assert status.outcome is Outcome.AMBIGUOUS
    assert status.phase is Phase.DATA_END
    # The next one never had its body sent: not ambiguous; it went on a fresh connection.
    assert outcome(results[1], 1) is Outcome.SENT
    assert server.opened == 2
    assert server.deliveries == (kept(0) if keep else {}) | kept(1)
    mails = [r.getMessage() for r in caplog.records if "MAIL FROM" in r.getMessage()]
    assert len(mails) == 3  # message 1's MAIL went on the first connection too


async def test_no_reply_to_a_dot_in_time_is_ambiguous_for_it_and_the_next_goes_fresh(
    serve: Callable[..., object],
) -> None:
    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "DATA_END" and session.number == 1:
            return Answer(reply=OK["DATA_END"], delay=5.0, keep=True)
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(decide)  # type: ignore[misc]
    async with transport(server, data_timeout=0.3) as smtp:
        results = await deliver_all(smtp, 2)
    first = results[0]
    assert isinstance(first, DeliveryReport)
    assert first.recipients["user0@example.org"].outcome is Outcome.AMBIGUOUS
    assert first.recipients["user0@example.org"].verdict.timed_out
    assert outcome(results[1], 1) is Outcome.SENT
    assert server.deliveries == kept(0, 1)


async def test_a_421_to_a_dot_is_that_messages_and_the_next_goes_fresh(
    serve: Callable[..., object],
) -> None:
    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "DATA_END" and session.number == 1:
            return Answer(reply=b"421 4.3.2 Shutting down\r\n", close=True, delay=0.1)
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(decide)  # type: ignore[misc]
    async with AsyncMailer(transport(server), retry=RetryPolicy.never()) as mailer:
        outcomes = await mailer.send_many(
            [
                Message(
                    sender="app@example.com",
                    to=[f"user{n}@example.org"],
                    text="x",
                    message_id=f"m{n}@example.com",
                )
                for n in range(2)
            ],
            concurrency=2,
        )
    assert isinstance(outcomes[0], TransientError)
    assert outcomes[0].code == 421
    assert outcomes[0].phase is Phase.DATA_END
    assert isinstance(outcomes[1], SendResult)
    assert len(outcomes[1].attempts) == 1  # the connection, not the message, failed
    assert server.opened == 2
    assert server.deliveries == kept(1)


@pytest.mark.parametrize("reply", [b"600 what\r\n", b"354 again?\r\n"])
async def test_an_out_of_step_reply_to_a_dot_drops_the_connection_before_the_next(
    serve: Callable[..., object], reply: bytes
) -> None:
    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "DATA_END" and session.number == 1:
            return Answer(reply=reply, keep=True)
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(held_dots(decide, last=1))  # type: ignore[misc]
    async with transport(server) as smtp:
        results = await deliver_all(smtp, 2)
    assert outcome(results[0], 0) is Outcome.AMBIGUOUS
    assert outcome(results[1], 1) is Outcome.SENT
    assert server.opened == 2
    assert server.deliveries == kept(0, 1)


# -- the pool and a connection that owes a reply -----------------------------------------


async def test_a_connection_owing_a_reply_is_never_checked_or_idle(
    serve: Callable[..., object],
) -> None:
    server: RawSMTPServer = await serve(held_dots(last=4))  # type: ignore[misc]
    # A NOOP before every reuse of an idle connection: none may come between a dot
    # and the reply it is owed.
    async with transport(server, check_after=1e-6) as smtp:
        results = await deliver_all(smtp, 5)
    assert [outcome(r, n) for n, r in enumerate(results)] == [Outcome.SENT] * 5
    assert "NOOP" not in verbs(server)
    assert "RSET" not in verbs(server)


async def test_closing_the_transport_while_a_reply_is_owed_waits_for_it(
    serve: Callable[..., object],
) -> None:
    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "DATA_END" and session.transactions == 1:
            return Answer(reply=OK["DATA_END"], delay=0.2)
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(held_dots(decide, last=1))  # type: ignore[misc]
    smtp = transport(server)
    sends = asyncio.ensure_future(deliver_all(smtp, 2))
    assert await wait_until(lambda: verbs(server).count("DATA") == 2)
    await smtp.aclose()  # message 0's reply is owed, message 1 is on the wire
    results = await sends
    assert [outcome(r, n) for n, r in enumerate(results)] == [Outcome.SENT] * 2
    assert verbs(server)[-1] == "QUIT"  # only after the last reply
    assert await wait_until(lambda: server.open == 0)
    assert server.deliveries == kept(0, 1)


async def test_max_messages_per_connection_stops_the_hand_over(
    serve: Callable[..., object],
) -> None:
    server: RawSMTPServer = await serve()  # type: ignore[misc]
    async with transport(server, max_messages_per_connection=2) as smtp:
        results = await deliver_all(smtp, 5)
    assert [outcome(r, n) for n, r in enumerate(results)] == [Outcome.SENT] * 5
    per_connection = [verbs(server, number).count("MAIL") for number in range(1, server.opened + 1)]
    assert per_connection == [2, 2, 1]


# -- cancellation ------------------------------------------------------------------------


def next_mail_delayed(session: Session, verb: str, argument: bytes) -> Answer:
    """Holds the first dot's reply; answers the next MAIL (and so that reply) 0.3 s late."""
    if verb == "MAIL" and session.transactions == 1:
        return Answer(reply=OK["MAIL"], delay=0.3)
    return normal(session, verb, argument)


@pytest.mark.parametrize("cancelled", ["first", "second"])
async def test_cancelled_while_the_reply_is_owed(
    serve: Callable[..., object], cancelled: str
) -> None:
    server: RawSMTPServer = await serve(held_dots(next_mail_delayed, last=1))  # type: ignore[misc]
    async with transport(server) as smtp:
        first = asyncio.create_task(smtp.deliver(envelope(0), content(0)))
        second = asyncio.create_task(smtp.deliver(envelope(1), content(1)))
        # The next MAIL arrived: the first send has handed over and waits for its reply,
        # which the second send is reading.
        assert await wait_until(lambda: verbs(server).count("MAIL") == 2)
        victim, survivor = (first, second) if cancelled == "first" else (second, first)
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        assert outcome(await survivor, 1 if cancelled == "first" else 0) is Outcome.SENT
        assert outcome(await smtp.deliver(envelope(2), content(2)), 2) is Outcome.SENT
    if cancelled == "first":
        # Its reply was still read: the stream stayed in step, the connection goes on.
        assert server.opened == 1
        assert server.deliveries == kept(0, 1, 2)
    else:
        # The reply went back to the first send, which read it; the connection carried
        # the cancelled send's commands too, so it was dropped: the next opens another.
        assert server.opened == 2
        assert server.deliveries == kept(0, 2)
    assert await wait_until(lambda: server.open == 0)


@contextmanager
def cancelling_at_hand_over(
    smtp: SMTPTransport, victims: list[asyncio.Task[DeliveryReport]]
) -> Iterator[None]:
    """Inside: a successful hand-over cancels ``victims[0]`` at once, before any other
    task runs (the races of a cancellation meeting the hand-over)."""
    pool = smtp._pool
    assert pool is not None
    hand_over = pool.hand_over

    def hand_over_then_cancel(*args: object) -> bool:
        handed = hand_over(*args)  # type: ignore[arg-type]
        if handed:
            victims[0].cancel()
        return handed

    pool.hand_over = hand_over_then_cancel  # type: ignore[method-assign]
    try:
        yield
    finally:
        pool.hand_over = hand_over  # type: ignore[method-assign]


def slow_dot(session: Session, verb: str, argument: bytes) -> Answer:
    if verb == "DATA_END":
        return Answer(reply=OK["DATA_END"], delay=0.1)
    return normal(session, verb, argument)


async def test_a_waiter_cancelled_as_the_connection_reaches_it_gives_it_back(
    serve: Callable[..., object],
) -> None:
    server: RawSMTPServer = await serve(slow_dot)  # type: ignore[misc]
    async with transport(server) as smtp:
        await smtp.deliver(envelope(9), content(9))  # the connection and its pool
        waiters: list[asyncio.Task[DeliveryReport]] = []
        with cancelling_at_hand_over(smtp, waiters):
            first = asyncio.create_task(smtp.deliver(envelope(0), content(0)))
            second = asyncio.create_task(smtp.deliver(envelope(1), content(1)))
            waiters.append(second)  # cancelled before it runs, so before it writes
            with pytest.raises(asyncio.CancelledError):
                await second
            # The first send got the connection back and wrote its dot and read its reply
            # itself; nothing else was written, so it stays in the pool for the next one.
            assert outcome(await first, 0) is Outcome.SENT
        assert outcome(await smtp.deliver(envelope(2), content(2)), 2) is Outcome.SENT
    assert server.opened == 1
    assert verbs(server).count("MAIL") == 3
    assert server.deliveries == kept(9, 0, 2)


async def test_a_send_cancelled_before_its_dot_went_is_not_sent(
    serve: Callable[..., object],
) -> None:
    server: RawSMTPServer = await serve(slow_dot)  # type: ignore[misc]
    async with transport(server) as smtp:
        await smtp.deliver(envelope(9), content(9))  # the connection and its pool
        senders: list[asyncio.Task[DeliveryReport]] = []
        with cancelling_at_hand_over(smtp, senders):
            first = asyncio.create_task(smtp.deliver(envelope(0), content(0)))
            senders.append(first)  # cancelled while handing over: its dot is still to go
            second = asyncio.create_task(smtp.deliver(envelope(1), content(1)))
            with pytest.raises(asyncio.CancelledError):
                await first
            # The next send found the body without its dot: it dropped the connection
            # (the server discards the message) and went on a fresh one.
            assert outcome(await second, 1) is Outcome.SENT
    assert server.opened == 2
    assert server.deliveries == kept(9, 1)


async def test_a_large_body_goes_first_and_only_the_dot_waits_for_the_next_send(
    serve: Callable[..., object],
) -> None:
    server: RawSMTPServer = await serve(held_dots(last=1))  # type: ignore[misc]
    large = content(0) + (b"y" * 76 + b"\r\n") * 4000  # 312 KB: more than a BODY_PIECE
    assert len(large) > BODY_PIECE
    async with transport(server) as smtp:
        results = await asyncio.gather(
            smtp.deliver(envelope(0), large), smtp.deliver(envelope(1), content(1))
        )
    assert [outcome(r, n) for n, r in enumerate(results)] == [Outcome.SENT] * 2
    assert server.across == 1
    assert server.deliveries == kept(0, 1)


# -- the option ------------------------------------------------------------------------


async def test_the_setting_the_url_option_and_the_keyword_reach_the_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = {"transport": "smtp", "host": "127.0.0.1", "port": 25, "tls": "none"}
    on = MailerSettings(**base).build_transport()
    assert isinstance(on, SMTPTransport)
    assert on.pipeline_across_messages is True
    monkeypatch.setenv("RELIABLE_SMTP_PIPELINE_ACROSS_MESSAGES", "false")
    off = MailerSettings(**base).build_transport()
    assert isinstance(off, SMTPTransport)
    assert off.pipeline_across_messages is False
    monkeypatch.delenv("RELIABLE_SMTP_PIPELINE_ACROSS_MESSAGES")
    url = MailerSettings(url="smtp+plain://127.0.0.1:25?pipeline_across_messages=false")
    from_url = url.build_transport()
    assert isinstance(from_url, SMTPTransport)
    assert from_url.pipeline_across_messages is False
    assert SMTPTransport("127.0.0.1", 25, tls="none").pipeline_across_messages is True


async def test_switched_off_or_without_pipelining_every_send_reads_its_own_reply(
    serve: Callable[..., object],
) -> None:
    for options in ({"pipeline_across_messages": False}, {"pipelining": False}):
        server: RawSMTPServer = await serve(held_dots(last=1))  # type: ignore[misc]
        async with transport(server, data_timeout=0.3, **options) as smtp:
            results = await deliver_all(smtp, 2)
        # The held reply is waited for, not written past: it never comes in time.
        assert outcome(results[0], 0) is Outcome.AMBIGUOUS
