"""Tests for the sample application, written only against reliable-smtp's public API.

The fixtures (smtp_outbox, outbox_mailer, async_outbox_mailer, smtp_server) come
from reliable-smtp's pytest plugin. Async tests run on anyio's pytest plugin,
which comes with reliable-smtp (pytest-asyncio works the same way).
"""

from __future__ import annotations

import pytest
from app import PasswordResets, ResetOutcome

from reliable_smtp import (
    AsyncMailer,
    AuthOrConfigError,
    DeliveryReport,
    Envelope,
    Mailer,
    Phase,
    RecipientStatus,
    Reply,
    RetryPolicy,
    SMTPTransport,
    Transport,
    classify,
)
from reliable_smtp.testing import (
    LocalSMTPServer,
    Outbox,
    ScriptedTransport,
    accept,
    check_transport,
    disconnect,
    no_retry_waits,
    reply,
)

# -- the outbox: what did the application send? ----------------------------------------


def test_reset_link_is_sent(outbox_mailer: Mailer, smtp_outbox: Outbox) -> None:
    assert PasswordResets(outbox_mailer).send("alice@example.org", "tok123") is ResetOutcome.SENT

    mail = smtp_outbox.one(to="alice@example.org", subject="Reset your password")
    assert "https://app.example.com/reset/tok123" in (mail.text or "")
    assert 'href="https://app.example.com/reset/tok123"' in (mail.html or "")
    assert mail.headers["X-Entity-Ref-ID"] == "reset-tok123"
    assert mail.from_address == "no-reply@app.example.com"


@pytest.mark.anyio
async def test_reset_link_is_sent_async(
    async_outbox_mailer: AsyncMailer, smtp_outbox: Outbox
) -> None:
    resets = PasswordResets(async_outbox_mailer)
    assert await resets.send_async("bob@example.org", "tok456") is ResetOutcome.SENT
    smtp_outbox.assert_sent(to="bob@example.org", contains="/reset/tok456", count=1)


# -- a scripted server: how does the application handle failures? ----------------------


def test_a_451_is_retried_and_the_reset_goes_out() -> None:
    transport = ScriptedTransport([reply(451, "4.7.1", "try again later"), accept()])
    with Mailer(transport) as mailer, no_retry_waits(mailer):
        assert PasswordResets(mailer).send("carol@example.org", "t1") is ResetOutcome.SENT
    assert len(transport.calls) == 2
    transport.one(to="carol@example.org")


def test_a_451_that_outlasts_the_retries_is_deferred() -> None:
    transport = ScriptedTransport([reply(451, "4.3.0", "mailbox busy")] * 3)
    with Mailer(transport, retry=RetryPolicy(attempts=3)) as mailer, no_retry_waits(mailer):
        resets = PasswordResets(mailer)
        assert resets.send("dave@example.org", "t2") is ResetOutcome.DEFERRED
    assert [m.subject for m in resets.deferred] == ["Reset your password"]
    transport.assert_nothing_sent()
    transport.assert_script_done()


def test_a_550_is_a_bad_address_and_never_retried() -> None:
    transport = ScriptedTransport(
        [reply(550, "5.1.1", "no such user", recipient="nobody@example.org")]
    )
    with Mailer(transport) as mailer, no_retry_waits(mailer):
        resets = PasswordResets(mailer)
        assert resets.send("nobody@example.org", "t3") is ResetOutcome.BAD_ADDRESS
    assert len(transport.calls) == 1
    assert resets.deferred == []


def test_a_link_lost_after_the_final_dot_is_not_resent() -> None:
    transport = ScriptedTransport([disconnect(before_dot=False)])
    with Mailer(transport) as mailer, no_retry_waits(mailer):
        resets = PasswordResets(mailer)
        assert resets.send("erin@example.org", "t4") is ResetOutcome.MAYBE_SENT
    assert len(transport.calls) == 1
    assert resets.deferred == []


def test_bad_credentials_reach_the_operator() -> None:
    transport = ScriptedTransport([reply(535, "5.7.8", "bad credentials", phase=Phase.AUTH)])
    with Mailer(transport) as mailer, pytest.raises(AuthOrConfigError):
        PasswordResets(mailer).send("frank@example.org", "t5")


# -- your own transport: a subclass is one method --------------------------------------


class GreylistingTransport(Transport):
    """Refuses each recipient's first try with 451, like a greylisting server."""

    name = "greylisting"

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.accepted: list[Envelope] = []

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        statuses = {}
        for recipient in envelope.recipients:
            if recipient in self.seen:
                answer, phase = Reply(250, "2.0.0", "OK"), Phase.DATA_END
            else:
                self.seen.add(recipient)
                answer, phase = Reply(451, "4.7.1", "greylisted, try again later"), Phase.RCPT
            statuses[recipient] = RecipientStatus.from_verdict(
                recipient,
                classify(answer, phase),
                phase=phase,
                reply=answer,
                transport_name=self.name,
            )
        accepted = [r for r, s in statuses.items() if s.accepted]
        if accepted:
            self.accepted.append(envelope.only(accepted))
        return DeliveryReport(recipients=statuses, transport_name=self.name)


def test_greylisting_is_survived() -> None:
    transport = GreylistingTransport()
    with Mailer(transport) as mailer, no_retry_waits(mailer):
        assert PasswordResets(mailer).send("gina@example.org", "t6") is ResetOutcome.SENT
    assert [e.recipients for e in transport.accepted] == [("gina@example.org",)]


@pytest.mark.anyio
async def test_greylisting_transport_keeps_the_contract() -> None:
    await check_transport(GreylistingTransport)


# -- a real SMTP server on 127.0.0.1 ---------------------------------------------------


@pytest.mark.smtp_server(tls="starttls", auth={"app": "secret"})
def test_reset_over_real_smtp(smtp_server: LocalSMTPServer) -> None:
    transport = SMTPTransport(
        "127.0.0.1",
        smtp_server.port,
        tls="starttls",
        ssl_context=smtp_server.client_ssl_context(),
        username="app",
        password="secret",
    )
    with Mailer(transport) as mailer:
        assert PasswordResets(mailer).send("hal@example.org", "t7") is ResetOutcome.SENT
    [received] = smtp_server.messages
    assert received.recipients == ("hal@example.org",)


def test_unknown_mailbox_over_real_smtp(smtp_server: LocalSMTPServer) -> None:
    smtp_server.script("RCPT", "550 5.1.1 no such user", recipient="ivy@example.org")
    transport = SMTPTransport("127.0.0.1", smtp_server.port, tls="none")
    with Mailer(transport) as mailer:
        assert PasswordResets(mailer).send("ivy@example.org", "t8") is ResetOutcome.BAD_ADDRESS
    assert smtp_server.messages == []
