"""XOAUTH2 against a local server that implements it, error challenge included."""

from __future__ import annotations

import logging

import pytest

from reliable_smtp import AuthOrConfigError, ConfigurationError, Mailer, Message, SMTPTransport
from reliable_smtp.envelope import Envelope
from reliable_smtp.replies import Phase
from reliable_smtp.testing import LocalSMTPServer

ENVELOPE = Envelope.build("app@example.com", ["b@example.org"])
CONTENT = b"Subject: oauth\r\n\r\nbody\r\n"


def transport(server: LocalSMTPServer, provider: object, tls: str = "starttls") -> SMTPTransport:
    return SMTPTransport(
        "127.0.0.1",
        server.port,
        tls=tls,
        ssl_context=server.client_ssl_context(),
        username="app@example.com",
        oauth_token_provider=provider,  # type: ignore[arg-type]
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
