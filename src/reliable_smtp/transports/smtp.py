"""SMTP and SMTPS submission over aiosmtplib, one recipient reply at a time.

This module owns :class:`TLSMode`, :class:`SMTPTransport` and the translation of
every aiosmtplib / OSError / ssl failure into the library's error tree
(:func:`translate_error`, the one boundary).

The transport drives the transaction itself - MAIL, one RCPT per recipient,
DATA, body - so that every recipient gets its own reply and a failure is pinned
to its phase. Only a failure after the final dot is ambiguous. One connection is
kept and reused across sends (serialised by a lock); after any unexpected error
it is dropped, never reused in an unknown state.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import inspect
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from enum import Enum

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from ..envelope import Envelope
from ..errors import (
    AmbiguousDeliveryError,
    AuthOrConfigError,
    ConfigurationError,
    ConnectionFailedError,
    DeliveryError,
    InsecureConfigurationWarning,
    PermanentError,
    PoolExhaustedError,
    ProtocolError,
    TransportClosedError,
    check_seconds,
    error_for,
)
from ..ratelimit import AdaptiveRate, RateLimit, TokenBucket
from ..redaction import SecretForms, redacted_failure, redacted_response
from ..replies import (
    Outcome,
    Phase,
    Reply,
    Verdict,
    classify,
    classify_connection_loss,
    classify_tls_failure,
)
from ..result import DeliveryReport, RecipientStatus
from ._commit import FinalDotForbiddenError, before_final_dot
from ._wire import Exchange, dot_stuff, transcript_line
from .base import Transport
from .pool import ConnectionPool, Lease, PoolClosedError, PoolTimeoutError

__all__ = ["SMTPTransport", "TLSMode", "TokenProvider", "send_credentials", "translate_error"]

logger = logging.getLogger("reliable_smtp")


class TLSMode(str, Enum):
    """How the connection is encrypted. One setting, never two booleans."""

    STARTTLS = "starttls"
    """Plain connect, then STARTTLS, which is *required* (port 587). The default."""
    IMPLICIT = "implicit"
    """TLS from the first byte, "SMTPS" (port 465)."""
    NONE = "none"
    """No encryption at all. Only for a trusted relay on localhost or a private network:
    the message and any password cross the network in clear text."""

    def __str__(self) -> str:
        return self.value


DEFAULT_PORTS = {TLSMode.STARTTLS: 587, TLSMode.IMPLICIT: 465, TLSMode.NONE: 25}


def _secret_value(value: object) -> str | None:
    """Accept a plain string or anything with ``get_secret_value()`` (pydantic SecretStr)."""
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    if callable(getter):
        return str(getter())
    if isinstance(value, str):
        return value
    raise ConfigurationError("password must be a str or a pydantic SecretStr", setting="password")


#: Returns an OAuth2 access token; sync or async. If it accepts ``force_refresh``, it is
#: called with ``force_refresh=True`` after the server refused the previous token.
TokenProvider = Callable[..., "str | Awaitable[str]"]


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


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (where plain SMTP is not overheard)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number >= 1, got {value!r}", setting=name)
    return value


class SMTPTransport(Transport):
    """Submit mail to an SMTP server (STARTTLS on 587, implicit TLS on 465, or plain).

    Certificate verification is always on unless you pass your own
    ``ssl_context`` that turns it off. AUTH is only ever sent over an encrypted
    connection, unless ``tls=TLSMode.NONE`` was chosen explicitly (a trusted
    relay). The password never appears in ``repr()``, logs or errors.

    Timeouts (seconds, never ``None``): ``connect_timeout`` covers TCP connect,
    the TLS handshake and the greeting; ``command_timeout`` every command reply;
    ``data_timeout`` the reply to the final dot (RFC 5321 §4.5.3.2 asks for 10
    minutes: a premature timeout there is how duplicates happen);
    ``oauth_token_timeout`` each call of the ``oauth_token_provider`` (default: the
    connect timeout). A sync provider runs in a thread of its own; a thread cannot
    be stopped, so after the timeout the send stops waiting and the thread is left
    to finish (or hang) on its own.

    XOAUTH2: with ``oauth_token_provider`` (sync or async, returning an access
    token) the transport logs in with ``AUTH XOAUTH2``. When the server refuses the
    token (535), the provider is called once more - with ``force_refresh=True`` if
    it takes that parameter - and the login is tried once more; a second refusal is
    an :class:`~reliable_smtp.AuthOrConfigError` with
    ``setting="oauth_token_provider"``. Never more: a login loop gets the account
    locked.
    """

    marks_final_dot = True

    def __init__(
        self,
        host: str = "localhost",
        port: int | None = None,
        *,
        tls: TLSMode | str = TLSMode.STARTTLS,
        username: str | None = None,
        password: object = None,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        minimum_tls_version: ssl.TLSVersion | None = ssl.TLSVersion.TLSv1_2,
        local_hostname: str | None = None,
        connect_timeout: float = 10.0,
        command_timeout: float = 60.0,
        data_timeout: float = 600.0,
        max_connections: int = 1,
        max_messages_per_connection: int = 100,
        idle_timeout: float = 60.0,
        check_after: float = 5.0,
        pool_timeout: float = 60.0,
        pipelining: bool = True,
        rate_limit: RateLimit | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        oauth_token_provider: TokenProvider | None = None,
        oauth_token_timeout: float | None = None,
        warn_insecure: bool = True,
    ) -> None:
        try:
            self.tls = TLSMode(tls)
        except ValueError:
            raise ConfigurationError(
                f"tls must be one of 'starttls', 'implicit' or 'none', not {tls!r}",
                setting="tls",
            ) from None
        if not host or any(c in host for c in "\r\n\x00 /"):
            raise ConfigurationError(f"host {host!r} is not a host name or address", setting="host")
        if port is None:
            port = DEFAULT_PORTS[self.tls]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError(f"port must be 1-65535, got {port!r}", setting="port")
        if self.tls is TLSMode.STARTTLS and port == 465:
            raise ConfigurationError(
                "port 465 speaks implicit TLS (SMTPS), but tls='starttls' was chosen: "
                "use tls='implicit' with port 465, or port 587 with STARTTLS",
                setting="tls",
            )
        if self.tls is TLSMode.IMPLICIT and port in (25, 587):
            raise ConfigurationError(
                f"port {port} expects STARTTLS, but tls='implicit' was chosen: "
                "use tls='starttls' with port 587, or port 465 with implicit TLS",
                setting="tls",
            )
        secret = _secret_value(password)
        if username is not None and not username.strip():
            # The same rule as MailerSettings and `reliable-smtp check`: an empty
            # username means no login at all.
            username = None
        if oauth_token_provider is not None:
            if not callable(oauth_token_provider):
                raise ConfigurationError(
                    "oauth_token_provider must be a function returning an access token",
                    setting="oauth_token_provider",
                )
            if username is None:
                raise ConfigurationError(
                    "XOAUTH2 needs the mailbox as username (e.g. app@example.com)",
                    setting="username",
                )
            if secret is not None:
                raise ConfigurationError(
                    "give either password or oauth_token_provider, not both",
                    setting="password",
                )
        if secret is not None and username is None:
            raise ConfigurationError(
                "a password was given without a username (an empty username counts as "
                "none, and then no AUTH is sent): set both, or neither",
                setting="username",
            )
        if (
            secret is not None
            and self.tls is TLSMode.NONE
            and warn_insecure
            and not is_loopback_host(host)
        ):
            warnings.warn(
                f"tls='none' sends the password to {host} in clear text; use tls='starttls' "
                "(587) or tls='implicit' (465) unless this relay is on a network you trust",
                InsecureConfigurationWarning,
                stacklevel=2,
            )
        if ssl_context is not None and (ca_file or client_cert or client_key):
            raise ConfigurationError(
                "give either ssl_context or ca_file/client_cert/client_key, not both: "
                "configure the context yourself when you pass one",
                setting="ssl_context",
            )
        if client_key is not None and client_cert is None:
            raise ConfigurationError("client_key needs client_cert", setting="client_cert")
        self.host = host
        self.port = port
        self.username = username
        self._password = secret
        self._token_provider = oauth_token_provider
        self._token_takes_refresh = _accepts_keyword(oauth_token_provider, "force_refresh")
        self._ssl_context = ssl_context
        self._ca_file = os.fspath(ca_file) if ca_file is not None else None
        self._client_cert = os.fspath(client_cert) if client_cert is not None else None
        self._client_key = os.fspath(client_key) if client_key is not None else None
        self._minimum_tls_version = minimum_tls_version
        self.local_hostname = local_hostname
        self.connect_timeout = check_seconds("connect_timeout", connect_timeout)
        self.command_timeout = check_seconds("command_timeout", command_timeout)
        self.data_timeout = check_seconds("data_timeout", data_timeout)
        self.oauth_token_timeout = (
            self.connect_timeout
            if oauth_token_timeout is None
            else check_seconds("oauth_token_timeout", oauth_token_timeout)
        )
        scheme = {TLSMode.STARTTLS: "smtp", TLSMode.IMPLICIT: "smtps", TLSMode.NONE: "smtp+plain"}
        self.name = f"{scheme[self.tls]}://{host}:{port}"
        self.max_connections = _check_count("max_connections", max_connections)
        self.max_messages_per_connection = _check_count(
            "max_messages_per_connection", max_messages_per_connection
        )
        self.idle_timeout = check_seconds("idle_timeout", idle_timeout)
        self.check_after = check_seconds("check_after", check_after)
        self.pool_timeout = check_seconds("pool_timeout", pool_timeout)
        self.pipelining = bool(pipelining)
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigurationError(
                f"rate_limit must be a RateLimit, got {type(rate_limit).__name__}",
                setting="rate_limit",
            )
        self.rate_limit = rate_limit or RateLimit()
        self._clock = clock or time.monotonic
        self._sleep = sleep or asyncio.sleep
        # Whether a connection to this server has ever been fully opened: until one
        # has, a failure without a reply points at the settings, not at the weather.
        self._ever_connected = False
        self._pool: ConnectionPool[aiosmtplib.SMTP] | None = None
        self._fqdn: _FQDNLookup | None = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._adaptive: AdaptiveRate | None = None
        self._transport_bucket: TokenBucket | None = None

    def __repr__(self) -> str:
        user = f" user={self.username!r}" if self.username else ""
        return f"<SMTPTransport {self.name}{user}>"

    # -- the contract --------------------------------------------------------------------

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        pool = self._connection_pool()
        # A pooled connection may have been closed by the server while idle (its 421 is
        # never read: aiosmtplib discards unsolicited data). Nothing of this message was
        # sent then, so the dead connection is retired and the message tried once more
        # on a connection opened for it - never on another idle one, which may be dead
        # too or put back by a concurrent send. If that fresh connection fails as well,
        # it is this message's own, classified error.
        fresh = False
        while True:
            lease = await self._acquire(pool, fresh=fresh)
            reusable = False
            try:
                await self._respect_rate_limit(lease)
                report = await self._transaction(lease.connection, envelope, content)
                lease.messages += 1
                reusable = self._reusable(lease.connection)
                self._observe(report)
                return report
            except _StaleConnectionError as stale:
                if not lease.reused:
                    raise translate_error(stale.cause, Phase.MAIL, server=self.name) from stale
                fresh = True
            except DeliveryError as error:
                # A refusal the transaction handled (it reset or dropped the connection).
                reusable = self._reusable(lease.connection)
                self._observe_error(error)
                raise
            finally:
                await pool.release(lease, reusable=reusable)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None and self._pool_loop is asyncio.get_running_loop():
            await pool.aclose()

    # -- connections ---------------------------------------------------------------------

    def _connection_pool(self) -> ConnectionPool[aiosmtplib.SMTP]:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool_loop is not loop:
            # A pool belongs to one event loop; a transport reused on a new loop (a new
            # sync portal after fork, a new asyncio.run) starts with a new, empty pool.
            self._pool = ConnectionPool(
                size=self.max_connections,
                max_messages=self.max_messages_per_connection,
                idle_timeout=self.idle_timeout,
                check_after=self.check_after,
                acquire_timeout=self.pool_timeout,
                open=self._connect,
                check=self._noop,
                close=self._quit,
                drop=self._drop,
                alive=lambda smtp: smtp.is_connected,
                clock=self._clock,
            )
            self._pool_loop = loop
            now = self._clock()
            self._transport_bucket = None
            self._adaptive = AdaptiveRate(
                self.rate_limit.per_transport,
                factor=self.rate_limit.throttle_factor,
                cooldown=self.rate_limit.cooldown,
            )
            if self.rate_limit.per_transport is not None:
                self._transport_bucket = TokenBucket(
                    self.rate_limit.per_transport, capacity=self.rate_limit.burst, now=now
                )
        return self._pool

    async def _acquire(
        self, pool: ConnectionPool[aiosmtplib.SMTP], *, fresh: bool = False
    ) -> Lease[aiosmtplib.SMTP]:
        try:
            return await pool.acquire(fresh=fresh)
        except PoolClosedError as exc:
            raise TransportClosedError(
                f"{self.name}: the transport was closed while this message waited for a "
                "connection; nothing was sent"
            ) from exc
        except PoolTimeoutError as exc:
            raise PoolExhaustedError(
                f"no free connection: {exc}",
                phase=Phase.CONNECT,
                server=self.name,
                explanation="every pooled connection stayed busy; raise max_connections or "
                "pool_timeout, or send less at once (concurrency)",
                retryable=True,
            ) from exc

    async def _noop(self, smtp: aiosmtplib.SMTP) -> bool:
        """Health check for a connection that sat idle: NOOP must answer 250."""
        try:
            response = await smtp.execute_command(b"NOOP", timeout=self.command_timeout)
        except Exception:
            return False
        return response.code == 250

    @staticmethod
    def _drop(smtp: aiosmtplib.SMTP) -> None:
        """Close the socket now, without QUIT (no I/O: safe while being cancelled)."""
        smtp.close()

    async def _quit(self, smtp: aiosmtplib.SMTP) -> None:
        if not smtp.is_connected:
            smtp.close()
            return
        try:
            await smtp.quit(timeout=min(self.command_timeout, 5.0))
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            smtp.close()

    @staticmethod
    def _reusable(smtp: aiosmtplib.SMTP) -> bool:
        return smtp.is_connected

    def forget_connections(self) -> None:
        # The parent's sockets are not ours to use: forget them without QUIT.
        self._pool = None
        self._pool_loop = None
        self._fqdn = None  # its lookup thread, if still running, stayed in the parent

    # -- rate limits ---------------------------------------------------------------------

    async def _respect_rate_limit(self, lease: Lease[aiosmtplib.SMTP]) -> None:
        limit = self.rate_limit
        now = self._clock()
        wait = 0.0
        if limit.per_connection is not None:
            bucket = lease.state.get("bucket")
            if not isinstance(bucket, TokenBucket):
                bucket = TokenBucket(limit.per_connection, capacity=limit.burst, now=now)
                lease.state["bucket"] = bucket
            wait = bucket.reserve(now)
        if self._adaptive is not None:
            rate = self._adaptive.current(now)
            if rate is not None:
                if self._transport_bucket is None:
                    self._transport_bucket = TokenBucket(rate, capacity=limit.burst, now=now)
                elif self._transport_bucket.rate != rate:
                    self._transport_bucket.set_rate(rate, now)
                wait = max(wait, self._transport_bucket.reserve(now))
            self._adaptive.note_sent(now + wait)
        if wait > 0:
            await self._sleep(wait)

    def _observe(self, report: DeliveryReport) -> None:
        if any(s.outcome is Outcome.THROTTLED for s in report.recipients.values()):
            self._throttled()

    def _observe_error(self, error: DeliveryError) -> None:
        if error.outcome is Outcome.THROTTLED:
            self._throttled()

    def _throttled(self) -> None:
        if self._adaptive is not None:
            now = self._clock()
            observed = self._adaptive.observed(now)
            rate = self._adaptive.on_throttled(now)
            logger.info(
                "%s is throttling: sending slowed to %.3g messages/s (was sending at %s); "
                "it doubles again every %g s without throttling",
                self.name,
                rate,
                f"{observed:.3g}/s" if observed > 0 else "an unmeasured rate",
                self.rate_limit.cooldown,
                extra={"server": self.name, "rate": rate, "observed_rate": observed},
            )

    # -- opening a connection ------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = ssl.create_default_context(cafile=self._ca_file)
            if self._client_cert is not None:
                context.load_cert_chain(self._client_cert, self._client_key)
            if self._minimum_tls_version is not None:
                context.minimum_version = self._minimum_tls_version
            self._ssl_context = context
        return self._ssl_context

    async def _connect(self) -> aiosmtplib.SMTP:
        phase = Phase.CONNECT
        try:
            smtp = aiosmtplib.SMTP(
                hostname=self.host,
                port=self.port,
                # Never None: aiosmtplib would resolve getfqdn() itself, unbounded,
                # before the connect timeout starts. _ehlo() picks the real name.
                local_hostname=self.local_hostname or "localhost",
                timeout=self.command_timeout,
                use_tls=self.tls is TLSMode.IMPLICIT,
                start_tls=False,
                tls_context=self._tls_context() if self.tls is not TLSMode.NONE else None,
            )
            started = time.monotonic()
            greeting = await smtp.connect(timeout=self.connect_timeout)
            transcript_line(
                self.name,
                "<",
                f"{greeting.code} {greeting.message}",
                elapsed=time.monotonic() - started,
            )
            try:
                phase = Phase.EHLO
                await self._ehlo(smtp)
                if self.tls is TLSMode.STARTTLS:
                    phase = Phase.TLS
                    if not smtp.supports_extension("starttls"):
                        raise AuthOrConfigError(
                            "the server does not offer STARTTLS",
                            phase=Phase.TLS,
                            server=self.name,
                            setting="tls",
                            explanation=(
                                "STARTTLS is required in tls='starttls' mode so that nothing "
                                "(password, message) is sent in clear text; if the port speaks "
                                "implicit TLS use tls='implicit' (port 465); use tls='none' "
                                "only for a trusted local relay"
                            ),
                        )
                    started = time.monotonic()
                    transcript_line(self.name, ">", "STARTTLS")
                    await smtp.starttls(timeout=self.connect_timeout)
                    tls = smtp.get_transport_info("ssl_object")
                    version = tls.version() if tls is not None else "?"
                    transcript_line(
                        self.name,
                        "<",
                        f"220 (TLS established: {version})",
                        elapsed=time.monotonic() - started,
                    )
                    phase = Phase.EHLO
                    await self._ehlo(smtp)
                if self.username is not None:
                    phase = Phase.AUTH
                    await self._authenticate(smtp)
            except BaseException:
                smtp.close()
                raise
        except DeliveryError:
            raise
        except Exception as exc:
            error = translate_error(exc, phase, server=self.name)
            if (
                self.tls is TLSMode.IMPLICIT
                and phase is Phase.CONNECT
                and isinstance(error, ConnectionFailedError)
                and find_cause(exc, ConnectionRefusedError) is None
            ):
                # With implicit TLS, "connect" includes the handshake: a link that drops
                # with no SSL error is a server that hung up on the TLS hello.
                error.explanation = (
                    "the server closed the connection during the TLS handshake: this port "
                    "may not speak implicit TLS (use tls='starttls', RELIABLE_SMTP_TLS="
                    "starttls, usually port 587), or it refuses this client's TLS version; "
                    "retried"
                )
            if not self._ever_connected:
                _first_contact(error)
            raise error from exc
        self._ever_connected = True
        return smtp

    async def _ehlo(self, smtp: aiosmtplib.SMTP) -> None:
        name = await self._ehlo_name(smtp)
        smtp.local_hostname = name  # aiosmtplib's helo() fallback below reads it
        transcript_line(self.name, ">", f"EHLO {name}")
        started = time.monotonic()
        response = await smtp.execute_command(
            b"EHLO", name.encode("ascii"), timeout=self.command_timeout
        )
        transcript_line(
            self.name,
            "<",
            f"{response.code} {response.message}".replace("\n", " / "),
            elapsed=time.monotonic() - started,
        )
        if response.code == 250:
            smtp.last_ehlo_response = response  # parses the extension list
            return
        # An old server without ESMTP answers 500/502: HELO still works, without
        # extensions (so no STARTTLS, no SIZE, no AUTH).
        if response.code in (500, 502):
            await smtp.helo(timeout=self.command_timeout)
            return
        raise self._reply_error(response, Phase.EHLO, "the server refused EHLO")

    async def _ehlo_name(self, smtp: aiosmtplib.SMTP) -> str:
        """``local_hostname``, else this host's FQDN if it resolves in time, else an address
        literal of the connection's own address (RFC 5321 §4.1.4: "[192.0.2.1]").

        aiosmtplib would call ``socket.getfqdn()`` for every connection, before its
        connect timeout starts and without a bound: a slow resolver stalled every send.
        Here the lookup runs once per transport, in its own thread, and is waited for at
        most ``min(connect_timeout, EHLO_NAME_TIMEOUT)`` seconds, once.
        """
        if self.local_hostname is not None:
            return self.local_hostname
        if self._fqdn is None:
            self._fqdn = _FQDNLookup()
        name = await self._fqdn.result(timeout=min(self.connect_timeout, EHLO_NAME_TIMEOUT))
        return name or _address_literal(smtp)

    async def _authenticate(self, smtp: aiosmtplib.SMTP) -> None:
        assert self.username is not None
        encrypted = smtp.get_transport_info("sslcontext") is not None
        if not encrypted and self.tls is not TLSMode.NONE:  # pragma: no cover - guarded above
            raise AuthOrConfigError(
                "refusing to send the password over an unencrypted connection",
                phase=Phase.AUTH,
                server=self.name,
                setting="tls",
            )
        methods = smtp.server_auth_methods
        if self._token_provider is not None:
            await self._authenticate_xoauth2(smtp, methods)
            return
        password = self._password or ""
        # One mechanism, one attempt: aiosmtplib's login() tries every mechanism after
        # a failure, which multiplies failed logins and gets accounts locked (Gmail:
        # "454 4.7.0 Too many login attempts").
        if "plain" not in methods and "login" not in methods:
            offered = " ".join(methods) or "none"
            raise AuthOrConfigError(
                "the server offers no password authentication (AUTH PLAIN or LOGIN)",
                phase=Phase.AUTH,
                server=self.name,
                setting="username",
                explanation=(
                    f"mechanisms offered: {offered}; if none are offered before TLS, "
                    "check the TLS mode; if the server takes mail without a login (a local "
                    "relay, a devserver without --auth), unset the username "
                    "(RELIABLE_SMTP_USERNAME); for XOAUTH2 use an OAuth2 token provider"
                ),
            )
        mechanism = "PLAIN" if "plain" in methods else "LOGIN"
        await send_credentials(
            smtp,
            mechanism,
            self.username,
            password,
            timeout=self.command_timeout,
            server=self.name,
        )

    async def _authenticate_xoauth2(self, smtp: aiosmtplib.SMTP, methods: list[str]) -> None:
        assert self.username is not None
        if "xoauth2" not in methods:
            raise AuthOrConfigError(
                "the server does not offer AUTH XOAUTH2",
                phase=Phase.AUTH,
                server=self.name,
                setting="oauth_token_provider",
                explanation=f"mechanisms offered: {' '.join(methods) or 'none'}; use a "
                "password (or app password) with this server, or the provider's OAuth host",
            )
        for refresh in (False, True):
            token = await self._access_token(refresh=refresh)
            reply, challenge = await self._xoauth2_exchange(smtp, token)
            if reply.code == 235:
                return
            if reply.code != 535:
                # Not "this token is invalid" (454 try later, 534, 530...): the generic
                # reply rules say what it is.
                raise aiosmtplib.SMTPAuthenticationError(reply.code, reply.message)
            # An expired token is the common case: refresh it once and try once more.
            # Never more - Gmail answers login loops with "454 4.7.0 Too many login
            # attempts" - so a second refusal is final (AUTH_OR_CONFIG).
            if refresh:
                raise self._token_refused_twice(reply, challenge)

    async def _xoauth2_exchange(
        self, smtp: aiosmtplib.SMTP, token: str
    ) -> tuple[SMTPResponse, dict[str, str]]:
        """AUTH XOAUTH2 with the initial response; the final reply (token-free) and the
        server's error challenge, if it sent one.

        aiosmtplib's ``auth_xoauth2`` does the same but discards the challenge, which
        is where Google says which scope the token lacks.
        """
        assert self.username is not None
        started = time.monotonic()
        transcript_line(self.name, ">", "AUTH XOAUTH2 <credentials redacted>")
        timeout = self.command_timeout
        initial = _xoauth2_response(self.username, token).encode("ascii")
        response = await smtp.execute_command(b"AUTH", b"XOAUTH2", initial, timeout=timeout)
        challenge: dict[str, str] = {}
        if response.code == 334:
            challenge = _error_challenge(response.message)
            transcript_line(self.name, "<", f"334 {json.dumps(challenge) if challenge else ''}")
            # The refusal comes after the client answers the challenge with an empty line.
            response = await smtp.execute_command(b"", timeout=timeout)
        # A server may echo what it was sent: nothing below carries the token.
        text = SecretForms.for_token(self.username, token).redact(response.message)
        transcript_line(
            self.name, "<", f"{response.code} {text}", elapsed=time.monotonic() - started
        )
        return SMTPResponse(response.code, text), challenge

    def _token_refused_twice(
        self, response: SMTPResponse, challenge: Mapping[str, str]
    ) -> AuthOrConfigError:
        """The final error: an OAuth2 user needs OAuth2 advice, not password advice."""
        asked = ""
        if challenge.get("scope"):
            asked = f"the server asks for a token with the scope {challenge['scope']}; "
        if self._token_takes_refresh:
            summary = "the OAuth2 access token was refused twice, before and after a forced refresh"
            refresh = ""
        else:
            summary = "the OAuth2 access token was refused twice"
            refresh = (
                f"; {provider_name(self._token_provider)} takes no force_refresh parameter, "
                "so it could not be asked for a new token: accept force_refresh and fetch "
                "a fresh token when it is True"
            )
        return AuthOrConfigError(
            summary,
            reply=Reply.from_server(response.code, response.message),
            phase=Phase.AUTH,
            server=self.name,
            setting="oauth_token_provider",
            explanation=(
                f"{asked}check the token's scope (Gmail: https://mail.google.com/; Microsoft 365: "
                "https://outlook.office.com/SMTP.Send, or SMTP.SendAsApp for an app-only "
                f"token), that the username {self.username!r} is the account the token was "
                "issued for, and that SMTP AUTH is enabled for the mailbox (Microsoft 365: "
                f"for the mailbox and the tenant){refresh}"
            ),
        )

    async def _access_token(self, *, refresh: bool) -> str:
        provider = self._token_provider
        assert provider is not None
        kwargs = {"force_refresh": refresh} if self._token_takes_refresh else {}
        # Bounded like every other wait: token providers do network I/O.
        call = asyncio.ensure_future(self._call_token_provider(provider, kwargs))
        # A provider that fails after we stopped waiting must not log "never retrieved".
        call.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            finished, _ = await asyncio.wait({call}, timeout=self.oauth_token_timeout)
        finally:
            if not call.done():
                call.cancel()
        name = provider_name(provider)
        if not finished:
            raise AuthOrConfigError(
                f"the OAuth2 token provider {name} returned no access token within "
                f"{self.oauth_token_timeout:g} s",
                phase=Phase.AUTH,
                server=self.name,
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
                server=self.name,
                setting="oauth_token_provider",
                explanation="the provider could not get an access token; check its "
                "credentials and scopes (Microsoft: https://outlook.office.com/SMTP.Send, "
                "Google: https://mail.google.com/)",
            ) from exc
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n\x00"):
            raise AuthOrConfigError(
                f"the OAuth2 token provider {name} returned no usable access token",
                phase=Phase.AUTH,
                server=self.name,
                setting="oauth_token_provider",
                explanation="return the access token as a non-empty string",
            )
        return token

    @staticmethod
    async def _call_token_provider(provider: TokenProvider, kwargs: Mapping[str, object]) -> object:
        if inspect.iscoroutinefunction(provider):
            token: object = await provider(**kwargs)
        else:
            # A sync provider (MSAL, google-auth) does network I/O: not on the loop.
            token = await _call_in_daemon_thread(provider, kwargs)
        if inspect.isawaitable(token):
            token = await token
        return token

    # -- one transaction -----------------------------------------------------------------

    def _mail_options(self, smtp: aiosmtplib.SMTP, envelope: Envelope, content: bytes) -> list[str]:
        options: list[str] = []
        if envelope.needs_smtputf8:
            if not smtp.supports_extension("smtputf8"):
                raise PermanentError(
                    "an address has non-ASCII characters but the server does not offer SMTPUTF8",
                    phase=Phase.MAIL,
                    server=self.name,
                    explanation=(
                        "this server cannot accept internationalised addresses (RFC 6531); "
                        "use an ASCII address or a server that supports SMTPUTF8"
                    ),
                )
            options.append("SMTPUTF8")
        if not content.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if smtp.supports_extension("size"):
            limit_text = smtp.esmtp_extensions.get("size", "")
            limit = int(limit_text) if limit_text.isdigit() else 0
            if limit and len(content) > limit:
                raise PermanentError(
                    f"the message is {len(content)} bytes but the server accepts at most {limit}",
                    phase=Phase.MAIL,
                    server=self.name,
                    explanation="message too large: make it (or its attachments) smaller",
                )
            options.append(f"SIZE={len(content)}")
        return options

    async def _transaction(
        self, smtp: aiosmtplib.SMTP, envelope: Envelope, content: bytes
    ) -> DeliveryReport:
        options = self._mail_options(smtp, envelope, content)
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        mail = (
            b" ".join(
                [f"MAIL FROM:<{envelope.sender}>".encode(encoding)]
                + [o.encode("ascii") for o in options]
            )
            + b"\r\n"
        )
        rcpts = [f"RCPT TO:<{r}>\r\n".encode(encoding) for r in envelope.recipients]
        pipelined = self.pipelining and smtp.supports_extension("pipelining")
        try:
            wire = Exchange(smtp, server=self.name)
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise _StaleConnectionError(exc) from exc
        clean = True
        try:
            with wire:
                try:
                    report = await self._dialogue(wire, envelope, content, mail, rcpts, pipelined)
                finally:
                    clean = not wire.leftover
        except DeliveryError:
            # A refusal the dialogue handled (the sender was refused): reset and go on.
            if clean and smtp.is_connected:
                await self._reset(smtp)
            else:
                smtp.close()
            raise
        except BaseException:
            # Stale, cancelled, or an error the dialogue did not handle: never reuse it.
            smtp.close()
            raise
        if not clean:
            smtp.close()  # the server said more than it was asked: out of step
        elif report.final_reply is None and smtp.is_connected:
            await self._reset(smtp)
        return report

    async def _dialogue(
        self,
        wire: Exchange,
        envelope: Envelope,
        content: bytes,
        mail: bytes,
        rcpts: list[bytes],
        pipelined: bool,
    ) -> DeliveryReport:
        """MAIL, RCPT..., DATA, body: pipelined (RFC 2920) in one write, or one at a time.

        Every reply is checked individually either way (RFC 2920 §3.1). The first digit
        decides (RFC 5321 §4.2.1): any 2xx accepts MAIL and RCPT. A reply that is
        neither the expected success nor a 4xx/5xx refusal (a 3xx, a code outside
        2xx-5xx, a 2xx to DATA) means the server is out of step: it is classified
        (a protocol error before the final dot, ambiguous after it) and the connection
        is dropped, never reused.
        """
        timeout = self.command_timeout
        phase = Phase.MAIL
        statuses: dict[str, RecipientStatus] = {}
        accepted: list[str] = []
        out_of_step = False
        try:
            # MAIL: a closed connection here is stale, nothing was sent.
            try:
                wire.write(mail + b"".join(rcpts) + b"DATA\r\n" if pipelined else mail)
                mail_reply = await wire.read(timeout=timeout)
            except aiosmtplib.SMTPServerDisconnected as exc:
                raise _StaleConnectionError(exc) from exc
            mail_ok = mail_reply.code // 100 == 2
            if not mail_ok and not pipelined:
                if _out_of_step(mail_reply):
                    wire.close_connection()
                raise self._reply_error(mail_reply, Phase.MAIL, "the server refused the sender")
            if mail_reply.code == 421:
                wire.close_connection()
                raise self._reply_error(mail_reply, Phase.MAIL, "the server closed the connection")

            phase = Phase.RCPT
            for index, recipient in enumerate(envelope.recipients):
                if not pipelined:
                    wire.write(rcpts[index])
                response = await wire.read(timeout=timeout)
                if response.code // 100 == 2:
                    accepted.append(recipient)
                    continue
                out_of_step = out_of_step or _out_of_step(response)
                reply = Reply.from_server(response.code, response.message)
                verdict = classify(reply, Phase.RCPT)
                statuses[recipient] = self._status(recipient, verdict, Phase.RCPT, reply)
                if response.code == 421:
                    # The server is closing: later recipients were never answered and the
                    # accepted ones never got DATA. All of them are simply pending.
                    for other in [*envelope.recipients[index + 1 :], *accepted]:
                        statuses[other] = self._status(other, verdict, Phase.RCPT, reply)
                    wire.close_connection()
                    return self._report(envelope, statuses)

            phase = Phase.DATA
            if pipelined:
                data_reply = await wire.read(timeout=timeout)
            elif accepted:
                wire.write(b"DATA\r\n")
                data_reply = await wire.read(timeout=timeout)
            else:
                if out_of_step:
                    wire.close_connection()
                return self._report(envelope, statuses)
            if not mail_ok:
                # Pipelined: MAIL failed, so RCPT and DATA failed with it. If the server
                # nevertheless said 354, an empty message ends the DATA phase (RFC 2920).
                if data_reply.code == 354:
                    wire.write(b".\r\n")
                    await wire.read(timeout=timeout)
                if out_of_step or _out_of_step(mail_reply):
                    wire.close_connection()
                raise self._reply_error(mail_reply, Phase.MAIL, "the server refused the sender")
            if data_reply.code != 354:
                reply = Reply.from_server(data_reply.code, data_reply.message)
                verdict = classify(reply, Phase.DATA)
                for recipient in accepted:
                    statuses[recipient] = self._status(recipient, verdict, Phase.DATA, reply)
                if data_reply.code == 421 or out_of_step or data_reply.code // 100 not in (4, 5):
                    wire.close_connection()
                return self._report(envelope, statuses)
            if not accepted:
                # Pipelined DATA was accepted although every RCPT failed: send an empty
                # message so the server leaves the DATA state; it must not deliver it.
                wire.write(b".\r\n")
                await wire.read(timeout=timeout)
                if out_of_step:
                    wire.close_connection()
                return self._report(envelope, statuses)

            phase = Phase.DATA  # until the body is handed to the socket
            try:
                await before_final_dot(tuple(accepted))
            except FinalDotForbiddenError as forbidden:
                # Nothing of the body was written: drop the link (no dot), nothing is sent.
                wire.close_connection()
                for recipient in accepted:
                    statuses[recipient] = forbidden.status(recipient, server=self.name)
                return self._report(envelope, statuses)
            wire.write(dot_stuff(content), body=True)
            phase = Phase.DATA_END
            final = await wire.read(timeout=self.data_timeout)
        except (DeliveryError, _StaleConnectionError):
            raise
        except Exception as exc:
            failure = translate_error(exc, phase, server=self.name)
            wire.close_connection()
            if phase is Phase.MAIL:
                raise failure from exc
            # The link failed after RCPT began: every recipient not yet refused shares it.
            for recipient in envelope.recipients:
                if recipient not in statuses or recipient in accepted:
                    statuses[recipient] = self._status_from_error(recipient, failure)
            return self._report(envelope, statuses)

        reply = Reply.from_server(final.code, final.message)
        verdict = classify(reply, Phase.DATA_END)
        for recipient in accepted:
            statuses[recipient] = self._status(recipient, verdict, Phase.DATA_END, reply)
        if final.code == 421 or out_of_step or final.code // 100 not in (2, 4, 5):
            wire.close_connection()
        return self._report(envelope, statuses, final_reply=reply)

    async def _reset(self, smtp: aiosmtplib.SMTP) -> None:
        """RSET after a transaction that did not end in a final reply; drop on any trouble."""
        try:
            response = await smtp.execute_command(b"RSET", timeout=self.command_timeout)
        except Exception:
            smtp.close()
            return
        if response.code != 250:
            smtp.close()

    # -- building results ----------------------------------------------------------------

    def _reply_error(self, response: SMTPResponse, phase: Phase, summary: str) -> DeliveryError:
        reply = Reply.from_server(response.code, response.message)
        return error_for(
            classify(reply, phase), summary, reply=reply, phase=phase, server=self.name
        )

    def _status(
        self, recipient: str, verdict: Verdict, phase: Phase, reply: Reply | None
    ) -> RecipientStatus:
        return RecipientStatus.from_verdict(
            recipient, verdict, phase=phase, reply=reply, server=self.name
        )

    def _status_from_error(self, recipient: str, error: DeliveryError) -> RecipientStatus:
        return RecipientStatus.from_error(recipient, error, server=self.name)

    def _report(
        self,
        envelope: Envelope,
        statuses: dict[str, RecipientStatus],
        *,
        final_reply: Reply | None = None,
    ) -> DeliveryReport:
        return DeliveryReport.in_envelope_order(
            envelope, statuses, server=self.name, final_reply=final_reply
        )


#: The longest the default EHLO name (this host's FQDN) is waited for, once per transport.
EHLO_NAME_TIMEOUT = 2.0

#: A dotted host name ("app1.example.com"): a bare "localhost" or "vm" is not one (RFC 5321
#: §4.1.4 wants a resolvable name, or else an address literal).
_DOMAIN_NAME = re.compile(
    r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}"
)


class _FQDNLookup:
    """``socket.getfqdn()`` in a daemon thread, started once, waited for with a bound.

    Not ``asyncio.to_thread``: a resolver that hangs would hold a worker of the loop's
    default executor for as long as it hangs, and the wait could not be abandoned.
    """

    def __init__(self) -> None:
        self._future: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._future.set_running_or_notify_cancel()  # a running future cannot be cancelled
        self._deadline: float | None = None
        threading.Thread(target=self._run, name="reliable-smtp-getfqdn", daemon=True).start()

    def _run(self) -> None:
        try:
            self._future.set_result(socket.getfqdn())
        except BaseException as exc:  # pragma: no cover - getfqdn() swallows resolver errors
            self._future.set_exception(exc)

    async def result(self, *, timeout: float) -> str | None:
        """The FQDN if it is a usable EHLO name (a dotted domain name), else ``None``.

        The wait ends ``timeout`` seconds after the *first* call, for every caller:
        connections opened together agree on the name, and later ones never wait.
        """
        if not self._future.done():
            now = time.monotonic()
            if self._deadline is None:
                self._deadline = now + timeout
            if self._deadline > now:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(asyncio.wrap_future(self._future)), self._deadline - now
                    )
        if not self._future.done() or self._future.exception() is not None:
            return None
        name = self._future.result()
        return name if _DOMAIN_NAME.fullmatch(name) else None


def _address_literal(smtp: aiosmtplib.SMTP) -> str:
    """The EHLO name of a client without a domain name: its own address in brackets."""
    sockname = smtp.get_transport_info("sockname")
    try:
        address = ipaddress.ip_address(str(sockname[0]).split("%", 1)[0])
    except (TypeError, ValueError, IndexError):
        return "localhost"
    return f"[IPv6:{address}]" if address.version == 6 else f"[{address}]"


def _out_of_step(response: SMTPResponse) -> bool:
    """A reply that is neither success nor refusal where one of them was due (3xx, 600...)."""
    return response.code // 100 not in (2, 4, 5)


class _StaleConnectionError(Exception):
    """The connection turned out to be closed at MAIL, before anything was sent."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


# -- logging in ----------------------------------------------------------------------

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
    server: str,
) -> SMTPResponse:
    """One AUTH exchange (``PLAIN``, ``LOGIN`` or ``XOAUTH2``) whose reply is redacted.

    The one way the library sends credentials (the transport and ``reliable-smtp
    check`` both use it). A server may echo what it received; every form the secret
    took on the wire is removed from the reply, or from the refusal raised, before
    anything - transcript, error, check report - sees it (see
    :mod:`reliable_smtp.redaction`). The refusal is a fresh exception with no chain
    back to the one that held the echoed secret.
    """
    secrets = (
        SecretForms.for_token(username, secret)
        if mechanism == "XOAUTH2"
        else SecretForms.for_password(username, secret)
    )
    transcript_line(server, ">", f"AUTH {mechanism} <credentials redacted>")
    started = time.monotonic()
    refused: aiosmtplib.SMTPResponseException | None = None
    try:
        reply = await _LOGINS[mechanism](smtp, username, secret, timeout=timeout)
    except aiosmtplib.SMTPResponseException as exc:
        refused = redacted_failure(exc, secrets)
    elapsed = time.monotonic() - started
    if refused is not None:
        transcript_line(server, "<", f"{refused.code} {refused.message}", elapsed=elapsed)
        # Raised here, outside the except block, so that the original is not __context__.
        raise refused
    reply = redacted_response(reply, secrets)
    transcript_line(server, "<", f"{reply.code} {reply.message}", elapsed=elapsed)
    return reply


# -- the error boundary ------------------------------------------------------------------


def _tls_error(exc: BaseException, server: str | None) -> DeliveryError:
    verdict = classify_tls_failure(str(exc))
    error = error_for(
        verdict,
        f"TLS failed: {exc}",
        phase=Phase.TLS,
        server=server,
        connection_lost=verdict.outcome is Outcome.TRANSIENT,
    )
    if isinstance(error, AuthOrConfigError):
        error.setting = "tls"
    return error


#: Phases of opening a connection in which a failure without a reply, on the very first
#: connection, is almost always a wrong host, port, TLS mode or firewall.
_FIRST_CONTACT_PHASES = frozenset({Phase.CONNECT, Phase.TLS})


def _first_contact(error: DeliveryError) -> None:
    """Mark ``error`` - the first connection ever to this server failed - as not retried.

    A server that has never answered will not start answering within the mailer's
    retry window (seconds to two minutes): refused, silent or TLS-mismatched on the
    first try means a setting is wrong, and five tries only hide that for a minute.
    The class stays what it was (nothing was delivered; a queue may try again later);
    only the in-process retry is off. A reply from the server (a 421 greeting, a 454
    for STARTTLS) is the server's own word and keeps its verdict.
    """
    if error.reply is not None or error.phase not in _FIRST_CONTACT_PHASES:
        return
    if not error.retryable:
        return  # a certificate or TLS-version mismatch: already final, and says why
    error.retryable = False
    cause = error.explanation
    for suffix in ("; retried", ": retried"):
        cause = cause.removesuffix(suffix)
    cause = cause.replace("TLS handshake failed: retried", "TLS handshake failed")
    error.explanation = (
        f"{cause}; no connection to this server has succeeded yet, so this is not retried: "
        "check RELIABLE_SMTP_HOST, RELIABLE_SMTP_PORT and RELIABLE_SMTP_TLS (587 with "
        "starttls, 465 with implicit, 25 with none for a local relay); raise "
        "RELIABLE_SMTP_CONNECT_TIMEOUT only for a server that is slow to greet"
    )


def find_cause(exc: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` in ``exc``'s chain of causes (aiosmtplib wraps them)."""
    seen: set[int] = set()
    current = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def translate_error(
    exc: BaseException, phase: Phase, *, server: str | None = None
) -> DeliveryError:
    """Map an aiosmtplib, ``OSError``, ``ssl`` or timeout exception to the error tree.

    The single boundary between foreign exceptions and ours. ``phase`` is where the
    transport was when it happened; a lost link in ``Phase.DATA_END`` is ambiguous.
    """
    if isinstance(exc, DeliveryError):
        return exc
    where = f"during {phase.value}"
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        # Only aiosmtplib's sendmail() raises this; we never call it, but keep the facts.
        first = exc.recipients[0] if exc.recipients else None
        if first is not None:
            reply = Reply.from_server(first.code, first.message)
            return error_for(
                classify(reply, Phase.RCPT),
                "every recipient was refused",
                reply=reply,
                phase=Phase.RCPT,
                recipient=first.recipient,
                server=server,
            )
        return PermanentError("every recipient was refused", phase=Phase.RCPT, server=server)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code < 0 and phase is Phase.DATA_END:
            # The server has the whole message and answered nonsense: it may have kept it.
            return AmbiguousDeliveryError(
                f"the server answered the final dot with something that is not SMTP: {exc.message}",
                phase=phase,
                server=server,
                explanation="the server may or may not have accepted the message; "
                "not resent automatically, to avoid a duplicate",
            )
        if exc.code < 0:
            return ProtocolError(
                f"the server sent a reply that is not SMTP {where}: {exc.message}",
                phase=phase,
                server=server,
                explanation="the server or something in between (proxy, TLS port) is not "
                "speaking SMTP; check host, port and TLS mode",
            )
        reply = Reply.from_server(exc.code, exc.message)
        reply_phase = (
            Phase.CONNECT if isinstance(exc, aiosmtplib.SMTPConnectResponseError) else phase
        )
        return error_for(
            classify(reply, reply_phase),
            f"the server refused {where}",
            reply=reply,
            phase=reply_phase,
            server=server,
        )
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return PermanentError(
            f"the server does not support what the message needs: {exc}",
            phase=phase,
            server=server,
            explanation="this server lacks an extension the message needs (e.g. SMTPUTF8 for "
            "non-ASCII addresses): use ASCII addresses or another server",
        )
    ssl_error = find_cause(exc, ssl.SSLError)
    if ssl_error is not None:
        return _tls_error(ssl_error, server)
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, asyncio.TimeoutError, TimeoutError)):
        verdict = classify_connection_loss(phase, timed_out=True)
        error = error_for(
            verdict,
            f"no reply from the server in time {where}",
            phase=phase,
            server=server,
            timed_out=True,
        )
        if "ready message" in str(exc):
            # TCP connected but no "220" came: typical of a client talking plain text to an
            # implicit-TLS port, where the server waits for a TLS hello.
            implicit = (server or "").startswith("smtps://")
            error.explanation = (
                "the TLS handshake finished but no greeting came: the server is overloaded, "
                "or this port expects something else (plain or STARTTLS: tls='starttls', "
                "RELIABLE_SMTP_TLS=starttls)"
                if implicit
                else "connected, but the server sent no greeting: if this port expects "
                "implicit TLS (usually 465) use tls='implicit' (RELIABLE_SMTP_TLS=implicit); "
                "otherwise the server is overloaded or slow to greet "
                "(connect_timeout, RELIABLE_SMTP_CONNECT_TIMEOUT)"
            )
        return error
    if isinstance(exc, (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError)):
        verdict = classify_connection_loss(phase, timed_out=False)
        detail = str(exc) or type(exc).__name__
        if find_cause(exc, ConnectionRefusedError) is not None:
            verdict = replace(
                verdict,
                explanation="connection refused: nothing listens on that host and port; check "
                "the port (587 STARTTLS, 465 implicit TLS, 25 relay) and that the server runs",
            )
        return error_for(
            verdict,
            f"connection problem {where}: {detail}",
            phase=phase,
            server=server,
            connection_lost=True,
        )
    if isinstance(exc, aiosmtplib.SMTPException):
        # aiosmtplib's plain SMTPException is a configuration mismatch: STARTTLS or AUTH
        # not offered, no usable mechanism, already connected.
        return AuthOrConfigError(
            f"{exc} ({where})",
            phase=phase,
            server=server,
            explanation="the server does not offer what this configuration needs; "
            "check the TLS mode and credentials",
        )
    if isinstance(exc, (UnicodeError, ValueError)):
        return ProtocolError(
            f"could not encode an SMTP command {where}: {exc}",
            phase=phase,
            server=server,
            explanation="an address or option cannot be sent to this server as it is",
        )
    return ProtocolError(
        f"unexpected {type(exc).__name__} {where}: {exc}",
        phase=phase,
        server=server,
        explanation="an error the library did not expect; please report it",
    )
