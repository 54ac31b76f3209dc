"""The Django backend, behaviour for behaviour against Django's own SMTP backend.

Each test in the first part states one behaviour Django documents for its SMTP
backend or for ``django.core.mail`` and runs against BOTH backends over a real
SMTP server on 127.0.0.1: Django's own passing proves the test is about
behaviour, not about our internals. The second part covers what reliable-smtp
adds (results, classified errors, retries, settings precedence, MAILERS).
"""

from __future__ import annotations

import email
import email.policy
import importlib
import pickle
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from email.mime.image import MIMEImage
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

if not settings.configured:
    project = importlib.import_module("django_project.settings")
    settings.configure(**{k: v for k, v in vars(project).items() if k.isupper()})
    django.setup()

from django.core import mail  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.utils.translation import gettext_lazy  # noqa: E402

from conftest import free_port  # noqa: E402
from reliable_smtp import (  # noqa: E402
    ConfigurationError,
    DeliveryError,
    PermanentError,
    RetryPolicy,
    SendResult,
    TransientError,
)
from reliable_smtp.contrib.django import (  # noqa: E402
    EmailBackend,
    close_shared_connections,
    message_sent,
)
from reliable_smtp.testing import LocalSMTPServer  # noqa: E402

DJANGO_SMTP = "django.core.mail.backends.smtp.EmailBackend"
RELIABLE = "reliable_smtp.contrib.django.EmailBackend"
DJANGO_6_1 = django.VERSION >= (6, 1)
USER, PASSWORD = "app", "pw-Zebra-7431-secret"

# Django 6.1 deprecates the EMAIL_* settings and get_connection() that these tests
# exercise on purpose (they are what 5.2 projects use).
pytestmark = (
    [pytest.mark.filterwarnings("ignore::django.utils.deprecation.RemovedInDjango2028Warning")]
    if DJANGO_6_1
    else []
)


@pytest.fixture(params=[DJANGO_SMTP, RELIABLE], ids=["django", "reliable"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def smtp() -> Iterator[LocalSMTPServer]:
    with LocalSMTPServer() as running:
        yield running


@pytest.fixture
def configured(backend: str, smtp: LocalSMTPServer) -> Iterator[LocalSMTPServer]:
    """EMAIL_BACKEND = ``backend``, pointed at the plain local server; retries without waits."""
    with override_settings(
        EMAIL_BACKEND=backend,
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=smtp.port,
        RELIABLE_SMTP_RETRY=RetryPolicy().without_waits(),
    ):
        yield smtp


def parsed(received: Any) -> Any:
    return email.message_from_bytes(received.content, policy=email.policy.default)


# -- sending ------------------------------------------------------------------------------


def test_send_mail_sends_one_message_and_returns_1(configured: LocalSMTPServer) -> None:
    count = mail.send_mail("Hello", "Body text", "from@example.com", ["to@example.org"])
    assert count == 1
    [received] = configured.messages
    assert received.sender == "from@example.com"
    assert received.recipients == ("to@example.org",)
    message = parsed(received)
    assert message["Subject"] == "Hello"
    assert message.get_content().strip() == "Body text"


def test_default_from_email_when_from_is_none(configured: LocalSMTPServer) -> None:
    mail.send_mail("Hi", "Body", None, ["to@example.org"])
    [received] = configured.messages
    assert received.sender == "shop@example.com"
    assert parsed(received)["From"] == "Shop <shop@example.com>"


def test_send_messages_returns_the_number_sent_over_one_connection(
    configured: LocalSMTPServer,
) -> None:
    messages = [
        mail.EmailMessage(f"m{i}", "b", "f@example.com", ["t@example.org"]) for i in range(3)
    ]
    assert mail.get_connection().send_messages(messages) == 3
    assert len(configured.messages) == 3
    assert configured.connections == 1


def test_send_messages_of_an_empty_list_returns_0_without_connecting(
    configured: LocalSMTPServer,
) -> None:
    assert mail.get_connection().send_messages([]) == 0
    assert configured.connections == 0


def test_messages_without_recipients_are_not_sent_or_counted(
    configured: LocalSMTPServer,
) -> None:
    nobody = mail.EmailMessage("x", "b", "f@example.com", [])
    somebody = mail.EmailMessage("y", "b", "f@example.com", ["t@example.org"])
    assert mail.get_connection().send_messages([nobody, somebody]) == 1
    assert nobody.send() == 0
    assert [parsed(m)["Subject"] for m in configured.messages] == ["y"]


def test_send_messages_accepts_any_iterable(configured: LocalSMTPServer) -> None:
    generated = (
        mail.EmailMessage(f"g{i}", "b", "f@example.com", ["t@example.org"]) for i in range(2)
    )
    assert mail.get_connection().send_messages(generated) == 2
    assert len(configured.messages) == 2


def test_send_mass_mail_uses_one_connection(configured: LocalSMTPServer) -> None:
    data = (
        ("One", "b1", "f@example.com", ["a@example.org"]),
        ("Two", "b2", None, ["b@example.org", "c@example.org"]),
    )
    assert mail.send_mass_mail(data) == 2
    assert [m.recipients for m in configured.messages] == [
        ("a@example.org",),
        ("b@example.org", "c@example.org"),
    ]
    assert configured.connections == 1


@override_settings(EMAIL_SUBJECT_PREFIX="[Shop] ")
def test_mail_admins_and_mail_managers(configured: LocalSMTPServer) -> None:
    mail.mail_admins("Disk full", "80%", html_message="<b>80%</b>")
    mail.mail_managers("New order", "#7")
    admins, managers = configured.messages
    assert admins.sender == "errors@example.com"
    assert admins.recipients == ("ops@example.com",)
    assert parsed(admins)["Subject"] == "[Shop] Disk full"
    assert parsed(admins).get_body(("html",)).get_content().strip() == "<b>80%</b>"
    assert managers.recipients == ("sales@example.com",)


# -- connections --------------------------------------------------------------------------


def test_open_and_close_reuse_one_connection_across_sends(configured: LocalSMTPServer) -> None:
    connection = mail.get_connection()
    assert connection.open() is True
    assert connection.open() is False
    for i in range(2):
        message = mail.EmailMessage(f"s{i}", "b", "f@example.com", ["t@example.org"])
        assert connection.send_messages([message]) == 1
    connection.close()
    connection.close()  # closing twice is fine
    assert len(configured.messages) == 2
    assert configured.connections == 1


def test_context_manager_opens_and_closes(configured: LocalSMTPServer) -> None:
    with mail.get_connection() as connection:
        mail.EmailMessage(
            "a", "b", "f@example.com", ["t@example.org"], connection=connection
        ).send()
        mail.EmailMessage(
            "c", "d", "f@example.com", ["t@example.org"], connection=connection
        ).send()
    assert connection.connection is None
    assert configured.connections == 1
    assert len(configured.messages) == 2


def test_without_open_each_call_opens_and_closes_its_own_connection(
    configured: LocalSMTPServer,
) -> None:
    connection = mail.get_connection()
    for _ in range(2):
        connection.send_messages([mail.EmailMessage("a", "b", "f@example.com", ["t@example.org"])])
    assert connection.connection is None
    assert configured.connections == 2


# -- message features ---------------------------------------------------------------------


def test_cc_bcc_reply_to_and_extra_headers(configured: LocalSMTPServer) -> None:
    message = mail.EmailMessage(
        "Subject",
        "Body",
        "from@example.com",
        ["to@example.org"],
        bcc=["hidden@example.org"],
        cc=["copy@example.org"],
        reply_to=["replies@example.com"],
        headers={"X-Campaign": "spring", "Message-ID": "<fixed.1@example.com>"},
    )
    assert message.send() == 1
    [received] = configured.messages
    assert received.recipients == ("to@example.org", "copy@example.org", "hidden@example.org")
    headers = parsed(received)
    assert headers["Cc"] == "copy@example.org"
    assert headers["Reply-To"] == "replies@example.com"
    assert headers["X-Campaign"] == "spring"
    assert headers["Message-ID"] == "<fixed.1@example.com>"
    assert b"hidden@example.org" not in received.content


def test_bcc_only_message_is_sent_to_the_bcc_recipients(configured: LocalSMTPServer) -> None:
    assert mail.EmailMessage("s", "b", "f@example.com", bcc=["only@example.org"]).send() == 1
    [received] = configured.messages
    assert received.recipients == ("only@example.org",)
    assert b"only@example.org" not in received.content


def test_from_header_may_differ_from_the_envelope_sender(configured: LocalSMTPServer) -> None:
    message = mail.EmailMessage(
        "s",
        "b",
        "bounces@example.com",
        ["t@example.org"],
        headers={"From": "Team <team@example.com>"},
    )
    message.send()
    [received] = configured.messages
    assert received.sender == "bounces@example.com"
    assert parsed(received)["From"] == "Team <team@example.com>"


def test_html_alternative_attachments_and_inline_image(
    configured: LocalSMTPServer, tmp_path: Path
) -> None:
    message = mail.EmailMultiAlternatives(
        "Report", "plain text", "f@example.com", ["t@example.org"]
    )
    message.attach_alternative('<p>html <img src="cid:logo"></p>', "text/html")
    message.attach("data.csv", "a,b\n1,2\n", "text/csv")
    report = tmp_path / "report.bin"
    report.write_bytes(bytes(range(256)))
    message.attach_file(str(report))
    image = MIMEImage(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "gif")
    image.add_header("Content-ID", "<logo>")
    image.add_header("Content-Disposition", "inline", filename="logo.gif")
    message.attach(image)
    message.send()
    received = parsed(configured.messages[0])
    assert received.get_body(("plain",)).get_content().strip() == "plain text"
    assert "html" in received.get_body(("html",)).get_content()
    found = {part.get_filename(): part for part in received.walk() if part.get_filename()}
    assert found["data.csv"].get_content().replace("\r\n", "\n") == "a,b\n1,2\n"
    assert found["report.bin"].get_content() == bytes(range(256))
    assert found["logo.gif"]["Content-ID"] == "<logo>"
    assert found["logo.gif"].get_content_disposition() == "inline"


def test_lazy_translation_strings(configured: LocalSMTPServer) -> None:
    mail.send_mail(
        gettext_lazy("Lazy subject"),
        gettext_lazy("Lazy body"),
        gettext_lazy("lazy@example.com"),
        [gettext_lazy("to@example.org")],
    )
    [received] = configured.messages
    assert received.sender == "lazy@example.com"
    assert parsed(received)["Subject"] == "Lazy subject"


def test_idn_domains_are_encoded_for_the_smtp_commands(configured: LocalSMTPServer) -> None:
    mail.send_mail("IDN", "b", "from@bücher.example", ["to@exämple.org"])
    [received] = configured.messages
    assert received.sender == "from@xn--bcher-kva.example"
    assert received.recipients == ("to@xn--exmple-cua.org",)
    assert received.content.isascii()


@pytest.mark.parametrize(
    "address", ["to@example.org\nBcc: victim@example.org", "not an address <@>", "a@b.org, c@d.org"]
)
def test_invalid_addresses_raise_value_error_even_when_silent(
    configured: LocalSMTPServer, address: str
) -> None:
    message = mail.EmailMessage("s", "b", "f@example.com", [address])
    with pytest.raises(ValueError):  # noqa: PT011 - Django documents a plain ValueError
        mail.get_connection(fail_silently=True).send_messages([message])
    assert configured.messages == []


def test_crlf_on_the_wire_and_long_lines_encoded(configured: LocalSMTPServer) -> None:
    long_line = "word " * 400
    mail.send_mail("Long", f"first\n{long_line}\nlast\n", "f@example.com", ["t@example.org"])
    [received] = configured.messages
    lines = received.content.split(b"\r\n")
    assert b"\n" not in b"".join(lines)
    assert max(map(len, lines)) <= 998
    assert long_line.strip() in parsed(received).get_content()


# -- failures and fail_silently -----------------------------------------------------------


def test_refused_recipients_raise_smtp_exception(configured: LocalSMTPServer) -> None:
    configured.script("RCPT", "550 5.1.1 No such user", times=None)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        mail.send_mail("s", "b", "f@example.com", ["gone@example.org"])
    assert "gone@example.org" in caught.value.recipients
    assert configured.messages == []


def test_fail_silently_returns_0_for_a_refused_message(configured: LocalSMTPServer) -> None:
    configured.script("RCPT", "550 5.1.1 No such user", times=None)
    assert mail.send_mail("s", "b", "f@example.com", ["gone@example.org"], fail_silently=True) == 0


def test_fail_silently_goes_on_with_the_next_message(configured: LocalSMTPServer) -> None:
    configured.script("RCPT", "550 5.1.1 No such user", recipient="gone@example.org", times=None)
    messages = [
        mail.EmailMessage("bad", "b", "f@example.com", ["gone@example.org"]),
        mail.EmailMessage("good", "b", "f@example.com", ["ok@example.org"]),
    ]
    assert mail.get_connection(fail_silently=True).send_messages(messages) == 1
    assert [parsed(m)["Subject"] for m in configured.messages] == ["good"]


def test_no_server_raises_oserror_or_returns_0_when_silent(backend: str) -> None:
    with override_settings(
        EMAIL_BACKEND=backend,
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=free_port(),
        RELIABLE_SMTP_RETRY=RetryPolicy(attempts=1),
    ):
        with pytest.raises(OSError):  # noqa: PT011 - Django raises ConnectionRefusedError
            mail.send_mail("s", "b", "f@example.com", ["t@example.org"])
        silent = mail.send_mail("s", "b", "f@example.com", ["t@example.org"], fail_silently=True)
        assert silent == 0


def test_email_timeout_bounds_a_hanging_server(configured: LocalSMTPServer) -> None:
    configured.script("MAIL", hang=True, times=None)
    with override_settings(EMAIL_TIMEOUT=0.3, RELIABLE_SMTP_RETRY=RetryPolicy(attempts=1)):
        assert mail.get_connection().timeout == 0.3
        with pytest.raises(OSError):  # noqa: PT011 - socket timeout / SMTPTimeoutError
            mail.send_mail("s", "b", "f@example.com", ["t@example.org"])
    assert configured.messages == []


# -- settings -----------------------------------------------------------------------------


def test_use_tls_and_use_ssl_are_mutually_exclusive(backend: str) -> None:
    with (
        override_settings(EMAIL_BACKEND=backend, EMAIL_USE_TLS=True, EMAIL_USE_SSL=True),
        pytest.raises(ValueError, match="mutually exclusive"),
    ):
        mail.get_connection()
    with (
        override_settings(EMAIL_BACKEND=backend),
        pytest.raises(ValueError, match="mutually exclusive"),
    ):
        mail.get_connection(use_tls=True, use_ssl=True)


def test_constructor_keywords_override_settings(configured: LocalSMTPServer) -> None:
    with override_settings(
        EMAIL_HOST="mail.invalid",
        EMAIL_PORT=1,
        EMAIL_HOST_USER="settings-user",
        EMAIL_TIMEOUT=5,
        EMAIL_SSL_CERTFILE="/settings/cert.pem",
        EMAIL_SSL_KEYFILE="/settings/key.pem",
    ):
        connection = mail.get_connection(
            host="127.0.0.1",
            port=configured.port,
            username="",
            timeout=7,
            ssl_certfile="/kw/cert.pem",
            ssl_keyfile="/kw/key.pem",
        )
        assert (connection.host, connection.port, connection.username) == (
            "127.0.0.1",
            configured.port,
            "",
        )
        assert (connection.timeout, connection.ssl_certfile, connection.ssl_keyfile) == (
            7,
            "/kw/cert.pem",
            "/kw/key.pem",
        )
        plain = mail.get_connection()
        assert (plain.host, plain.port, plain.username, plain.timeout) == (
            "mail.invalid",
            1,
            "settings-user",
            5,
        )
        assert (plain.ssl_certfile, plain.ssl_keyfile) == (
            "/settings/cert.pem",
            "/settings/key.pem",
        )
        message = mail.EmailMessage("kw", "b", "f@example.com", ["t@example.org"])
        assert connection.send_messages([message]) == 1
    assert len(configured.messages) == 1


def test_ssl_certfile_and_keyfile_are_loaded_into_the_tls_context(
    backend: str, tmp_path: Path
) -> None:
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("client.example")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    with override_settings(
        EMAIL_BACKEND=backend, EMAIL_SSL_CERTFILE=str(cert_file), EMAIL_SSL_KEYFILE=str(key_file)
    ):
        assert mail.get_connection().ssl_context is not None
    with (
        override_settings(EMAIL_BACKEND=backend, EMAIL_SSL_CERTFILE=str(tmp_path / "missing.pem")),
        pytest.raises(OSError),  # noqa: PT011 - FileNotFoundError from load_cert_chain
    ):
        _ = mail.get_connection().ssl_context


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_tls_and_auth_with_settings(
    backend: str, tls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalSMTPServer(tls=tls, auth={USER: PASSWORD}) as server:
        # Both backends trust the system store; point it at the server's test CA.
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
        with override_settings(
            EMAIL_BACKEND=backend,
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=server.port,
            EMAIL_USE_TLS=tls == "starttls",
            EMAIL_USE_SSL=tls == "implicit",
            EMAIL_HOST_USER=USER,
            EMAIL_HOST_PASSWORD=PASSWORD,
            RELIABLE_SMTP_RETRY=RetryPolicy().without_waits(),
        ):
            assert mail.send_mail("tls", "b", "f@example.com", ["t@example.org"]) == 1
            with override_settings(EMAIL_HOST_USER="", EMAIL_HOST_PASSWORD=""):
                # send_mail's auth_user/auth_password stand in for the settings.
                sent = mail.send_mail(
                    "auth", "b", "f@example.com", ["t@example.org"],
                    auth_user=USER, auth_password=PASSWORD,
                )  # fmt: skip
                assert sent == 1
            with override_settings(EMAIL_HOST_PASSWORD="wrong"):
                with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
                    mail.send_mail("tls", "b", "f@example.com", ["t@example.org"])
                assert caught.value.smtp_code == 535
                assert "wrong" not in str(caught.value)
        assert len(server.messages) == 2


def test_subclassing_the_backend(backend: str, smtp: LocalSMTPServer) -> None:
    subclass = {
        DJANGO_SMTP: "django_project.mailapp.backends.TaggingDjangoBackend",
        RELIABLE: "django_project.mailapp.backends.TaggingReliableBackend",
    }[backend]
    with override_settings(EMAIL_BACKEND=subclass, EMAIL_HOST="127.0.0.1", EMAIL_PORT=smtp.port):
        assert mail.send_mail("sub", "b", "f@example.com", ["t@example.org"]) == 1
    assert parsed(smtp.messages[0])["X-Tenant"] == "acme"


# -- what reliable-smtp adds ----------------------------------------------------------------


@pytest.fixture
def reliable(smtp: LocalSMTPServer) -> Iterator[LocalSMTPServer]:
    with override_settings(
        EMAIL_BACKEND=RELIABLE,
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=smtp.port,
        RELIABLE_SMTP_RETRY=RetryPolicy().without_waits(),
    ):
        yield smtp


def test_each_message_carries_its_send_result_and_the_signal_fires(
    reliable: LocalSMTPServer,
) -> None:
    seen: list[dict[str, Any]] = []

    def receiver(sender: type, **kwargs: Any) -> None:
        seen.append({"sender": sender, **kwargs})

    message_sent.connect(receiver)
    try:
        message = mail.EmailMessage(
            "r",
            "b",
            "f@example.com",
            ["a@example.org", "b@example.org"],
            headers={"Message-ID": "<result.1@example.com>"},
        )
        assert message.send() == 1
    finally:
        message_sent.disconnect(receiver)
    result = message.reliable_smtp_result
    assert isinstance(result, SendResult)
    assert result.accepted == ("a@example.org", "b@example.org")
    assert result.recipients["a@example.org"].reply is not None
    assert result.recipients["a@example.org"].reply.code == 250
    assert result.message_id == "result.1@example.com"
    [event] = seen
    assert event["sender"] is EmailBackend
    assert event["message"] is message
    assert event["result"] is result
    assert event["error"] is None


def test_transient_failures_are_retried_without_duplicates(reliable: LocalSMTPServer) -> None:
    reliable.script("RCPT", "451 4.3.0 try again", recipient="b@example.org")
    message = mail.EmailMessage("retry", "b", "f@example.com", ["a@example.org", "b@example.org"])
    assert message.send() == 1
    assert reliable.deliveries_to("a@example.org") == 1
    assert reliable.deliveries_to("b@example.org") == 1
    assert len(message.reliable_smtp_result.attempts) == 2


def test_partial_refusal_raises_a_classified_error_with_the_result(
    reliable: LocalSMTPServer,
) -> None:
    reliable.script("RCPT", "550 5.1.1 No such user", recipient="gone@example.org", times=None)
    message = mail.EmailMessage("p", "b", "f@example.com", ["ok@example.org", "gone@example.org"])
    with pytest.raises(PermanentError) as caught:
        message.send()
    error = caught.value
    assert isinstance(error, smtplib.SMTPException)
    assert isinstance(error, DeliveryError)
    assert error.result is not None
    assert error.result.accepted == ("ok@example.org",)
    assert error.result.rejected == ("gone@example.org",)
    assert message.reliable_smtp_result is error.result
    assert reliable.deliveries_to("ok@example.org") == 1


def test_errors_keep_their_class_facts_and_survive_pickling(reliable: LocalSMTPServer) -> None:
    reliable.script("MAIL", "451 4.7.1 greylisted", times=None)
    with (
        override_settings(RELIABLE_SMTP_RETRY=RetryPolicy(attempts=2).without_waits()),
        pytest.raises(TransientError) as caught,
    ):
        mail.send_mail("s", "b", "f@example.com", ["t@example.org"])
    error = caught.value
    assert isinstance(error, smtplib.SMTPSenderRefused)
    assert (error.code, error.enhanced_code, error.smtp_code) == (451, "4.7.1", 451)
    assert error.sender == "f@example.com"
    # The re-typed class pickles by name, result included, so task queues can carry it.
    assert error.result is not None
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert copy.code == 451
    assert copy.sender == "f@example.com"
    assert copy.result == error.result
    with pytest.raises(AttributeError, match="immutable"):
        error.sender = "other@example.com"


def test_reliable_settings_keyword_beats_django_setting_beats_environment(
    reliable: LocalSMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELIABLE_SMTP_MAX_CONNECTIONS", "3")
    monkeypatch.setenv("RELIABLE_SMTP_RETRY_ATTEMPTS", "4")
    monkeypatch.setenv("RELIABLE_SMTP_HOST", "elsewhere.invalid")  # never redirects Django's mail
    with override_settings(RELIABLE_SMTP_MAX_CONNECTIONS=2):
        assert mail.get_connection().options.max_connections == 2
        assert mail.get_connection(max_connections=5).options.max_connections == 5
        assert mail.get_connection().options.retry_attempts == 4
        assert mail.get_connection().options.host == "127.0.0.1"
    assert mail.get_connection().options.max_connections == 3
    with (
        override_settings(RELIABLE_SMTP_RATE_PER_SECOND=0),
        pytest.raises(ConfigurationError, match="RELIABLE_SMTP_RATE_PER_SECOND"),
    ):
        mail.get_connection()


def test_a_port_that_contradicts_the_tls_setting_is_refused_with_the_fix(
    reliable: LocalSMTPServer,
) -> None:
    # Django's backend would try STARTTLS on 465 and fail at the first send.
    with (
        override_settings(EMAIL_PORT=465, EMAIL_USE_TLS=True),
        pytest.raises(ConfigurationError, match="implicit"),
    ):
        mail.get_connection()


def test_recipient_policy_setting(reliable: LocalSMTPServer) -> None:
    from reliable_smtp import RecipientPolicy

    with (
        override_settings(
            RELIABLE_SMTP_RECIPIENT_POLICY=RecipientPolicy(denied_domains={"blocked.example"})
        ),
        pytest.raises(ValueError, match=r"blocked\.example"),
    ):
        mail.send_mail("s", "b", "f@example.com", ["x@blocked.example"], fail_silently=True)
    assert reliable.messages == []


def test_shared_mailer_keeps_one_connection_warm_across_send_mail_calls(
    reliable: LocalSMTPServer,
) -> None:
    other = LocalSMTPServer().start()
    try:
        with override_settings(RELIABLE_SMTP_SHARED=True):
            for to in ("a@example.org", "b@example.org", "c@example.org"):
                assert mail.send_mail("s", "b", "f@example.com", [to]) == 1
            assert mail.send_mail("s", "b", "f@example.com", ["d@example.org"]) == 1
            with override_settings(EMAIL_PORT=other.port):  # another configuration
                assert mail.send_mail("s", "b", "f@example.com", ["e@example.org"]) == 1
        # Four send_mail() calls, one connection, still open (no QUIT yet).
        assert (reliable.connections, len(reliable.messages)) == (1, 4)
        assert list(reliable.commands_named("QUIT")) == []
        assert len(other.messages) == 1
        close_shared_connections()
        assert len(list(reliable.commands_named("QUIT"))) == 1
        assert len(list(other.commands_named("QUIT"))) == 1
        # Without the setting, each call has its own connection, as with Django's backend.
        mail.send_mail("s", "b", "f@example.com", ["f@example.org"])
        assert reliable.connections == 2
    finally:
        close_shared_connections()
        other.stop()


@pytest.mark.skipif(not DJANGO_6_1, reason="MAILERS is Django 6.1+")
@pytest.mark.parametrize("backend_path", [DJANGO_SMTP, RELIABLE])
def test_mailers_alias(smtp: LocalSMTPServer, backend_path: str) -> None:
    mailers = {
        "default": {"BACKEND": backend_path, "OPTIONS": {"host": "127.0.0.1", "port": smtp.port}},
        "bad": {"BACKEND": backend_path, "OPTIONS": {"port": smtp.port}},
        "typo": {"BACKEND": backend_path, "OPTIONS": {"host": "127.0.0.1", "hots": 1}},
    }
    from django.core.mail import InvalidMailer

    with override_settings(MAILERS=mailers, EMAIL_HOST="mail.invalid"):
        assert (
            mail.send_mail("alias", "b", "f@example.com", ["t@example.org"], using="default") == 1
        )
        with pytest.raises(InvalidMailer, match="host"):
            mail.mailers["bad"]
        with pytest.raises(InvalidMailer, match="hots"):
            mail.mailers["typo"]
    assert len(smtp.messages) == 1


@pytest.mark.skipif(not DJANGO_6_1, reason="MAILERS is Django 6.1+")
def test_mailers_options_carry_reliable_settings(smtp: LocalSMTPServer) -> None:
    options = {"host": "127.0.0.1", "port": smtp.port, "max_connections": 2, "retry_attempts": 1}
    with override_settings(MAILERS={"default": {"BACKEND": RELIABLE, "OPTIONS": options}}):
        backend = mail.mailers.default
        assert (backend.options.max_connections, backend.options.retry_attempts) == (2, 1)


def test_locmem_and_the_pytest_plugin_fixtures_coexist(
    smtp_server: LocalSMTPServer, smtp_outbox: Any, outbox_mailer: Any
) -> None:
    from reliable_smtp import Message

    # Django code under test: the locmem backend, as Django's test runner sets it.
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        mail.outbox = []
        mail.send_mail("Django", "b", "f@example.com", ["t@example.org"])
        assert [m.subject for m in mail.outbox] == ["Django"]
    # Code that uses a Mailer directly: the plugin's outbox.
    outbox_mailer.send(Message(sender="f@example.com", to=["t@example.org"], subject="Direct"))
    smtp_outbox.assert_sent(subject="Direct")
    # And Django's mail over real SMTP through our backend, to the plugin's server.
    with override_settings(
        EMAIL_BACKEND=RELIABLE, EMAIL_HOST="127.0.0.1", EMAIL_PORT=smtp_server.port
    ):
        mail.send_mail("Real", "b", "f@example.com", ["t@example.org"])
    assert [parsed(m)["Subject"] for m in smtp_server.messages] == ["Real"]
    assert [m.subject for m in mail.outbox] == ["Django"]


# -- the project, under Django's own test runner -----------------------------------------


def test_project_tests_pass_under_django_test_runner(smtp: LocalSMTPServer) -> None:
    tests_dir = Path(__file__).resolve().parent
    done = subprocess.run(
        [sys.executable, "-m", "django", "test", "django_project.mailapp", "-v", "2"],
        cwd=tests_dir,
        env={
            **__import__("os").environ,
            "DJANGO_SETTINGS_MODULE": "django_project.settings",
            "MAILAPP_SMTP_PORT": str(smtp.port),
            "PYTHONPATH": str(tests_dir),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Ran 2 tests" in done.stderr
    [received] = smtp.messages  # the locmem test sent nothing over SMTP
    assert received.recipients == ("carol@example.org",)
