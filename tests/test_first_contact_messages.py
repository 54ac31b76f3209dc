"""Messages a new user meets first: each says what happened and the setting to change.

Each test is one of the misleading messages found by trying the library as a new
user would: an unescaped ``/`` or ``#`` in a URL password, an empty
``RELIABLE_SMTP_USERNAME=``, ``from_env(ssl_context=...)``, a 530 with STARTTLS
already on, a slow server's timeout, the AmbiguousDeliveryError headline, and a
devserver without ``--auth`` that still advertised AUTH.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from conftest import PASSWORD, USERNAME
from reliable_smtp import (
    AmbiguousDeliveryError,
    AsyncMailer,
    AuthOrConfigError,
    ConfigurationError,
    DeliveryError,
    Mailer,
    MailerSettings,
    Message,
    RetryPolicy,
    SMTPTransport,
)
from reliable_smtp._diagnostics import check_connection
from reliable_smtp.testing import FakeClock, LocalSMTPServer

MESSAGE = Message(sender="app@example.com", to=["bob@example.org"], subject="s", text="t")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("RELIABLE_SMTP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env


@pytest.fixture
def relay() -> Iterator[LocalSMTPServer]:
    with LocalSMTPServer() as server:
        yield server


# -- a URL password with / ? # in it -------------------------------------------------------


@pytest.mark.parametrize("char", ["/", "#", "?"])
@pytest.mark.parametrize("before", ["pw", "1234"], ids=["letters", "digits"])
def test_an_unescaped_character_in_the_password_says_percent_encode(char: str, before: str) -> None:
    secret = f"{before}{char}{PASSWORD}"
    url = f"smtp://{USERNAME}:{secret}@smtp.example.com:587"
    with pytest.raises(ConfigurationError) as caught:
        MailerSettings(_env_file=None, url=url)

    message = str(caught.value)
    assert "percent-encode the password" in message
    assert "'/' as %2F" in message
    assert "'#' as %23" in message
    assert "not a number" not in message
    assert PASSWORD not in message
    assert before + char not in message
    assert caught.value.setting == "RELIABLE_SMTP_URL"


def test_the_encoded_password_works() -> None:
    from urllib.parse import quote

    secret = f"pw/{PASSWORD}#x?y"
    settings = MailerSettings(
        _env_file=None, url=f"smtp://{USERNAME}:{quote(secret, safe='')}@smtp.example.com:587"
    )
    assert settings.password is not None
    assert settings.password.get_secret_value() == secret
    assert settings.host == "smtp.example.com"


def test_an_at_sign_in_a_ca_file_option_is_not_mistaken_for_a_password() -> None:
    settings = MailerSettings(_env_file=None, url="smtp://smtp.example.com:587?ca_file=/c@2/ca.pem")
    assert str(settings.ca_file) == "/c@2/ca.pem"


# -- an empty RELIABLE_SMTP_USERNAME= ------------------------------------------------------


def test_an_empty_username_with_a_password_is_refused_with_the_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELIABLE_SMTP_USERNAME", "")
    monkeypatch.setenv("RELIABLE_SMTP_PASSWORD", PASSWORD)
    with pytest.raises(ConfigurationError) as caught:
        MailerSettings(_env_file=None)
    assert "an empty value counts as not set" in str(caught.value)
    assert "no AUTH is sent" in str(caught.value)


@pytest.mark.parametrize("blank", ["", "  "])
async def test_an_empty_username_means_no_auth_for_transport_and_check_alike(
    relay: LocalSMTPServer, monkeypatch: pytest.MonkeyPatch, blank: str
) -> None:
    monkeypatch.setenv("RELIABLE_SMTP_USERNAME", blank)
    settings = MailerSettings(
        _env_file=None, host="127.0.0.1", port=relay.port, tls="none", local_hostname="c.test"
    )
    assert settings.username is None
    report = await check_connection(settings)
    auth = report.step("auth")
    assert auth is not None
    assert auth.skipped
    assert "no AUTH is sent" in auth.summary

    async with AsyncMailer(settings.build_transport(), retry=RetryPolicy.never()) as mailer:
        await mailer.send(MESSAGE)
    assert list(relay.commands_named("AUTH")) == []
    assert SMTPTransport("127.0.0.1", relay.port, tls="none", username=blank).username is None
    with pytest.raises(ConfigurationError, match="empty username counts as none"):
        SMTPTransport("127.0.0.1", relay.port, tls="none", username=blank, password=PASSWORD)


# -- from_env(ssl_context=...) -------------------------------------------------------------


def test_from_env_accepts_an_ssl_context() -> None:
    with LocalSMTPServer(tls="starttls") as server:
        with Mailer.from_env(
            host="127.0.0.1",
            port=server.port,
            local_hostname="client.test",
            ssl_context=server.client_ssl_context(),
            _env_file=None,
        ) as mailer:
            mailer.send(MESSAGE)
        assert len(server.messages) == 1


def test_an_unknown_keyword_is_refused_by_its_name() -> None:
    with pytest.raises(
        ConfigurationError, match="unexpected keyword argument 'ssl_context'"
    ) as caught:
        MailerSettings(_env_file=None, ssl_context=object())
    assert "RELIABLE_SMTP_SSL_CONTEXT" not in str(caught.value)
    assert "Mailer.from_env(ssl_context=...)" in str(caught.value)
    with pytest.raises(ConfigurationError, match="unexpected keyword argument 'hots'"):
        MailerSettings(_env_file=None, hots="smtp.example.com")


# -- 530 with STARTTLS already on ----------------------------------------------------------


async def test_530_with_starttls_on_says_credentials_are_missing(clock: FakeClock) -> None:
    with LocalSMTPServer(tls="starttls") as server:
        server.script("MAIL", "530 5.7.0 Authentication required")
        smtp = SMTPTransport(
            "127.0.0.1",
            server.port,
            ssl_context=server.client_ssl_context(),
            local_hostname="client.test",
        )
        async with AsyncMailer(smtp, sleep=clock.sleep, clock=clock) as mailer:
            with pytest.raises(AuthOrConfigError) as caught:
                await mailer.send(MESSAGE)

    explanation = caught.value.explanation
    assert "credentials are missing" in explanation
    assert "RELIABLE_SMTP_USERNAME" in explanation
    assert "STARTTLS" not in explanation


# -- a slow server -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "setting"),
    [
        ("MAIL", "RELIABLE_SMTP_TIMEOUT"),
        ("EHLO", "RELIABLE_SMTP_TIMEOUT"),
        ("DATA", "RELIABLE_SMTP_TIMEOUT"),
        ("DATA_END", "RELIABLE_SMTP_DATA_TIMEOUT"),
    ],
)
async def test_a_slow_server_timeout_names_the_setting(
    relay: LocalSMTPServer, clock: FakeClock, command: str, setting: str
) -> None:
    relay.script(command, hang=True)  # type: ignore[arg-type]
    smtp = SMTPTransport(
        "127.0.0.1",
        relay.port,
        tls="none",
        local_hostname="client.test",
        command_timeout=0.3,
        data_timeout=0.3,
    )
    async with AsyncMailer(smtp, retry=RetryPolicy.never(), sleep=clock.sleep, clock=clock) as m:
        with pytest.raises(DeliveryError) as caught:
            await m.send(MESSAGE)
    assert setting in str(caught.value)


# -- the AmbiguousDeliveryError headline ---------------------------------------------------


async def test_the_ambiguous_headline_says_may_have_been_delivered(
    relay: LocalSMTPServer, clock: FakeClock
) -> None:
    relay.script("DATA_END", disconnect=True)
    smtp = SMTPTransport("127.0.0.1", relay.port, tls="none", local_hostname="client.test")
    async with AsyncMailer(smtp, sleep=clock.sleep, clock=clock) as mailer:
        with pytest.raises(AmbiguousDeliveryError) as caught:
            await mailer.send(MESSAGE)

    headline = caught.value.summary
    assert "may have been delivered to 1 of 1 recipient" in headline
    assert "not delivered" not in headline
    assert len(relay.messages) == 1  # the server does have it


# -- devserver / LocalSMTPServer without credentials ---------------------------------------


async def test_a_server_without_credentials_does_not_advertise_auth(
    relay: LocalSMTPServer,
) -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.port, start_tls=False)
    async with smtp:
        await smtp.ehlo()
        assert not smtp.supports_extension("auth")
        reply = await smtp.execute_command(b"AUTH", b"PLAIN", b"AGFwcABwdw==")
    assert reply.code == 502
    assert "without a login" in reply.message
    assert "password" not in reply.message


def test_the_devserver_banner_says_auth_is_not_offered(tmp_path: Path) -> None:
    from test_cli import DevServer

    dev = DevServer(tmp_path)
    try:
        banner = "".join(dev.lines)
    finally:
        status, _ = dev.stop()
    assert status == 0
    assert "not offered" in banner
    assert "RELIABLE_SMTP_USERNAME" not in banner


def test_settings_url_trusts_an_implicit_tls_server() -> None:
    with LocalSMTPServer(tls="implicit") as server:
        assert "?ca_file=" in server.settings_url
        with Mailer.from_env(
            url=server.settings_url, local_hostname="client.test", _env_file=None
        ) as mailer:
            mailer.send(MESSAGE)
        assert len(server.messages) == 1
    assert LocalSMTPServer().settings_url.startswith("smtp+plain://")


async def test_a_login_against_a_server_without_auth_says_to_unset_the_username(
    relay: LocalSMTPServer,
) -> None:
    smtp = SMTPTransport(
        "127.0.0.1",
        relay.port,
        tls="none",
        local_hostname="client.test",
        username=USERNAME,
        password=PASSWORD,
    )
    async with AsyncMailer(smtp, retry=RetryPolicy.never()) as mailer:
        with pytest.raises(AuthOrConfigError) as caught:
            await mailer.send(MESSAGE)
    assert "unset the username (RELIABLE_SMTP_USERNAME)" in caught.value.explanation
    assert caught.value.code is None  # no AUTH was attempted, so no 535
    assert relay.auth_attempts == 0
