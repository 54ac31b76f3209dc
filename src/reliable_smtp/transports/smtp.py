"""SMTP and SMTPS submission over aiosmtplib, one recipient reply at a time.

This module owns :class:`SMTPTransport` and the translation of every aiosmtplib /
OSError / ssl failure into the library's error tree (:func:`translate_error`, the
one boundary). Opening a connection - greeting, EHLO, STARTTLS, AUTH, the TLS
context, :class:`TLSMode` and the port rules - is :mod:`._session`, shared with
``reliable-smtp check``; the value rules are :mod:`reliable_smtp._checks`.

:func:`~._session.open_session` opens the session (connect, TLS, EHLO, AUTH) on an
aiosmtplib client. The transaction - MAIL, one RCPT per recipient, DATA, body,
pipelined when the server offers it; or, with CHUNKING, MAIL, RCPT and ``BDAT <n>
LAST`` with the message in one write - is written and read by
:class:`~._wire.Exchange`, and what each reply means is decided by
:class:`~._transaction.Transaction`: every recipient gets its own reply, a failure
is pinned to its phase, and only a failure after the message has left (the final
dot, or the one BDAT write) is ambiguous. Connections come from a
:class:`~.pool.ConnectionPool` (up to ``max_connections`` at once, each lent to one
send at a time, reused for ``max_messages_per_connection`` messages); after a 421,
an out-of-step reply or any unexpected error a connection is dropped, never reused
in an unknown state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable

import aiosmtplib

from .._checks import check_count, check_seconds
from .._hooks import note_session_event
from ..envelope import Envelope, line_break_problem
from ..errors import (
    AuthOrConfigError,
    ConfigurationError,
    ConnectionFailedError,
    DeliveryError,
    PermanentError,
    PoolExhaustedError,
    ProtocolError,
    TransportClosedError,
    error_for,
)
from ..ratelimit import AdaptiveRate, RateLimit, TokenBucket
from ..replies import (
    Outcome,
    Phase,
    Reply,
    classify,
    classify_tls_failure,
)
from ..result import DeliveryReport
from ._commit import FinalDotForbiddenError, before_final_dot, final_dot_guarded
from ._login import (
    PasswordLogin,
    TokenLogin,
    TokenProvider,
    accepts_force_refresh,
    send_credentials,
)
from ._session import (
    DEFAULT_PORTS,
    EhloName,
    SessionSetup,
    StepTracker,
    TLSMode,
    keyword_spelling,
    open_session,
    port_mode_conflict,
    port_problem,
    session_client,
    session_url,
    tls_context,
    warn_if_password_in_clear,
)
from ._transaction import (
    GarbledReplyError,
    LinkLostError,
    Next,
    ReplyTimeoutError,
    Transaction,
    WireError,
    failure_error,
)
from ._wire import Exchange, bdat_group, dot_stuffed
from .base import Transport
from .pool import ConnectionPool, Lease, PoolClosedError, PoolTimeoutError

# TLSMode and DEFAULT_PORTS live in ._session, TokenProvider and send_credentials in
# ._login (opening a session is shared with the check); they are re-exported here.
__all__ = [
    "DEFAULT_PORTS",
    "SMTPTransport",
    "TLSMode",
    "TokenProvider",
    "send_credentials",
    "translate_error",
]

logger = logging.getLogger("reliable_smtp")


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


def _count(name: str, value: int) -> int:
    checked = check_count(name, value)
    assert checked is not None
    return checked


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

    PIPELINING (``pipelining``, RFC 2920) sends MAIL, every RCPT and DATA in one
    write. With ``chunking`` as well (RFC 3030, when the server offers CHUNKING
    and PIPELINING) MAIL, every RCPT and ``BDAT <n> LAST`` go in one write with
    the message itself: one round trip per message. The message then leaves before
    the RCPT replies are known, so a link lost after that write is ambiguous (never
    resent) for every recipient not refused; ``chunking=False`` keeps DATA.

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
        chunking: bool = True,
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
        if not host or line_break_problem(host) is not None or any(c in host for c in " /"):
            raise ConfigurationError(f"host {host!r} is not a host name or address", setting="host")
        if port is None:
            port = DEFAULT_PORTS[self.tls]
        problem = port_problem(port)
        if problem is not None:
            raise ConfigurationError(f"port {problem}, got {port!r}", setting="port")
        conflict = port_mode_conflict(self.tls, port, spell=keyword_spelling)
        if conflict is not None:
            raise ConfigurationError(conflict, setting="tls")
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
        if warn_insecure:
            warn_if_password_in_clear(
                self.tls,
                host,
                password_set=secret is not None,
                spell=keyword_spelling,
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
        self._token_takes_refresh = accepts_force_refresh(oauth_token_provider)
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
        self.name = session_url(self.tls, host, port)
        self.max_connections = _count("max_connections", max_connections)
        self.max_messages_per_connection = _count(
            "max_messages_per_connection", max_messages_per_connection
        )
        self.idle_timeout = check_seconds("idle_timeout", idle_timeout)
        self.check_after = check_seconds("check_after", check_after)
        self.pool_timeout = check_seconds("pool_timeout", pool_timeout)
        self.pipelining = bool(pipelining)
        self.chunking = bool(chunking)
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
        self._ehlo_name = EhloName(local_hostname, connect_timeout=self.connect_timeout)
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
        # Its FQDN lookup thread, if still running, stayed in the parent.
        self._ehlo_name = EhloName(self.local_hostname, connect_timeout=self.connect_timeout)

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
            note_session_event("rate_limit_wait", seconds=wait)
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
            self._ssl_context = tls_context(
                ca_file=self._ca_file,
                client_cert=self._client_cert,
                client_key=self._client_key,
                minimum_version=self._minimum_tls_version,
            )
        return self._ssl_context

    def _session_setup(self) -> SessionSetup:
        login: PasswordLogin | TokenLogin | None = None
        if self._token_provider is not None:
            assert self.username is not None
            login = TokenLogin(
                username=self.username,
                provider=self._token_provider,
                timeout=self.oauth_token_timeout,
                takes_refresh=self._token_takes_refresh,
            )
        elif self.username is not None:
            login = PasswordLogin(username=self.username, password=self._password or "")
        return SessionSetup(
            server=self.name,
            tls=self.tls,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            ehlo_name=self._ehlo_name,
            login=login,
        )

    async def _connect(self) -> aiosmtplib.SMTP:
        steps = StepTracker()
        try:
            smtp = session_client(
                host=self.host,
                port=self.port,
                tls=self.tls,
                tls_context=self._tls_context() if self.tls is not TLSMode.NONE else None,
                local_hostname=self.local_hostname,
                command_timeout=self.command_timeout,
            )
            try:
                await open_session(smtp, self._session_setup(), steps)
            except BaseException:
                smtp.close()
                raise
        except DeliveryError:
            raise
        except Exception as exc:
            phase = steps.phase
            error = translate_error(exc, phase, server=self.name)
            if (
                self.tls is TLSMode.IMPLICIT
                and phase is Phase.CONNECT
                and isinstance(error, ConnectionFailedError)
                and find_cause(exc, ConnectionRefusedError) is None
            ):
                # With implicit TLS, "connect" includes the handshake: a link that drops
                # with no SSL error is a server that hung up on the TLS hello.
                error = error.replace(
                    explanation="the server closed the connection during the TLS handshake: "
                    "this port may not speak implicit TLS (use tls='starttls', "
                    "RELIABLE_SMTP_TLS=starttls, usually port 587), or it refuses this "
                    "client's TLS version; retried"
                )
            if not self._ever_connected:
                error = _first_contact(error)
            raise error from exc
        self._ever_connected = True
        return smtp

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
        # BDAT in the same group as MAIL and RCPT needs both extensions (RFC 3030 §4.2).
        # An outbox send (a final-dot guard installed) keeps DATA: there the body goes
        # out before the dot mark is committed and the dot after it, so a crash can leave
        # a recipient marked only once its body is on the wire. BDAT LAST commits the
        # content in the same write as the envelope, before any RCPT reply is known.
        chunking = (
            pipelined
            and self.chunking
            and smtp.supports_extension("chunking")
            and not final_dot_guarded()
        )
        try:
            wire = Exchange(smtp, server=self.name)
        except LinkLostError as lost:
            raise _StaleConnectionError(lost) from lost
        clean = True
        try:
            with wire:
                try:
                    if chunking:
                        report = await self._chunked_dialogue(wire, envelope, content, mail, rcpts)
                    else:
                        report = await self._dialogue(
                            wire, envelope, content, mail, rcpts, pipelined
                        )
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
        elif smtp.is_connected and (
            report.final_reply is None or (chunking and report.final_reply.severity != 2)
        ):
            # No final reply: the server may still be in the transaction. A refused
            # BDAT LAST leaves it less clearly over than a refused dot does: RSET too.
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

        The I/O of the transaction; what each reply (or failure) means is decided by
        :class:`~._transaction.Transaction`, which checks every reply individually
        either way (RFC 2920 §3.1) and says what to write next.
        """
        transaction = Transaction(envelope, pipelined=pipelined, server=self.name)
        timeout = self.command_timeout
        try:
            try:
                wire.write(mail + b"".join(rcpts) + b"DATA\r\n" if pipelined else mail)
                step = transaction.on_mail(await wire.read(timeout=timeout))
            except LinkLostError as lost:
                # Closed before MAIL was answered: a stale connection, nothing was sent.
                raise _StaleConnectionError(lost) from lost
            for rcpt in rcpts:
                if step is not Next.GO_ON:
                    break
                if not pipelined:
                    wire.write(rcpt)
                step = transaction.on_rcpt(await wire.read(timeout=timeout))
            if step is Next.GO_ON:
                if not pipelined:
                    wire.write(b"DATA\r\n")
                step = transaction.on_data(await wire.read(timeout=timeout))
            if step is Next.END_EMPTY:
                wire.write(b".\r\n")
                step = transaction.on_empty_end(await wire.read(timeout=timeout))
            elif step is Next.SEND_BODY:
                # The one place the message is handed over, to transaction.accepted.
                body, final_dot = dot_stuffed(content)
                if not final_dot_guarded():
                    await wire.write_body(body, final_dot, timeout=self.data_timeout)
                    transaction.on_body_written()
                    transaction.on_final(await wire.read(timeout=self.data_timeout))
                else:
                    # An outbox send: the body goes first, then the guard records the dot
                    # mark, then the dot goes alone. So the mark is the last thing before
                    # the commit, and a recipient left marked by a crash (AMBIGUOUS) always
                    # had the whole body on the wire. A veto drops the link before the dot:
                    # the server discards the message (phase DATA, never ambiguous).
                    await wire.write_body(body, timeout=self.data_timeout)
                    try:
                        await before_final_dot(tuple(transaction.accepted))
                    except FinalDotForbiddenError as forbidden:
                        transaction.on_error(
                            forbidden.error(
                                server=self.name, what="the final dot was never written"
                            )
                        )
                    else:
                        wire.write(_FINAL_DOT)
                        transaction.on_body_written()
                        transaction.on_final(await wire.read(timeout=self.data_timeout))
        except WireError as failure:
            transaction.on_failure(failure)
        except (DeliveryError, _StaleConnectionError):
            raise
        except Exception as exc:
            # Nothing else is expected from the wire; classified like a lost link.
            transaction.on_error(translate_error(exc, transaction.phase, server=self.name))
        if transaction.close:
            wire.close_connection()
        return transaction.result()

    async def _chunked_dialogue(
        self,
        wire: Exchange,
        envelope: Envelope,
        content: bytes,
        mail: bytes,
        rcpts: list[bytes],
    ) -> DeliveryReport:
        """MAIL, RCPT..., ``BDAT <n> LAST`` and the message in one write; then the replies.

        One round trip per message even on a cold connection (RFC 3030 with RFC
        2920). The write is the commit point: before it nothing was sent (a dead
        connection is stale and the message goes on a fresh one); after it every
        failure is ambiguous for the recipients not refused (see
        :mod:`._transaction`). Every reply after the write waits up to
        ``data_timeout``: giving up on any of them is as costly as on the final one.
        """
        transaction = Transaction(envelope, pipelined=True, chunking=True, server=self.name)
        commands, chunk = bdat_group(mail + b"".join(rcpts), content)
        # The commit point: the envelope and the whole message in one write. Outbox sends
        # (a final-dot guard installed) never come here - they keep DATA, whose dot mark
        # falls after the body and before the dot (see _transaction()).
        try:
            wire.write_group(commands, chunk)
        except LinkLostError as lost:
            raise _StaleConnectionError(lost) from lost
        transaction.on_content_written()
        timeout = self.data_timeout
        try:
            step = transaction.on_mail(await wire.read(timeout=timeout))
            for _ in rcpts:
                if step is not Next.GO_ON:
                    break
                step = transaction.on_rcpt(await wire.read(timeout=timeout))
            if step is Next.GO_ON:
                step = transaction.on_final(await wire.read(timeout=timeout))
        except WireError as failure:
            transaction.on_failure(failure)
        except DeliveryError:
            raise
        except Exception as exc:
            # Nothing else is expected from the wire; classified like a lost link.
            transaction.on_error(translate_error(exc, Phase.DATA_END, server=self.name))
        if transaction.close:
            wire.close_connection()
        return transaction.result()

    async def _reset(self, smtp: aiosmtplib.SMTP) -> None:
        """RSET after a transaction that did not end in a final reply; drop on any trouble."""
        try:
            response = await smtp.execute_command(b"RSET", timeout=self.command_timeout)
        except Exception:
            smtp.close()
            return
        if response.code != 250:
            smtp.close()


#: The end of the message (RFC 5321 §4.1.1.4), the last bytes ``dot_stuff`` appends.
_FINAL_DOT = b".\r\n"


class _StaleConnectionError(Exception):
    """The connection turned out to be closed at MAIL, before anything was sent."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


# -- the error boundary ------------------------------------------------------------------


def _tls_error(exc: BaseException, server: str | None) -> DeliveryError:
    # The verdict says it all: a transient handshake failure is a lost connection, a
    # certificate or version mismatch is AUTH_OR_CONFIG naming the "tls" setting.
    return error_for(
        classify_tls_failure(str(exc)), f"TLS failed: {exc}", phase=Phase.TLS, server=server
    )


#: Phases of opening a connection in which a failure without a reply, on the very first
#: connection, is almost always a wrong host, port, TLS mode or firewall.
_FIRST_CONTACT_PHASES = frozenset({Phase.CONNECT, Phase.TLS})


def _first_contact(error: DeliveryError) -> DeliveryError:
    """``error`` - the first connection ever to this server failed - marked not retried.

    A server that has never answered will not start answering within the mailer's
    retry window (seconds to two minutes): refused, silent or TLS-mismatched on the
    first try means a setting is wrong, and five tries only hide that for a minute.
    The class stays what it was (nothing was delivered; a queue may try again later);
    only the in-process retry is off. A reply from the server (a 421 greeting, a 454
    for STARTTLS) is the server's own word and keeps its verdict.
    """
    if error.reply is not None or error.phase not in _FIRST_CONTACT_PHASES:
        return error
    if not error.retryable:
        return error  # a certificate or TLS-version mismatch: already final, and says why
    cause = error.explanation
    for suffix in ("; retried", ": retried"):
        cause = cause.removesuffix(suffix)
    cause = cause.replace("TLS handshake failed: retried", "TLS handshake failed")
    return error.replace(
        retryable=False,
        explanation=(
            f"{cause}; no connection to this server has succeeded yet, so this is not "
            "retried: check RELIABLE_SMTP_HOST, RELIABLE_SMTP_PORT and RELIABLE_SMTP_TLS "
            "(587 with starttls, 465 with implicit, 25 with none for a local relay); raise "
            "RELIABLE_SMTP_CONNECT_TIMEOUT only for a server that is slow to greet"
        ),
    )


def find_cause(exc: BaseException | None, exc_type: type[BaseException]) -> BaseException | None:
    """The first ``exc_type`` in ``exc``'s chain of causes (aiosmtplib wraps them)."""
    seen: set[int] = set()
    current = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, exc_type):
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
    if isinstance(exc, WireError):
        return failure_error(exc, phase, server=server)
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
        if exc.code < 0:  # aiosmtplib's own reader found no SMTP reply
            return failure_error(GarbledReplyError(exc.message), phase, server=server)
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
        explanation = None
        if "ready message" in str(exc):
            # TCP connected but no "220" came: typical of a client talking plain text to an
            # implicit-TLS port, where the server waits for a TLS hello.
            implicit = (server or "").startswith("smtps://")
            explanation = (
                "the TLS handshake finished but no greeting came: the server is overloaded, "
                "or this port expects something else (plain or STARTTLS: tls='starttls', "
                "RELIABLE_SMTP_TLS=starttls)"
                if implicit
                else "connected, but the server sent no greeting: if this port expects "
                "implicit TLS (usually 465) use tls='implicit' (RELIABLE_SMTP_TLS=implicit); "
                "otherwise the server is overloaded or slow to greet "
                "(connect_timeout, RELIABLE_SMTP_CONNECT_TIMEOUT)"
            )
        return failure_error(
            ReplyTimeoutError(str(exc)), phase, server=server, explanation=explanation
        )
    if isinstance(exc, (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError)):
        explanation = None
        if find_cause(exc, ConnectionRefusedError) is not None:
            explanation = (
                "connection refused: nothing listens on that host and port; check "
                "the port (587 STARTTLS, 465 implicit TLS, 25 relay) and that the server runs"
            )
        return failure_error(
            LinkLostError(str(exc) or type(exc).__name__),
            phase,
            server=server,
            explanation=explanation,
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
