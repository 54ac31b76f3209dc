"""Secrets never come back out: not echoed by a server, not kept on an exception.

A server that answers ``535 5.7.8 Authentication failed for <its argument>`` puts
the client's base64 AUTH argument into the reply. Every mechanism (PLAIN, LOGIN,
XOAUTH2) is run against a :class:`LocalSMTPServer` scripted to echo everything the
client sent during AUTH; the password (or token) and every encoding of it must be
in no error text, ``str()``, ``repr()``, exception chain, log record (DEBUG
transcript included), check report or ``reliable-smtp check`` output.

A bad ``RELIABLE_SMTP_URL`` must not leave the URL (and its password) reachable
from the :class:`ConfigurationError` through ``__cause__``, ``__context__``,
``args`` or attributes.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from conftest import PASSWORD, USERNAME
from reliable_smtp import (
    AsyncMailer,
    AuthOrConfigError,
    ConfigurationError,
    MailerSettings,
    Message,
    RetryPolicy,
    SMTPTransport,
)
from reliable_smtp._diagnostics import check_connection
from reliable_smtp._redaction import SecretForms
from reliable_smtp.testing import LocalSMTPServer

TOKEN = "ya29.Zebra-token-5521-secret"
ECHO = "535 5.7.8 Authentication failed for {argument}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def wire_forms(secret: str, blob: bytes) -> list[str]:
    """The secret as typed and every encoding a server could echo back."""
    forms = [secret, quote(secret, safe=""), b64(secret.encode()), b64(blob)]
    forms += [form.rstrip("=") for form in forms]
    forms += [base64.urlsafe_b64encode(blob).decode().rstrip("=")]
    return forms


PASSWORD_FORMS = wire_forms(PASSWORD, b"\0" + USERNAME.encode() + b"\0" + PASSWORD.encode())
TOKEN_FORMS = wire_forms(TOKEN, f"user={USERNAME}\x01auth=Bearer {TOKEN}\x01\x01".encode())


def leaked(text: str, forms: list[str]) -> list[str]:
    return [form for form in forms if form in text]


def chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception reachable from it through cause and context."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__]
        pending += [arg for arg in current.args if isinstance(arg, BaseException)]
        pending += [v for v in vars(current).values() if isinstance(v, BaseException)]


def everything_said(error: BaseException) -> str:
    """Every text an exception chain carries: str, repr, args and attributes."""
    parts = []
    for current in chain(error):
        parts += [str(current), repr(current), repr(current.args)]
        parts += [repr(value) for value in vars(current).values()]
    return "\n".join(parts)


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{record.getMessage()} {record.args!r} {vars(record)!r}" for record in caplog.records
    )


@pytest.fixture
def echoing_server(mechanism: str) -> Iterator[LocalSMTPServer]:
    tokens = {USERNAME: "a-different-token"} if mechanism == "XOAUTH2" else None
    auth = None if mechanism == "XOAUTH2" else {USERNAME: PASSWORD}
    with LocalSMTPServer(
        tls="implicit", auth=auth, oauth_tokens=tokens, auth_mechanisms=[mechanism]
    ) as server:
        server.script("AUTH", ECHO, times=None)
        yield server


def transport_for(server: LocalSMTPServer, mechanism: str) -> SMTPTransport:
    options: dict[str, Any] = {"username": USERNAME}
    if mechanism == "XOAUTH2":
        options["oauth_token_provider"] = lambda: TOKEN
    else:
        options["password"] = PASSWORD
    return SMTPTransport(
        "127.0.0.1",
        server.port,
        tls="implicit",
        ssl_context=server.client_ssl_context(),
        local_hostname="client.test",
        connect_timeout=5,
        command_timeout=5,
        **options,
    )


def test_the_secret_forms_cover_every_mechanism() -> None:
    secrets = SecretForms.for_password(USERNAME, PASSWORD) | SecretForms.for_token(USERNAME, TOKEN)
    for form in PASSWORD_FORMS + TOKEN_FORMS:
        assert secrets.redact(f"x {form} y") == "x ******** y", form
    assert PASSWORD not in repr(secrets)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "XOAUTH2"])
async def test_an_echoed_auth_argument_is_in_no_error_or_log(
    echoing_server: LocalSMTPServer, mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    forms = PASSWORD_FORMS + TOKEN_FORMS
    message = Message(sender="app@example.com", to=["bob@example.org"], subject="s", text="t")
    transport = transport_for(echoing_server, mechanism)
    async with AsyncMailer(transport, retry=RetryPolicy.never()) as mailer:
        with pytest.raises(AuthOrConfigError) as caught:
            await mailer.send(message)

    error = caught.value
    assert error.code == 535
    assert "Authentication failed for ********" in str(error)
    assert leaked(everything_said(error), forms) == []
    transcript = [r for r in caplog.records if r.name == "reliable_smtp.transcript"]
    assert any("535" in r.getMessage() for r in transcript)  # the reply was logged...
    assert leaked(logged(caplog), forms) == []  # ...redacted


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_the_check_report_never_carries_an_echoed_argument(
    echoing_server: LocalSMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = MailerSettings(
        _env_file=None,
        host="127.0.0.1",
        port=echoing_server.port,
        tls="implicit",
        ca_file=echoing_server.ca_file,
        username=USERNAME,
        password=PASSWORD,
        local_hostname="client.test",
        timeout=5,
        connect_timeout=5,
    )
    report = await check_connection(settings)

    failed = report.failed
    assert failed is not None
    assert failed.name == "auth"
    assert failed.rule == "bad-credentials"
    assert failed.error is not None
    assert failed.error.startswith("535 5.7.8 Authentication failed for ********")
    text = json.dumps(report.to_dict()) + repr(report)
    assert leaked(text, PASSWORD_FORMS) == []
    assert leaked(logged(caplog), PASSWORD_FORMS) == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_reliable_smtp_check_prints_no_echoed_argument(
    echoing_server: LocalSMTPServer, as_json: bool, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELIABLE_SMTP_")}
    env.update(
        RELIABLE_SMTP_LOCAL_HOSTNAME="client.test",
        RELIABLE_SMTP_PASSWORD=PASSWORD,
        PYTHONIOENCODING="utf-8",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reliable_smtp",
            "check",
            *(["--json"] if as_json else []),
            "--host",
            "127.0.0.1",
            "--port",
            str(echoing_server.port),
            "--tls",
            "implicit",
            "--ca-file",
            str(echoing_server.ca_file),
            "--username",
            USERNAME,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode != 0
    assert "535" in done.stdout
    assert leaked(done.stdout + done.stderr, PASSWORD_FORMS) == []


# -- A6: no secret-bearing exception is kept -----------------------------------------------

SECRET_URLS = [
    f"smtp://{USERNAME}:{PASSWORD}@smtp.example.com:notaport",
    f"smtp://{USERNAME}:{PASSWORD}@smtp.example.com:587?nosuchoption=1",
    f"smtp://{USERNAME}:{PASSWORD}@smtp.example.com:587?timeout=-1",
    f"smtp://{USERNAME}:{PASSWORD}@smtp.example.com:465",  # starttls on 465
    f"smtp://{USERNAME}:{PASSWORD}@/",
    f"ftp://{USERNAME}:{PASSWORD}@smtp.example.com",
    f"smtp://{USERNAME}:pw/{PASSWORD}@smtp.example.com:587",
    f"smtp://{USERNAME}:pw#{PASSWORD}@smtp.example.com:587",
    f"smtp://{USERNAME}:pw?{PASSWORD}@smtp.example.com:587",
    f"smtp://{USERNAME}:1234/{PASSWORD}@smtp.example.com:587",
]


@pytest.mark.parametrize(
    ("where", "url"),
    [
        (where, url)
        for where in ("argument", "environment", "fallback")
        for url in SECRET_URLS
        # A fallback takes the primary's timeouts (see MailerSettings._fallback).
        if not (where == "fallback" and "timeout=" in url)
    ],
)
def test_a_bad_url_keeps_no_secret_bearing_exception(
    url: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("RELIABLE_SMTP_"):
            monkeypatch.delenv(name)
    if where == "environment":
        monkeypatch.setenv("RELIABLE_SMTP_URL", url)

    def configure() -> None:
        if where == "argument":
            MailerSettings(_env_file=None, url=url)
        elif where == "environment":
            MailerSettings(_env_file=None)
        else:
            MailerSettings(_env_file=None, host="127.0.0.1", fallback_urls=url).build_transport()

    with pytest.raises(ConfigurationError) as caught:
        configure()

    error = caught.value
    reachable = list(chain(error))
    assert reachable == [error], [type(e).__name__ for e in reachable]
    assert PASSWORD not in everything_said(error)
