"""Logging in: the AUTH step of a session, one mechanism and one attempt.

PLAIN, else LOGIN, with a password (:func:`password_mechanism`); XOAUTH2 with an access
token from a provider - called in a bounded wait, refreshed once after a 535, and a
second refusal is final, never a login loop (accounts get locked). Every exchange goes
through :func:`send_credentials` or redacts the same way: whatever the server echoes,
no form of the secret reaches a transcript, an error or a check report
(:class:`~reliable_smtp._redaction.SecretForms`). :func:`log_in` is called by
:func:`~._session.open_session`, for the transport and ``reliable-smtp check`` alike.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from .._envelope import line_break_problem
from .._errors import AuthOrConfigError, DeliveryError
from .._redaction import SecretForms, redacted_failure, redacted_response
from .._replies import Phase, Reply
from ._wire import transcript_line

__all__ = [
    "PasswordLogin",
    "TokenLogin",
    "TokenProvider",
    "accepts_force_refresh",
    "log_in",
    "password_mechanism",
    "provider_name",
    "send_credentials",
]


# -- what to log in with --------------------------------------------------------------

#: Returns an OAuth2 access token; sync or async. If it accepts ``force_refresh``, it is
#: called with ``force_refresh=True`` after the server refused the previous token.
TokenProvider = Callable[..., "str | Awaitable[str]"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordLogin:
    """AUTH PLAIN (else LOGIN) with a password."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenLogin:
    """AUTH XOAUTH2 with an access token from ``provider``, each call bounded by ``timeout``."""

    username: str
    provider: TokenProvider
    timeout: float
    takes_refresh: bool
    """Whether the provider can be asked for a fresh token (:func:`accepts_force_refresh`)."""


def accepts_force_refresh(provider: object) -> bool:
    """Whether ``provider`` takes ``force_refresh=`` (or ``**kwargs``)."""
    return _accepts_keyword(provider, "force_refresh")


# -- AUTH -----------------------------------------------------------------------------


def password_mechanism(methods: list[str]) -> str | None:
    """The one mechanism a password login uses: PLAIN, else LOGIN, else none.

    One mechanism, one attempt: aiosmtplib's ``login()`` tries every mechanism after a
    failure, which multiplies failed logins and gets accounts locked (Gmail: "454 4.7.0
    Too many login attempts").
    """
    return "PLAIN" if "plain" in methods else "LOGIN" if "login" in methods else None


async def log_in(
    smtp: aiosmtplib.SMTP, login: PasswordLogin | TokenLogin, *, timeout: float, transport_name: str
) -> tuple[str, SMTPResponse]:
    """Log in once with ``login``: the mechanism used and the server's (redacted) 235."""
    methods = smtp.server_auth_methods
    if isinstance(login, TokenLogin):
        return "XOAUTH2", await _authenticate_xoauth2(smtp, login, methods, timeout, transport_name)
    mechanism = password_mechanism(methods)
    if mechanism is None:
        offered = " ".join(methods) or "none"
        raise AuthOrConfigError(
            "the server offers no password authentication (AUTH PLAIN or LOGIN)",
            phase=Phase.AUTH,
            transport_name=transport_name,
            setting="username",
            explanation=(
                f"mechanisms offered: {offered}; if none are offered before TLS, "
                "check the TLS mode; if the server takes mail without a login (a local "
                "relay, a devserver without --auth), unset the username "
                "(RELIABLE_SMTP_USERNAME); for XOAUTH2 use an OAuth2 token provider"
            ),
        )
    response = await send_credentials(
        smtp,
        mechanism,
        login.username,
        login.password,
        timeout=timeout,
        transport_name=transport_name,
    )
    return mechanism, response


_LOGINS = {
    "PLAIN": aiosmtplib.SMTP.auth_plain,
    "LOGIN": aiosmtplib.SMTP.auth_login,
    "XOAUTH2": aiosmtplib.SMTP.auth_xoauth2,
}


async def send_credentials(
    smtp: aiosmtplib.SMTP,
    mechanism: str,
    username: str,
    secret: str,
    *,
    timeout: float,
    transport_name: str,
) -> SMTPResponse:
    """One AUTH exchange (``PLAIN``, ``LOGIN`` or ``XOAUTH2``) whose reply is redacted.

    The one way the library sends credentials (the transport and ``reliable-smtp
    check`` both use it, through :func:`~._session.open_session`). A server may echo what it
    received; every form the secret took on the wire is removed from the reply, or
    from the refusal raised, before anything - transcript, error, check report - sees
    it (see :mod:`reliable_smtp._redaction`). The refusal is a fresh exception with no
    chain back to the one that held the echoed secret.
    """
    secrets = (
        SecretForms.for_token(username, secret)
        if mechanism == "XOAUTH2"
        else SecretForms.for_password(username, secret)
    )
    transcript_line(transport_name, ">", f"AUTH {mechanism} <credentials redacted>")
    started = time.monotonic()
    refused: aiosmtplib.SMTPResponseException | None = None
    try:
        reply = await _LOGINS[mechanism](smtp, username, secret, timeout=timeout)
    except aiosmtplib.SMTPResponseException as exc:
        refused = redacted_failure(exc, secrets)
    elapsed = time.monotonic() - started
    if refused is not None:
        transcript_line(transport_name, "<", f"{refused.code} {refused.message}", elapsed=elapsed)
        # Raised here, outside the except block, so that the original is not __context__.
        raise refused
    reply = redacted_response(reply, secrets)
    transcript_line(transport_name, "<", f"{reply.code} {reply.message}", elapsed=elapsed)
    return reply


# -- XOAUTH2 --------------------------------------------------------------------------


async def _authenticate_xoauth2(
    smtp: aiosmtplib.SMTP,
    login: TokenLogin,
    methods: list[str],
    timeout: float,
    transport_name: str,
) -> SMTPResponse:
    if "xoauth2" not in methods:
        raise AuthOrConfigError(
            "the server does not offer AUTH XOAUTH2",
            phase=Phase.AUTH,
            transport_name=transport_name,
            setting="oauth_token_provider",
            explanation=f"mechanisms offered: {' '.join(methods) or 'none'}; use a "
            "password (or app password) with this server, or the provider's OAuth host",
        )
    for refresh in (False, True):
        token = await _access_token(login, refresh=refresh, transport_name=transport_name)
        reply, challenge = await _xoauth2_exchange(
            smtp, login.username, token, timeout, transport_name
        )
        if reply.code == 235:
            return reply
        if reply.code != 535:
            # Not "this token is invalid" (454 try later, 534, 530...): the generic
            # reply rules say what it is.
            raise aiosmtplib.SMTPAuthenticationError(reply.code, reply.message)
        # An expired token is the common case: refresh it once and try once more.
        # Never more - Gmail answers login loops with "454 4.7.0 Too many login
        # attempts" - so a second refusal is final (AUTH_OR_CONFIG).
        if refresh:
            raise _token_refused_twice(login, reply, challenge, transport_name=transport_name)
    raise AssertionError("unreachable")  # pragma: no cover


async def _xoauth2_exchange(
    smtp: aiosmtplib.SMTP, username: str, token: str, timeout: float, transport_name: str
) -> tuple[SMTPResponse, dict[str, str]]:
    """AUTH XOAUTH2 with the initial response; the final reply (token-free) and the
    server's error challenge, if it sent one.

    aiosmtplib's ``auth_xoauth2`` does the same but discards the challenge, which
    is where Google says which scope the token lacks.
    """
    started = time.monotonic()
    transcript_line(transport_name, ">", "AUTH XOAUTH2 <credentials redacted>")
    initial = _xoauth2_response(username, token).encode("ascii")
    response = await smtp.execute_command(b"AUTH", b"XOAUTH2", initial, timeout=timeout)
    challenge: dict[str, str] = {}
    if response.code == 334:
        challenge = _error_challenge(response.message)
        transcript_line(transport_name, "<", f"334 {json.dumps(challenge) if challenge else ''}")
        # The refusal comes after the client answers the challenge with an empty line.
        response = await smtp.execute_command(b"", timeout=timeout)
    # A server may echo what it was sent: nothing below carries the token.
    text = SecretForms.for_token(username, token).redact(response.message)
    transcript_line(
        transport_name, "<", f"{response.code} {text}", elapsed=time.monotonic() - started
    )
    return SMTPResponse(response.code, text), challenge


def _token_refused_twice(
    login: TokenLogin, response: SMTPResponse, challenge: Mapping[str, str], *, transport_name: str
) -> AuthOrConfigError:
    """The final error: an OAuth2 user needs OAuth2 advice, not password advice."""
    asked = ""
    if challenge.get("scope"):
        asked = f"the server asks for a token with the scope {challenge['scope']}; "
    if login.takes_refresh:
        summary = "the OAuth2 access token was refused twice, before and after a forced refresh"
        refresh = ""
    else:
        summary = "the OAuth2 access token was refused twice"
        refresh = (
            f"; {provider_name(login.provider)} takes no force_refresh parameter, "
            "so it could not be asked for a new token: accept force_refresh and fetch "
            "a fresh token when it is True"
        )
    return AuthOrConfigError(
        summary,
        reply=Reply.from_server(response.code, response.message),
        phase=Phase.AUTH,
        transport_name=transport_name,
        setting="oauth_token_provider",
        explanation=(
            f"{asked}check the token's scope (Gmail: https://mail.google.com/; Microsoft 365: "
            "https://outlook.office.com/SMTP.Send, or SMTP.SendAsApp for an app-only "
            f"token), that the username {login.username!r} is the account the token was "
            "issued for, and that SMTP AUTH is enabled for the mailbox (Microsoft 365: "
            f"for the mailbox and the tenant){refresh}"
        ),
    )


async def _access_token(login: TokenLogin, *, refresh: bool, transport_name: str) -> str:
    provider = login.provider
    kwargs = {"force_refresh": refresh} if login.takes_refresh else {}
    # Bounded like every other wait: token providers do network I/O.
    call = asyncio.ensure_future(_call_token_provider(provider, kwargs))
    # A provider that fails after we stopped waiting must not log "never retrieved".
    call.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        finished, _ = await asyncio.wait({call}, timeout=login.timeout)
    finally:
        if not call.done():
            call.cancel()
    name = provider_name(provider)
    if not finished:
        raise AuthOrConfigError(
            f"the OAuth2 token provider {name} returned no access token within {login.timeout:g} s",
            phase=Phase.AUTH,
            transport_name=transport_name,
            setting="oauth_token_provider",
            explanation="the provider (its token endpoint) did not answer in time; check "
            "its network access, or raise oauth_token_timeout "
            "(RELIABLE_SMTP_OAUTH_TOKEN_TIMEOUT) if it is just slow. A sync provider's "
            "thread cannot be stopped: it is left running",
        )
    try:
        token = call.result()
    except DeliveryError:
        raise
    except Exception as exc:
        raise AuthOrConfigError(
            f"the OAuth2 token provider {name} failed: {type(exc).__name__}: {exc}",
            phase=Phase.AUTH,
            transport_name=transport_name,
            setting="oauth_token_provider",
            explanation="the provider could not get an access token; check its "
            "credentials and scopes (Microsoft: https://outlook.office.com/SMTP.Send, "
            "Google: https://mail.google.com/)",
        ) from exc
    if not isinstance(token, str) or not token or line_break_problem(token) is not None:
        raise AuthOrConfigError(
            f"the OAuth2 token provider {name} returned no usable access token",
            phase=Phase.AUTH,
            transport_name=transport_name,
            setting="oauth_token_provider",
            explanation="return the access token as a non-empty string",
        )
    return token


async def _call_token_provider(provider: TokenProvider, kwargs: Mapping[str, object]) -> object:
    if inspect.iscoroutinefunction(provider):
        token: object = await provider(**kwargs)
    else:
        # A sync provider (MSAL, google-auth) does network I/O: not on the loop.
        token = await _call_in_daemon_thread(provider, kwargs)
    if inspect.isawaitable(token):
        token = await token
    return token


def provider_name(provider: object) -> str:
    """``module.qualname`` of a token provider, for errors: never its ``repr()``, which
    may show bound credentials (a ``functools.partial`` holding a client secret)."""
    function = getattr(provider, "func", provider)  # functools.partial
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    module = getattr(function, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


async def _call_in_daemon_thread(
    function: Callable[..., object], kwargs: Mapping[str, object]
) -> object:
    """Run a blocking ``function`` in a thread of its own and await its result.

    Not ``asyncio.to_thread``: a provider that hangs would hold one of the loop's
    executor threads for good, and ``asyncio.run()`` and interpreter exit both wait
    for those. A daemon thread is simply abandoned once nobody waits for it.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[object] = loop.create_future()

    def settle(ok: bool, value: object) -> None:
        if future.done():  # the caller stopped waiting (timed out, cancelled)
            return
        if ok:
            future.set_result(value)
        else:
            assert isinstance(value, BaseException)
            future.set_exception(value)

    def run() -> None:
        try:
            outcome: tuple[bool, object] = (True, function(**kwargs))
        except Exception as exc:
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="reliable-smtp-oauth-token", daemon=True).start()
    return await future


def _xoauth2_response(username: str, token: str) -> str:
    """The SASL XOAUTH2 initial response (Google's and Microsoft's format), base64."""
    raw = f"user={username}\x01auth=Bearer {token}\x01\x01".encode()
    return base64.b64encode(raw).decode("ascii")


def _error_challenge(text: str) -> dict[str, str]:
    """The JSON a server sends in its 334 challenge when it refuses a token (Google:
    ``{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}``).
    Empty when it is not that."""
    try:
        decoded = json.loads(base64.b64decode(text.strip(), validate=True))
    except (ValueError, RecursionError):  # not base64, not JSON, nested too deep
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {str(key): str(value) for key, value in decoded.items()}


def _accepts_keyword(function: object, name: str) -> bool:
    if function is None:
        return False
    try:
        parameters = inspect.signature(function).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return name in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
