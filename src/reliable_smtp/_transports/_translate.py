"""The error boundary: every aiosmtplib / ``OSError`` / ``ssl`` / timeout failure becomes
one of the library's :class:`~reliable_smtp.DeliveryError` classes here, and nowhere else.

This module owns :func:`translate_error` (the one boundary; the SMTP transport and
``reliable-smtp check`` both call it), :func:`find_cause` (the first exception of a
type in a chain of causes: aiosmtplib wraps them), a TLS failure's verdict
(``_tls_error``), what a failure to open a connection says
(:func:`connection_error`, e.g. a hang-up during an implicit-TLS handshake) and the
rule for the very first connection to a server (``_first_contact``: a failure
without a reply there is a setting, so not retried).
What a reply means is :mod:`reliable_smtp._replies`; how a failure in the middle of a
transaction is pinned to its phase is :func:`~._transaction.failure_error`.
"""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib

from .._errors import (
    AuthOrConfigError,
    ConnectionFailedError,
    DeliveryError,
    PermanentError,
    ProtocolError,
    error_for,
)
from .._replies import Phase, Reply, classify, classify_tls_failure
from ._session import TLSMode
from ._transaction import (
    GarbledReplyError,
    LinkLostError,
    ReplyTimeoutError,
    WireError,
    failure_error,
)

__all__ = ["find_cause", "translate_error"]


def _tls_error(exc: BaseException, transport_name: str | None) -> DeliveryError:
    # The verdict says it all: a transient handshake failure is a lost connection, a
    # certificate or version mismatch is AUTH_OR_CONFIG naming the "tls" setting.
    return error_for(
        classify_tls_failure(str(exc)),
        f"TLS failed: {exc}",
        phase=Phase.TLS,
        transport_name=transport_name,
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


def connection_error(
    exc: BaseException, phase: Phase, *, transport_name: str, tls: TLSMode, first_contact: bool
) -> DeliveryError:
    """:func:`translate_error` for a failure to open a connection in ``phase``.

    ``first_contact``: no connection to this server has been opened yet (see
    :func:`_first_contact`).
    """
    error = translate_error(exc, phase, transport_name=transport_name)
    if (
        tls is TLSMode.IMPLICIT
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
    if first_contact:
        error = _first_contact(error)
    return error


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
    exc: BaseException, phase: Phase, *, transport_name: str | None = None
) -> DeliveryError:
    """Map an aiosmtplib, ``OSError``, ``ssl`` or timeout exception to the error tree.

    The single boundary between foreign exceptions and ours. ``phase`` is where the
    transport was when it happened; a lost link in ``Phase.DATA_END`` is ambiguous.
    """
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, WireError):
        return failure_error(exc, phase, transport_name=transport_name)
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
                transport_name=transport_name,
            )
        return PermanentError(
            "every recipient was refused", phase=Phase.RCPT, transport_name=transport_name
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code < 0:  # aiosmtplib's own reader found no SMTP reply
            return failure_error(
                GarbledReplyError(exc.message), phase, transport_name=transport_name
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
            transport_name=transport_name,
        )
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return PermanentError(
            f"the server does not support what the message needs: {exc}",
            phase=phase,
            transport_name=transport_name,
            explanation="this server lacks an extension the message needs (e.g. SMTPUTF8 for "
            "non-ASCII addresses): use ASCII addresses or another server",
        )
    ssl_error = find_cause(exc, ssl.SSLError)
    if ssl_error is not None:
        return _tls_error(ssl_error, transport_name)
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, asyncio.TimeoutError, TimeoutError)):
        explanation = None
        if "ready message" in str(exc):
            # TCP connected but no "220" came: typical of a client talking plain text to an
            # implicit-TLS port, where the server waits for a TLS hello.
            implicit = (transport_name or "").startswith("smtps://")
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
            ReplyTimeoutError(str(exc)),
            phase,
            transport_name=transport_name,
            explanation=explanation,
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
            transport_name=transport_name,
            explanation=explanation,
        )
    if isinstance(exc, aiosmtplib.SMTPException):
        # aiosmtplib's plain SMTPException is a configuration mismatch: STARTTLS or AUTH
        # not offered, no usable mechanism, already connected.
        return AuthOrConfigError(
            f"{exc} ({where})",
            phase=phase,
            transport_name=transport_name,
            explanation="the server does not offer what this configuration needs; "
            "check the TLS mode and credentials",
        )
    if isinstance(exc, (UnicodeError, ValueError)):
        return ProtocolError(
            f"could not encode an SMTP command {where}: {exc}",
            phase=phase,
            transport_name=transport_name,
            explanation="an address or option cannot be sent to this server as it is",
        )
    return ProtocolError(
        f"unexpected {type(exc).__name__} {where}: {exc}",
        phase=phase,
        transport_name=transport_name,
        explanation="an error the library did not expect; please report it",
    )
