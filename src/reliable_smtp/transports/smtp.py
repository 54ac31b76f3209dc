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
import math
import os
import ssl
from dataclasses import replace
from enum import Enum

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from ..envelope import Envelope
from ..errors import (
    AmbiguousDeliveryError,
    AuthOrConfigError,
    ConfigurationError,
    DeliveryError,
    PermanentError,
    ProtocolError,
    error_for,
)
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
from ._wire import BodyNotSentError, send_body
from .base import Transport

__all__ = ["SMTPTransport", "TLSMode", "translate_error"]


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


def _check_timeout(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}", setting=name)
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(
            f"{name} must be a positive, finite number of seconds, got {value!r}: "
            "every network wait is bounded",
            setting=name,
        )
    return float(value)


class SMTPTransport(Transport):
    """Submit mail to an SMTP server (STARTTLS on 587, implicit TLS on 465, or plain).

    Certificate verification is always on unless you pass your own
    ``ssl_context`` that turns it off. AUTH is only ever sent over an encrypted
    connection, unless ``tls=TLSMode.NONE`` was chosen explicitly (a trusted
    relay). The password never appears in ``repr()``, logs or errors.

    Timeouts (seconds, never ``None``): ``connect_timeout`` covers TCP connect,
    the TLS handshake and the greeting; ``command_timeout`` every command reply;
    ``data_timeout`` the reply to the final dot (RFC 5321 §4.5.3.2 asks for 10
    minutes: a premature timeout there is how duplicates happen).
    """

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
        connect_timeout: float = 30.0,
        command_timeout: float = 60.0,
        data_timeout: float = 600.0,
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
        if secret is not None and username is None:
            raise ConfigurationError(
                "a password was given without a username: set both, or neither",
                setting="username",
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
        self._ssl_context = ssl_context
        self._ca_file = os.fspath(ca_file) if ca_file is not None else None
        self._client_cert = os.fspath(client_cert) if client_cert is not None else None
        self._client_key = os.fspath(client_key) if client_key is not None else None
        self._minimum_tls_version = minimum_tls_version
        self.local_hostname = local_hostname
        self.connect_timeout = _check_timeout("connect_timeout", connect_timeout)
        self.command_timeout = _check_timeout("command_timeout", command_timeout)
        self.data_timeout = _check_timeout("data_timeout", data_timeout)
        scheme = {TLSMode.STARTTLS: "smtp", TLSMode.IMPLICIT: "smtps", TLSMode.NONE: "smtp+plain"}
        self.name = f"{scheme[self.tls]}://{host}:{port}"
        self._smtp: aiosmtplib.SMTP | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        user = f" user={self.username!r}" if self.username else ""
        return f"<SMTPTransport {self.name}{user}>"

    # -- the contract --------------------------------------------------------------------

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self._check_open()
        async with self._connection_lock():
            # A reused connection may have been closed by the server while idle (its
            # 421 is never read: aiosmtplib discards unsolicited data). Nothing of this
            # message was sent then, so one immediate retry on a fresh connection is safe.
            reused = self._smtp is not None and self._smtp.is_connected
            try:
                return await self._deliver_once(envelope, content)
            except _StaleConnectionError as stale:
                if not reused:
                    raise translate_error(stale.cause, Phase.MAIL, server=self.name) from stale
            try:
                return await self._deliver_once(envelope, content)
            except _StaleConnectionError as stale:
                raise translate_error(stale.cause, Phase.MAIL, server=self.name) from stale

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit(timeout=min(self.command_timeout, 5.0))
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                smtp.close()

    # -- connection ----------------------------------------------------------------------

    def _connection_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            # A lock belongs to one event loop; a transport reused on a new loop (a new
            # sync portal after fork, a new asyncio.run) starts with a new lock and
            # without the old loop's connection.
            self._lock = asyncio.Lock()
            self._lock_loop = loop
            self._smtp = None
        return self._lock

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
                local_hostname=self.local_hostname,
                timeout=self.command_timeout,
                use_tls=self.tls is TLSMode.IMPLICIT,
                start_tls=False,
                tls_context=self._tls_context() if self.tls is not TLSMode.NONE else None,
            )
            await smtp.connect(timeout=self.connect_timeout)
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
                    await smtp.starttls(timeout=self.connect_timeout)
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
            raise translate_error(exc, phase, server=self.name) from exc
        return smtp

    async def _ehlo(self, smtp: aiosmtplib.SMTP) -> None:
        response = await smtp.execute_command(
            b"EHLO",
            (smtp.local_hostname or "localhost").encode("ascii"),
            timeout=self.command_timeout,
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
        password = self._password or ""
        # One mechanism, one attempt: aiosmtplib's login() tries every mechanism after
        # a failure, which multiplies failed logins and gets accounts locked (Gmail:
        # "454 4.7.0 Too many login attempts").
        if "plain" in methods:
            await smtp.auth_plain(self.username, password, timeout=self.command_timeout)
        elif "login" in methods:
            await smtp.auth_login(self.username, password, timeout=self.command_timeout)
        else:
            offered = " ".join(methods) or "none"
            raise AuthOrConfigError(
                "the server offers no password authentication (AUTH PLAIN or LOGIN)",
                phase=Phase.AUTH,
                server=self.name,
                setting="username",
                explanation=(
                    f"mechanisms offered: {offered}; if none are offered before TLS, "
                    "check the TLS mode; for XOAUTH2 use an OAuth2 token provider"
                ),
            )

    async def _ensure_connection(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        self._smtp = None
        self._smtp = await self._connect()
        return self._smtp

    def _drop_connection(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def _after_fork(self) -> None:
        # The parent's sockets are not ours to use: forget them without QUIT.
        self._smtp = None
        self._lock = None
        self._lock_loop = None

    # -- one transaction -----------------------------------------------------------------

    async def _deliver_once(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        smtp = await self._ensure_connection()
        try:
            report = await self._transaction(smtp, envelope, content)
        except (DeliveryError, _StaleConnectionError):
            # A refusal the transaction handled (it reset or dropped the connection).
            if not smtp.is_connected:
                self._smtp = None
            raise
        except BaseException:
            # Unknown state (cancelled, foreign error): never reuse it.
            self._drop_connection()
            raise
        if not smtp.is_connected:
            self._smtp = None
        return report

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

    async def _command(self, smtp: aiosmtplib.SMTP, phase: Phase, *args: bytes) -> SMTPResponse:
        try:
            return await smtp.execute_command(*args, timeout=self.command_timeout)
        except Exception as exc:
            raise translate_error(exc, phase, server=self.name) from exc

    async def _transaction(
        self, smtp: aiosmtplib.SMTP, envelope: Envelope, content: bytes
    ) -> DeliveryReport:
        options = self._mail_options(smtp, envelope, content)
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        mail_args = [b"MAIL", f"FROM:<{envelope.sender}>".encode(encoding)]
        mail_args += [o.encode("ascii") for o in options]
        try:
            response = await smtp.execute_command(*mail_args, timeout=self.command_timeout)
        except aiosmtplib.SMTPServerDisconnected as exc:
            # The first command on a reused connection found it closed: nothing sent.
            self._drop_connection()
            raise _StaleConnectionError(exc) from exc
        except Exception as exc:
            self._drop_connection()
            raise translate_error(exc, Phase.MAIL, server=self.name) from exc
        if response.code not in (250, 251):
            error = self._reply_error(response, Phase.MAIL, "the server refused the sender")
            await self._reset(smtp)
            raise error

        statuses: dict[str, RecipientStatus] = {}
        accepted: list[str] = []
        for index, recipient in enumerate(envelope.recipients):
            try:
                response = await self._command(
                    smtp, Phase.RCPT, b"RCPT", f"TO:<{recipient}>".encode(encoding)
                )
            except DeliveryError as failure:
                # The link broke mid-envelope: no DATA was sent, so nobody got anything.
                return self._fail_accepted(
                    envelope, statuses, [*accepted, *envelope.recipients[index:]], failure
                )
            reply = Reply.from_server(response.code, response.message)
            if response.code in (250, 251, 252):
                accepted.append(recipient)
                continue
            statuses[recipient] = self._status(
                recipient, classify(reply, Phase.RCPT), Phase.RCPT, reply
            )
            if response.code == 421:
                # The server is closing: the remaining recipients were never tried and
                # the accepted ones never got DATA. All of them are simply pending.
                for other in [*envelope.recipients[index + 1 :], *accepted]:
                    statuses[other] = self._status(
                        other, classify(reply, Phase.RCPT), Phase.RCPT, reply
                    )
                self._drop_connection()
                return self._report(envelope, statuses)

        if not accepted:
            await self._reset(smtp)
            return self._report(envelope, statuses)

        try:
            response = await self._command(smtp, Phase.DATA, b"DATA")
        except DeliveryError as failure:
            return self._fail_accepted(envelope, statuses, accepted, failure)
        if response.code != 354:
            reply = Reply.from_server(response.code, response.message)
            verdict = classify(reply, Phase.DATA)
            for recipient in accepted:
                statuses[recipient] = self._status(recipient, verdict, Phase.DATA, reply)
            await self._reset(smtp)
            return self._report(envelope, statuses)

        try:
            response = await send_body(smtp, content, timeout=self.data_timeout)
        except BodyNotSentError as exc:
            lost = translate_error(
                aiosmtplib.SMTPServerDisconnected(str(exc)), Phase.DATA, server=self.name
            )
            return self._fail_accepted(envelope, statuses, accepted, lost)
        except Exception as exc:
            lost = translate_error(exc, Phase.DATA_END, server=self.name)
            return self._fail_accepted(envelope, statuses, accepted, lost)

        reply = Reply.from_server(response.code, response.message)
        verdict = classify(reply, Phase.DATA_END)
        for recipient in accepted:
            statuses[recipient] = self._status(recipient, verdict, Phase.DATA_END, reply)
        if response.code == 421:
            self._drop_connection()
        return self._report(envelope, statuses, final_reply=reply)

    def _fail_accepted(
        self,
        envelope: Envelope,
        statuses: dict[str, RecipientStatus],
        accepted: list[str],
        failure: DeliveryError,
    ) -> DeliveryReport:
        """The link failed after RCPT: every accepted recipient shares ``failure``."""
        self._drop_connection()
        for recipient in accepted:
            statuses[recipient] = self._status_from_error(recipient, failure)
        return self._report(envelope, statuses)

    async def _reset(self, smtp: aiosmtplib.SMTP) -> None:
        """RSET after a failed transaction; drop the connection if even that fails."""
        if not smtp.is_connected:
            self._drop_connection()
            return
        try:
            response = await smtp.execute_command(b"RSET", timeout=self.command_timeout)
        except Exception:
            self._drop_connection()
            return
        if response.code != 250:
            self._drop_connection()

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
        ordered = {r: statuses[r] for r in envelope.recipients}
        return DeliveryReport(recipients=ordered, server=self.name, final_reply=final_reply)


class _StaleConnectionError(Exception):
    """The connection turned out to be closed at MAIL, before anything was sent."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


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


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = exc
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
    ssl_error = _find(exc, ssl.SSLError)
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
            # TCP connected but no "220" came: typical of a STARTTLS/plain client talking
            # to an implicit-TLS port, where the server waits for a TLS hello.
            error.explanation = (
                "connected, but the server sent no greeting: if this port expects implicit "
                "TLS (usually 465) use tls='implicit'; otherwise the server is overloaded"
            )
        return error
    if isinstance(exc, (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError)):
        verdict = classify_connection_loss(phase, timed_out=False)
        detail = str(exc) or type(exc).__name__
        if _find(exc, ConnectionRefusedError) is not None:
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
