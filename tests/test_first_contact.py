"""First contact: a mistake in the settings fails fast, once, and says which setting.

With default settings, each classic first-contact mistake - nothing listening, the
wrong TLS mode either way, a server that never greets, a TLS handshake the server
refuses - ends after one attempt, with no backoff, and names the cause and the
setting to change. A connection that worked before and then fails is retried as
the policy says. Real sockets (raw asyncio servers and LocalSMTPServer); time is
the injected FakeClock, never the wall clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from conftest import free_port
from reliable_smtp import (
    AsyncMailer,
    AuthOrConfigError,
    ConnectionFailedError,
    DeliveryError,
    MailerSettings,
    Message,
    RetryPolicy,
    SMTPTimeoutError,
    SMTPTransport,
)
from reliable_smtp._diagnostics import CheckTarget, check_connection
from reliable_smtp.testing import FakeClock, LocalSMTPServer

MESSAGE = Message(sender="app@example.com", to=["bob@example.org"], subject="s", text="t")

#: The issue's budget for a first-contact mistake with default settings.
BUDGET = 15.0


class RawServer:
    """A TCP server written for the test: ``behaviour`` runs for every connection."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        if self.behaviour == "close-on-hello":
            # A TLS server that refuses the handshake: read the ClientHello, hang up.
            await reader.read(1)
            writer.close()
            return
        await reader.read()  # "silent": never greet, wait for the client to give up

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def transport(port: int, tls: str, **options: object) -> SMTPTransport:
    options.setdefault("connect_timeout", 0.5)  # the silent cases wait this long, once
    return SMTPTransport(
        "127.0.0.1",
        port,
        tls=tls,
        local_hostname="client.test",
        **options,  # type: ignore[arg-type]
    )


async def send_with_default_policy(
    smtp: SMTPTransport, clock: FakeClock
) -> tuple[DeliveryError, int]:
    """Send once through the default RetryPolicy; the error and how many attempts ran."""
    async with AsyncMailer(smtp, sleep=clock.sleep, clock=clock) as mailer:
        with pytest.raises(DeliveryError) as caught:
            await mailer.send(MESSAGE)
    error = caught.value
    assert error.result is not None
    return error, len(error.result.attempts)


@pytest.fixture
async def silent() -> AsyncIterator[RawServer]:
    async with RawServer("silent") as server:
        yield server


@pytest.fixture
async def refuses_tls() -> AsyncIterator[RawServer]:
    async with RawServer("close-on-hello") as server:
        yield server


def test_the_defaults_fit_the_budget() -> None:
    settings = MailerSettings(_env_file=None)
    # One attempt, no backoff: the whole wait is one connect timeout.
    assert settings.connect_timeout <= BUDGET
    assert SMTPTransport().connect_timeout == settings.connect_timeout
    target = CheckTarget.from_settings(settings)
    assert target.connect_timeout <= BUDGET  # reliable-smtp check: one attempt too


async def test_nothing_listening_is_one_attempt(clock: FakeClock) -> None:
    error, attempts = await send_with_default_policy(transport(free_port(), "none"), clock)

    assert isinstance(error, ConnectionFailedError)
    assert attempts == 1
    assert clock.sleeps == []
    assert "connection refused" in error.explanation
    assert "RELIABLE_SMTP_PORT" in error.explanation
    assert "not retried" in error.explanation


async def test_a_server_that_never_greets_is_one_attempt(
    silent: RawServer, clock: FakeClock
) -> None:
    error, attempts = await send_with_default_policy(transport(silent.port, "starttls"), clock)

    assert isinstance(error, SMTPTimeoutError)
    assert attempts == 1
    assert silent.connections == 1
    assert clock.sleeps == []
    assert "no greeting" in error.explanation
    assert "RELIABLE_SMTP_TLS=implicit" in error.explanation
    assert "RELIABLE_SMTP_CONNECT_TIMEOUT" in error.explanation


async def test_starttls_against_an_implicit_tls_port_is_one_attempt(clock: FakeClock) -> None:
    with LocalSMTPServer(tls="implicit") as server:
        error, attempts = await send_with_default_policy(transport(server.port, "starttls"), clock)
        assert server.connections == 1

    assert isinstance(error, SMTPTimeoutError)
    assert attempts == 1
    assert clock.sleeps == []
    assert "RELIABLE_SMTP_TLS=implicit" in error.explanation


async def test_implicit_tls_against_a_plain_port_is_one_attempt(clock: FakeClock) -> None:
    with LocalSMTPServer(tls="starttls") as server:
        error, attempts = await send_with_default_policy(
            transport(server.port, "implicit", ssl_context=server.client_ssl_context()), clock
        )
        assert server.connections == 1

    assert isinstance(error, AuthOrConfigError)
    assert attempts == 1
    assert clock.sleeps == []
    assert "STARTTLS" in error.explanation


async def test_a_refused_tls_handshake_is_one_attempt(
    refuses_tls: RawServer, clock: FakeClock
) -> None:
    error, attempts = await send_with_default_policy(transport(refuses_tls.port, "implicit"), clock)

    assert error.outcome.value == "transient"
    assert attempts == 1
    assert refuses_tls.connections == 1
    assert clock.sleeps == []
    assert "during the TLS handshake" in error.explanation
    assert "RELIABLE_SMTP_TLS" in error.explanation
    assert "; retried" not in error.explanation  # the policy's word, not the default's


async def test_a_server_that_worked_before_is_retried_as_the_policy_says(
    clock: FakeClock,
) -> None:
    policy = RetryPolicy(jitter=0.0)
    with LocalSMTPServer() as server:
        port = server.port
        smtp = transport(port, "none")
        async with AsyncMailer(smtp, retry=policy, sleep=clock.sleep, clock=clock) as mailer:
            await mailer.send(MESSAGE)
            server.drop_connections()
            server.stop()  # now nothing listens there: a restart, say

            with pytest.raises(ConnectionFailedError) as caught:
                await mailer.send(MESSAGE)

    error = caught.value
    assert error.result is not None
    assert len(error.result.attempts) == policy.attempts
    assert clock.sleeps == [policy.backoff(n) for n in range(1, policy.attempts)]
    assert "not retried" not in error.explanation


async def test_a_4xx_greeting_on_first_contact_is_still_retried(clock: FakeClock) -> None:
    with LocalSMTPServer() as server:
        server.script("GREETING", "421 4.3.2 too busy, try later", times=2)
        smtp = transport(server.port, "none")
        async with AsyncMailer(
            smtp, retry=RetryPolicy(jitter=0.0), sleep=clock.sleep, clock=clock
        ) as mailer:
            result = await mailer.send(MESSAGE)

    assert len(result.attempts) == 3
    assert clock.sleeps == [1.0, 2.0]


async def test_check_on_a_silent_port_makes_one_attempt_and_names_the_settings(
    silent: RawServer,
) -> None:
    settings = MailerSettings(
        _env_file=None,
        host="127.0.0.1",
        port=silent.port,
        local_hostname="client.test",
        connect_timeout=0.5,
    )
    report = await check_connection(settings)

    failed = report.failed
    assert failed is not None
    assert failed.name == "greeting"
    assert failed.rule == "no-greeting"
    assert failed.hint is not None
    assert "RELIABLE_SMTP_TLS" in failed.hint
    assert "RELIABLE_SMTP_CONNECT_TIMEOUT" in failed.hint
    assert silent.connections == 1
