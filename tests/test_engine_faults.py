"""Faults the delivery engine must survive (issue 11 B1-B6), against a raw asyncio server.

Each test drives the real transport and mailer over real sockets on 127.0.0.1 and
asserts what the server kept (``RawSMTPServer.deliveries``) against what the client
reported: never twice, never claimed when the server does not have it, never a
foreign exception, never a connection left open after ``aclose()``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from rawsmtp import Answer, RawSMTPServer, Session, normal, wait_until
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import (
    AmbiguousDeliveryError,
    AuthOrConfigError,
    DeliveryError,
    PermanentError,
    ProtocolError,
    ReliableSMTPError,
    ThrottledError,
    TransientError,
)
from reliable_smtp._mailer import AsyncMailer
from reliable_smtp._mailer.failure import FAILURE_PRECEDENCE
from reliable_smtp._message import Message
from reliable_smtp._replies import Outcome, Phase, Reply, Verdict
from reliable_smtp._result import DeliveryReport, RecipientStatus, SendResult
from reliable_smtp._retry import RetryPolicy
from reliable_smtp._transports.base import Transport
from reliable_smtp._transports.smtp import SMTPTransport
from reliable_smtp.testing import FakeClock

CONTENT = b"Message-ID: <t1@example.com>\r\nSubject: x\r\n\r\nbody\r\n"
ENVELOPE = Envelope.build("a@example.com", ["b@example.org"])


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


#: The dialogues a ``serve`` parameter asks for: what the servers offer, and the
#: client's options (``transport()`` applies them).
DIALOGUES: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    "data": ({}, {}),  # one command at a time
    "pipelined": ({"pipelining": lambda n: True}, {"pipeline_across_messages": False}),
    # The next message's MAIL, RCPT and DATA with the dot before it, when sends overlap.
    "across": ({"pipelining": lambda n: True}, {"pipeline_across_messages": True}),
    "bdat": ({"pipelining": lambda n: True, "chunking": lambda n: True}, {}),
}
_client_options: dict[int, dict[str, object]] = {}  # id(server) -> options for its dialogue


@pytest.fixture
async def serve(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., object]]:
    """Starts raw servers speaking the dialogue of the parameter (``DIALOGUES``; default
    ``data``): with ``bdat`` they offer PIPELINING and CHUNKING."""
    servers: list[RawSMTPServer] = []
    dialogue = getattr(request, "param", "data")
    offers, client = DIALOGUES[dialogue]

    async def start(
        decide: Callable[[Session, str, bytes], Answer] = normal, **kw: object
    ) -> RawSMTPServer:
        server = await RawSMTPServer(decide, **{**offers, **kw}).start()  # type: ignore[arg-type]
        _client_options[id(server)] = client
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        await server.stop()
        _client_options.pop(id(server), None)
    verbs = {verb for started in servers for _, verb, _ in started.commands}
    if dialogue == "bdat":  # the parametrisation did change the dialogue
        assert "BDAT" in verbs, verbs
        assert "DATA" not in verbs, verbs
    if dialogue == "pipelined":
        assert not any(started.across for started in servers)


#: For the rules that hold whichever way the message goes: DATA and the final dot, one
#: command at a time, pipelined within a message or across messages (RFC 2920), or MAIL,
#: RCPT and BDAT LAST with the message in one write (RFC 3030).
every_dialogue = pytest.mark.parametrize(
    "serve", ["data", "pipelined", "across", "bdat"], indirect=True
)


def transport(server: RawSMTPServer, **options: object) -> SMTPTransport:
    settings: dict[str, object] = {
        "tls": "none",
        "local_hostname": "client.test",
        "connect_timeout": 2.0,
        "command_timeout": 1.0,
        "data_timeout": 1.0,
        **_client_options.get(id(server), {}),
        **options,
    }
    return SMTPTransport("127.0.0.1", server.port, **settings)  # type: ignore[arg-type]


def message(n: int, *to: str) -> Message:
    return Message(
        sender="app@example.com",
        to=list(to) or [f"user{n}@example.org"],
        subject=f"message {n}",
        text="hello",
        message_id=f"m{n}@example.com",
    )


# -- B1: a dead pooled connection is never an error of the send -------------------------


def one_message_per_connection(session: Session, verb: str, argument: bytes) -> Answer:
    """Serves one message per connection, then closes silently at the next MAIL."""
    if verb == "MAIL" and session.transactions >= 1:
        return Answer(close=True)
    return normal(session, verb, argument)


@pytest.mark.parametrize("pipelining", [False, True], ids=["serial", "pipelined"])
async def test_server_closing_at_the_next_mail_never_escapes_as_a_foreign_error(
    serve: Callable[..., object], pipelining: bool
) -> None:
    server: RawSMTPServer = await serve(  # type: ignore[misc]
        one_message_per_connection, pipelining=lambda n: pipelining
    )
    async with AsyncMailer(
        transport(server, max_connections=1), retry=RetryPolicy.never()
    ) as mailer:
        outcomes = await mailer.send_many([message(i) for i in range(8)], concurrency=3)
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes
    assert server.deliveries == {(f"m{i}@example.com", f"user{i}@example.org"): 1 for i in range(8)}
    assert await wait_until(lambda: server.open == 0)


async def test_two_concurrent_delivers_on_one_connection_each_get_a_report(
    serve: Callable[..., object],
) -> None:
    server: RawSMTPServer = await serve(one_message_per_connection)  # type: ignore[misc]
    async with transport(server, max_connections=1) as smtp:
        reports = await asyncio.gather(
            *(
                smtp.deliver(Envelope.build("a@example.com", [f"u{i}@example.org"]), CONTENT)
                for i in range(4)
            )
        )
    assert all(r.recipients[f"u{i}@example.org"].accepted for i, r in enumerate(reports))


def always_closing_at_mail(session: Session, verb: str, argument: bytes) -> Answer:
    if verb == "MAIL":
        return Answer(close=True)
    return normal(session, verb, argument)


async def test_a_fresh_connection_that_dies_too_is_a_classified_error_of_that_message(
    serve: Callable[..., object],
) -> None:
    server: RawSMTPServer = await serve(always_closing_at_mail)  # type: ignore[misc]
    async with AsyncMailer(transport(server), retry=RetryPolicy.never()) as mailer:
        outcomes = await mailer.send_many([message(1), message(2)], concurrency=2)
    for outcome in outcomes:
        assert isinstance(outcome, TransientError), outcome
        assert outcome.phase is Phase.MAIL
        assert outcome.result is not None
    assert not server.deliveries


# -- stream(): one message's foreign exception never ends the stream --------------------


class BuggyTransport(Transport):
    """Accepts every message except the one for bug@example.org, where it crashes."""

    name = "buggy://test"

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        await asyncio.sleep(0)
        if "bug@example.org" in envelope.recipients:
            raise KeyError("a bug in a transport")
        return DeliveryReport.all_sent(envelope, transport_name=self.name)


async def test_a_foreign_exception_is_that_messages_ambiguous_outcome_and_the_stream_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = [message(1), message(2, "bug@example.org"), message(3)]
    with caplog.at_level(logging.ERROR, logger="reliable_smtp"):
        async with AsyncMailer(BuggyTransport(), retry=RetryPolicy.never()) as mailer:
            outcomes = [o async for o in mailer.stream(messages, concurrency=3)]
    assert isinstance(outcomes[0], SendResult)
    assert isinstance(outcomes[2], SendResult)
    error = outcomes[1]
    # How far the transport got is unknown: ambiguous, never resent; the bug stays visible.
    assert isinstance(error, AmbiguousDeliveryError)
    assert isinstance(error.__cause__, KeyError)
    assert error.result is not None
    assert error.result.recipients["bug@example.org"].outcome is Outcome.AMBIGUOUS
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


# -- B2: after the final dot, anything but 2xx/4xx/5xx is ambiguous ----------------------


def final_reply(reply: bytes) -> Callable[[Session, str, bytes], Answer]:
    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "DATA_END":
            return Answer(reply=reply, keep=True)  # the server kept it, then said this
        return normal(session, verb, argument)

    return decide


NOT_SMTP_FINAL = [
    b"600 queued, I think\r\n",
    b"199 hmm\r\n",
    b"354 go on\r\n",
    b"300 what\r\n",
    b"000 zero\r\n",
    b"999\r\n",
    b"250-first line\r\n550 second line disagrees\r\n",
]


@pytest.mark.parametrize("reply", NOT_SMTP_FINAL, ids=lambda r: r[:3].decode())
@every_dialogue
async def test_a_final_reply_that_is_not_2xx_4xx_5xx_is_ambiguous(
    serve: Callable[..., object], reply: bytes
) -> None:
    server: RawSMTPServer = await serve(final_reply(reply))  # type: ignore[misc]
    async with AsyncMailer(transport(server)) as mailer:
        with pytest.raises(AmbiguousDeliveryError) as caught:
            await mailer.send(message(1))
        assert caught.value.result is not None
        assert len(caught.value.result.attempts) == 1  # never resent
        assert "may have been delivered" in str(caught.value)
        # The connection is out of step: dropped, a new one for the next message.
        with pytest.raises(AmbiguousDeliveryError):
            await mailer.send(message(2))
    assert server.opened == 2
    assert server.deliveries == {
        ("m1@example.com", "user1@example.org"): 1,
        ("m2@example.com", "user2@example.org"): 1,
    }


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        (command, reply)
        for command in ("MAIL", "RCPT", "DATA")
        for reply in (b"600 nope\r\n", b"199 hmm\r\n", b"354 go on\r\n")
        if (command, reply[:3]) != ("DATA", b"354")  # the right reply to DATA
    ],
)
async def test_a_non_smtp_reply_before_the_dot_is_a_protocol_error(
    serve: Callable[..., object], command: str, reply: bytes
) -> None:
    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == command:
            return Answer(reply=reply)
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(decide)  # type: ignore[misc]
    async with AsyncMailer(transport(server), retry=RetryPolicy.never()) as mailer:
        with pytest.raises(ProtocolError) as caught:
            await mailer.send(message(1))
    assert caught.value.outcome is Outcome.PERMANENT
    assert not server.deliveries


@pytest.mark.parametrize("pipelining", [False, True], ids=["serial", "pipelined"])
async def test_a_2xx_to_data_is_a_protocol_error_and_nothing_is_claimed(
    serve: Callable[..., object], pipelining: bool
) -> None:
    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "DATA":
            return Answer(reply=b"250 2.0.0 Ok\r\n")  # no 354: the body is never sent
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(decide, pipelining=lambda n: pipelining)  # type: ignore[misc]
    async with AsyncMailer(transport(server), retry=RetryPolicy.never()) as mailer:
        with pytest.raises(ProtocolError) as caught:
            await mailer.send(message(1))
    assert caught.value.result is not None
    assert caught.value.result.accepted == ()
    assert not server.deliveries


# -- B6: a reply that shows we disagree about the protocol is a ProtocolError ------------


@pytest.mark.parametrize(
    "reply", [b"500 5.5.1 Command unrecognized\r\n", b"503 5.5.1 Bad sequence\r\n"]
)
@pytest.mark.parametrize("command", ["MAIL", "RCPT"])
@every_dialogue
async def test_5_5_x_refusals_raise_protocol_error(
    serve: Callable[..., object], command: str, reply: bytes
) -> None:
    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == command:
            return Answer(reply=reply)
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(decide)  # type: ignore[misc]
    async with AsyncMailer(transport(server), retry=RetryPolicy.never()) as mailer:
        with pytest.raises(ProtocolError) as caught:
            await mailer.send(message(1))
    assert caught.value.code == int(reply[:3])
    assert caught.value.phase is Phase[command]


# -- B3: cancelling a send during the NOOP health check leaks nothing -------------------


@every_dialogue
async def test_cancelling_a_send_during_the_noop_check_closes_the_connection(
    serve: Callable[..., object],
) -> None:
    def slow_noop(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "NOOP":
            return Answer(reply=b"250 Ok\r\n", delay=30.0)
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(slow_noop)  # type: ignore[misc]
    clock = FakeClock()
    smtp = transport(server, clock=clock, check_after=5.0, command_timeout=30.0)
    await smtp.deliver(ENVELOPE, CONTENT)
    clock.advance(10.0)  # idle long enough to be checked before reuse
    task = asyncio.create_task(smtp.deliver(ENVELOPE, CONTENT))
    assert await wait_until(lambda: any(verb == "NOOP" for _, verb, _ in server.commands))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await smtp.aclose()
    assert await wait_until(lambda: server.open == 0, timeout=2.0), f"{server.open} left open"


def slow_final(session: Session, verb: str, argument: bytes) -> Answer:
    if verb == "DATA_END":
        return Answer(reply=b"250 Ok\r\n", delay=0.2)
    return normal(session, verb, argument)


# Not "across": there the second send is handed the connection right after the first
# one's dot, before aclose() (next test).
@pytest.mark.parametrize("serve", ["data", "pipelined", "bdat"], indirect=True)
async def test_a_send_waiting_for_a_connection_when_the_transport_closes_opens_none(
    serve: Callable[..., object],
) -> None:
    server: RawSMTPServer = await serve(slow_final)  # type: ignore[misc]
    smtp = transport(server, max_connections=1)
    first = asyncio.create_task(smtp.deliver(ENVELOPE, CONTENT))
    second = asyncio.create_task(smtp.deliver(ENVELOPE, CONTENT))
    assert await wait_until(lambda: server.opened == 1)
    await asyncio.sleep(0.05)
    await smtp.aclose()
    assert (await first).recipients["b@example.org"].accepted
    with pytest.raises(ReliableSMTPError, match="closed"):
        await second
    assert server.opened == 1
    assert await wait_until(lambda: server.open == 0, timeout=2.0)


@pytest.mark.parametrize("serve", ["across"], indirect=True)
async def test_a_send_handed_the_connection_before_the_transport_closes_completes_on_it(
    serve: Callable[..., object],
) -> None:
    server: RawSMTPServer = await serve(slow_final)  # type: ignore[misc]
    smtp = transport(server, max_connections=1)
    first = asyncio.create_task(smtp.deliver(ENVELOPE, CONTENT))
    second = asyncio.create_task(smtp.deliver(ENVELOPE, CONTENT))
    # The second send took the connection over at the first one's dot: no longer waiting.
    assert await wait_until(lambda: server.across == 1)
    await smtp.aclose()
    assert (await first).recipients["b@example.org"].accepted
    assert (await second).recipients["b@example.org"].accepted
    assert server.opened == 1
    assert await wait_until(lambda: server.open == 0, timeout=2.0)


# -- B4: the error class never hides an ambiguous recipient ------------------------------


def ambiguous_and_transient(refuse_connection: bool) -> Callable[[Session, str, bytes], Answer]:
    """late@ is refused with 451 (or, later, the connection is); kept@ is accepted, then the
    link breaks after the final dot."""

    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "GREETING" and refuse_connection and session.number > 1:
            return Answer(close=True)
        if verb == "RCPT" and b"late@" in argument:
            return Answer(reply=b"451 4.3.0 Local error in processing\r\n")
        if verb == "DATA_END":
            return Answer(close=True, keep=True)
        return normal(session, verb, argument)

    return decide


@pytest.mark.parametrize("refuse_connection", [False, True], ids=["451", "connection-failed"])
@every_dialogue
async def test_an_ambiguous_recipient_decides_the_class_over_a_transient_one(
    serve: Callable[..., object], refuse_connection: bool
) -> None:
    server: RawSMTPServer = await serve(ambiguous_and_transient(refuse_connection))  # type: ignore[misc]
    async with AsyncMailer(
        transport(server), retry=RetryPolicy(attempts=3), sleep=no_wait
    ) as mailer:
        with pytest.raises(AmbiguousDeliveryError) as caught:
            await mailer.send(message(1, "late@example.org", "kept@example.org"))
    error = caught.value
    assert not isinstance(error, TransientError)
    assert error.result is not None
    assert error.result.recipients["kept@example.org"].outcome is Outcome.AMBIGUOUS
    assert error.result.recipients["late@example.org"].outcome is Outcome.TRANSIENT
    assert error.recipient == "kept@example.org"
    assert "may have been delivered to 1 of 2" in str(error)
    assert server.deliveries == {("m1@example.com", "kept@example.org"): 1}


# -- B5: the default EHLO name never stalls a connection --------------------------------


async def test_a_resolver_that_hangs_does_not_stall_the_connection(
    serve: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    calls: list[int] = []

    def hanging_getfqdn(name: str = "") -> str:
        calls.append(1)
        release.wait(30)
        return "late.example.net"

    monkeypatch.setattr(socket, "getfqdn", hanging_getfqdn)
    server: RawSMTPServer = await serve()  # type: ignore[misc]
    # One message per connection: the second send opens a second connection.
    smtp = transport(
        server, local_hostname=None, connect_timeout=0.3, max_messages_per_connection=1
    )
    try:
        for recipient in ("b@example.org", "c@example.org"):
            one = Envelope.build("a@example.com", [recipient])
            report = await asyncio.wait_for(smtp.deliver(one, CONTENT), timeout=5)
            assert report.recipients[recipient].accepted
    finally:
        release.set()
        await smtp.aclose()
    ehlo = [argument for _, verb, argument in server.commands if verb == "EHLO"]
    # No name in time: the address literal of the connection (RFC 5321 §4.1.4).
    assert ehlo == [b"[127.0.0.1]", b"[127.0.0.1]"]
    assert calls == [1]  # looked up once per transport, not once per connection


@pytest.mark.parametrize(
    ("fqdn", "expected"),
    [
        ("mail1.example.net", b"mail1.example.net"),
        ("localhost", b"[127.0.0.1]"),
        ("vm", b"[127.0.0.1]"),
    ],
)
async def test_the_default_ehlo_name_is_a_dotted_fqdn_or_the_address_literal(
    serve: Callable[..., object], monkeypatch: pytest.MonkeyPatch, fqdn: str, expected: bytes
) -> None:
    monkeypatch.setattr(socket, "getfqdn", lambda name="": fqdn)
    server: RawSMTPServer = await serve()  # type: ignore[misc]
    async with transport(server, local_hostname=None) as smtp:
        await smtp.deliver(ENVELOPE, CONTENT)
    assert [a for _, verb, a in server.commands if verb == "EHLO"] == [expected]


# -- B4: the precedence among failure classes, every mixed combination ------------------

FAILING: dict[Outcome, RecipientStatus] = {
    Outcome.AMBIGUOUS: RecipientStatus(
        recipient="", outcome=Outcome.AMBIGUOUS, phase=Phase.DATA_END, explanation="lost"
    ),
    Outcome.AUTH_OR_CONFIG: RecipientStatus(
        recipient="",
        outcome=Outcome.AUTH_OR_CONFIG,
        phase=Phase.RCPT,
        reply=Reply(550, "5.7.1", "Relaying denied"),
        explanation="relay denied",
    ),
    Outcome.THROTTLED: RecipientStatus(
        recipient="",
        outcome=Outcome.THROTTLED,
        phase=Phase.RCPT,
        reply=Reply(451, "4.7.1", "rate limited"),
        explanation="throttled",
        retryable=True,
    ),
    Outcome.TRANSIENT: RecipientStatus(
        recipient="",
        outcome=Outcome.TRANSIENT,
        phase=Phase.RCPT,
        reply=Reply(451, "4.3.0", "local error"),
        explanation="transient",
        retryable=True,
    ),
    Outcome.PERMANENT: RecipientStatus(
        recipient="",
        outcome=Outcome.PERMANENT,
        phase=Phase.RCPT,
        reply=Reply(550, "5.1.1", "no such user"),
        explanation="no such user",
    ),
}
RAISED: dict[Outcome, type[DeliveryError]] = {
    Outcome.AMBIGUOUS: AmbiguousDeliveryError,
    Outcome.AUTH_OR_CONFIG: AuthOrConfigError,
    Outcome.THROTTLED: ThrottledError,
    Outcome.TRANSIENT: TransientError,
    Outcome.PERMANENT: PermanentError,
}
ORDER = [
    Outcome.AMBIGUOUS,
    Outcome.AUTH_OR_CONFIG,
    Outcome.THROTTLED,
    Outcome.TRANSIENT,
    Outcome.PERMANENT,
]
MIXES = [
    (mix, with_sent)
    for size in range(1, len(ORDER) + 1)
    for mix in itertools.combinations(ORDER, size)
    for with_sent in (False, True)
]


class ScriptedTransport(Transport):
    """Reports, for each recipient, the status its local part names (``transient-1@...``)."""

    name = "scripted://test"

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        statuses = {}
        for recipient in envelope.recipients:
            kind = recipient.split("-", 1)[0]
            if kind == "sent":
                status = RecipientStatus(
                    recipient=recipient, outcome=Outcome.SENT, phase=Phase.DATA_END
                )
            else:
                status = replace(FAILING[Outcome(kind)], recipient=recipient)
            statuses[recipient] = status
        return DeliveryReport.in_envelope_order(envelope, statuses, transport_name=self.name)


@pytest.mark.parametrize(
    ("mix", "with_sent"),
    MIXES,
    ids=["+".join(o.value for o in mix) + ("+sent" if s else "") for mix, s in MIXES],
)
async def test_the_raised_class_follows_the_precedence(
    mix: tuple[Outcome, ...], with_sent: bool
) -> None:
    # Envelope order is the reverse of the precedence: the winner is never simply first.
    recipients = [f"{o.value}-1@example.org" for o in reversed(mix)]
    if with_sent:
        recipients.insert(0, "sent-1@example.org")
    async with AsyncMailer(
        ScriptedTransport(), retry=RetryPolicy.never(), recipient_policy=None
    ) as mailer:
        with pytest.raises(DeliveryError) as caught:
            await mailer.send(Message(sender="app@example.com", to=recipients, text="x"))
    winner = mix[0]  # ``mix`` keeps ORDER's order
    assert type(caught.value) is RAISED[winner]
    assert caught.value.outcome is winner
    assert caught.value.recipient == f"{winner.value}-1@example.org"
    assert caught.value.result is not None
    assert caught.value.result.accepted == (("sent-1@example.org",) if with_sent else ())


def test_the_documented_precedence_is_the_one_used() -> None:
    assert tuple(ORDER) == FAILURE_PRECEDENCE


async def test_a_permanent_protocol_error_among_recipients_is_a_protocol_error() -> None:
    class Refusing(ScriptedTransport):
        async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
            # The status carries the reply's verdict (protocol_error=True): the mailer's
            # error follows from it, with no second look at the reply.
            status = RecipientStatus.from_reply(
                envelope.recipients[0],
                Reply(500, "5.5.1", "Command unrecognized"),
                phase=Phase.RCPT,
            )
            return DeliveryReport.in_envelope_order(
                envelope, {envelope.recipients[0]: status}, transport_name=self.name
            )

    async with AsyncMailer(Refusing(), retry=RetryPolicy.never()) as mailer:
        with pytest.raises(ProtocolError):
            await mailer.send(message(1))


async def test_the_raised_error_carries_the_deciding_statuss_verdict_whole() -> None:
    # Mixed failures: the error is built from the first top-precedence status's verdict,
    # not from a few fields copied out of it, so nothing the verdict says is lost (here
    # the setting to change, which a rebuilt verdict used to drop).
    refused_sender = Verdict(
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation="the API key may not send as this address: change the sender",
        setting="RELIABLE_SMTP_SENDER",
        rule="api-sender-not-allowed",
    )

    class Mixed(ScriptedTransport):
        async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
            first, second = envelope.recipients
            statuses = {
                first: RecipientStatus.from_reply(
                    first, Reply(550, "5.1.1", "no such user"), phase=Phase.RCPT
                ),
                second: RecipientStatus.from_verdict(second, refused_sender, phase=Phase.RCPT),
            }
            return DeliveryReport.in_envelope_order(envelope, statuses, transport_name=self.name)

    async with AsyncMailer(Mixed(), retry=RetryPolicy.never()) as mailer:
        with pytest.raises(AuthOrConfigError) as caught:
            await mailer.send(message(1, "a@example.org", "b@example.org"))
    error = caught.value
    assert error.verdict == refused_sender
    assert error.setting == "RELIABLE_SMTP_SENDER"
    assert error.recipient == "b@example.org"
    assert error.result is not None
    assert error.result.recipients["a@example.org"].outcome is Outcome.PERMANENT


@every_dialogue
async def test_an_abandoned_stream_waits_for_its_cancelled_sends(
    serve: Callable[..., object],
) -> None:
    def slow_final(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "DATA_END" and session.transactions >= 1:
            return Answer(reply=b"250 Ok\r\n", delay=0.5)
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(slow_final)  # type: ignore[misc]
    mailer = AsyncMailer(transport(server, max_connections=3))
    stream = mailer.stream([message(i) for i in range(6)], concurrency=3)
    first = await stream.__anext__()
    assert isinstance(first, SendResult)
    await stream.aclose()

    def sends_in_flight() -> list[asyncio.Task[object]]:
        return [
            task
            for task in asyncio.all_tasks()
            if "stream.<locals>.outcome" in task.get_coro().__qualname__ and not task.done()
        ]

    # Nothing of the stream runs on behind the caller's back once aclose() returned.
    assert sends_in_flight() == []
    await mailer.aclose()
    assert await wait_until(lambda: server.open == 0, timeout=2.0)
