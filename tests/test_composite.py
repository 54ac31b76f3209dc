"""FailoverTransport and RoundRobinTransport against real local servers.

One server is down (a free port with nothing listening), one misbehaves as
scripted (421, throttling, a wrong password, a lost link after the final dot),
one is healthy. Down periods run on a FakeClock: nothing here sleeps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import pytest

from conftest import PASSWORD, free_port, relay_transport, tls_transport
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import (
    AmbiguousDeliveryError,
    AuthOrConfigError,
    ConfigurationError,
    ConnectionFailedError,
    DeliveryError,
    PermanentError,
    ProtocolError,
    SMTPTimeoutError,
    ThrottledError,
    TransientError,
    TransportClosedError,
    error_for,
)
from reliable_smtp._mailer import AsyncMailer
from reliable_smtp._message import Message
from reliable_smtp._replies import Outcome, Phase, Reply, classify, classify_connection_loss
from reliable_smtp._result import DeliveryReport, RecipientStatus
from reliable_smtp._retry import RetryPolicy
from reliable_smtp._transports.base import Transport
from reliable_smtp._transports.composite import (
    FailoverTransport,
    RoundRobinTransport,
    is_server_failure,
)
from reliable_smtp._transports.memory import MemoryTransport
from reliable_smtp._transports.smtp import SMTPTransport
from reliable_smtp.testing import FakeClock, LocalSMTPServer, MockTransport, check_transport

CONTENT = b"Subject: failover\r\nMessage-ID: <1@example.com>\r\n\r\nbody\r\n"
ANN, BOB, CAT = "ann@example.org", "bob@example.org", "cat@example.org"
FAST = {"command_timeout": 2.0, "connect_timeout": 2.0}


def envelope(*recipients: str) -> Envelope:
    return Envelope.build("app@example.com", recipients or (ANN,))


def dead_transport() -> SMTPTransport:
    """A transport to a port where nothing listens: the connection is refused."""
    return SMTPTransport(
        "127.0.0.1",
        free_port(),
        tls="none",
        local_hostname="client.test",
        command_timeout=2.0,
        connect_timeout=2.0,
    )


def fast(server: LocalSMTPServer) -> SMTPTransport:
    return relay_transport(server, **FAST)


def mails(server: LocalSMTPServer) -> int:
    return len(list(server.commands_named("MAIL")))


# `server` (conftest) runs each test twice, with and without PIPELINING: used where the
# dialogue's shape matters (faults at MAIL/RCPT/after the dot). Elsewhere one mode will do.
@pytest.fixture
def relay() -> Iterator[LocalSMTPServer]:
    with LocalSMTPServer() as running:
        yield running


@pytest.fixture
def backup() -> Iterator[LocalSMTPServer]:
    with LocalSMTPServer() as running:
        yield running


@pytest.fixture
def third() -> Iterator[LocalSMTPServer]:
    with LocalSMTPServer() as running:
        yield running


# -- is_server_failure: case by case ---------------------------------------------------


def rcpt_status(
    code: int, enhanced: str | None, text: str, phase: Phase = Phase.RCPT
) -> RecipientStatus:
    reply = Reply(code, enhanced, text)
    return RecipientStatus.from_verdict(ANN, classify(reply, phase), phase=phase, reply=reply)


def lost_status(phase: Phase, *, timed_out: bool = False) -> RecipientStatus:
    verdict = classify_connection_loss(phase, timed_out=timed_out)
    return RecipientStatus.from_verdict(ANN, verdict, phase=phase)


def reply_error(
    cls: type[DeliveryError], code: int, enhanced: str, text: str, phase: Phase
) -> DeliveryError:
    reply = Reply(code, enhanced, text)
    error = error_for(classify(reply, phase), "refused", reply=reply, phase=phase)
    assert type(error) is cls, (type(error), cls)  # the class follows from the verdict
    return error


SERVER_FAILURES = {
    "refused-connect": ConnectionFailedError("refused", phase=Phase.CONNECT),
    "greeting-timeout": SMTPTimeoutError("no greeting", phase=Phase.CONNECT),
    "554-greeting": reply_error(PermanentError, 554, "5.3.2", "no service", Phase.CONNECT),
    "tls-certificate": AuthOrConfigError("certificate verify failed", phase=Phase.TLS),
    "454-tls": reply_error(TransientError, 454, "4.7.0", "TLS not available", Phase.TLS),
    "ehlo-refused": reply_error(PermanentError, 550, "5.7.1", "bad EHLO name", Phase.EHLO),
    "535-auth": reply_error(AuthOrConfigError, 535, "5.7.8", "bad credentials", Phase.AUTH),
    "421-mail": reply_error(TransientError, 421, "4.3.2", "shutting down", Phase.MAIL),
    "451-4.7.1-mail": reply_error(ThrottledError, 451, "4.7.1", "rate limited", Phase.MAIL),
    "quota-data-end": reply_error(
        ThrottledError, 550, "5.4.5", "Daily user sending quota exceeded", Phase.DATA_END
    ),
    "timeout-at-mail": SMTPTimeoutError("no reply", phase=Phase.MAIL),
    "lost-at-data": ConnectionFailedError("reset", phase=Phase.DATA),
    "transient-without-reply-or-phase": TransientError("a custom transport's outage"),
    "status-421-rcpt": rcpt_status(421, "4.3.2", "shutting down"),
    "status-throttled-rcpt": rcpt_status(451, "4.7.1", "rate limited"),
    "status-greylisted-4.7.1": rcpt_status(451, "4.7.1", "Greylisted, try again later"),
    "status-421-data-end": rcpt_status(421, "4.3.0", "closing", Phase.DATA_END),
    "status-lost-at-rcpt": lost_status(Phase.RCPT),
    "status-timeout-at-data": lost_status(Phase.DATA, timed_out=True),
    "status-from-connect-error": RecipientStatus.from_error(
        ANN, ConnectionFailedError("refused", phase=Phase.CONNECT)
    ),
}

NOT_SERVER_FAILURES = {
    "sent": rcpt_status(250, "2.0.0", "OK", Phase.DATA_END),
    "550-5.1.1": rcpt_status(550, "5.1.1", "no such user"),
    "451-4.3.0-one-recipient": rcpt_status(451, "4.3.0", "temporary local problem"),
    "450-greylisted": rcpt_status(450, "4.2.0", "Greylisted"),
    "452-too-many-recipients": rcpt_status(452, "4.5.3", "Too many recipients"),
    "relay-denied-rcpt": rcpt_status(554, "5.7.1", "Relay access denied"),
    "554-data-end": rcpt_status(554, "5.7.1", "spam", Phase.DATA_END),
    "ambiguous-status": lost_status(Phase.DATA_END),
    "ambiguous-timeout": lost_status(Phase.DATA_END, timed_out=True),
    "ambiguous-error": AmbiguousDeliveryError("lost after the dot", phase=Phase.DATA_END),
    # Whatever phase a custom transport gives it, a maybe-delivered message stays put.
    "ambiguous-any-phase": RecipientStatus(
        recipient=ANN, outcome=Outcome.AMBIGUOUS, phase=Phase.CONNECT
    ),
    "size-at-mail": PermanentError("too big", phase=Phase.MAIL),
    "sender-refused": reply_error(PermanentError, 553, "5.7.1", "sender not owned", Phase.MAIL),
    "451-at-mail": reply_error(TransientError, 451, "4.3.0", "local error", Phase.MAIL),
    "garbled-mail": ProtocolError("not SMTP", phase=Phase.MAIL),
}


@pytest.mark.parametrize("item", SERVER_FAILURES.values(), ids=SERVER_FAILURES.keys())
def test_server_failures(item: RecipientStatus | DeliveryError) -> None:
    assert is_server_failure(item)


@pytest.mark.parametrize("item", NOT_SERVER_FAILURES.values(), ids=NOT_SERVER_FAILURES.keys())
def test_not_server_failures(item: RecipientStatus | DeliveryError) -> None:
    assert not is_server_failure(item)


# -- construction ----------------------------------------------------------------------


def test_construction_errors() -> None:
    memory = MemoryTransport()
    cases: list[tuple[object, dict[str, object], str]] = [
        ([], {}, "at least one transport"),
        (memory, {}, "list of transports"),
        ([memory, "smtp://x"], {}, "member 1 is a str"),
        ([memory, memory], {}, "twice"),
        ([memory], {"down_for": 0}, "down_for"),
        ([memory], {"down_for": -1.0}, "down_for"),
        ([memory], {"down_for": math.inf}, "down_for"),
        ([memory], {"down_for": math.nan}, "down_for"),
        ([memory], {"down_for": True}, "down_for"),
        ([memory], {"down_for": "30"}, "down_for"),
        ([memory], {"clock": 3.0}, "clock"),
    ]
    for cls in (FailoverTransport, RoundRobinTransport):
        for transports, options, message in cases:
            with pytest.raises(ConfigurationError, match=message) as caught:
                cls(transports, **options)  # type: ignore[arg-type]
            assert caught.value.setting in ("transports", "down_for", "clock")


def test_name_lists_members_without_secrets(tls_server: LocalSMTPServer) -> None:
    primary = tls_transport(tls_server)
    backup_memory = MemoryTransport()
    failover = FailoverTransport([primary, backup_memory])
    assert failover.name == f"failover(smtp://127.0.0.1:{tls_server.port}, memory)"
    assert RoundRobinTransport([MemoryTransport(), MemoryTransport()]).name == (
        "round_robin(memory, memory)"
    )
    assert PASSWORD not in failover.name
    assert PASSWORD not in repr(failover)
    assert failover.transports == (primary, backup_memory)


# -- failover rules --------------------------------------------------------------------


async def test_refused_connection_fails_over_and_marks_down(
    backup: LocalSMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    dead = dead_transport()
    caplog.set_level(logging.INFO, logger="reliable_smtp")
    async with FailoverTransport([dead, fast(backup)], clock=clock, down_for=30.0) as failover:
        report = await failover.deliver(envelope(ANN), CONTENT)
        assert report.recipients[ANN].accepted
        assert report.recipients[ANN].transport_name == failover.transports[1].name
        assert report.transport_name == failover.transports[1].name
        assert failover.down_until(dead) == 30.0

        clock.advance(10.0)  # still down: skipped, so its mark does not move
        await failover.deliver(envelope(BOB), CONTENT)
        assert failover.down_until(dead) == 30.0

        clock.advance(21.0)  # t=31: due back, tried again, refused again, down again
        await failover.deliver(envelope(CAT), CONTENT)
        assert failover.down_until(dead) == 61.0
    assert [m.recipients for m in backup.messages] == [(ANN,), (BOB,), (CAT,)]

    records = [r for r in caplog.records if getattr(r, "event", None) == "failover"]
    assert len(records) == 2
    first = records[0]
    assert first.levelno == logging.INFO
    assert first.server == dead.name  # type: ignore[attr-defined]
    assert first.next_server == failover.transports[1].name  # type: ignore[attr-defined]
    assert first.down_until == 30.0  # type: ignore[attr-defined]
    assert "connection" in first.reason  # type: ignore[attr-defined]


async def test_auth_failure_on_primary_fails_over(
    tls_server: LocalSMTPServer, backup: LocalSMTPServer
) -> None:
    clock = FakeClock()
    primary = tls_transport(tls_server, password="wrong-password", **FAST)
    async with FailoverTransport([primary, fast(backup)], clock=clock) as failover:
        report = await failover.deliver(envelope(ANN), CONTENT)
        assert report.recipients[ANN].transport_name == failover.transports[1].name
        assert failover.down_until(primary) == 30.0
        await failover.deliver(envelope(BOB), CONTENT)  # the primary rests
    assert tls_server.auth_attempts == 1
    assert tls_server.messages == []
    assert len(backup.messages) == 2


async def test_permanent_recipient_rejection_never_fails_over(
    server: LocalSMTPServer, backup: LocalSMTPServer
) -> None:
    server.script("RCPT", "550 5.1.1 <bob@example.org>: no such user", recipient=BOB)
    primary = fast(server)
    async with FailoverTransport([primary, fast(backup)], clock=FakeClock()) as failover:
        report = await failover.deliver(envelope(ANN, BOB), CONTENT)
        assert failover.down_until(primary) is None
    assert report.recipients[ANN].accepted
    assert report.recipients[ANN].transport_name == primary.name
    assert report.recipients[BOB].outcome is Outcome.PERMANENT
    assert report.recipients[BOB].transport_name == primary.name
    assert report.transport_name == primary.name
    assert server.deliveries_to(ANN) == 1
    assert backup.messages == []
    assert backup.connections == 0


async def test_ambiguous_delivery_is_not_resent_elsewhere(
    server: LocalSMTPServer, backup: LocalSMTPServer
) -> None:
    server.script("DATA_END", disconnect=True)
    primary = fast(server)
    async with FailoverTransport([primary, fast(backup)], clock=FakeClock()) as failover:
        report = await failover.deliver(envelope(ANN, BOB), CONTENT)
        assert failover.down_until(primary) is None  # ambiguity is not a verdict on the server
    assert {s.outcome for s in report.recipients.values()} == {Outcome.AMBIGUOUS}
    assert {s.transport_name for s in report.recipients.values()} == {primary.name}
    assert len(server.messages) == 1  # the server has it...
    assert backup.messages == []  # ...so nobody else gets it
    assert backup.connections == 0


async def test_421_mid_rcpt_moves_pending_recipients_to_the_backup(
    server: LocalSMTPServer, backup: LocalSMTPServer
) -> None:
    server.script("RCPT", "421 4.3.2 Service shutting down", recipient=BOB)
    primary = fast(server)
    async with FailoverTransport([primary, fast(backup)], clock=FakeClock()) as failover:
        report = await failover.deliver(envelope(ANN, BOB, CAT), CONTENT)
        assert failover.down_until(primary) == 30.0
    assert list(report.recipients) == [ANN, BOB, CAT]
    assert all(s.accepted for s in report.recipients.values())
    assert {s.transport_name for s in report.recipients.values()} == {failover.transports[1].name}
    for recipient in (ANN, BOB, CAT):
        assert server.deliveries_to(recipient) + backup.deliveries_to(recipient) == 1
    assert server.messages == []


async def test_throttled_recipient_moves_alone_and_others_stay(
    server: LocalSMTPServer, backup: LocalSMTPServer
) -> None:
    server.script("RCPT", "451 4.7.1 rate limited", recipient=BOB)
    primary = fast(server)
    async with FailoverTransport([primary, fast(backup)], clock=FakeClock()) as failover:
        report = await failover.deliver(envelope(ANN, BOB, CAT), CONTENT)
        assert failover.down_until(primary) == 30.0
    assert all(s.accepted for s in report.recipients.values())
    assert report.recipients[ANN].transport_name == primary.name
    assert report.recipients[BOB].transport_name == failover.transports[1].name
    assert report.recipients[CAT].transport_name == primary.name
    assert report.transport_name == failover.transports[1].name  # the last member used
    assert [m.recipients for m in server.messages] == [(ANN, CAT)]
    assert [m.recipients for m in backup.messages] == [(BOB,)]


@pytest.mark.parametrize("reply", ["421 4.7.0 Try again later", "451 4.7.1 rate limited"])
async def test_throttled_primary_is_rested(
    server: LocalSMTPServer, backup: LocalSMTPServer, reply: str
) -> None:
    clock = FakeClock()
    server.script("MAIL", reply)
    primary = fast(server)
    async with FailoverTransport([primary, fast(backup)], clock=clock) as failover:
        report = await failover.deliver(envelope(ANN), CONTENT)
        assert report.recipients[ANN].transport_name == failover.transports[1].name
        assert failover.down_until(primary) == 30.0
        clock.advance(29.0)
        await failover.deliver(envelope(BOB), CONTENT)
        assert mails(server) == 1  # rested: not asked again
        clock.advance(1.0)  # back: the primary is preferred again
        report = await failover.deliver(envelope(CAT), CONTENT)
        assert report.recipients[CAT].transport_name == primary.name
        assert failover.down_until(primary) is None
    assert len(backup.messages) == 2
    assert [m.recipients for m in server.messages] == [(CAT,)]


async def test_server_asking_for_a_longer_wait_is_rested_that_long(
    relay: LocalSMTPServer, backup: LocalSMTPServer
) -> None:
    relay.script("MAIL", "451 4.7.1 rate limited, try again in 120 seconds")
    primary = fast(relay)
    async with FailoverTransport([primary, fast(backup)], clock=FakeClock()) as failover:
        await failover.deliver(envelope(ANN), CONTENT)
        assert failover.down_until(primary) == 120.0


async def test_error_about_the_message_propagates_without_failover(
    backup: LocalSMTPServer,
) -> None:
    with LocalSMTPServer(size_limit=64) as small:
        primary = fast(small)
        async with FailoverTransport([primary, fast(backup)], clock=FakeClock()) as failover:
            with pytest.raises(PermanentError, match="at most 64") as caught:
                await failover.deliver(envelope(ANN), CONTENT + b"x" * 100)
            assert failover.down_until(primary) is None
    assert caught.value.transport_name == primary.name
    assert backup.connections == 0


async def test_all_down_tries_the_one_back_soonest(
    relay: LocalSMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    dead = dead_transport()
    live = fast(relay)
    caplog.set_level(logging.INFO, logger="reliable_smtp")
    async with FailoverTransport([dead, live], clock=clock, down_for=30.0) as failover:
        await failover.deliver(envelope(ANN), CONTENT)  # t=0: dead down until 30
        clock.advance(10.0)
        relay.script("MAIL", "421 4.3.2 Service shutting down")
        with pytest.raises(TransientError) as caught:
            await failover.deliver(envelope(BOB), CONTENT)  # t=10: live down until 40
        assert caught.value.code == 421
        assert caught.value.transport_name == live.name
        assert f"skipped {dead.name}, down for another 20 s" in caught.value.explanation

        clock.advance(10.0)  # t=20: everything down; dead is due back first (30 < 40)
        with pytest.raises(ConnectionFailedError) as caught_all:
            await failover.deliver(envelope(CAT), CONTENT)
        message = str(caught_all.value)
        assert f"every server was marked down; tried {dead.name}, the first due back" in message
        assert caught_all.value.transport_name == dead.name
        assert mails(relay) == 2  # live was not asked
        assert failover.down_until(dead) == 50.0
        assert any(getattr(r, "event", None) == "all_down" for r in caplog.records)

        clock.advance(21.0)  # t=41: live is back, dead still down
        report = await failover.deliver(envelope(CAT), CONTENT)
        assert report.recipients[CAT].transport_name == live.name
    assert [m.recipients for m in relay.messages] == [(ANN,), (CAT,)]


async def test_a_probed_member_that_delivers_is_back_at_once(
    relay: LocalSMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    relay.script("MAIL", "421 4.3.2 Service shutting down")  # once
    primary = fast(relay)
    caplog.set_level(logging.INFO, logger="reliable_smtp")
    async with FailoverTransport([primary, dead_transport()], clock=clock) as failover:
        with pytest.raises(TransientError):
            await failover.deliver(envelope(ANN), CONTENT)  # both down until 30
        clock.advance(5.0)
        report = await failover.deliver(envelope(BOB), CONTENT)  # probe: the first listed
        assert report.recipients[BOB].transport_name == primary.name
        assert failover.down_until(primary) is None
        await failover.deliver(envelope(CAT), CONTENT)
    assert [m.recipients for m in relay.messages] == [(BOB,), (CAT,)]
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("all_down") == 1
    assert events.count("server_up") == 1


async def test_when_every_member_fails_the_retryable_error_wins(
    tls_server: LocalSMTPServer,
) -> None:
    for bad_first in (True, False):
        bad_login = tls_transport(tls_server, password="wrong-password", **FAST)
        with LocalSMTPServer() as busy_server:
            busy_server.script("GREETING", "421 4.3.2 Too busy, try again later", times=None)
            busy = fast(busy_server)
            members: list[Transport] = [bad_login, busy] if bad_first else [busy, bad_login]
            async with FailoverTransport(members, clock=FakeClock()) as failover:
                with pytest.raises(TransientError) as caught:
                    await failover.deliver(envelope(ANN), CONTENT)
        # Another try may succeed on the busy server; none will with a bad password.
        error = caught.value
        assert error.retryable
        assert error.transport_name == busy.name
        assert f"{bad_login.name}: 535" in error.explanation  # the other member's story
        assert PASSWORD not in str(error)


async def test_only_non_retryable_failures_raise_the_last(tls_server: LocalSMTPServer) -> None:
    bad = tls_transport(tls_server, password="wrong-password", **FAST)
    refuse_tls = SMTPTransport(  # trusts no CA of this server: certificate verify failed
        "127.0.0.1",
        tls_server.port,
        tls="starttls",
        local_hostname="client.test",
        command_timeout=2.0,
        connect_timeout=2.0,
    )
    async with FailoverTransport([bad, refuse_tls], clock=FakeClock()) as failover:
        with pytest.raises(AuthOrConfigError) as caught:
            await failover.deliver(envelope(ANN), CONTENT)
    assert caught.value.transport_name == refuse_tls.name
    assert caught.value.phase is Phase.TLS
    assert f"{bad.name}: 535" in caught.value.explanation


async def test_later_member_error_after_a_report_becomes_statuses(
    relay: LocalSMTPServer,
) -> None:
    relay.script("RCPT", "421 4.3.2 Service shutting down", recipient=BOB)

    def too_big(envelope: Envelope, content: bytes) -> None:
        raise PermanentError("too big for the backup", phase=Phase.MAIL)

    primary = fast(relay)
    mock = MockTransport(too_big)
    mock.name = "mock-backup"
    async with FailoverTransport([primary, mock], clock=FakeClock()) as failover:
        report = await failover.deliver(envelope(ANN, BOB), CONTENT)
    assert {r: s.outcome for r, s in report.recipients.items()} == {
        ANN: Outcome.PERMANENT,
        BOB: Outcome.PERMANENT,
    }
    assert {s.transport_name for s in report.recipients.values()} == {"mock-backup"}
    assert [e.recipients for e, _ in mock.calls] == [(ANN, BOB)]


async def test_recipients_left_when_the_plan_runs_out_keep_the_latest_word(
    server: LocalSMTPServer,
) -> None:
    server.script("RCPT", "421 4.3.2 Service shutting down", recipient=BOB)
    primary, dead = fast(server), dead_transport()
    async with FailoverTransport([primary, dead], clock=FakeClock()) as failover:
        report = await failover.deliver(envelope(ANN, BOB), CONTENT)
        assert failover.down_until(primary) == failover.down_until(dead) == 30.0
    assert list(report.recipients) == [ANN, BOB]
    for status in report.recipients.values():
        # The refused backup said the last word: nothing was delivered, but a server
        # never reached is a first-contact failure, not retried in-process.
        assert status.outcome is Outcome.TRANSIENT
        assert not status.retryable
        assert status.phase is Phase.CONNECT
        assert status.transport_name == dead.name
    assert report.transport_name == dead.name
    assert server.messages == []


async def test_statuses_name_their_member_and_missing_ones_are_not_sent() -> None:
    def forgetful(envelope: Envelope, content: bytes) -> DeliveryReport:
        status = RecipientStatus(recipient=ANN, outcome=Outcome.SENT, phase=Phase.DATA_END)
        return DeliveryReport(recipients={ANN: status})  # no server, and BOB forgotten

    mock = MockTransport(forgetful)
    mock.name = "mock-a"
    async with FailoverTransport([mock, MemoryTransport()], clock=FakeClock()) as failover:
        report = await failover.deliver(envelope(ANN, BOB), CONTENT)
    assert report.recipients[ANN].transport_name == "mock-a"
    assert report.recipients[BOB].outcome is Outcome.PERMANENT
    assert "transport bug" in report.recipients[BOB].explanation
    assert failover.transports[1].outbox == []  # type: ignore[attr-defined]


async def test_raised_errors_name_their_member() -> None:
    def refused(envelope: Envelope, content: bytes) -> None:
        raise ConnectionFailedError("refused", phase=Phase.CONNECT)  # no server given

    first, second = MockTransport(refused), MockTransport(refused)
    first.name, second.name = "mock-a", "mock-b"
    async with FailoverTransport([first, second], clock=FakeClock()) as failover:
        with pytest.raises(ConnectionFailedError) as caught:
            await failover.deliver(envelope(ANN), CONTENT)
    assert caught.value.transport_name == "mock-b"
    assert "mock-a: refused" in caught.value.explanation


# -- round robin -----------------------------------------------------------------------


async def test_round_robin_spreads_sends_evenly(
    relay: LocalSMTPServer, backup: LocalSMTPServer, third: LocalSMTPServer
) -> None:
    servers = (relay, backup, third)
    async with RoundRobinTransport([fast(s) for s in servers], clock=FakeClock()) as rr:
        for i in range(6):
            report = await rr.deliver(envelope(f"user{i}@example.org"), CONTENT)
            assert report.transport_name == rr.transports[i % 3].name
    assert [len(s.messages) for s in servers] == [2, 2, 2]


async def test_round_robin_skips_a_down_member(
    relay: LocalSMTPServer, third: LocalSMTPServer
) -> None:
    dead = dead_transport()
    async with RoundRobinTransport([fast(relay), dead, fast(third)], clock=FakeClock()) as rr:
        for i in range(6):
            await rr.deliver(envelope(f"user{i}@example.org"), CONTENT)
        assert rr.down_until(dead) == 30.0  # refused once, then skipped
    assert [len(relay.messages), len(third.messages)] == [3, 3]


# -- through the mailer ----------------------------------------------------------------


async def test_mailer_reports_which_server_delivered_each_recipient(
    server: LocalSMTPServer, backup: LocalSMTPServer
) -> None:
    server.script("RCPT", "451 4.7.1 rate limited", recipient=BOB)
    primary, second = fast(server), fast(backup)
    clock = FakeClock()
    composite = FailoverTransport([primary, second], clock=clock)
    async with AsyncMailer(composite, clock=clock, sleep=clock.sleep) as mailer:
        result = await mailer.send(
            Message(sender="app@example.com", to=[ANN, BOB], cc=[CAT], subject="Hi", text="hi")
        )
    assert result.ok
    assert result.transport_name == composite.name
    assert {r: s.transport_name for r, s in result.recipients.items()} == {
        ANN: primary.name,
        BOB: second.name,
        CAT: primary.name,
    }
    assert len(result.attempts) == 1  # the failover happened inside one attempt
    assert clock.sleeps == []
    assert all(t.closed for t in (composite, primary, second))
    for recipient in (ANN, BOB, CAT):
        assert server.deliveries_to(recipient) + backup.deliveries_to(recipient) == 1


async def test_mailer_retries_on_a_healthy_member_after_a_refused_one(
    backup: LocalSMTPServer,
) -> None:
    clock = FakeClock()
    composite = FailoverTransport([dead_transport(), fast(backup)], clock=clock)
    async with AsyncMailer(composite, clock=clock, sleep=clock.sleep) as mailer:
        result = await mailer.send(Message(sender="app@example.com", to=[ANN], text="hi"))
    assert result.recipients[ANN].transport_name == composite.transports[1].name
    assert len(backup.messages) == 1


async def test_mailer_never_resends_an_ambiguous_delivery_through_the_backup(
    relay: LocalSMTPServer, backup: LocalSMTPServer
) -> None:
    relay.script("DATA_END", disconnect=True)
    clock = FakeClock()
    composite = FailoverTransport([fast(relay), fast(backup)], clock=clock)
    async with AsyncMailer(composite, clock=clock, sleep=clock.sleep) as mailer:
        with pytest.raises(AmbiguousDeliveryError) as caught:
            await mailer.send(Message(sender="app@example.com", to=[ANN], text="hi"))
    assert caught.value.result is not None
    assert caught.value.result.recipients[ANN].transport_name == composite.transports[0].name
    assert len(relay.messages) == 1
    assert backup.messages == []


async def test_retry_ambiguous_resends_through_a_healthy_member(
    relay: LocalSMTPServer, backup: LocalSMTPServer
) -> None:
    # The mailer's policy chose to resend; the primary is still healthy, so it gets it.
    relay.script("DATA_END", disconnect=True)
    clock = FakeClock()
    composite = FailoverTransport([fast(relay), fast(backup)], clock=clock)
    policy = RetryPolicy(retry_ambiguous=True).without_waits()
    async with AsyncMailer(composite, retry=policy, clock=clock, sleep=clock.sleep) as mailer:
        result = await mailer.send(Message(sender="app@example.com", to=[ANN], text="hi"))
    assert result.ok
    assert relay.deliveries_to(ANN) == 2
    assert backup.messages == []


# -- the transport contract ------------------------------------------------------------


class _Recording(MemoryTransport):
    def __init__(self, *, fail_close: bool = False) -> None:
        super().__init__()
        self.fail_close = fail_close
        self.forked = 0
        self.closes = 0

    async def aclose(self) -> None:
        self.closes += 1
        await super().aclose()
        if self.fail_close:
            raise OSError("close failed")

    def forget_connections(self) -> None:
        self.forked += 1


@pytest.mark.parametrize("cls", [FailoverTransport, RoundRobinTransport])
async def test_close_twice_then_use_raises(cls: type[FailoverTransport]) -> None:
    members = [_Recording(), _Recording()]
    composite = cls(members)
    await composite.aclose()
    await composite.aclose()
    assert composite.closed
    assert [m.closes for m in members] == [1, 1]
    with pytest.raises(TransportClosedError, match="closed"):
        await composite.deliver(envelope(ANN), CONTENT)


async def test_async_with_closes_every_member() -> None:
    members = [_Recording(), _Recording()]
    async with FailoverTransport(members) as composite:
        report = await composite.deliver(envelope(ANN), CONTENT)
        assert report.recipients[ANN].accepted
    assert composite.closed
    assert all(m.closed for m in members)
    assert len(members[0].outbox) == 1
    assert members[1].outbox == []


async def test_aclose_closes_all_then_raises_the_first_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    members = [_Recording(fail_close=True), _Recording(), _Recording(fail_close=True)]
    composite = RoundRobinTransport(members)
    with pytest.raises(OSError, match="close failed"):
        await composite.aclose()
    assert [m.closes for m in members] == [1, 1, 1]
    assert composite.closed
    assert any(getattr(r, "event", None) == "close_failed" for r in caplog.records)
    await composite.aclose()  # idempotent: members are not closed again
    assert [m.closes for m in members] == [1, 1, 1]


def test_forget_connections_reaches_every_member() -> None:
    members = [_Recording(), _Recording()]
    FailoverTransport(members).forget_connections()
    assert [m.forked for m in members] == [1, 1]


@pytest.mark.parametrize("cls", [FailoverTransport, RoundRobinTransport])
async def test_conformance(cls: type[FailoverTransport]) -> None:
    await check_transport(lambda: cls([MemoryTransport(), MemoryTransport()]))


def test_down_until_needs_a_member() -> None:
    composite = FailoverTransport([MemoryTransport()])
    with pytest.raises(ValueError, match="not a member"):
        composite.down_until(MemoryTransport())


# The README's failover section runs in tests/test_readme.py with every other snippet.
