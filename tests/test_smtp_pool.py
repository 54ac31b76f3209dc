"""SMTPTransport's pool against a real server: reuse, limits, health checks, faults."""

from __future__ import annotations

import asyncio
import logging

import pytest

from conftest import relay_transport
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import (
    ConfigurationError,
    DeliveryError,
    PoolExhaustedError,
    SMTPTimeoutError,
    ThrottledError,
    TransientError,
)
from reliable_smtp._mailer import AsyncMailer
from reliable_smtp._message import Message
from reliable_smtp._ratelimit import RateLimit
from reliable_smtp._result import SendResult
from reliable_smtp._retry import RetryPolicy
from reliable_smtp._transports.composite import is_server_failure
from reliable_smtp._transports.smtp import SMTPTransport
from reliable_smtp.testing import FakeClock, LocalSMTPServer

CONTENT = b"Subject: pool\r\n\r\nbody\r\n"


def envelope(i: int) -> Envelope:
    return Envelope.build("a@example.com", [f"user{i}@example.org"])


async def test_concurrent_sends_use_at_most_max_connections(server: LocalSMTPServer) -> None:
    async with relay_transport(server, max_connections=3) as transport:
        reports = await asyncio.gather(
            *(transport.deliver(envelope(i), CONTENT) for i in range(20))
        )
    assert all(r.recipients[f"user{i}@example.org"].accepted for i, r in enumerate(reports))
    assert server.connections == 3
    assert len(server.messages) == 20
    assert len(list(server.commands_named("QUIT"))) == 3  # each closed cleanly


async def test_limit_connections_closes_the_connections_beyond_it(
    server: LocalSMTPServer,
) -> None:
    async with relay_transport(server, max_connections=3) as transport:
        await asyncio.gather(*(transport.deliver(envelope(i), CONTENT) for i in range(6)))
        assert transport.connections.idle == 3
        await transport.limit_connections(1)  # the outbox worker lost two slots
        assert transport.connections.idle == 1
        assert len(list(server.commands_named("QUIT"))) == 2  # closed politely
        await asyncio.gather(*(transport.deliver(envelope(i), CONTENT) for i in range(6, 12)))
        assert server.connections == 3  # the six sends shared the one connection left
        await transport.limit_connections(10)  # never above max_connections
        await asyncio.gather(*(transport.deliver(envelope(i), CONTENT) for i in range(12, 18)))
        assert transport.connections.idle == 3
        with pytest.raises(ValueError, match="at least 0"):
            await transport.limit_connections(-1)
    assert len(server.messages) == 18


async def test_connections_retire_after_max_messages(server: LocalSMTPServer) -> None:
    async with relay_transport(server, max_messages_per_connection=2) as transport:
        for i in range(5):
            await transport.deliver(envelope(i), CONTENT)
    assert server.connections == 3
    assert len(list(server.commands_named("QUIT"))) == 3


async def test_idle_connection_is_checked_with_noop(server: LocalSMTPServer) -> None:
    clock = FakeClock()
    async with relay_transport(server, clock=clock, check_after=5.0) as transport:
        await transport.deliver(envelope(1), CONTENT)
        clock.advance(2.0)
        await transport.deliver(envelope(2), CONTENT)
        assert list(server.commands_named("NOOP")) == []
        clock.advance(10.0)
        await transport.deliver(envelope(3), CONTENT)
    assert len(list(server.commands_named("NOOP"))) == 1
    assert server.connections == 1


async def test_failed_noop_means_a_new_connection(server: LocalSMTPServer) -> None:
    clock = FakeClock()
    server.script("NOOP", "421 4.4.2 idle too long")
    async with relay_transport(server, clock=clock, check_after=5.0) as transport:
        await transport.deliver(envelope(1), CONTENT)
        clock.advance(10.0)
        report = await transport.deliver(envelope(2), CONTENT)
    assert report.recipients["user2@example.org"].accepted
    assert server.connections == 2


async def test_connection_idle_past_idle_timeout_is_replaced(server: LocalSMTPServer) -> None:
    clock = FakeClock()
    async with relay_transport(server, clock=clock, idle_timeout=30.0) as transport:
        await transport.deliver(envelope(1), CONTENT)
        clock.advance(31.0)
        await transport.deliver(envelope(2), CONTENT)
    assert server.connections == 2
    assert len(list(server.commands_named("QUIT"))) == 2


async def test_waiting_for_a_free_connection_is_bounded(server: LocalSMTPServer) -> None:
    server.script("DATA_END", hang=True)
    transport = relay_transport(server, max_connections=1, pool_timeout=0.1, data_timeout=0.4)
    stuck = asyncio.create_task(transport.deliver(envelope(1), CONTENT))
    await asyncio.sleep(0.05)
    with pytest.raises(PoolExhaustedError) as caught:
        await transport.deliver(envelope(2), CONTENT)
    assert isinstance(caught.value, TransientError)
    assert not is_server_failure(caught.value)  # a failover must not rest this server
    assert "no free connection" in str(caught.value)
    assert "max_connections" in caught.value.explanation
    report = await stuck  # the stuck one ends ambiguous, not hanging forever
    assert not report.recipients["user1@example.org"].accepted
    await transport.aclose()


async def test_server_dropping_connections_loses_and_duplicates_nothing(
    server: LocalSMTPServer,
) -> None:
    clock = FakeClock()
    transport = relay_transport(server, max_connections=2, clock=clock, sleep=clock.sleep)
    async with AsyncMailer(transport, clock=clock, sleep=clock.sleep) as mailer:
        outcomes = []
        for i in range(12):
            if i % 3 == 2:
                server.drop_connections()  # like a server with a short idle timeout
            outcomes.append(
                await mailer.send(
                    Message(sender="a@example.com", to=[f"user{i}@example.org"], text="x")
                )
            )
    assert all(isinstance(o, SendResult) and o.ok for o in outcomes)
    for i in range(12):
        assert server.deliveries_to(f"user{i}@example.org") == 1


async def test_421_at_random_points_keeps_every_message_accounted_for(
    server: LocalSMTPServer,
) -> None:
    clock = FakeClock()
    server.script("MAIL", "421 4.3.2 Service shutting down", times=2)
    server.script("RCPT", "421 4.3.2 Service shutting down", recipient="user5@example.org")
    server.script("DATA_END", "421 4.3.2 Service shutting down", times=1)
    transport = relay_transport(server, max_connections=3, clock=clock, sleep=clock.sleep)
    async with AsyncMailer(transport, clock=clock, sleep=clock.sleep) as mailer:
        outcomes = await mailer.send_many(
            (
                Message(sender="a@example.com", to=[f"user{i}@example.org"], text="x")
                for i in range(10)
            ),
            concurrency=4,
        )
    assert len(outcomes) == 10
    assert all(isinstance(o, SendResult) for o in outcomes), outcomes
    for i in range(10):
        assert server.deliveries_to(f"user{i}@example.org") == 1


async def test_server_that_stops_answering_never_hangs(server: LocalSMTPServer) -> None:
    server.script("MAIL", hang=True, times=None)
    clock = FakeClock()
    transport = relay_transport(
        server, max_connections=3, command_timeout=0.2, clock=clock, sleep=clock.sleep
    )
    retry = RetryPolicy(attempts=2)
    async with AsyncMailer(transport, retry=retry, clock=clock, sleep=clock.sleep) as mailer:
        outcomes = await asyncio.wait_for(
            mailer.send_many(
                [
                    Message(sender="a@example.com", to=[f"u{i}@example.org"], text="x")
                    for i in range(3)
                ],
                concurrency=3,
            ),
            timeout=30,
        )
    assert len(outcomes) == 3
    assert all(isinstance(o, SMTPTimeoutError) for o in outcomes)
    assert all(isinstance(o, DeliveryError) and o.result is not None for o in outcomes)


async def test_per_connection_rate_limit_spaces_messages(server: LocalSMTPServer) -> None:
    clock = FakeClock()
    limit = RateLimit(per_connection=2.0)
    async with relay_transport(server, rate_limit=limit, clock=clock, sleep=clock.sleep) as t:
        for i in range(4):
            await t.deliver(envelope(i), CONTENT)
    # Back-to-back sends each wait their turn: 4 messages at 2/s take 1.5 s.
    assert clock.sleeps == [0.5, 0.5, 0.5]
    assert clock.now == 1.5


async def test_per_transport_rate_limit_covers_all_connections(server: LocalSMTPServer) -> None:
    clock = FakeClock()
    limit = RateLimit(per_transport=1.0, burst=2)
    transport = relay_transport(
        server, max_connections=3, rate_limit=limit, clock=clock, sleep=clock.sleep
    )
    async with transport:
        await asyncio.gather(*(transport.deliver(envelope(i), CONTENT) for i in range(5)))
    # 5 messages at 1/s with a burst of 2: two at once, then one a second.
    assert sorted(clock.sleeps) == [1.0, 1.0, 1.0]
    assert clock.now == 3.0


async def test_throttling_reply_lowers_the_transport_rate(server: LocalSMTPServer) -> None:
    clock = FakeClock()
    limit = RateLimit(per_transport=10.0, cooldown=60.0)
    server.script("RCPT", "450 4.7.1 Too many messages, slow down", recipient="user1@example.org")
    async with relay_transport(server, rate_limit=limit, clock=clock, sleep=clock.sleep) as t:
        await t.deliver(envelope(0), CONTENT)
        report = await t.deliver(envelope(1), CONTENT)
        assert not report.recipients["user1@example.org"].accepted
        clock.sleeps.clear()
        await t.deliver(envelope(2), CONTENT)
        await t.deliver(envelope(3), CONTENT)
    # Lowered from 10/s to at most 5/s: sends are now at least 0.2 s apart.
    assert clock.sleeps
    assert min(clock.sleeps) >= 0.2 - 1e-9


def messages_per_second(sent_at: list[float]) -> float:
    return (len(sent_at) - 1) / (sent_at[-1] - sent_at[0])


@pytest.mark.parametrize(
    ("per_transport", "app_pace"),
    [
        (20.0, 0.0),  # the transport's limit sets the pace (issue 17's report)
        (100.0, 0.1),  # the application sends at 10/s, well below the limit
        (None, 0.1),  # no limit configured at all
    ],
    ids=["at-the-limit", "below-the-limit", "unlimited"],
)
async def test_one_throttle_mid_burst_halves_the_rate_that_was_sent(
    server: LocalSMTPServer,
    per_transport: float | None,
    app_pace: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="reliable_smtp")
    clock = FakeClock(1000.0)  # the transport sleeps on it: no real waiting, no wall clock
    limit = RateLimit(per_transport=per_transport)
    sent_at: list[float] = []
    async with relay_transport(server, rate_limit=limit, clock=clock, sleep=clock.sleep) as t:

        async def send(i: int) -> None:
            clock.advance(app_pace)
            try:
                await t.deliver(envelope(i), CONTENT)
            finally:
                sent_at.append(clock.now)  # only the transport's waits move the clock

        for i in range(4):
            await send(i)
        server.script("MAIL", "451 4.7.1 Rate limit exceeded, slow down")
        with pytest.raises(ThrottledError):
            await send(4)
        before = messages_per_second(sent_at)
        del sent_at[:]
        for i in range(5, 12):
            await send(i)
    # The first message after the throttle may use a token saved while the application
    # was slower than the limit (burst=1); from then on the pace is half the old one.
    after = messages_per_second(sent_at[1:])
    assert after == pytest.approx(before / 2, rel=0.02)
    assert len(server.messages) == 11
    said = f"sending slowed to {before / 2:.3g} messages/s (was sending at {before:.3g}/s)"
    assert said in caplog.text


@pytest.mark.parametrize(
    "options",
    [
        {"max_connections": 0},
        {"max_messages_per_connection": 0},
        {"idle_timeout": 0},
        {"pool_timeout": -1},
        {"rate_limit": 5},
    ],
)
def test_bad_pool_options(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        SMTPTransport("smtp.example.com", **options)  # type: ignore[arg-type]
