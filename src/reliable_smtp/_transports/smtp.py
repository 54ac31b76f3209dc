"""SMTP and SMTPS submission over aiosmtplib, one recipient reply at a time.

This module owns :class:`SMTPTransport`: its settings, its connections (a pool per
event loop), one delivery on a leased connection, and the SMTP transaction. Around it:

* :mod:`._config` - the constructor's combined checks (endpoint, login, TLS files);
  the value rules are :mod:`reliable_smtp._checks`;
* :mod:`._session` - opening a connection (greeting, EHLO, STARTTLS, AUTH, the TLS
  context, :class:`TLSMode` and the port rules), shared with ``reliable-smtp check``;
* :mod:`._connections` - a connection's life in the pool (NOOP check, QUIT, drop) and
  what waiting for one can end in;
* :mod:`._pacing` - the :class:`~reliable_smtp.RateLimit` at work (buckets, the
  adaptive rate that slows down when the server throttles);
* :mod:`._dialogue` - the transaction's I/O: the DATA dialogue (serial or pipelined,
  handing the connection on after the body) and the CHUNKING one;
* :mod:`._translate` - the error boundary: every aiosmtplib / OSError / ssl failure
  becomes the library's error tree there (:func:`translate_error`, re-exported here).

:func:`~._session.open_session` opens the session (connect, TLS, EHLO, AUTH) on an
aiosmtplib client. The transaction - MAIL, one RCPT per recipient, DATA, body,
pipelined when the server offers it (and across messages: a send waiting for the
connection writes the dot before it with its own group, :mod:`._handoff`); or, with
CHUNKING, MAIL, RCPT and ``BDAT <n> LAST`` with the message in one write - is
written and read by
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

from .._checks import check_seconds
from .._envelope import Envelope
from .._errors import (
    ConfigurationError,
    DeliveryError,
    PermanentError,
)
from .._ratelimit import RateLimit
from .._replies import Phase
from .._result import DeliveryReport
from . import _connections
from ._commit import final_dot_guarded
from ._config import _count as _count
from ._config import _secret_value as _secret_value
from ._config import check_tls_files, checked_endpoint, checked_login
from ._dialogue import (
    Hold,
    StaleConnectionError,
    chunked_dialogue,
    data_dialogue,
    end_exchange,
    settle,
)
from ._login import (
    PasswordLogin,
    TokenLogin,
    TokenProvider,
    accepts_force_refresh,
    send_credentials,
)
from ._pacing import Pacing
from ._session import (
    DEFAULT_PORTS,
    EhloName,
    SessionSetup,
    StepTracker,
    TLSMode,
    keyword_spelling,
    open_session,
    session_client,
    session_url,
    tls_context,
    warn_if_password_in_clear,
)
from ._transaction import LinkLostError
from ._translate import _FIRST_CONTACT_PHASES as _FIRST_CONTACT_PHASES
from ._translate import _first_contact as _first_contact
from ._translate import _tls_error as _tls_error
from ._translate import connection_error
from ._translate import find_cause as find_cause
from ._translate import translate_error as translate_error
from ._wire import Exchange
from .base import Transport
from .pool import ConnectionCounts, ConnectionPool

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
    write. With ``pipeline_across_messages`` as well (the default), a message whose
    final dot is written while another send waits for this connection hands the
    connection over at once: the next message's MAIL, RCPT and DATA follow the dot
    before its final reply comes, and that send reads the reply for it (RFC 2920
    §3.1) - one round trip per message on a busy connection; every reply is still
    matched to its own command and a failure of the next envelope never touches the
    message before it. With ``chunking`` as well (RFC 3030, when the server offers CHUNKING
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
        pipeline_across_messages: bool = True,
        chunking: bool = True,
        rate_limit: RateLimit | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        oauth_token_provider: TokenProvider | None = None,
        oauth_token_timeout: float | None = None,
        warn_insecure: bool = True,
    ) -> None:
        self.tls, port = checked_endpoint(tls, host, port)
        username, secret = checked_login(username, password, oauth_token_provider)
        if warn_insecure:
            warn_if_password_in_clear(
                self.tls,
                host,
                password_set=secret is not None,
                spell=keyword_spelling,
                stacklevel=2,
            )
        check_tls_files(ssl_context, ca_file, client_cert, client_key)
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
        self.pipeline_across_messages = bool(pipeline_across_messages)
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
        self._pacing: Pacing | None = None
        # Sends inside deliver() now (on this transport's loop): with company, a send that
        # could lend its connection on waits a moment for a taker (see _dialogue._hand_over).
        self._sending = 0
        # The outbox worker's share of the shared connection slots (limit_connections).
        self._connection_limit: int | None = None

    def __repr__(self) -> str:
        user = f" user={self.username!r}" if self.username else ""
        return f"<SMTPTransport {self.name}{user}>"

    # -- the contract --------------------------------------------------------------------

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        pool = self._connection_pool()
        pacing = self._pacing
        assert pacing is not None  # made with the pool
        # A pooled connection may have been closed by the server while idle (its 421 is
        # never read: aiosmtplib discards unsolicited data). Nothing of this message was
        # sent then, so the dead connection is retired and the message tried once more
        # on a connection opened for it - never on another idle one, which may be dead
        # too or put back by a concurrent send. If that fresh connection fails as well,
        # it is this message's own, classified error.
        self._sending += 1
        try:
            fresh = False
            while True:
                lease = await _connections.lease(pool, fresh=fresh, transport_name=self.name)
                hold = Hold(lease, pool)
                reusable = False
                try:
                    await pacing.wait_turn(lease)
                    report = await self._transaction(hold, envelope, content)
                    if not hold.counted:
                        lease.messages += 1
                    reusable = _connections.reusable(lease.connection)
                    pacing.observe(report)
                    return report
                except StaleConnectionError as stale:
                    if not lease.reused:
                        raise translate_error(
                            stale.cause, Phase.MAIL, transport_name=self.name
                        ) from stale
                    fresh = True
                except DeliveryError as error:
                    # A refusal the transaction handled (it reset or dropped the connection).
                    reusable = _connections.reusable(lease.connection)
                    pacing.observe_error(error)
                    raise
                finally:
                    # Handed over after the final dot, the connection is the next send's.
                    if hold.mine:
                        await pool.release(lease, reusable=reusable)
        finally:
            self._sending -= 1

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None and self._pool_loop is asyncio.get_running_loop():
            await pool.aclose()

    # -- connections ---------------------------------------------------------------------

    @property
    def connections(self) -> ConnectionCounts:
        """Connections open now: ``idle`` in the pool and ``in_use`` by a send (read-only;
        ``OpenTelemetryHooks`` exports them as ``reliable_smtp.connections``)."""
        pool = self._pool
        return ConnectionCounts() if pool is None else pool.counts

    def _connection_pool(self) -> ConnectionPool[aiosmtplib.SMTP]:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool_loop is not loop:
            # A pool belongs to one event loop; a transport reused on a new loop (a new
            # sync portal after fork, a new asyncio.run) starts with a new, empty pool.
            self._pool = ConnectionPool(
                size=self._pool_size(),
                max_messages=self.max_messages_per_connection,
                idle_timeout=self.idle_timeout,
                check_after=self.check_after,
                acquire_timeout=self.pool_timeout,
                open=self._connect,
                check=self._noop,
                close=self._quit,
                drop=_connections.drop,
                alive=lambda smtp: smtp.is_connected,
                clock=self._clock,
            )
            self._pool_loop = loop
            self._pacing = Pacing(
                self.rate_limit, transport_name=self.name, clock=self._clock, sleep=self._sleep
            )
        return self._pool

    def _pool_size(self) -> int:
        limit = self._connection_limit
        return self.max_connections if limit is None else min(self.max_connections, limit)

    async def limit_connections(self, maximum: int) -> None:
        if isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < 0:
            raise ValueError(f"maximum must be an int of at least 0, got {maximum!r}")
        self._connection_limit = maximum
        pool = self._pool
        if pool is not None and self._pool_loop is asyncio.get_running_loop():
            await pool.resize(self._pool_size())

    async def _noop(self, smtp: aiosmtplib.SMTP) -> bool:
        """Health check for a connection that sat idle: NOOP must answer 250."""
        return await _connections.answers_noop(smtp, timeout=self.command_timeout)

    async def _quit(self, smtp: aiosmtplib.SMTP) -> None:
        await _connections.quit_or_close(smtp, timeout=self.command_timeout)

    def forget_connections(self) -> None:
        # The parent's sockets are not ours to use: forget them without QUIT.
        self._pool = None
        self._pool_loop = None
        self._sending = 0  # the parent's sends in progress are not this process's
        # Its FQDN lookup thread, if still running, stayed in the parent.
        self._ehlo_name = EhloName(self.local_hostname, connect_timeout=self.connect_timeout)

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
            transport_name=self.name,
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
            raise connection_error(
                exc,
                steps.phase,
                transport_name=self.name,
                tls=self.tls,
                first_contact=not self._ever_connected,
            ) from exc
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
                    transport_name=self.name,
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
                    transport_name=self.name,
                    explanation="message too large: make it (or its attachments) smaller",
                )
            options.append(f"SIZE={len(content)}")
        return options

    async def _transaction(self, hold: Hold, envelope: Envelope, content: bytes) -> DeliveryReport:
        smtp = hold.lease.connection
        # Handed over by the previous send right after its final dot, the connection
        # still owes it its final reply: read after this transaction's first write (or
        # before anything, if this one does not start with a pipelined group).
        owed = hold.take_owed()
        try:
            options = self._mail_options(smtp, envelope, content)
        except DeliveryError:
            if owed is not None:
                await settle(hold, owed)
                end_exchange(smtp, owed.wire)
            raise
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
        guarded = final_dot_guarded()
        # BDAT in the same group as MAIL and RCPT needs both extensions (RFC 3030 §4.2).
        # An outbox send (a final-dot guard installed) keeps DATA: there the body goes
        # out before the dot mark is committed and the dot after it, so a crash can leave
        # a recipient marked only once its body is on the wire. BDAT LAST commits the
        # content in the same write as the envelope, before any RCPT reply is known.
        chunking = (
            pipelined and self.chunking and smtp.supports_extension("chunking") and not guarded
        )
        if owed is not None:
            wire = owed.wire
            if chunking or not pipelined:
                # Only the pipelined DATA dialogue writes before the owed reply is read:
                # its group holds no content, so a loss there cannot make it ambiguous.
                await settle(hold, owed)
                owed = None
        else:
            try:
                wire = Exchange(smtp, transport_name=self.name).attach()
            except LinkLostError as lost:
                raise StaleConnectionError(lost) from lost
        # After its own dot, this send hands the connection on to a waiting one - not an
        # outbox send (its dot mark and final reply stay together), nor under a rate
        # limit (the next send may have to wait its turn while holding our reply).
        pacing = self._pacing
        hold.may_hand_over = (
            self.pipeline_across_messages
            and pipelined
            and not chunking
            and not guarded
            and not (pacing is not None and pacing.paced)
        )
        hold.company = self._sending > 1
        clean = True
        try:
            try:
                if chunking:
                    report = await chunked_dialogue(self, wire, envelope, content, mail, rcpts)
                else:
                    report = await data_dialogue(
                        self, hold, wire, envelope, content, mail, rcpts, pipelined, owed
                    )
            finally:
                if hold.mine:
                    clean = not wire.leftover
                    wire.detach()
        except DeliveryError:
            # A refusal the dialogue handled (the sender was refused): reset and go on.
            if clean and smtp.is_connected:
                await self._reset(smtp)
            else:
                smtp.close()
            raise
        except BaseException:
            # Stale, cancelled, or an error the dialogue did not handle: never reuse it
            # (unless it went back to the send whose reply it owed: that one drops it).
            if hold.mine:
                smtp.close()
            raise
        if not hold.mine:
            return report  # handed over after the dot: the next send's connection now
        if not clean:
            smtp.close()  # the server said more than it was asked: out of step
        elif smtp.is_connected and (
            report.final_reply is None or (chunking and report.final_reply.severity != 2)
        ):
            # No final reply: the server may still be in the transaction. A refused
            # BDAT LAST leaves it less clearly over than a refused dot does: RSET too.
            await self._reset(smtp)
        return report

    async def _reset(self, smtp: aiosmtplib.SMTP) -> None:
        """RSET after a transaction that did not end in a final reply; drop on any trouble."""
        try:
            response = await smtp.execute_command(b"RSET", timeout=self.command_timeout)
        except Exception:
            smtp.close()
            return
        if response.code != 250:
            smtp.close()
