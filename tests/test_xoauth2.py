"""XOAUTH2 against a local server that implements it, error challenge included."""

from __future__ import annotations

import asyncio
import base64
import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from reliable_smtp import (
    AuthOrConfigError,
    ConfigurationError,
    Mailer,
    MailerSettings,
    Message,
    SMTPTransport,
)
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import DeliveryError
from reliable_smtp._replies import Phase
from reliable_smtp._transports._login import _error_challenge
from reliable_smtp.testing import LocalSMTPServer

ENVELOPE = Envelope.build("app@example.com", ["b@example.org"])
CONTENT = b"Subject: oauth\r\n\r\nbody\r\n"


def transport(
    server: LocalSMTPServer, provider: object, tls: str = "starttls", **options: Any
) -> SMTPTransport:
    return SMTPTransport(
        "127.0.0.1",
        server.port,
        tls=tls,
        ssl_context=server.client_ssl_context(),
        username="app@example.com",
        oauth_token_provider=provider,  # type: ignore[arg-type]
        **options,
    )


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_async_provider_logs_in(tls: str) -> None:
    async def provider() -> str:
        return "good-token"

    with LocalSMTPServer(tls=tls, oauth_tokens={"app@example.com": "good-token"}) as server:  # type: ignore[arg-type]
        async with transport(server, provider, tls) as smtp:
            report = await smtp.deliver(ENVELOPE, CONTENT)
        assert report.recipients["b@example.org"].accepted
        assert server.oauth_tokens_seen == ["good-token"]


async def test_expired_token_is_refreshed_once() -> None:
    calls: list[bool] = []

    def provider(force_refresh: bool = False) -> str:  # sync, like MSAL; run off the loop
        calls.append(force_refresh)
        return "fresh-token" if force_refresh else "expired-token"

    with LocalSMTPServer(tls="starttls", oauth_tokens={"app@example.com": "fresh-token"}) as server:
        async with transport(server, provider) as smtp:
            report = await smtp.deliver(ENVELOPE, CONTENT)
        assert report.recipients["b@example.org"].accepted
        assert calls == [False, True]
        assert server.oauth_tokens_seen == ["expired-token", "fresh-token"]
        assert server.auth_attempts == 2


async def test_a_second_refusal_is_final_never_a_login_loop() -> None:
    tokens = iter(["bad-1", "bad-2", "bad-3"])

    async def provider() -> str:
        return next(tokens)

    with LocalSMTPServer(tls="starttls", oauth_tokens={"app@example.com": "good"}) as server:
        smtp = transport(server, provider)
        with pytest.raises(AuthOrConfigError) as caught:
            await smtp.deliver(ENVELOPE, CONTENT)
        await smtp.aclose()
        assert server.auth_attempts == 2
        assert server.messages == []
    assert caught.value.code == 535
    assert caught.value.phase is Phase.AUTH
    assert not caught.value.retryable


def test_mailer_does_not_retry_a_refused_token_and_never_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with LocalSMTPServer(tls="starttls", oauth_tokens={"app@example.com": "good"}) as server:
        with (
            Mailer(transport(server, lambda: "Secret-Bearer-Token-9")) as mailer,
            pytest.raises(AuthOrConfigError) as caught,
        ):
            mailer.send(Message(sender="app@example.com", to=["b@example.org"]))
        assert server.auth_attempts == 2  # one refresh, then stop; no retry by the mailer
    assert caught.value.result is not None
    assert len(caught.value.result.attempts) == 1
    text = "\n".join(r.getMessage() for r in caplog.records) + str(caught.value)
    assert "Secret-Bearer-Token-9" not in text
    assert "AUTH XOAUTH2 <credentials redacted>" in text


async def test_server_without_xoauth2_is_a_config_error() -> None:
    with LocalSMTPServer(tls="implicit", auth={"app@example.com": "pw"}) as server:
        # aiosmtpd advertises what it has; hide XOAUTH2 by scripting the EHLO reply.
        server.script("EHLO", "250-localhost\r\n250 AUTH PLAIN LOGIN")
        smtp = transport(server, lambda: "t", tls="implicit")
        with pytest.raises(AuthOrConfigError, match="XOAUTH2"):
            await smtp.deliver(ENVELOPE, CONTENT)
        await smtp.aclose()


async def test_failing_provider_is_explained() -> None:
    def provider() -> str:
        raise RuntimeError("invalid_client")

    with LocalSMTPServer(tls="starttls", oauth_tokens={"app@example.com": "t"}) as server:
        smtp = transport(server, provider)
        with pytest.raises(AuthOrConfigError) as caught:
            await smtp.deliver(ENVELOPE, CONTENT)
        await smtp.aclose()
    assert "invalid_client" in str(caught.value)
    assert "test_failing_provider_is_explained.<locals>.provider failed" in str(caught.value)
    assert caught.value.setting == "oauth_token_provider"
    assert isinstance(caught.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    "options",
    [
        {"oauth_token_provider": lambda: "t"},  # no username
        {"username": "a@example.com", "password": "pw", "oauth_token_provider": lambda: "t"},
        {"username": "a@example.com", "oauth_token_provider": "not callable"},
    ],
)
def test_bad_oauth_configuration(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        SMTPTransport("smtp.example.com", **options)  # type: ignore[arg-type]


def test_provider_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalSMTPServer(tls="implicit", oauth_tokens={"app@example.com": "tok"}) as server:
        monkeypatch.setenv(
            "RELIABLE_SMTP_URL", f"smtps://app%40example.com@127.0.0.1:{server.port}"
        )
        monkeypatch.setenv("RELIABLE_SMTP_CA_FILE", str(server.ca_file))
        with Mailer.from_env(oauth_token_provider=lambda: "tok", _env_file=None) as mailer:
            assert mailer.send(Message(sender="app@example.com", to=["b@example.org"])).ok


# -- issue 18: the final refusal, a bounded provider ---------------------------------------


@pytest.mark.parametrize("takes_refresh", [True, False], ids=["force_refresh", "no-parameter"])
async def test_a_refreshed_token_refused_again_gets_oauth2_advice(
    takes_refresh: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    calls: list[bool] = []

    def with_refresh(force_refresh: bool = False) -> str:
        calls.append(force_refresh)
        return "Scope-Less-Token-2" if force_refresh else "Scope-Less-Token-1"

    def without_refresh() -> str:
        calls.append(False)
        return "Scope-Less-Token-1"

    provider = with_refresh if takes_refresh else without_refresh
    with LocalSMTPServer(tls="starttls", oauth_tokens={"app@example.com": "good"}) as server:
        smtp = transport(server, provider)
        with pytest.raises(AuthOrConfigError) as caught:
            await smtp.deliver(ENVELOPE, CONTENT)
        await smtp.aclose()
        assert server.auth_attempts == 2
        assert server.messages == []
    error = caught.value
    text = str(error)
    assert error.setting == "oauth_token_provider"
    assert (error.code, error.enhanced_code, error.phase) == (535, "5.7.8", Phase.AUTH)
    assert error.text is not None
    assert error.text in text  # the server's own words
    assert "OAuth2 access token was refused twice" in text
    assert "https://mail.google.com/" in text  # Gmail's scope
    assert "SMTP.Send" in text  # Microsoft 365's
    assert "'app@example.com' is the account the token was issued for" in text
    assert "SMTP AUTH is enabled for the mailbox" in text
    # The error challenge (334 + JSON, as Google sends it) says which scope is missing.
    assert "the server asks for a token with the scope https://mail.google.com/" in text
    assert '334 {"status": "401"' in caplog.text
    assert "password" not in text.lower()
    assert "Scope-Less-Token" not in text + repr(error.__dict__) + caplog.text
    if takes_refresh:
        assert calls == [False, True]
        assert "before and after a forced refresh" in text
    else:
        assert "takes no force_refresh parameter" in text
        assert "without_refresh" in text


@pytest.mark.parametrize("code", ["535 5.7.8", "454 4.7.0"])
@pytest.mark.parametrize("echo", ["token", "sasl"])
async def test_a_server_echoing_the_token_does_not_put_it_in_the_error(
    echo: str, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = ["Echoed-Token-One", "Echoed-Token-Two"]

    def sasl(token: str) -> str:
        raw = f"user=app@example.com\x01auth=Bearer {token}\x01\x01".encode()
        return base64.b64encode(raw).decode()

    with LocalSMTPServer(tls="starttls", oauth_tokens={"app@example.com": "good"}) as server:
        for token in tokens:
            said = token if echo == "token" else sasl(token)
            server.script("AUTH", f"{code} Invalid credentials: {said}")
        it = iter(tokens)
        smtp = transport(server, lambda force_refresh=False: next(it))
        # 535: refused twice, our error; 454: a temporary failure, the generic rules.
        with pytest.raises(DeliveryError) as caught:
            await smtp.deliver(ENVELOPE, CONTENT)
        await smtp.aclose()
    text = str(caught.value) + "\n".join(r.getMessage() for r in caplog.records)
    assert "********" in str(caught.value)  # the one redaction marker (reliable_smtp._redaction)
    assert "asks for a token with the scope" not in text  # no challenge, no claim
    for token in tokens:
        assert token not in text
        assert sasl(token) not in text


async def test_a_hung_sync_provider_is_abandoned_after_the_timeout() -> None:
    release = threading.Event()
    threads: list[threading.Thread] = []

    def hung_provider(force_refresh: bool = False) -> str:
        threads.append(threading.current_thread())
        release.wait(5.0)  # the old code waited this out, then logged in
        return "good"

    with LocalSMTPServer(tls="starttls", oauth_tokens={"app@example.com": "good"}) as server:
        # The connect timeout bounds the provider too, unless oauth_token_timeout is set.
        smtp = transport(server, hung_provider, connect_timeout=0.2)
        try:
            with pytest.raises(AuthOrConfigError) as caught:
                await smtp.deliver(ENVELOPE, CONTENT)
            assert not release.is_set()  # the provider was still running when we gave up
        finally:
            release.set()
            for thread in threads:
                thread.join(timeout=5)
            await smtp.aclose()
        assert server.auth_attempts == 0
        assert server.messages == []
    error = caught.value
    assert error.setting == "oauth_token_provider"
    assert error.phase is Phase.AUTH
    assert "hung_provider" in str(error)  # names the provider
    assert "within 0.2 s" in str(error)
    assert "RELIABLE_SMTP_OAUTH_TOKEN_TIMEOUT" in str(error)
    assert smtp.oauth_token_timeout == 0.2


async def test_a_hung_async_provider_is_cancelled_after_the_timeout() -> None:
    cancelled = asyncio.Event()

    async def slow_token_endpoint() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    with LocalSMTPServer(tls="starttls", oauth_tokens={"app@example.com": "good"}) as server:
        smtp = transport(server, slow_token_endpoint, oauth_token_timeout=0.1)
        with pytest.raises(AuthOrConfigError, match="slow_token_endpoint") as caught:
            await smtp.deliver(ENVELOPE, CONTENT)
        await smtp.aclose()
    await asyncio.wait_for(cancelled.wait(), timeout=5)
    assert caught.value.setting == "oauth_token_provider"
    assert "within 0.1 s" in str(caught.value)


def test_a_hung_provider_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    # asyncio.to_thread would park the provider in the loop's executor, and both
    # asyncio.run() and interpreter exit wait for those threads: the process would hang.
    script = tmp_path / "hang.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, time
            from reliable_smtp import AuthOrConfigError, SMTPTransport
            from reliable_smtp._envelope import Envelope
            from reliable_smtp.testing import LocalSMTPServer

            def provider(force_refresh=False):
                time.sleep(3600)
                return "never"

            async def main(server):
                smtp = SMTPTransport("127.0.0.1", server.port,
                                     ssl_context=server.client_ssl_context(),
                                     username="app@example.com", oauth_token_provider=provider,
                                     oauth_token_timeout=0.2)
                try:
                    await smtp.deliver(Envelope.build("app@example.com", ["b@example.org"]),
                                       b"Subject: x\\r\\n\\r\\nbody\\r\\n")
                except AuthOrConfigError as error:
                    print("gave up:", error.setting)
                await smtp.aclose()

            with LocalSMTPServer(tls="starttls", oauth_tokens={"app@example.com": "t"}) as server:
                asyncio.run(main(server))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "gave up: oauth_token_provider" in done.stdout


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), "10"])
def test_oauth_token_timeout_must_be_a_positive_number(value: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SMTPTransport(
            "smtp.example.com",
            username="a@example.com",
            oauth_token_provider=lambda: "t",
            oauth_token_timeout=value,  # type: ignore[arg-type]
        )
    assert caught.value.setting == "oauth_token_timeout"


def test_oauth_token_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELIABLE_SMTP_URL", "smtp://app%40example.com@smtp.example.com:587")
    monkeypatch.setenv("RELIABLE_SMTP_OAUTH_TOKEN_TIMEOUT", "7.5")
    settings = MailerSettings(_env_file=None)
    built = settings.build_transport(oauth_token_provider=lambda: "t")
    assert isinstance(built, SMTPTransport)
    assert built.oauth_token_timeout == 7.5
    monkeypatch.delenv("RELIABLE_SMTP_OAUTH_TOKEN_TIMEOUT")
    monkeypatch.setenv("RELIABLE_SMTP_CONNECT_TIMEOUT", "12")
    default = MailerSettings(_env_file=None).build_transport(oauth_token_provider=lambda: "t")
    assert isinstance(default, SMTPTransport)
    assert default.oauth_token_timeout == 12.0  # the connect timeout


@pytest.mark.parametrize(
    ("challenge", "expected"),
    [
        (
            "eyJzdGF0dXMiOiI0MDAiLCJzY29wZSI6Imh0dHBzOi8vbWFpbC5nb29nbGUuY29tLyJ9",
            {"status": "400", "scope": "https://mail.google.com/"},
        ),
        ("", {}),
        ("not base64!", {}),
        ("WzEsMl0=", {}),  # JSON, but a list
        ("//79", {}),  # bytes that are not UTF-8
        (base64.b64encode(b"[" * 5000).decode(), {}),  # nested deeper than json allows
    ],
)
def test_error_challenges_are_read_or_ignored(challenge: str, expected: dict[str, str]) -> None:
    assert _error_challenge(challenge) == expected
