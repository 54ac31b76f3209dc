"""transports/_session: one session setup for the transport and ``reliable-smtp check``.

Real servers on 127.0.0.1 (plain, STARTTLS with AUTH, implicit TLS): the observer hears
every step in order with what the server said; a failure leaves the step in progress
(so the phase) with the observer; the transport and the check send the same EHLO name;
the port/mode rules and the clear-text warning read the same from the transport's
keywords and from the environment.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator

import aiosmtplib
import pytest

from conftest import PASSWORD, USERNAME
from reliable_smtp import (
    AuthOrConfigError,
    ConfigurationError,
    InsecureConfigurationWarning,
    MailerSettings,
    SMTPTransport,
)
from reliable_smtp._diagnostics import check_connection
from reliable_smtp._envelope import Envelope
from reliable_smtp._replies import Phase
from reliable_smtp._transports._login import PasswordLogin
from reliable_smtp._transports._session import (
    EhloName,
    SessionSetup,
    Step,
    StepRecord,
    StepTracker,
    TLSMode,
    keyword_spelling,
    open_session,
    port_mode_conflict,
    session_client,
    session_url,
)
from reliable_smtp.testing import LocalSMTPServer


@pytest.fixture
def server() -> Iterator[LocalSMTPServer]:
    """A plain local relay (one mode: nothing here reaches MAIL)."""
    with LocalSMTPServer() as running:
        yield running


class Recorder(StepTracker):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, Step]] = []
        self.records: list[StepRecord] = []

    def step_started(self, step: Step) -> None:
        super().step_started(step)
        self.events.append(("start", step))

    def step_finished(self, record: StepRecord) -> None:
        self.events.append(("end", record.step))
        self.records.append(record)


def setup_for(
    server: LocalSMTPServer, tls: TLSMode, *, login: PasswordLogin | None = None
) -> SessionSetup:
    return SessionSetup(
        transport_name=server.url,
        tls=tls,
        connect_timeout=5.0,
        command_timeout=5.0,
        ehlo_name=EhloName("client.test", connect_timeout=5.0),
        login=login,
    )


def client(server: LocalSMTPServer, tls: TLSMode) -> aiosmtplib.SMTP:
    return session_client(
        host="127.0.0.1",
        port=server.port,
        tls=tls,
        tls_context=server.client_ssl_context() if tls is not TLSMode.NONE else None,
        local_hostname=None,
        command_timeout=5.0,
    )


async def test_the_observer_hears_every_step_in_order_with_the_replies() -> None:
    with LocalSMTPServer(tls="starttls", auth={USERNAME: PASSWORD}) as server:
        smtp = client(server, TLSMode.STARTTLS)
        recorder = Recorder()
        login = PasswordLogin(username=USERNAME, password=PASSWORD)
        try:
            await open_session(smtp, setup_for(server, TLSMode.STARTTLS, login=login), recorder)
        finally:
            smtp.close()
    steps = [Step.GREETING, Step.EHLO, Step.STARTTLS, Step.EHLO_TLS, Step.AUTH]
    assert recorder.events == [(kind, step) for step in steps for kind in ("start", "end")]
    codes = {record.step: record.response.code for record in recorder.records}
    assert codes == {
        Step.GREETING: 220,
        Step.EHLO: 250,
        Step.STARTTLS: 220,
        Step.EHLO_TLS: 250,
        Step.AUTH: 235,
    }
    by_step = {record.step: record for record in recorder.records}
    assert by_step[Step.EHLO].ehlo_name == "client.test"
    assert by_step[Step.AUTH].mechanism == "PLAIN"
    assert all(record.seconds >= 0 for record in recorder.records)
    assert server.auth_attempts == 1


async def test_implicit_tls_has_no_starttls_step() -> None:
    with LocalSMTPServer(tls="implicit") as server:
        smtp = client(server, TLSMode.IMPLICIT)
        recorder = Recorder()
        try:
            await open_session(smtp, setup_for(server, TLSMode.IMPLICIT), recorder)
            assert smtp.get_transport_info("ssl_object") is not None
        finally:
            smtp.close()
    assert [record.step for record in recorder.records] == [Step.GREETING, Step.EHLO]


async def test_a_server_without_esmtp_is_spoken_to_with_helo(server: LocalSMTPServer) -> None:
    server.script("EHLO", "502 5.5.1 EHLO not implemented")
    smtp = client(server, TLSMode.NONE)
    recorder = Recorder()
    try:
        await open_session(smtp, setup_for(server, TLSMode.NONE), recorder)
    finally:
        smtp.close()
    [ehlo] = [record for record in recorder.records if record.step is Step.EHLO]
    assert ehlo.esmtp is False
    assert ehlo.response.code == 250  # HELO's reply, not the 502


async def test_a_missing_starttls_stops_in_the_tls_phase(server: LocalSMTPServer) -> None:
    smtp = client(server, TLSMode.STARTTLS)
    recorder = Recorder()
    try:
        with pytest.raises(AuthOrConfigError) as caught:
            await open_session(smtp, setup_for(server, TLSMode.STARTTLS), recorder)
    finally:
        smtp.close()
    assert recorder.step is Step.STARTTLS
    assert recorder.phase is Phase.TLS
    assert caught.value.setting == "tls"
    assert caught.value.phase is Phase.TLS
    assert "never fall back to cleartext" in caught.value.explanation


async def test_no_password_mechanism_is_one_error_for_transport_and_check() -> None:
    # A server offering only XOAUTH2 after STARTTLS: neither the transport nor the
    # check tries anything; both say the same.
    with LocalSMTPServer(
        tls="starttls", auth={USERNAME: PASSWORD}, auth_mechanisms=["XOAUTH2"]
    ) as server:
        transport = SMTPTransport(
            "127.0.0.1",
            server.port,
            username=USERNAME,
            password=PASSWORD,
            ssl_context=server.client_ssl_context(),
            local_hostname="client.test",
        )
        async with transport:
            with pytest.raises(AuthOrConfigError) as caught:
                await transport.deliver(Envelope("a@example.com", ("b@example.com",)), b"x\r\n")
        report = await check_connection(
            MailerSettings(
                _env_file=None,
                host="127.0.0.1",
                port=server.port,
                tls="starttls",
                ca_file=server.ca_file,
                username=USERNAME,
                password=PASSWORD,
                local_hostname="client.test",
            )
        )
        assert server.auth_attempts == 0
    failed = report.failed
    assert failed is not None
    assert failed.name == "auth"
    assert failed.rule == "no-password-auth"
    assert failed.error == caught.value.summary
    assert failed.explanation == caught.value.explanation
    assert "RELIABLE_SMTP_USERNAME" in caught.value.explanation


async def test_the_check_sends_the_transports_ehlo_name(
    server: LocalSMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bare host name is no EHLO name (RFC 5321 §4.1.4): both send the address
    # literal. The check used to send getfqdn()'s answer as it was.
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "vm")
    report = await check_connection(
        MailerSettings(_env_file=None, host="127.0.0.1", port=server.port, tls="none")
    )
    ehlo = report.step("ehlo")
    assert ehlo is not None
    assert ehlo.details["name"] == "[127.0.0.1]"

    recorder = Recorder()
    transport_name = EhloName(None, connect_timeout=5.0)
    smtp = client(server, TLSMode.NONE)
    try:
        setup = setup_for(server, TLSMode.NONE)
        await open_session(
            smtp,
            SessionSetup(
                transport_name=setup.transport_name,
                tls=setup.tls,
                connect_timeout=setup.connect_timeout,
                command_timeout=setup.command_timeout,
                ehlo_name=transport_name,
            ),
            recorder,
        )
    finally:
        smtp.close()
    assert recorder.records[1].ehlo_name == ehlo.details["name"]


def test_one_scheme_map_for_transport_check_and_test_server() -> None:
    assert session_url(TLSMode.STARTTLS, "h", 587) == "smtp://h:587"
    assert session_url("implicit", "h", 465) == "smtps://h:465"
    assert session_url(TLSMode.NONE, "h", 25) == "smtp+plain://h:25"
    assert SMTPTransport("h", tls="implicit").name == "smtps://h:465"


@pytest.mark.parametrize(
    ("tls", "port", "expected"),
    [
        ("starttls", 465, "port 465 speaks implicit TLS"),
        ("implicit", 587, "port 587 expects STARTTLS"),
        ("implicit", 25, "port 25 expects STARTTLS"),
    ],
)
def test_port_and_mode_conflicts_read_the_same_from_keywords_and_variables(
    tls: str, port: int, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as by_keyword:
        SMTPTransport("h", port, tls=tls)
    with pytest.raises(ConfigurationError) as by_variable:
        MailerSettings(_env_file=None, host="h", port=port, tls=tls)
    assert by_keyword.value.setting == "tls"
    assert str(by_keyword.value) == port_mode_conflict(TLSMode(tls), port, spell=keyword_spelling)
    assert expected in str(by_keyword.value)
    assert expected in str(by_variable.value)
    assert f"tls={tls!r}" in str(by_keyword.value)
    assert f"RELIABLE_SMTP_TLS={tls}" in str(by_variable.value)


@pytest.mark.parametrize(("tls", "port"), [("starttls", 587), ("implicit", 465), ("none", 25)])
def test_fitting_ports_are_no_conflict(tls: str, port: int) -> None:
    assert port_mode_conflict(TLSMode(tls), port, spell=keyword_spelling) is None


@pytest.mark.parametrize("port", [0, 65536, -1, True])
def test_the_port_range_is_one_rule(port: int) -> None:
    with pytest.raises(ConfigurationError, match="between 1 and 65535") as by_keyword:
        SMTPTransport("h", port)
    assert by_keyword.value.setting == "port"
    if not isinstance(port, bool):  # pydantic reads True as 1
        with pytest.raises(ConfigurationError, match="between 1 and 65535"):
            MailerSettings(_env_file=None, host="h", port=port)


def test_the_clear_text_password_warning_is_one_rule() -> None:
    with pytest.warns(InsecureConfigurationWarning) as by_keyword:
        SMTPTransport("relay.example", tls="none", username="u", password="p")
    with pytest.warns(InsecureConfigurationWarning) as by_variable:
        MailerSettings(_env_file=None, host="relay.example", tls="none", username="u", password="p")
    keyword_text = str(by_keyword[0].message)
    variable_text = str(by_variable[0].message)
    assert "tls='none' sends the password to relay.example in clear text" in keyword_text
    assert "RELIABLE_SMTP_TLS=none sends the password to relay.example" in variable_text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SMTPTransport("127.0.0.1", tls="none", username="u", password="p")
        MailerSettings(_env_file=None, host="localhost", tls="none", username="u", password="p")
