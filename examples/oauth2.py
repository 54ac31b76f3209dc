"""Sending with OAuth2 access tokens (AUTH XOAUTH2) to Gmail and Microsoft 365.

Getting tokens is your OAuth library's job - google-auth for Gmail, MSAL for
Microsoft 365. reliable-smtp asks a *token provider* (any function returning an
access token, sync or async) for a token when it logs in, and, if the server
refuses that token, once more with ``force_refresh=True``. ``gmail_tokens`` and
``microsoft365_tokens`` below are such providers, written against those
libraries' APIs; ``gmail`` and ``microsoft365`` build the transports.

To run without accounts, the script hands the providers stand-ins that behave
like google-auth credentials and an MSAL application, and points the transports
at an embedded server that speaks XOAUTH2 (STARTTLS, its own test CA):

    python examples/oauth2.py
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from reliable_smtp import AuthOrConfigError, Mailer, Message, RateLimit, SMTPTransport
from reliable_smtp.testing import LocalSMTPServer

GMAIL_SCOPE = "https://mail.google.com/"
MICROSOFT365_SCOPE = "https://outlook.office.com/SMTP.Send"  # delegated: a user's mailbox


def gmail_tokens(credentials: Any, request: Any) -> Callable[..., str]:
    """A provider over google-auth ``credentials`` with the https://mail.google.com/ scope.

    For a Workspace service account with domain-wide delegation::

        from google.oauth2 import service_account
        from google.auth.transport.requests import Request
        credentials = service_account.Credentials.from_service_account_file(
            "service-account.json", scopes=[GMAIL_SCOPE], subject="app@example.com")
        provider = gmail_tokens(credentials, Request())
    """

    def access_token(force_refresh: bool = False) -> str:
        # google-auth refreshes only when asked: refresh when the token has expired, and
        # when the server refused it although it looked valid (revoked, clock skew).
        if force_refresh or not credentials.valid:
            credentials.refresh(request)
        return str(credentials.token)

    return access_token


def microsoft365_tokens(app: Any, account: Any) -> Callable[..., str]:
    """A provider over an MSAL application for a signed-in ``account`` (scope SMTP.Send).

    ::

        import msal
        app = msal.PublicClientApplication(CLIENT_ID, authority=AUTHORITY,
                                           token_cache=your_persistent_cache)
        account = app.get_accounts(username="app@example.com")[0]
        provider = microsoft365_tokens(app, account)
    """

    def access_token(force_refresh: bool = False) -> str:
        result = app.acquire_token_silent(
            [MICROSOFT365_SCOPE], account=account, force_refresh=force_refresh
        )
        if not result or "access_token" not in result:
            # MSAL reports failures as data; the description never contains the token.
            detail = (result or {}).get("error_description", "no token in the cache")
            raise RuntimeError(f"MSAL could not get a token: {detail}")
        return str(result["access_token"])

    return access_token


def gmail(
    provider: Callable[..., str],
    *,
    host: str = "smtp.gmail.com",
    port: int = 587,
    ssl_context: ssl.SSLContext | None = None,
) -> SMTPTransport:
    # The username is the mailbox the token was issued for.
    return SMTPTransport(
        host,
        port,
        tls="starttls",
        ssl_context=ssl_context,
        username="app@example.com",
        oauth_token_provider=provider,
        oauth_token_timeout=10.0,  # the token endpoint gets 10 s, then the send gives up
    )


def microsoft365(
    provider: Callable[..., str],
    *,
    host: str = "smtp.office365.com",
    port: int = 587,
    ssl_context: ssl.SSLContext | None = None,
) -> SMTPTransport:
    # Microsoft 365 allows 3 connections and 30 messages a minute per mailbox.
    return SMTPTransport(
        host,
        port,
        tls="starttls",
        ssl_context=ssl_context,
        username="app@example.com",
        oauth_token_provider=provider,
        max_connections=3,
        rate_limit=RateLimit.per_minute(per_transport=30),
    )


# -- stand-ins for google-auth and MSAL (only for running this script) ---------------------


#: The token the stand-in token endpoint issues now, and the local server accepts.
FRESH_TOKEN = "fresh-access-token"
#: What the stand-ins have cached: it looks valid, but the server no longer accepts it.
STALE_TOKEN = "cached-token-revoked-on-the-server"


class StandInGoogleCredentials:
    """Shaped like ``google.oauth2.credentials.Credentials``: ``valid``, ``token``, ``refresh``."""

    def __init__(self) -> None:
        self.token = STALE_TOKEN
        self.valid = True
        self.refreshes = 0

    def refresh(self, request: object) -> None:
        self.refreshes += 1
        self.token = FRESH_TOKEN


class StandInMsalApp:
    """Shaped like ``msal.ClientApplication.acquire_token_silent``."""

    def __init__(self) -> None:
        self.cached = STALE_TOKEN
        self.calls: list[bool] = []

    def acquire_token_silent(
        self, scopes: list[str], account: object, force_refresh: bool = False
    ) -> dict[str, str]:
        self.calls.append(force_refresh)
        if force_refresh:
            self.cached = FRESH_TOKEN
        return {"access_token": self.cached, "token_type": "Bearer"}


def send_one(transport: SMTPTransport) -> str:
    with Mailer(transport) as mailer:
        result = mailer.send(
            Message(
                sender="app@example.com",
                to=["ops@example.org"],
                subject="Signed in with OAuth2",
                text="No password involved.",
            )
        )
    return result.describe()


def main() -> None:
    print("Real transports (nothing is sent):")
    print(f"  {gmail(lambda force_refresh=False: 'token')!r}")
    print(f"  {microsoft365(lambda force_refresh=False: 'token')!r}")

    with LocalSMTPServer(tls="starttls", oauth_tokens={"app@example.com": FRESH_TOKEN}) as server:
        port, trust = server.port, server.client_ssl_context()  # the local server's test CA

        # The cached token is refused; the provider refreshes it once and the login succeeds.
        credentials = StandInGoogleCredentials()
        provider = gmail_tokens(credentials, request=None)
        print()
        print("Gmail:", send_one(gmail(provider, host="127.0.0.1", port=port, ssl_context=trust)))
        print(f"  token refreshes: {credentials.refreshes} (after one refusal)")

        app = StandInMsalApp()
        provider = microsoft365_tokens(app, account=None)
        transport = microsoft365(provider, host="127.0.0.1", port=port, ssl_context=trust)
        print()
        print("Microsoft 365:", send_one(transport))
        print("  tokens asked for: " + ", ".join(f"force_refresh={f}" for f in app.calls))

        # A token the server never accepts (wrong scope, wrong account): refused twice,
        # then a clear error - never a login loop.
        def wrong_scope(force_refresh: bool = False) -> str:
            return "token-without-the-mail-scope"

        attempts_before = server.auth_attempts
        print()
        try:
            send_one(gmail(wrong_scope, host="127.0.0.1", port=port, ssl_context=trust))
        except AuthOrConfigError as error:
            print(f"Refused: {error.summary}")
            print(f"  setting to fix: {error.setting}")
            print(f"  server said:    {error.code} {error.enhanced_code} {error.text}")
            print(f"  what to check:  {error.explanation}")
        print(
            f"  logins tried: {server.auth_attempts - attempts_before}; messages received "
            f"in all: {len(server.messages)}"
        )


if __name__ == "__main__":
    main()
