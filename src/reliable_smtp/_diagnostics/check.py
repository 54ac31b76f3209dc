"""The probe behind :func:`check_connection`: DNS, TCP, then the transport's own session
setup (:func:`~reliable_smtp._transports._session.open_session`) heard step by step, and
optionally a test message through the normal :class:`~reliable_smtp.AsyncMailer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import aiosmtplib

from .._errors import (
    AuthOrConfigError,
    ConfigurationError,
    DeliveryError,
    InvalidMessageError,
    SMTPTimeoutError,
    error_for,
)
from .._mailer import AsyncMailer
from .._message import Message
from .._redaction import SecretForms
from .._replies import Outcome, Phase, Verdict, classify_connection_loss
from .._result import SendResult
from .._retry import RetryPolicy
from .._settings import MailerSettings
from .._transports._login import PasswordLogin, password_mechanism
from .._transports._session import (
    EhloName,
    SessionSetup,
    Step,
    StepRecord,
    StepTracker,
    TLSMode,
    open_session,
    session_client,
)
from .._transports.smtp import translate_error
from .facts import capabilities, first_line, timed_tls_context, tls_facts
from .record import Probe, StepFailedError
from .report import SLOW_SECONDS, CheckReport, CheckTarget, redact_step


async def check_connection(
    settings: MailerSettings,
    *,
    send_to: str | None = None,
    sender: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
    slow_after: float = SLOW_SECONDS,
) -> CheckReport:
    """Check the SMTP server ``settings`` describe, step by step.

    Steps: DNS resolution (every address), TCP connect, TLS handshake (implicit
    TLS), greeting, EHLO, STARTTLS and EHLO again (``tls=starttls``), AUTH with the
    configured credentials (one attempt, PLAIN else LOGIN), and - when
    ``send_to`` is given - a test message from ``sender`` through the normal
    :class:`~reliable_smtp.AsyncMailer` (one attempt, no retry). Each step is timed
    with ``clock``; one slower than ``slow_after`` seconds is flagged. The check
    stops at the first failure. It never raises for a failing server: the report
    says what failed and why. Raises
    :class:`~reliable_smtp.ConfigurationError` when the settings are not for SMTP.
    """
    if settings.transport != "smtp":
        raise ConfigurationError(
            f"the check tests an SMTP server, but RELIABLE_SMTP_TRANSPORT is "
            f"{settings.transport!r}: unset it or set it to 'smtp'",
            setting="RELIABLE_SMTP_TRANSPORT",
        )
    target = CheckTarget.from_settings(settings)
    # Built first, so that a malformed --send-to is a usage error before any I/O.
    message = _test_message(target, send_to, sender) if send_to is not None else None
    probe = Probe(target, clock, slow_after)
    started = clock()
    try:
        await _probe_server(probe, settings)
        if message is not None:
            await _send_test(probe, settings, message)
    except StepFailedError:
        pass
    steps = tuple(probe.steps)
    if settings.password is not None:
        # The AUTH step's reply is redacted where it is read (send_credentials); a
        # server may echo the password elsewhere too (a proxy, a debug banner), so the
        # same rule runs over the whole report.
        secrets = SecretForms.for_password(
            target.username or "", settings.password.get_secret_value()
        )
        steps = tuple(redact_step(step, secrets) for step in steps)
    return CheckReport(target=target, steps=steps, seconds=clock() - started)


async def _probe_server(probe: Probe, settings: MailerSettings) -> None:
    target, clock = probe.target, probe.clock
    loop = asyncio.get_running_loop()
    # -- DNS ------------------------------------------------------------------------------
    begun = clock()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM),
            target.connect_timeout,
        )
    except (OSError, asyncio.TimeoutError) as exc:
        timed_out = isinstance(exc, (asyncio.TimeoutError, TimeoutError))
        reason = "no answer in time" if timed_out else str(exc)
        verdict = Verdict(
            outcome=Outcome.TRANSIENT if timed_out else Outcome.AUTH_OR_CONFIG,
            explanation=(
                "the host name has no address (a typo, or a name that only resolves on "
                "another network), or DNS is not reachable from here"
            ),
            timed_out=timed_out,
            setting=None if timed_out else "host",
            rule="dns-failed",
        )
        error = error_for(
            verdict, f"{target.host!r} did not resolve: {reason}", phase=Phase.CONNECT
        )
        raise probe.failed(
            "dns", "DNS resolution", clock() - begun, error, cause=exc, rule="dns-failed"
        ) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    probe.passed(
        "dns",
        "DNS resolution",
        clock() - begun,
        ", ".join(addresses),
        details={"addresses": addresses},
    )

    # -- TCP ------------------------------------------------------------------------------
    begun = clock()
    sock: socket.socket | None = None
    failures: list[dict[str, str]] = []
    last_exc: BaseException | None = None
    # Every address in turn, as a client library would (without Happy Eyeballs'
    # parallel attempts, so each address gets its own verdict).
    for family, socktype, proto, _canonical, address in infos:
        candidate = socket.socket(family, socktype, proto)
        candidate.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(candidate, address), target.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            candidate.close()
            last_exc = exc
            failures.append({"address": str(address[0]), "error": str(exc) or "no answer in time"})
            continue
        except BaseException:
            candidate.close()
            raise
        sock = candidate
        break
    if sock is None:
        assert last_exc is not None  # getaddrinfo never returns an empty list
        error = translate_error(last_exc, Phase.CONNECT, transport_name=target.url)
        raise probe.failed(
            "tcp",
            "TCP connect",
            clock() - begun,
            error,
            cause=last_exc,
            details={"failed": failures},
        )
    peer = sock.getpeername()
    local = sock.getsockname()
    warnings = [
        f"{f['address']} failed ({f['error']}); connected to the next address" for f in failures
    ]
    probe.passed(
        "tcp",
        "TCP connect",
        clock() - begun,
        f"{_address(peer)} (from {_address(local)})",
        warnings=warnings,
        details={"address": _address(peer), "local_address": _address(local), "failed": failures},
    )

    # -- TLS (implicit) and greeting, EHLO, STARTTLS, AUTH: the transport's session -----------
    marks: list[float] = []
    context = timed_tls_context(target, marks, clock) if target.tls is not TLSMode.NONE else None
    smtp = session_client(
        host=target.host,
        sock=sock,
        tls=target.tls,
        tls_context=context,
        local_hostname=target.local_hostname,
        command_timeout=target.command_timeout,
    )
    # From here the socket belongs to aiosmtplib's asyncio transport, which closes it;
    # closing it here as well would free its descriptor while the event loop still
    # watches it (and the next connection could get the same number).
    try:
        await _converse(probe, smtp, settings, marks)
    finally:
        if smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
                await smtp.quit(timeout=min(target.command_timeout, 5.0))
        smtp.close()


def _address(sockaddr: Any) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


_TITLES = {
    Step.GREETING: "Greeting",
    Step.EHLO: "EHLO",
    Step.STARTTLS: "STARTTLS",
    Step.EHLO_TLS: "EHLO after STARTTLS",
    Step.AUTH: "AUTH",
}


async def _converse(
    probe: Probe,
    smtp: aiosmtplib.SMTP,
    settings: MailerSettings,
    marks: list[float],
) -> None:
    target = probe.target
    login = None
    if target.username is not None:
        password = settings.password.get_secret_value() if settings.password is not None else ""
        login = PasswordLogin(username=target.username, password=password)
    setup = SessionSetup(
        transport_name=target.url,
        tls=target.tls,
        connect_timeout=target.connect_timeout,
        command_timeout=target.command_timeout,
        ehlo_name=EhloName(target.local_hostname, connect_timeout=target.connect_timeout),
        login=login,
    )
    reporter = _StepReporter(probe, smtp, marks)
    try:
        await open_session(smtp, setup, reporter)
    except Exception as exc:
        raise reporter.failure(exc) from None
    if target.username is None:
        offered = [m.upper() for m in smtp.server_auth_methods]
        notes = (
            [f"the server offers AUTH {' '.join(offered)}: it may refuse mail without a login"]
            if offered
            else []
        )
        # The transport's rule: no username (unset or empty) means no AUTH is sent.
        probe.skipped(
            "auth", "AUTH", "no username configured (unset or empty): no AUTH is sent", notes=notes
        )


class _StepReporter(StepTracker):
    """Hears the session's steps and records each as a check step: its time (the check's
    clock), what the server said and offered, and - for the step that failed - why."""

    def __init__(self, probe: Probe, smtp: aiosmtplib.SMTP, marks: list[float]) -> None:
        super().__init__()
        self.probe = probe
        self.smtp = smtp
        self.marks = marks
        self.begun = probe.clock()

    def step_started(self, step: Step) -> None:
        super().step_started(step)
        self.begun = self.probe.clock()
        if step is Step.STARTTLS:
            self.marks.clear()  # only this handshake's end

    def step_finished(self, record: StepRecord) -> None:
        now = self.probe.clock()
        if record.step is Step.GREETING:
            self._greeted(record, now)
        elif record.step in (Step.EHLO, Step.EHLO_TLS):
            self._ehlo_passed(record, now)
        elif record.step is Step.STARTTLS:
            self._starttls_passed(record, now)
        else:
            self._authenticated(record, now)

    # -- steps that passed -------------------------------------------------------------

    def _greeted(self, record: StepRecord, now: float) -> None:
        greeted_from = self.begun
        if self.probe.target.tls is TLSMode.IMPLICIT:
            handshake_done = self.marks[0] if self.marks else now
            _tls_passed(self.probe, self.smtp, handshake_done - self.begun)
            greeted_from = handshake_done
        greeting = record.response
        self.probe.passed(
            "greeting",
            "Greeting",
            now - greeted_from,
            first_line(greeting),
            details={"code": greeting.code, "text": greeting.message},
        )

    def _ehlo_passed(self, record: StepRecord, now: float) -> None:
        probe, smtp, response = self.probe, self.smtp, record.response
        name, title = record.step.value, _TITLES[record.step]
        if not record.esmtp:
            probe.passed(
                name,
                title,
                now - self.begun,
                f"{first_line(response)} (HELO: the server does not speak ESMTP)",
                notes=["no extensions: no STARTTLS, AUTH, SIZE or SMTPUTF8"],
                details={"esmtp": False, "code": response.code},
            )
            return
        notes, details = capabilities(smtp)
        details = {"esmtp": True, "code": response.code, "name": record.ehlo_name, **details}
        warnings: list[str] = []
        if probe.target.tls is TLSMode.NONE:
            warnings.append(
                "tls=none: nothing is encrypted (only for a trusted relay on this machine or "
                "a private network)"
            )
            if smtp.supports_extension("starttls"):
                warnings.append("the server offers STARTTLS: consider tls=starttls")
        probe.passed(
            name,
            title,
            now - self.begun,
            first_line(response),
            notes=notes,
            warnings=warnings,
            details=details,
        )

    def _starttls_passed(self, record: StepRecord, now: float) -> None:
        ssl_object = self.smtp.get_transport_info("ssl_object")
        summary, notes, warnings, details = tls_facts(
            ssl_object, self.probe.target, datetime.now(timezone.utc)
        )
        details["reply"] = first_line(record.response)
        if self.marks:
            details["handshake_seconds"] = round(self.marks[0] - self.begun, 6)
        self.probe.passed(
            "starttls",
            "STARTTLS",
            now - self.begun,
            summary,
            notes=notes,
            warnings=warnings,
            details=details,
        )

    def _authenticated(self, record: StepRecord, now: float) -> None:
        target = self.probe.target
        warnings = []
        if target.tls is TLSMode.NONE:
            warnings.append("the password crossed the network unencrypted (tls=none)")
        self.probe.passed(
            "auth",
            "AUTH",
            now - self.begun,
            f"{first_line(record.response)} ({record.mechanism} as {target.username})",
            warnings=warnings,
            details={
                "mechanism": record.mechanism,
                "username": target.username,
                "code": record.response.code,
            },
        )

    # -- the step that failed ----------------------------------------------------------

    def failure(self, exc: Exception) -> StepFailedError:
        """Record the failure of the step in progress; the exception that stops the probe."""
        probe, target, step = self.probe, self.probe.target, self.step or Step.GREETING
        seconds = probe.clock() - self.begun
        if step is Step.GREETING:
            return self._greeting_failed(exc)
        name, title = step.value, _TITLES[step]
        if isinstance(exc, DeliveryError):
            # Refused by the session itself, or a reply it classified (a refused EHLO).
            rule = None
            if step is Step.STARTTLS:
                rule = "tls-not-offered"
            elif step is Step.AUTH:
                rule = "no-password-auth"
            return probe.failed(name, title, seconds, exc, rule=rule)
        error = translate_error(exc, step.phase, transport_name=target.url)
        details = None
        if step is Step.AUTH:
            mechanism = password_mechanism(self.smtp.server_auth_methods)
            details = {"mechanism": mechanism, "username": target.username}
        return probe.failed(name, title, seconds, error, cause=exc, details=details)

    def _greeting_failed(self, exc: Exception) -> StepFailedError:
        probe, target, marks, begun = self.probe, self.probe.target, self.marks, self.begun
        implicit = target.tls is TLSMode.IMPLICIT
        now = probe.clock()
        if implicit and not marks:
            error = translate_error(exc, Phase.TLS, transport_name=target.url)
            return probe.failed("tls", "TLS handshake", now - begun, error, cause=exc)
        if implicit:
            _tls_passed(probe, self.smtp, marks[0] - begun)
            error = translate_error(exc, Phase.CONNECT, transport_name=target.url)
            if isinstance(error, SMTPTimeoutError):
                # translate_error's advice (use implicit TLS) is already followed here.
                error = error.replace(
                    explanation=classify_connection_loss(Phase.EHLO, timed_out=True).explanation
                )
                return probe.failed(
                    "greeting",
                    "Greeting",
                    now - marks[0],
                    error,
                    cause=exc,
                    rule="no-greeting-after-tls",
                )
            return probe.failed("greeting", "Greeting", now - marks[0], error, cause=exc)
        error = translate_error(exc, Phase.CONNECT, transport_name=target.url)
        # TCP is up, so a timeout here means no "220": typically a plain or STARTTLS
        # client on an implicit-TLS port, where the server waits for a TLS hello.
        rule = "no-greeting" if isinstance(error, SMTPTimeoutError) else None
        return probe.failed("greeting", "Greeting", now - begun, error, cause=exc, rule=rule)


def _tls_passed(probe: Probe, smtp: aiosmtplib.SMTP, seconds: float) -> None:
    ssl_object = smtp.get_transport_info("ssl_object") if smtp.is_connected else None
    summary, notes, warnings, details = tls_facts(
        ssl_object, probe.target, datetime.now(timezone.utc)
    )
    probe.passed(
        "tls", "TLS handshake", seconds, summary, notes=notes, warnings=warnings, details=details
    )


def _recipient_notes(result: SendResult) -> list[str]:
    # The explanation of a failure is shown once, with the step; here only the replies.
    return [
        f"{recipient}: {status.outcome.value}"
        + (f" - {status.reply}" if status.reply is not None else "")
        for recipient, status in result.recipients.items()
    ]


def _test_message(target: CheckTarget, send_to: str, sender: str | None) -> Message:
    if sender is None:
        if not (target.username and "@" in target.username):
            # Inventing one would test the wrong thing: servers accept or refuse mail
            # by its sender (relay rules, SPF, "send as" rights).
            raise ConfigurationError(
                "the test message needs a sender: give one (--from), or use an address "
                "as the username",
                setting="sender",
            )
        sender = target.username
    try:
        return Message(
            sender=sender,
            to=[send_to],
            subject="reliable-smtp check: test message",
            text=(
                f"This test message was sent by `reliable-smtp check --send-to` through "
                f"{target.url} at {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC.\n"
            ),
        )
    except InvalidMessageError as exc:
        raise ConfigurationError(f"cannot build the test message: {exc}") from exc


async def _send_test(probe: Probe, settings: MailerSettings, message: Message) -> None:
    clock = probe.clock
    title = "Test message"
    begun = clock()
    # One attempt: a check reports what the server says, it does not wait out backoffs.
    async with AsyncMailer(settings.build_transport(), retry=RetryPolicy.never()) as mailer:
        try:
            result = await mailer.send(message)
        except InvalidMessageError as refused:
            # The mailer's recipient policy refused an address before any I/O.
            error = AuthOrConfigError(
                str(refused),
                explanation="the library refused to send the message: nothing reached the "
                "server; fix the address",
            )
            raise probe.failed(
                "send", title, clock() - begun, error, rule="refused-before-sending"
            ) from None
        except DeliveryError as error:
            rows = error.result.recipient_rows() if error.result is not None else []
            notes = _recipient_notes(error.result) if error.result is not None else []
            raise probe.failed(
                "send",
                title,
                clock() - begun,
                error,
                cause=error.__cause__,
                notes=notes,
                details={"sender": message.sender, "recipients": rows},
            ) from None
    probe.passed(
        "send",
        title,
        clock() - begun,
        f"accepted for {', '.join(result.accepted)}, Message-ID <{result.message_id}>",
        notes=_recipient_notes(result),
        details={
            "sender": message.sender,
            "message_id": result.message_id,
            "recipients": result.recipient_rows(),
        },
    )
