"""Configuration from RELIABLE_SMTP_* variables, .env files and URLs."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from reliable_smtp import (
    ConfigurationError,
    FileTransport,
    InsecureConfigurationWarning,
    Mailer,
    MailerSettings,
    MemoryTransport,
    Message,
    SendmailTransport,
    SMTPTransport,
    TLSMode,
)
from reliable_smtp._dsn import parse_url
from reliable_smtp.testing import LocalSMTPServer

SECRET = "Sekr3t-Otter-42"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray RELIABLE_SMTP_* variable or .env from the developer's shell."""
    import os

    for name in list(os.environ):
        if name.startswith("RELIABLE_SMTP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# -- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtp://app:pw@smtp.example.com:587",
            {
                "transport": "smtp",
                "host": "smtp.example.com",
                "port": "587",
                "tls": "starttls",
                "username": "app",
                "password": "pw",
            },
        ),
        (
            "smtps://app:pw@smtp.example.com",
            {
                "transport": "smtp",
                "host": "smtp.example.com",
                "tls": "implicit",
                "username": "app",
                "password": "pw",
            },
        ),
        (
            "smtp+plain://relay.internal:25",
            {"transport": "smtp", "host": "relay.internal", "port": "25", "tls": "none"},
        ),
        (
            "sendmail:///usr/sbin/sendmail",
            {"transport": "sendmail", "sendmail_path": "/usr/sbin/sendmail"},
        ),
        ("file:///var/mail/outbox", {"transport": "file", "file_directory": "/var/mail/outbox"}),
        ("memory://", {"transport": "memory"}),
        (
            "smtp://user%40example.com:p%40ss%3Aw%2Frd@mx.example.com:2525?timeout=10&max_connections=3",
            {
                "transport": "smtp",
                "host": "mx.example.com",
                "port": "2525",
                "tls": "starttls",
                "username": "user@example.com",
                "password": "p@ss:w/rd",
                "timeout": "10",
                "max_connections": "3",
            },
        ),
        (
            "SMTPS://H.example.com:465?Rate_Per_Minute=30",
            {
                "transport": "smtp",
                "host": "h.example.com",
                "port": "465",
                "tls": "implicit",
                "rate_per_minute": "30",
            },
        ),
    ],
)
def test_parse_url(url: str, expected: dict[str, str]) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://smtp.example.com", "unknown scheme"),
        ("smtp.example.com:587", "unknown scheme"),
        ("smtp://:587", "no host"),
        ("smtp://host:99999", "port"),
        ("smtp://host:587?timeuot=5", "unknown option 'timeuot'"),
        ("smtp://host:587?tls=none", "already sets tls"),
        ("sendmail://usr/sbin/sendmail", "three slashes"),
        ("file://", "needs a path"),
        ("", "empty"),
    ],
)
def test_bad_urls_name_the_variable_and_the_fix(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_url(url)
    assert fragment in str(caught.value)
    assert caught.value.setting == "RELIABLE_SMTP_URL"


def test_url_from_the_environment_builds_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RELIABLE_SMTP_URL",
        f"smtps://app:{SECRET}@smtp.example.com:465?max_connections=3"
        "&rate_per_minute=30&timeout=20",
    )
    settings = MailerSettings()
    transport = settings.build_transport()
    assert isinstance(transport, SMTPTransport)
    assert (transport.host, transport.port, transport.tls) == (
        "smtp.example.com",
        465,
        TLSMode.IMPLICIT,
    )
    assert transport.max_connections == 3
    assert transport.command_timeout == 20
    assert transport.rate_limit.per_transport == pytest.approx(0.5)
    assert SECRET not in repr(settings)
    assert SECRET not in repr(transport)


# -- precedence ---------------------------------------------------------------------------


def test_precedence_arguments_environment_dotenv_url_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "RELIABLE_SMTP_URL=smtp://app:from-url@url.example.com:2525?timeout=11\n"
        "RELIABLE_SMTP_HOST=dotenv.example.com\n"
        "RELIABLE_SMTP_CONNECT_TIMEOUT=12\n"
        "RELIABLE_SMTP_DATA_TIMEOUT=13\n"
    )
    monkeypatch.setenv("RELIABLE_SMTP_CONNECT_TIMEOUT", "22")
    monkeypatch.setenv("RELIABLE_SMTP_DATA_TIMEOUT", "23")
    settings = MailerSettings(data_timeout=33)
    assert settings.data_timeout == 33  # argument beats environment and .env
    assert settings.connect_timeout == 22  # environment beats .env
    assert settings.host == "dotenv.example.com"  # a discrete .env setting refines the URL
    assert settings.port == 2525  # from the URL
    assert settings.timeout == 11  # from the URL's query
    assert settings.password is not None
    assert settings.password.get_secret_value() == "from-url"
    assert settings.retry_attempts == 5  # default


def test_password_from_its_own_variable_overrides_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELIABLE_SMTP_URL", "smtp://app@smtp.example.com:587")
    monkeypatch.setenv("RELIABLE_SMTP_PASSWORD", SECRET)
    settings = MailerSettings()
    assert settings.username == "app"
    assert settings.password is not None
    assert settings.password.get_secret_value() == SECRET


def test_dotenv_can_be_ignored(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RELIABLE_SMTP_HOST=dotenv.example.com\n")
    assert MailerSettings().host == "dotenv.example.com"
    assert MailerSettings(_env_file=None).host == "localhost"  # type: ignore[call-arg]


# -- validation with fixes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "variable", "fix"),
    [
        ({"RELIABLE_SMTP_PORT": "465"}, None, "RELIABLE_SMTP_TLS=implicit"),
        (
            {"RELIABLE_SMTP_PORT": "587", "RELIABLE_SMTP_TLS": "implicit"},
            None,
            "RELIABLE_SMTP_TLS=starttls",
        ),
        ({"RELIABLE_SMTP_TIMEOUT": "0"}, "RELIABLE_SMTP_TIMEOUT", "positive"),
        ({"RELIABLE_SMTP_PORT": "smtp"}, "RELIABLE_SMTP_PORT", "integer"),
        ({"RELIABLE_SMTP_TLS": "ssl"}, "RELIABLE_SMTP_TLS", "'starttls', 'implicit' or 'none'"),
        ({"RELIABLE_SMTP_TRANSPORT": "carrier-pigeon"}, "RELIABLE_SMTP_TRANSPORT", "smtp"),
        ({"RELIABLE_SMTP_TRANSPORT": "file"}, None, "RELIABLE_SMTP_FILE_DIRECTORY"),
        ({"RELIABLE_SMTP_PASSWORD": SECRET}, None, "RELIABLE_SMTP_USERNAME"),
        ({"RELIABLE_SMTP_URL": "smtp://h:587?pool=3"}, None, "unknown option"),
        ({"RELIABLE_SMTP_MAX_CONNECTIONS": "0"}, "RELIABLE_SMTP_MAX_CONNECTIONS", "at least 1"),
        (
            {"RELIABLE_SMTP_RATE_PER_SECOND": "1", "RELIABLE_SMTP_RATE_PER_MINUTE": "60"},
            None,
            "not both",
        ),
    ],
)
def test_invalid_settings_name_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], variable: str | None, fix: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        MailerSettings()
    text = str(caught.value)
    assert fix in text
    if variable is not None:
        assert variable in text
        assert caught.value.setting == variable
    assert SECRET not in text


def test_unknown_argument_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unexpected keyword argument 'sendr'") as caught:
        MailerSettings(sendr="x")  # type: ignore[call-arg]
    assert "RELIABLE_SMTP_SENDR" not in str(caught.value)  # nobody set such a variable


def test_password_over_plain_smtp_to_a_remote_host_warns() -> None:
    with pytest.warns(InsecureConfigurationWarning, match="RELIABLE_SMTP_TLS"):
        MailerSettings(host="relay.example.com", tls="none", username="u", password=SECRET)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MailerSettings(host="127.0.0.1", tls="none", username="u", password=SECRET)
    with pytest.warns(InsecureConfigurationWarning, match="clear text"):
        SMTPTransport("relay.example.com", tls="none", username="u", password=SECRET)


# -- building -----------------------------------------------------------------------------


def test_each_transport_kind(tmp_path: Path) -> None:
    assert isinstance(MailerSettings(url="memory://").build_transport(), MemoryTransport)
    sendmail = MailerSettings(url="sendmail:///usr/bin/msmtp").build_transport()
    assert isinstance(sendmail, SendmailTransport)
    assert str(sendmail.path) == "/usr/bin/msmtp"
    files = MailerSettings(url=f"file://{tmp_path}/out").build_transport()
    assert isinstance(files, FileTransport)
    policy = MailerSettings(retry_attempts=2, retry_deadline=9).retry_policy()
    assert (policy.attempts, policy.deadline) == (2, 9)


def test_from_env_sends_through_the_configured_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalSMTPServer() as server:
        monkeypatch.setenv("RELIABLE_SMTP_URL", f"smtp+plain://127.0.0.1:{server.port}")
        with Mailer.from_env() as mailer:
            assert mailer.send(Message(sender="a@example.com", to=["b@example.org"])).ok
    assert len(server.messages) == 1


def test_readme_table_lists_every_variable() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for field in MailerSettings.model_fields:
        assert f"`RELIABLE_SMTP_{field.upper()}`" in readme, field


def test_fallback_urls_build_a_failover_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    from reliable_smtp import FailoverTransport

    monkeypatch.setenv("RELIABLE_SMTP_URL", "smtp://app:pw@primary.example.com:587")
    monkeypatch.setenv(
        "RELIABLE_SMTP_FALLBACK_URLS",
        "smtps://b:pw2@backup.example.com:465, sendmail:///usr/sbin/sendmail",
    )
    monkeypatch.setenv("RELIABLE_SMTP_TIMEOUT", "7")
    monkeypatch.setenv("RELIABLE_SMTP_FAILOVER_DOWN_FOR", "45")
    transport = MailerSettings().build_transport()
    assert isinstance(transport, FailoverTransport)
    primary, backup, local = transport.transports
    assert isinstance(primary, SMTPTransport)
    assert isinstance(backup, SMTPTransport)
    assert (primary.host, backup.host, backup.port, backup.tls) == (
        "primary.example.com",
        "backup.example.com",
        465,
        TLSMode.IMPLICIT,
    )
    assert backup.username == "b"
    assert backup.command_timeout == 7  # shared settings apply to fallbacks too
    assert isinstance(local, SendmailTransport)
    assert transport.down_for == 45
    assert "pw2" not in repr(MailerSettings())


def test_a_fallback_urls_own_options_win_over_the_shared_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELIABLE_SMTP_URL", "smtp://primary.example.com:587?timeout=30")
    monkeypatch.setenv(
        "RELIABLE_SMTP_FALLBACK_URLS",
        "smtp://backup.example.com:587?timeout=5&connect_timeout=3, smtp://third.example.com",
    )
    primary, backup, third = MailerSettings(_env_file=None).build_transport().transports
    assert isinstance(primary, SMTPTransport)
    assert isinstance(backup, SMTPTransport)
    assert isinstance(third, SMTPTransport)
    assert (primary.command_timeout, backup.command_timeout, third.command_timeout) == (30, 5, 30)
    assert (backup.connect_timeout, third.connect_timeout) == (3, 10)


def test_bad_fallback_url_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELIABLE_SMTP_FALLBACK_URLS", "ftp://backup.example.com")
    with pytest.raises(ConfigurationError) as caught:
        MailerSettings().build_transport()
    assert caught.value.setting == "RELIABLE_SMTP_FALLBACK_URLS"
    assert "unknown scheme" in str(caught.value)


def test_failover_from_env_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    with LocalSMTPServer() as backup:
        monkeypatch.setenv("RELIABLE_SMTP_URL", f"smtp+plain://127.0.0.1:{dead_port}")
        monkeypatch.setenv("RELIABLE_SMTP_FALLBACK_URLS", f"smtp+plain://127.0.0.1:{backup.port}")
        with Mailer.from_env() as mailer:
            result = mailer.send(Message(sender="a@example.com", to=["b@example.org"]))
    assert (
        result.recipients["b@example.org"].transport_name == f"smtp+plain://127.0.0.1:{backup.port}"
    )
