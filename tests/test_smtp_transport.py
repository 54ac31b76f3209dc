"""SMTPTransport against real aiosmtpd servers on 127.0.0.1: TLS, AUTH, phases, replies."""

from __future__ import annotations

import logging
import ssl

import pytest

from conftest import PASSWORD, USERNAME, free_port, relay_transport, serial_only, tls_transport
from rawsmtp import Answer, RawSMTPServer, Session, normal
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import (
    AuthOrConfigError,
    ConfigurationError,
    ConnectionFailedError,
    DeliveryError,
    PermanentError,
    SMTPTimeoutError,
    TransientError,
    TransportClosedError,
)
from reliable_smtp._replies import Outcome, Phase
from reliable_smtp._transports.smtp import SMTPTransport, TLSMode
from reliable_smtp.testing import LocalSMTPServer

CONTENT = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"
ENVELOPE = Envelope.build("a@example.com", ["b@example.org"])


# -- TLS and AUTH ------------------------------------------------------------------------


async def test_starttls_and_auth_deliver(tls_server: LocalSMTPServer) -> None:
    async with tls_transport(tls_server) as transport:
        report = await transport.deliver(ENVELOPE, CONTENT)
    assert report.recipients["b@example.org"].outcome is Outcome.SENT
    assert report.final_reply is not None
    assert report.final_reply.code == 250
    [received] = tls_server.messages
    assert received.content == CONTENT
    assert received.recipients == ("b@example.org",)
    names = [c[1] for c in tls_server.commands]
    # STARTTLS before anything else that matters, then EHLO again, then AUTH.
    assert names[:5] == ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL"]
    assert tls_server.commands[0][2] == "client.test"


async def test_implicit_tls_and_auth_deliver(smtps_server: LocalSMTPServer) -> None:
    async with tls_transport(smtps_server) as transport:
        report = await transport.deliver(ENVELOPE, CONTENT)
    assert report.recipients["b@example.org"].accepted
    assert [c[1] for c in smtps_server.commands][:3] == ["EHLO", "AUTH", "MAIL"]


async def test_wrong_password_is_auth_error_after_one_attempt(
    tls_server: LocalSMTPServer,
) -> None:
    transport = tls_transport(tls_server, password="not-the-password")
    with pytest.raises(AuthOrConfigError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)
    error = caught.value
    assert error.code == 535
    assert error.phase is Phase.AUTH
    assert not error.retryable
    # One mechanism, one try: no PLAIN-then-LOGIN second failure to lock the account.
    assert tls_server.auth_attempts == 1
    assert tls_server.messages == []
    assert "not-the-password" not in str(error)
    await transport.aclose()


@serial_only
async def test_starttls_required_when_server_does_not_offer_it(server: LocalSMTPServer) -> None:
    transport = SMTPTransport(
        "127.0.0.1", server.port, tls=TLSMode.STARTTLS, username=USERNAME, password=PASSWORD
    )
    with pytest.raises(AuthOrConfigError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)
    assert caught.value.phase is Phase.TLS
    assert "STARTTLS" in str(caught.value)
    # Nothing - neither password nor message - went over the plaintext connection.
    assert [c[1] for c in server.commands] == ["EHLO"]
    assert server.messages == []


@serial_only
async def test_implicit_tls_against_plain_port_names_the_fix(server: LocalSMTPServer) -> None:
    transport = SMTPTransport(
        "127.0.0.1", server.port, tls="implicit", connect_timeout=5, command_timeout=5
    )
    with pytest.raises(AuthOrConfigError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)
    assert caught.value.phase is Phase.TLS
    assert "starttls" in str(caught.value).lower()


async def test_untrusted_certificate_is_refused(tls_server: LocalSMTPServer) -> None:
    # The default context trusts the system CAs, not the test CA: verification must fail.
    transport = SMTPTransport(
        "127.0.0.1", tls_server.port, tls="starttls", username=USERNAME, password=PASSWORD
    )
    with pytest.raises(AuthOrConfigError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)
    assert "certificate" in str(caught.value).lower()
    assert tls_server.auth_attempts == 0
    assert tls_server.messages == []


async def test_ca_file_option_verifies(tls_server: LocalSMTPServer) -> None:
    transport = SMTPTransport(
        "127.0.0.1",
        tls_server.port,
        tls="starttls",
        ca_file=tls_server.ca_file,
        username=USERNAME,
        password=PASSWORD,
    )
    async with transport:
        report = await transport.deliver(ENVELOPE, CONTENT)
    assert report.recipients["b@example.org"].accepted


async def test_plaintext_auth_only_with_explicit_tls_none() -> None:
    with LocalSMTPServer(tls="none", auth={USERNAME: PASSWORD}) as relay:
        transport = relay_transport(relay, username=USERNAME, password=PASSWORD)
        async with transport:
            report = await transport.deliver(ENVELOPE, CONTENT)
        assert report.recipients["b@example.org"].accepted


async def test_connection_refused_is_transient_connection_error() -> None:
    transport = SMTPTransport("127.0.0.1", free_port(), tls="none", connect_timeout=5)
    with pytest.raises(ConnectionFailedError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)
    assert isinstance(caught.value, ConnectionError)
    assert caught.value.phase is Phase.CONNECT
    # Never connected: a setting is wrong, so not retried (tests/test_first_contact.py).
    assert not caught.value.retryable


async def test_secrets_never_in_repr_or_errors(tls_server: LocalSMTPServer) -> None:
    transport = tls_transport(tls_server, password="Secret-Zebra-99")
    assert "Secret-Zebra-99" not in repr(transport)
    assert "Secret-Zebra-99" not in str(vars(transport).get("name"))
    with pytest.raises(DeliveryError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)
    assert "Secret-Zebra-99" not in str(caught.value)
    assert "Secret-Zebra-99" not in repr(caught.value)


@pytest.mark.parametrize(
    ("tls", "port", "fix"),
    [("starttls", 465, "implicit"), ("implicit", 587, "starttls"), ("implicit", 25, "starttls")],
)
def test_port_and_mode_mismatch_is_caught_at_construction(tls: str, port: int, fix: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SMTPTransport("smtp.example.com", port, tls=tls)
    assert fix in str(caught.value)
    assert caught.value.setting == "tls"


@pytest.mark.parametrize(
    "options",
    [
        {"tls": "ssl"},
        {"port": 0},
        {"port": 70000},
        {"connect_timeout": 0},
        {"command_timeout": -1},
        {"data_timeout": float("inf")},
        {"password": "x"},
        {"ssl_context": ssl.create_default_context(), "ca_file": "/tmp/ca.pem"},
    ],
)
def test_bad_options_raise_configuration_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        SMTPTransport("smtp.example.com", **options)  # type: ignore[arg-type]


def test_default_ports_follow_the_tls_mode() -> None:
    assert SMTPTransport("h").port == 587
    assert SMTPTransport("h", tls="implicit").port == 465
    assert SMTPTransport("h", tls="none").port == 25


# -- the transaction ---------------------------------------------------------------------


async def test_connection_is_reused_across_sends(server: LocalSMTPServer) -> None:
    async with relay_transport(server) as transport:
        for _ in range(3):
            await transport.deliver(ENVELOPE, CONTENT)
    assert server.connections == 1
    assert len(server.messages) == 3
    assert [c[1] for c in server.commands].count("QUIT") == 1


async def test_every_recipient_gets_its_own_reply(server: LocalSMTPServer) -> None:
    server.script(
        "RCPT", "550 5.1.1 <nobody@example.org>: no such user", recipient="nobody@example.org"
    )
    server.script("RCPT", "450 4.2.0 mailbox busy", recipient="busy@example.org")
    envelope = Envelope.build(
        "a@example.com", ["ok@example.org", "nobody@example.org", "busy@example.org"]
    )
    async with relay_transport(server) as transport:
        report = await transport.deliver(envelope, CONTENT)
    statuses = report.recipients
    assert statuses["ok@example.org"].outcome is Outcome.SENT
    assert statuses["nobody@example.org"].outcome is Outcome.PERMANENT
    assert statuses["nobody@example.org"].reply is not None
    assert statuses["nobody@example.org"].reply.enhanced_code == "5.1.1"
    assert statuses["nobody@example.org"].phase is Phase.RCPT
    assert statuses["busy@example.org"].outcome is Outcome.TRANSIENT
    assert statuses["busy@example.org"].retryable
    [received] = server.messages
    assert received.recipients == ("ok@example.org",)


async def test_no_recipient_accepted_sends_no_data_and_resets(server: LocalSMTPServer) -> None:
    server.script("RCPT", "550 5.1.1 no such user", times=None)
    async with relay_transport(server) as transport:
        report = await transport.deliver(ENVELOPE, CONTENT)
        assert report.recipients["b@example.org"].outcome is Outcome.PERMANENT
        names = [c[1] for c in server.commands]
        # Serial: no DATA at all. Pipelined: DATA went out with the RCPTs and was refused
        # (503: no valid recipients); either way no message, and the transaction is reset.
        assert ("DATA" in names) is server.pipelining
        assert server.messages == []
        assert names[-1] == "RSET"
        server.clear()
        # The connection was reset, not left mid-transaction: it still works.
        report = await transport.deliver(ENVELOPE, CONTENT)
    assert report.recipients["b@example.org"].accepted
    assert server.connections == 1


async def test_421_at_rcpt_drops_connection_and_leaves_everyone_pending(
    server: LocalSMTPServer,
) -> None:
    server.script("RCPT", "421 4.3.2 shutting down", recipient="c@example.org")
    envelope = Envelope.build("a@example.com", ["b@example.org", "c@example.org", "d@example.org"])
    async with relay_transport(server) as transport:
        report = await transport.deliver(envelope, CONTENT)
        assert list(report.recipients) == list(envelope.recipients)
        assert {s.outcome for s in report.recipients.values()} == {Outcome.TRANSIENT}
        assert all(s.retryable for s in report.recipients.values())
        assert server.messages == []
        # The next send opens a fresh connection.
        await transport.deliver(envelope, CONTENT)
    assert server.connections == 2
    assert len(server.messages) == 1


async def test_data_command_refused_is_not_ambiguous(server: LocalSMTPServer) -> None:
    server.script("DATA", "554 5.5.1 Error: no valid recipients")
    async with relay_transport(server) as transport:
        report = await transport.deliver(ENVELOPE, CONTENT)
    status = report.recipients["b@example.org"]
    assert status.outcome is Outcome.PERMANENT
    assert status.phase is Phase.DATA
    assert server.messages == []


async def test_disconnect_before_354_is_transient_not_ambiguous(server: LocalSMTPServer) -> None:
    server.script("DATA", disconnect=True)
    async with relay_transport(server) as transport:
        report = await transport.deliver(ENVELOPE, CONTENT)
    status = report.recipients["b@example.org"]
    assert status.outcome is Outcome.TRANSIENT
    assert status.retryable
    assert server.messages == []


async def test_rejection_after_the_dot_is_classified(server: LocalSMTPServer) -> None:
    server.script("DATA_END", "451 4.3.0 queue file write error")
    async with relay_transport(server) as transport:
        report = await transport.deliver(ENVELOPE, CONTENT)
    status = report.recipients["b@example.org"]
    assert status.outcome is Outcome.TRANSIENT
    assert status.phase is Phase.DATA_END
    assert server.messages == []


async def test_disconnect_after_the_dot_is_ambiguous(server: LocalSMTPServer) -> None:
    server.script("DATA_END", disconnect=True)
    async with relay_transport(server) as transport:
        report = await transport.deliver(ENVELOPE, CONTENT)
    status = report.recipients["b@example.org"]
    assert status.outcome is Outcome.AMBIGUOUS
    assert status.phase is Phase.DATA_END
    assert not status.retryable
    # ... and indeed the server has it.
    assert len(server.messages) == 1


async def test_final_dot_timeout_is_ambiguous_and_separate_from_command_timeout(
    server: LocalSMTPServer,
) -> None:
    server.script("DATA_END", hang=True)
    transport = relay_transport(server, command_timeout=5.0, data_timeout=0.3)
    report = await transport.deliver(ENVELOPE, CONTENT)
    status = report.recipients["b@example.org"]
    assert status.outcome is Outcome.AMBIGUOUS
    assert "in time" in status.explanation or "time" in status.explanation
    await transport.aclose()


async def test_command_timeout_before_the_dot_is_transient(server: LocalSMTPServer) -> None:
    server.script("MAIL", hang=True)
    transport = relay_transport(server, command_timeout=0.3)
    with pytest.raises(SMTPTimeoutError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.phase is Phase.MAIL
    await transport.aclose()


async def test_rcpt_timeout_leaves_recipients_pending(server: LocalSMTPServer) -> None:
    server.script("RCPT", hang=True, recipient="c@example.org")
    envelope = Envelope.build("a@example.com", ["b@example.org", "c@example.org"])
    transport = relay_transport(server, command_timeout=0.3)
    report = await transport.deliver(envelope, CONTENT)
    assert {s.outcome for s in report.recipients.values()} == {Outcome.TRANSIENT}
    assert server.messages == []
    await transport.aclose()


@serial_only
@pytest.mark.parametrize(
    ("greeting", "expected"),
    [("554 5.3.2 No SMTP service here", PermanentError), ("421 4.3.2 Try later", TransientError)],
)
async def test_greeting_refusal(
    server: LocalSMTPServer, greeting: str, expected: type[DeliveryError]
) -> None:
    server.script("GREETING", greeting)
    transport = relay_transport(server)
    with pytest.raises(expected) as caught:
        await transport.deliver(ENVELOPE, CONTENT)
    assert caught.value.phase is Phase.CONNECT
    assert caught.value.code == int(greeting[:3])


async def test_sender_refused_raises_and_resets(server: LocalSMTPServer) -> None:
    server.script("MAIL", "553 5.7.1 Sender address rejected: not owned by user")
    async with relay_transport(server) as transport:
        with pytest.raises(DeliveryError) as caught:
            await transport.deliver(ENVELOPE, CONTENT)
        assert caught.value.phase is Phase.MAIL
        assert caught.value.code == 553
        await transport.deliver(ENVELOPE, CONTENT)
    assert server.connections == 1


async def test_idle_connection_closed_by_server_is_replaced_transparently(
    server: LocalSMTPServer,
) -> None:
    async with relay_transport(server) as transport:
        await transport.deliver(ENVELOPE, CONTENT)
        server.drop_connections()
        report = await transport.deliver(ENVELOPE, CONTENT)
    assert report.recipients["b@example.org"].accepted
    assert server.connections == 2
    assert len(server.messages) == 2


async def test_message_over_advertised_size_is_refused_before_mail() -> None:
    with LocalSMTPServer(size_limit=100) as small:
        async with relay_transport(small) as transport:
            with pytest.raises(PermanentError) as caught:
                await transport.deliver(ENVELOPE, CONTENT + b"x" * 200)
        assert "100" in str(caught.value)
        assert "MAIL" not in [c[1] for c in small.commands]


async def test_size_is_declared_on_mail(server: LocalSMTPServer) -> None:
    async with relay_transport(server) as transport:
        await transport.deliver(ENVELOPE, CONTENT)
    [mail] = list(server.commands_named("MAIL"))
    assert f"SIZE={len(CONTENT)}" in mail[2]


async def test_non_ascii_address_needs_smtputf8() -> None:
    envelope = Envelope.build("a@example.com", ["jörg@example.org"])
    with LocalSMTPServer(smtputf8=False) as old:
        async with relay_transport(old) as transport:
            with pytest.raises(PermanentError) as caught:
                await transport.deliver(envelope, CONTENT)
        assert "SMTPUTF8" in str(caught.value)
        assert "MAIL" not in [c[1] for c in old.commands]
    with LocalSMTPServer(smtputf8=True) as modern:
        async with relay_transport(modern) as transport:
            report = await transport.deliver(envelope, CONTENT)
        assert report.recipients["jörg@example.org"].accepted
        [mail] = list(modern.commands_named("MAIL"))
        assert "SMTPUTF8" in mail[2]


async def test_dot_stuffing_and_line_endings_survive(server: LocalSMTPServer) -> None:
    content = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n"
    async with relay_transport(server) as transport:
        await transport.deliver(ENVELOPE, content)
    assert server.messages[0].content == content


@serial_only
async def test_use_after_close_raises(server: LocalSMTPServer) -> None:
    transport = relay_transport(server)
    await transport.aclose()
    await transport.aclose()
    with pytest.raises(TransportClosedError):
        await transport.deliver(ENVELOPE, CONTENT)


async def test_pipelining_sends_the_envelope_before_reading_any_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="reliable_smtp.transcript")
    envelope = Envelope.build("a@example.com", ["b@example.org", "c@example.org"])
    for pipelining in (True, False):
        caplog.clear()
        with LocalSMTPServer(pipelining=pipelining) as server:
            async with relay_transport(server) as transport:
                await transport.deliver(envelope, CONTENT)
        lines = [r.getMessage().split(" ", 2)[1:] for r in caplog.records]
        start = next(i for i, line in enumerate(lines) if line[1].startswith("MAIL"))
        directions = "".join(line[0] for line in lines[start : start + 8])
        # pipelined: > MAIL > RCPT > RCPT > DATA, then four replies; serial: alternating.
        assert directions == (">>>><<<<" if pipelining else "><><><><")


def _closing_at_the_first_mail_but_staying_open(
    session: Session, verb: str, argument: bytes
) -> Answer:
    # RFC 5321 §3.8: after a 421 the server closes; some keep answering a moment longer.
    if verb == "MAIL" and session.number == 1:
        return Answer(reply=b"421 4.3.2 shutting down\r\n")
    return normal(session, verb, argument)


@pytest.mark.parametrize("pipelining", [False, True], ids=["serial", "pipelined"])
async def test_a_421_at_mail_drops_the_connection_even_when_the_server_keeps_it_open(
    pipelining: bool,
) -> None:
    server = await RawSMTPServer(
        _closing_at_the_first_mail_but_staying_open, pipelining=lambda n: pipelining
    ).start()
    envelope = Envelope.build("a@example.com", ["b@example.org"])
    try:
        transport = SMTPTransport(
            "127.0.0.1",
            server.port,
            tls="none",
            local_hostname="client.test",
            max_connections=1,
            command_timeout=2.0,
        )
        async with transport:
            with pytest.raises(DeliveryError) as caught:
                await transport.deliver(envelope, b"Subject: x\r\n\r\nbody\r\n")
            assert caught.value.phase is Phase.MAIL
            assert caught.value.reply is not None
            assert caught.value.reply.code == 421
            report = await transport.deliver(envelope, b"Subject: x\r\n\r\nbody\r\n")
        assert report.recipients["b@example.org"].outcome is Outcome.SENT
        # Never RSET and reused: the next message went over a new connection.
        assert server.opened == 2
        assert "RSET" not in [verb for number, verb, _ in server.commands if number == 1]
    finally:
        await server.stop()
