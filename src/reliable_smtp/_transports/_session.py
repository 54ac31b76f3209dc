"""Opening an SMTP session: the one way the library gets from a socket to "ready for MAIL".

This module owns every step before the first transaction, for both
:class:`~reliable_smtp.SMTPTransport` and ``reliable-smtp check``:

- the TLS mode (:class:`TLSMode`), its default ports and scheme names (:func:`session_url`),
  which ports contradict which mode (:func:`port_mode_conflict`, :func:`port_problem`) and
  the warning for a password sent in clear text (:func:`warn_if_password_in_clear`);
- the TLS context built from the settings (:func:`tls_context`);
- the greeting, EHLO with the HELO fallback for servers without ESMTP, and the EHLO
  name (:class:`EhloName`: ``local_hostname``, else a dotted FQDN looked up once and
  with a bound, else the connection's address literal);
- STARTTLS, *required* in ``starttls`` mode (never a fall back to clear text);
- AUTH, through :mod:`._login` (one mechanism, one attempt; XOAUTH2 with a token
  provider, refreshed once; the one credential exchange, redacted).

:func:`open_session` runs the steps in order. It raises what went wrong as it came:
an aiosmtplib / ``OSError`` / ``ssl`` exception (the caller translates it at its error
boundary, with the phase of the step in progress) or, for what the session itself
refuses (no STARTTLS, no usable AUTH mechanism, a refused EHLO, a bad token), a
:class:`~reliable_smtp.DeliveryError`. An optional :class:`SessionObserver` hears of
every step as it starts and as it ends (with a :class:`StepRecord`): the transport only
remembers which step was running (:class:`StepTracker`), the check times each step and
reports what the server said and offered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import re
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from .._errors import AuthOrConfigError, DeliveryError, InsecureConfigurationWarning
from .._hooks import note_session_event
from .._replies import Phase, Reply
from ._login import PasswordLogin, TokenLogin, log_in
from ._wire import transcript_line

__all__ = [
    "DEFAULT_PORTS",
    "EHLO_NAME_TIMEOUT",
    "EhloName",
    "SessionObserver",
    "SessionSetup",
    "Spelling",
    "Step",
    "StepRecord",
    "StepTracker",
    "TLSMode",
    "is_loopback_host",
    "keyword_spelling",
    "open_session",
    "port_mode_conflict",
    "port_problem",
    "session_client",
    "session_url",
    "tls_context",
    "warn_if_password_in_clear",
]


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

#: The URL scheme of each mode (``RELIABLE_SMTP_URL`` spells them the same way).
_SCHEMES = {TLSMode.STARTTLS: "smtp", TLSMode.IMPLICIT: "smtps", TLSMode.NONE: "smtp+plain"}


def session_url(tls: TLSMode | str, host: str, port: int) -> str:
    """``scheme://host:port``: the transport's ``name``, the check's target, the test
    server's ``url``."""
    return f"{_SCHEMES[TLSMode(tls)]}://{host}:{port}"


# -- which ports go with which mode ----------------------------------------------------

#: How a message spells a setting: ``("tls", "implicit")`` -> ``tls='implicit'`` for
#: the transport's keywords, ``RELIABLE_SMTP_TLS=implicit`` for the environment.
Spelling = Callable[[str, object], str]


def keyword_spelling(setting: str, value: object) -> str:
    """A setting as :class:`~reliable_smtp.SMTPTransport` takes it: ``tls='none'``, ``port 587``."""
    return f"port {value}" if setting == "port" else f"{setting}={str(value)!r}"


_MODE_WORDS = {TLSMode.STARTTLS: "STARTTLS", TLSMode.IMPLICIT: "implicit TLS"}


def port_problem(port: object) -> str | None:
    """What is wrong with ``port`` as a TCP port, or ``None``."""
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return None
    return "must be between 1 and 65535"


def port_mode_conflict(tls: TLSMode, port: int, *, spell: Spelling) -> str | None:
    """Why ``port`` contradicts ``tls`` and what to set instead, or ``None`` when they fit.

    465 speaks TLS from the first byte, 25 and 587 expect STARTTLS: the wrong mode there
    fails at the first send with a confusing timeout or handshake error.
    """
    if tls is TLSMode.STARTTLS and port == 465:
        why = "port 465 speaks implicit TLS (SMTPS)"
        fitting = TLSMode.IMPLICIT
    elif tls is TLSMode.IMPLICIT and port in (25, 587):
        why = f"port {port} expects STARTTLS"
        fitting = TLSMode.STARTTLS
    else:
        return None
    return (
        f"{why}, but {spell('tls', tls)} was chosen: use {spell('tls', fitting)} with port "
        f"{port}, or {spell('port', DEFAULT_PORTS[tls])} with {_MODE_WORDS[tls]}"
    )


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (where plain SMTP is not overheard)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_password_in_clear(
    tls: TLSMode, host: str, *, password_set: bool, spell: Spelling, stacklevel: int
) -> None:
    """An :class:`~reliable_smtp.InsecureConfigurationWarning` when a password would cross
    a network unencrypted (``tls=none`` to a host that is not this machine)."""
    if password_set and tls is TLSMode.NONE and not is_loopback_host(host):
        warnings.warn(
            f"{spell('tls', 'none')} sends the password to {host} in clear text; use "
            f"{spell('tls', 'starttls')} (587) or {spell('tls', 'implicit')} (465) unless "
            "this relay is on a network you trust",
            InsecureConfigurationWarning,
            stacklevel=stacklevel + 1,
        )


def tls_context(
    *,
    ca_file: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    minimum_version: ssl.TLSVersion | None = ssl.TLSVersion.TLSv1_2,
) -> ssl.SSLContext:
    """The context for these settings: the system's CAs (or ``ca_file``), certificate
    and host name verification always on, at least TLS 1.2 unless told otherwise."""
    context = ssl.create_default_context(cafile=ca_file)
    if client_cert is not None:
        context.load_cert_chain(client_cert, client_key)
    if minimum_version is not None:
        context.minimum_version = minimum_version
    return context


# -- the steps and who hears of them --------------------------------------------------


class Step(str, Enum):
    """The steps of opening a session, in order (the check's step names)."""

    GREETING = "greeting"
    """TCP is up (and, with implicit TLS, the handshake): the server's 220."""
    EHLO = "ehlo"
    STARTTLS = "starttls"
    EHLO_TLS = "ehlo_tls"
    """EHLO again, on the encrypted connection."""
    AUTH = "auth"

    @property
    def phase(self) -> Phase:
        """The phase a failure in this step belongs to."""
        return _PHASES[self]


_PHASES = {
    Step.GREETING: Phase.CONNECT,
    Step.EHLO: Phase.EHLO,
    Step.STARTTLS: Phase.TLS,
    Step.EHLO_TLS: Phase.EHLO,
    Step.AUTH: Phase.AUTH,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecord:
    """What one finished step got from the server."""

    step: Step
    response: SMTPResponse
    """The greeting, the EHLO (or HELO) reply, STARTTLS's 220, AUTH's 235."""
    seconds: float
    esmtp: bool = True
    """EHLO steps: False when the server does not speak ESMTP and answered HELO."""
    ehlo_name: str | None = None
    """EHLO steps: the name this client sent."""
    mechanism: str | None = None
    """AUTH: the mechanism used."""
    tls_version: str | None = None
    """STARTTLS: the protocol version negotiated (``TLSv1.3``)."""


class SessionObserver(Protocol):
    """Hears of each step of :func:`open_session`; a step that fails never finishes."""

    def step_started(self, step: Step) -> None: ...

    def step_finished(self, record: StepRecord) -> None: ...


class StepTracker:
    """The observer an error boundary needs: which step (so which phase) was running."""

    def __init__(self) -> None:
        self.step: Step | None = None

    def step_started(self, step: Step) -> None:
        self.step = step

    def step_finished(self, record: StepRecord) -> None:
        # The current send's hooks (OpenTelemetry span events) hear of each step.
        if record.step is Step.GREETING:
            note_session_event("connect", seconds=record.seconds)
        elif record.step is Step.STARTTLS:
            note_session_event("tls", version=record.tls_version or "?")
        elif record.step is Step.AUTH:
            note_session_event("auth")

    @property
    def phase(self) -> Phase:
        return self.step.phase if self.step is not None else Phase.CONNECT


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSetup:
    """Everything :func:`open_session` needs besides the client."""

    transport_name: str
    """The name in transcripts and errors (:func:`session_url`)."""
    tls: TLSMode
    connect_timeout: float
    """STARTTLS's handshake (the greeting's is the client's ``connect()`` call)."""
    command_timeout: float
    ehlo_name: EhloName
    login: PasswordLogin | TokenLogin | None = None


def session_client(
    *,
    host: str,
    tls: TLSMode,
    tls_context: ssl.SSLContext | None,
    local_hostname: str | None,
    command_timeout: float,
    port: int | None = None,
    sock: socket.socket | None = None,
) -> aiosmtplib.SMTP:
    """The aiosmtplib client :func:`open_session` expects, not yet connected.

    Implicit TLS is ``use_tls``; ``start_tls`` is always off (STARTTLS is the session's,
    and required). ``local_hostname`` is never ``None`` here: aiosmtplib would resolve
    ``getfqdn()`` itself, unbounded, before the connect timeout starts; the session
    sends the real name (:class:`EhloName`).
    """
    return aiosmtplib.SMTP(
        hostname=host,
        port=port,
        sock=sock,
        local_hostname=local_hostname or "localhost",
        timeout=command_timeout,
        use_tls=tls is TLSMode.IMPLICIT,
        start_tls=False,
        tls_context=tls_context if tls is not TLSMode.NONE else None,
    )


async def open_session(
    smtp: aiosmtplib.SMTP, setup: SessionSetup, observer: SessionObserver | None = None
) -> None:
    """Connect ``smtp`` and take it through greeting, EHLO, STARTTLS and AUTH.

    ``smtp`` is a client not yet connected (``use_tls`` for implicit TLS, never
    ``start_tls``: STARTTLS is this function's). On failure the client is left as it is
    (the caller closes it) and the step in progress is the observer's last
    ``step_started``.
    """
    watcher: SessionObserver = observer or StepTracker()
    watcher.step_started(Step.GREETING)
    started = time.monotonic()
    greeting = await smtp.connect(timeout=setup.connect_timeout)
    elapsed = time.monotonic() - started
    transcript_line(
        setup.transport_name, "<", f"{greeting.code} {greeting.message}", elapsed=elapsed
    )
    watcher.step_finished(StepRecord(step=Step.GREETING, response=greeting, seconds=elapsed))

    await _ehlo(smtp, setup, watcher, Step.EHLO)
    if setup.tls is TLSMode.STARTTLS:
        watcher.step_started(Step.STARTTLS)
        watcher.step_finished(await _starttls(smtp, setup))
        await _ehlo(smtp, setup, watcher, Step.EHLO_TLS)
    if setup.login is not None:
        watcher.step_started(Step.AUTH)
        watcher.step_finished(await _authenticate(smtp, setup, setup.login))


async def _authenticate(
    smtp: aiosmtplib.SMTP, setup: SessionSetup, login: PasswordLogin | TokenLogin
) -> StepRecord:
    encrypted = smtp.get_transport_info("sslcontext") is not None
    if not encrypted and setup.tls is not TLSMode.NONE:  # pragma: no cover - guarded above
        raise AuthOrConfigError(
            "refusing to send the password over an unencrypted connection",
            phase=Phase.AUTH,
            transport_name=setup.transport_name,
            setting="tls",
        )
    started = time.monotonic()
    mechanism, response = await log_in(
        smtp, login, timeout=setup.command_timeout, transport_name=setup.transport_name
    )
    return StepRecord(
        step=Step.AUTH, response=response, seconds=time.monotonic() - started, mechanism=mechanism
    )


# -- EHLO -----------------------------------------------------------------------------

#: The longest the default EHLO name (this host's FQDN) is waited for, once per transport.
EHLO_NAME_TIMEOUT = 2.0

#: A dotted host name ("app1.example.com"): a bare "localhost" or "vm" is not one (RFC 5321
#: §4.1.4 wants a resolvable name, or else an address literal).
_DOMAIN_NAME = re.compile(
    r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}"
)


class EhloName:
    """The name sent in EHLO: ``local_hostname``, else this host's FQDN if it resolves in
    time, else an address literal of the connection's own address (RFC 5321 §4.1.4:
    "[192.0.2.1]").

    aiosmtplib would call ``socket.getfqdn()`` for every connection, before its connect
    timeout starts and without a bound: a slow resolver stalled every send. Here the
    lookup runs once per :class:`EhloName` (one per transport), in its own thread, and
    is waited for at most ``min(connect_timeout, EHLO_NAME_TIMEOUT)`` seconds, once.
    """

    def __init__(self, local_hostname: str | None, *, connect_timeout: float) -> None:
        self.local_hostname = local_hostname
        self._timeout = min(connect_timeout, EHLO_NAME_TIMEOUT)
        self._lookup: _FQDNLookup | None = None

    async def for_connection(self, smtp: aiosmtplib.SMTP) -> str:
        if self.local_hostname is not None:
            return self.local_hostname
        if self._lookup is None:
            self._lookup = _FQDNLookup()
        name = await self._lookup.result(timeout=self._timeout)
        return name or _address_literal(smtp)


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


async def _ehlo(
    smtp: aiosmtplib.SMTP, setup: SessionSetup, observer: SessionObserver, step: Step
) -> None:
    observer.step_started(step)
    name = await setup.ehlo_name.for_connection(smtp)
    smtp.local_hostname = name  # aiosmtplib's helo() fallback below reads it
    transcript_line(setup.transport_name, ">", f"EHLO {name}")
    started = time.monotonic()
    response = await smtp.execute_command(
        b"EHLO", name.encode("ascii"), timeout=setup.command_timeout
    )
    transcript_line(
        setup.transport_name,
        "<",
        f"{response.code} {response.message}".replace("\n", " / "),
        elapsed=time.monotonic() - started,
    )
    esmtp = True
    if response.code == 250:
        smtp.last_ehlo_response = response  # parses the extension list
    elif response.code in (500, 502):
        # An old server without ESMTP answers 500/502: HELO still works, without
        # extensions (so no STARTTLS, no SIZE, no AUTH).
        response = await smtp.helo(timeout=setup.command_timeout)
        esmtp = False
    else:
        raise DeliveryError.from_reply(
            Reply.from_server(response.code, response.message),
            "the server refused EHLO",
            phase=Phase.EHLO,
            transport_name=setup.transport_name,
        )
    observer.step_finished(
        StepRecord(
            step=step,
            response=response,
            seconds=time.monotonic() - started,
            esmtp=esmtp,
            ehlo_name=name,
        )
    )


# -- STARTTLS -------------------------------------------------------------------------


async def _starttls(smtp: aiosmtplib.SMTP, setup: SessionSetup) -> StepRecord:
    if not smtp.supports_extension("starttls"):
        raise AuthOrConfigError(
            "the server does not offer STARTTLS",
            phase=Phase.TLS,
            transport_name=setup.transport_name,
            setting="tls",
            explanation=(
                "STARTTLS is required in tls='starttls' mode so that nothing (password, "
                "message) is sent in clear text: never fall back to cleartext; if the port "
                "speaks implicit TLS use tls='implicit' (port 465); use tls='none' only for "
                "a trusted local relay"
            ),
        )
    started = time.monotonic()
    transcript_line(setup.transport_name, ">", "STARTTLS")
    response = await smtp.starttls(timeout=setup.connect_timeout)
    elapsed = time.monotonic() - started
    tls = smtp.get_transport_info("ssl_object")
    version = tls.version() if tls is not None else "?"
    transcript_line(setup.transport_name, "<", f"220 (TLS established: {version})", elapsed=elapsed)
    return StepRecord(step=Step.STARTTLS, response=response, seconds=elapsed, tls_version=version)
