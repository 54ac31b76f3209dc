"""The step-by-step SMTP connection check behind ``reliable-smtp check``.

:func:`check_connection` takes the same :class:`~reliable_smtp.MailerSettings` the
library sends with and walks the connection one step at a time - DNS, TCP,
TLS, greeting, EHLO, STARTTLS, AUTH and optionally a real test message through
the normal :class:`~reliable_smtp.AsyncMailer` - timing each step, recording what
the server offered, and stopping at the first failure with the likely cause and
the fix. It returns a :class:`CheckReport` (data, JSON-ready with
:meth:`CheckReport.to_dict`); printing it is the CLI's business.

Failures are explained by the library's own table: the error boundary
(:func:`~reliable_smtp.transports.smtp.translate_error`),
:func:`~reliable_smtp.replies.classify` and
:func:`~reliable_smtp.replies.classify_tls_failure`. The only wording added here is
:data:`_HINTS`: a short name for the cause and which setting to change, keyed by
the name of the library rule that decided.

The probe opens the session with the transport's own code
(:func:`reliable_smtp.transports._session.open_session`: the same EHLO name, HELO
fallback, required STARTTLS, AUTH mechanism and credential exchange) and records
each step through the session's observer interface. It opens the socket itself so
that DNS and TCP get their own step and time, and marks the end of the TLS
handshake through the context's ``sslobject_class`` so that, with implicit TLS, the
handshake and the greeting are timed apart although aiosmtplib does both in one
call. The password is read only to log in; it is in no step, error or report.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from .errors import (
    AuthOrConfigError,
    ConfigurationError,
    DeliveryError,
    InvalidMessageError,
    SMTPTimeoutError,
    error_for,
)
from .mailer import AsyncMailer
from .message import Message
from .redaction import SecretForms
from .replies import (
    Outcome,
    Phase,
    Verdict,
    classify,
    classify_connection_loss,
    classify_tls_failure,
)
from .result import SendResult
from .retry import RetryPolicy
from .settings import MailerSettings
from .transports._login import PasswordLogin, password_mechanism
from .transports._session import (
    DEFAULT_PORTS,
    EhloName,
    SessionSetup,
    Step,
    StepRecord,
    StepTracker,
    TLSMode,
    open_session,
    session_client,
    session_url,
    tls_context,
)
from .transports.smtp import find_cause, translate_error

__all__ = [
    "SLOW_SECONDS",
    "CheckReport",
    "CheckStep",
    "CheckTarget",
    "check_connection",
    "recipient_rows",
]

SLOW_SECONDS = 1.0
"""A step that takes longer than this is flagged as slow (a healthy server answers in less)."""

# Certificates that expire sooner than this get a warning (renewal usually runs 30 days ahead).
_EXPIRY_WARNING_DAYS = 14

# The capabilities worth showing, in the order shown, as EHLO keywords.
_CAPABILITIES = (
    "SIZE",
    "PIPELINING",
    "STARTTLS",
    "AUTH",
    "SMTPUTF8",
    "8BITMIME",
    "CHUNKING",
    "ENHANCEDSTATUSCODES",
)


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckTarget:
    """What was checked: the connection settings, without the password."""

    host: str
    port: int
    tls: TLSMode
    username: str | None
    password_set: bool
    ca_file: str | None
    local_hostname: str | None
    connect_timeout: float
    command_timeout: float

    @classmethod
    def from_settings(cls, settings: MailerSettings) -> CheckTarget:
        return cls(
            host=settings.host,
            port=settings.port or DEFAULT_PORTS[settings.tls],
            tls=settings.tls,
            username=settings.username,
            password_set=settings.password is not None,
            ca_file=str(settings.ca_file) if settings.ca_file is not None else None,
            local_hostname=settings.local_hostname,
            connect_timeout=settings.connect_timeout,
            command_timeout=settings.timeout,
        )

    @property
    def url(self) -> str:
        return session_url(self.tls, self.host, self.port)

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "tls": self.tls.value,
            "url": self.url,
            "username": self.username,
            "password_set": self.password_set,
            "ca_file": self.ca_file,
            "local_hostname": self.local_hostname,
            "connect_timeout": self.connect_timeout,
            "command_timeout": self.command_timeout,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckStep:
    """One step of the check and what it found.

    ``name`` is a stable machine name (``dns``, ``tcp``, ``tls``, ``greeting``,
    ``ehlo``, ``starttls``, ``ehlo_tls``, ``auth``, ``send``); ``title`` is for
    people. ``summary`` is one line, ``notes`` further lines for people,
    ``details`` the same facts as data. A failed step has ``error`` (what
    happened), ``cause`` (its short name), ``explanation`` (the library's: what
    it means and the usual fix), ``hint`` (which setting to change, when the
    explanation does not say) and ``outcome``/``rule`` (the library's class and
    the rule that decided).
    """

    name: str
    title: str
    ok: bool
    seconds: float | None
    slow: bool = False
    skipped: bool = False
    summary: str = ""
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    cause: str | None = None
    explanation: str | None = None
    hint: str | None = None
    outcome: Outcome | None = None
    rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "ok": self.ok,
            "skipped": self.skipped,
            "seconds": None if self.seconds is None else round(self.seconds, 6),
            "slow": self.slow,
            "summary": self.summary,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "details": dict(self.details),
            "error": self.error,
            "cause": self.cause,
            "explanation": self.explanation,
            "hint": self.hint,
            "outcome": self.outcome.value if self.outcome is not None else None,
            "rule": self.rule,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    """Every step that ran, in order; the check stops at the first failure."""

    target: CheckTarget
    steps: tuple[CheckStep, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every step passed (skipped steps count as passed)."""
        return all(step.ok for step in self.steps)

    @property
    def failed(self) -> CheckStep | None:
        """The step that failed, if one did."""
        return next((step for step in self.steps if not step.ok), None)

    def step(self, name: str) -> CheckStep | None:
        """The step called ``name``, if it ran."""
        return next((step for step in self.steps if step.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        failed = self.failed
        return {
            "ok": self.ok,
            "target": self.target.to_dict(),
            "seconds": round(self.seconds, 6),
            "failed_step": failed.name if failed is not None else None,
            "steps": [step.to_dict() for step in self.steps],
        }


# --------------------------------------------------------------------------------------
# Causes and hints: what the check adds to the library's explanations
# --------------------------------------------------------------------------------------

# rule name -> (cause, hint). The rule names are the library's (replies.RULES,
# classify_tls_failure), plus the few failures only the check sees (DNS, a refused or
# silent port, a missing AUTH). A hint names the setting; None: the explanation does.
_HINTS: Mapping[str, tuple[str, str | None]] = MappingProxyType(
    {
        "dns-failed": (
            "the host name does not resolve",
            "check the host (RELIABLE_SMTP_HOST, --host) for typos, and that this machine's "
            "DNS resolver works",
        ),
        "connection-refused": (
            "connection refused: nothing listens on that port, or a firewall rejects it",
            "check the port (RELIABLE_SMTP_PORT, --port: 587 STARTTLS, 465 implicit TLS) and "
            "the host; is the server running?",
        ),
        "connect-timeout": (
            "no answer to the connection: the port is blocked or the host is wrong",
            "check host and port (RELIABLE_SMTP_HOST, RELIABLE_SMTP_PORT); many networks and "
            "cloud providers block outgoing port 25 (use 587 or 465); check the firewall; "
            "raise RELIABLE_SMTP_CONNECT_TIMEOUT (--timeout) only if the link is slow",
        ),
        "tls-wrong-port": (
            "this port expects STARTTLS (or plain SMTP), not implicit TLS",
            "use tls=starttls (RELIABLE_SMTP_TLS, --tls starttls), or port 465 for implicit TLS",
        ),
        "tls-certificate": (
            "the server's certificate did not verify",
            "give the CA that signed it (RELIABLE_SMTP_CA_FILE, --ca-file), and connect with "
            "the host name the certificate names",
        ),
        "tls-no-common-protocol": ("no TLS version or cipher in common", None),
        "tls-not-offered": (
            "the server does not offer STARTTLS",
            "use implicit TLS if the server has it (tls=implicit, port 465); tls=none only "
            "for a trusted local relay",
        ),
        "no-greeting": (
            "connected, but the server sent no greeting: the port probably expects implicit TLS",
            "use tls=implicit (RELIABLE_SMTP_TLS, --tls implicit), usually with port 465; "
            "otherwise the server is overloaded or slow to greet "
            "(RELIABLE_SMTP_CONNECT_TIMEOUT, --timeout)",
        ),
        "no-greeting-after-tls": (
            "TLS worked, but the server sent no greeting: it is overloaded, or not an SMTP server",
            None,
        ),
        "timeout": (
            "no reply in time",
            "the server or the link is slow, or the port is not SMTP; raise --timeout "
            "(RELIABLE_SMTP_TIMEOUT) if the server is just slow",
        ),
        "connection-lost": ("the server closed the connection", None),
        "no-password-auth": (
            "the server offers no password login (AUTH PLAIN or LOGIN)",
            "many servers offer AUTH only after STARTTLS (tls=starttls) or on port 465; "
            "if this server takes mail without a login, unset RELIABLE_SMTP_USERNAME",
        ),
        "bad-credentials": (
            "the server rejected the username or password",
            "check RELIABLE_SMTP_USERNAME (--username) and the password; Gmail, Outlook and "
            "others need an app password (with 2-step verification) or OAuth2",
        ),
        "starttls-required": (
            "the server requires STARTTLS first",
            "use tls=starttls (RELIABLE_SMTP_TLS, --tls starttls), or tls=implicit with port 465",
        ),
        "auth-required": (
            "the server requires a login: credentials are missing",
            "set RELIABLE_SMTP_USERNAME and a password (--username, --password-env)",
        ),
        "auth-required-m365": (
            "the server requires AUTH before MAIL FROM",
            "set RELIABLE_SMTP_USERNAME and a password (--username, --password-env)",
        ),
        "relay-denied": (
            "relay denied",
            "authenticate (RELIABLE_SMTP_USERNAME and a password), or send from an address "
            "whose domain this server accepts (--from)",
        ),
        "ehlo-name-rejected": (
            "the server rejected the EHLO name",
            "set RELIABLE_SMTP_LOCAL_HOSTNAME to this machine's fully-qualified domain name",
        ),
        "refused-before-sending": (
            "an address was refused before sending",
            "check --send-to and --from",
        ),
        "sender-refused": (
            "the server refused the sender address",
            "send from an address the account may use (--from)",
        ),
    }
)

_HOSTNAME_MISMATCH = re.compile(r"hostname mismatch|doesn't match|not valid for", re.IGNORECASE)
_EXPIRED = re.compile(r"certificate has expired", re.IGNORECASE)


def _diagnose(rule: str, error_text: str, target: CheckTarget) -> tuple[str, str | None]:
    """The cause's short name and the hint for a failure decided by ``rule``."""
    cause, hint = _HINTS.get(rule, (rule.replace("-", " "), None))
    if rule == "tls-certificate":
        if _EXPIRED.search(error_text):
            cause, hint = (
                "the server's certificate has expired",
                "the server's operator must renew it; never disable verification",
            )
        elif _HOSTNAME_MISMATCH.search(error_text):
            cause, hint = (
                f"the certificate is not for {target.host!r}",
                "connect with the host name the certificate names (RELIABLE_SMTP_HOST, "
                "--host), not an IP address or an alias",
            )
    return cause, hint


def _rule_for(error: DeliveryError, cause: BaseException | None) -> str:
    """The name of the library rule that decided ``error`` (or of a check-only failure)."""
    if error.reply is not None and error.phase is not None:
        return error.verdict.rule or classify(error.reply, error.phase).rule
    ssl_error = find_cause(cause, ssl.SSLError)
    if ssl_error is not None:
        return classify_tls_failure(str(ssl_error)).rule
    if find_cause(cause, ConnectionRefusedError) is not None:
        return "connection-refused"
    if isinstance(error, SMTPTimeoutError):
        return "connect-timeout" if error.phase is Phase.CONNECT else "timeout"
    if error.outcome is Outcome.TRANSIENT and error.reply is None:
        return "connection-lost"
    return error.outcome.value.replace("_", "-")


# --------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------


class _StepFailedError(Exception):
    """Stops the probe: the failing step has been recorded."""


class _Probe:
    def __init__(self, target: CheckTarget, clock: Callable[[], float], slow_after: float) -> None:
        self.target = target
        self.clock = clock
        self.slow_after = slow_after
        self.steps: list[CheckStep] = []

    def passed(
        self,
        name: str,
        title: str,
        seconds: float,
        summary: str,
        *,
        notes: Sequence[str] = (),
        warnings: Sequence[str] = (),
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self._timed(
            name,
            title,
            seconds,
            ok=True,
            summary=summary,
            notes=tuple(notes),
            warnings=tuple(warnings),
            details=dict(details or {}),
        )

    def _timed(self, name: str, title: str, seconds: float, **facts: Any) -> None:
        """Record a step that ran (passed or failed): slow when it took too long."""
        self.steps.append(
            CheckStep(
                name=name, title=title, seconds=seconds, slow=seconds > self.slow_after, **facts
            )
        )

    def skipped(self, name: str, title: str, reason: str, *, notes: Sequence[str] = ()) -> None:
        self.steps.append(
            CheckStep(
                name=name,
                title=title,
                ok=True,
                seconds=None,
                skipped=True,
                summary=reason,
                notes=tuple(notes),
            )
        )

    def failed(
        self,
        name: str,
        title: str,
        seconds: float,
        error: DeliveryError,
        *,
        cause: BaseException | None = None,
        rule: str | None = None,
        explanation: str | None = None,
        notes: Sequence[str] = (),
        details: Mapping[str, Any] | None = None,
    ) -> _StepFailedError:
        """Record a failed step; return the exception that stops the probe."""
        rule = rule or _rule_for(error, cause)
        error_text = str(error.reply) if error.reply is not None else error.summary
        explanation = explanation or error.explanation or None
        ssl_error = find_cause(cause, ssl.SSLError)
        if explanation and ssl_error is not None:
            # classify_tls_failure() appends the SSL message, which is already the error.
            explanation = explanation.removesuffix(f" ({' '.join(str(ssl_error).split())})")
        short_cause, hint = _diagnose(rule, error_text, self.target)
        facts: dict[str, Any] = dict(details or {})
        if error.reply is not None:
            facts["reply"] = {
                "code": error.reply.code,
                "enhanced_code": error.reply.enhanced_code,
                "text": error.reply.text,
            }
        if error.phase is not None:
            facts["phase"] = error.phase.value
        self._timed(
            name,
            title,
            seconds,
            ok=False,
            summary=error_text,
            notes=tuple(notes),
            details=facts,
            error=error_text,
            cause=short_cause,
            explanation=explanation,
            hint=hint,
            outcome=error.outcome,
            rule=rule,
        )
        return _StepFailedError(name)


def _tls_context(
    target: CheckTarget, marks: list[float], clock: Callable[[], float]
) -> ssl.SSLContext:
    # The same context SMTPTransport builds from these settings, timed.
    context = tls_context(ca_file=target.ca_file)

    class _TimedSSLObject(ssl.SSLObject):
        # asyncio drives the handshake through SSLContext.wrap_bio(), which makes objects
        # of this class: the moment do_handshake() first succeeds is when TLS was up.
        def do_handshake(self) -> None:
            super().do_handshake()
            marks.append(clock())

    context.sslobject_class = _TimedSSLObject
    return context


def _name(rdns: Any) -> str:
    """``O=Example, CN=mail.example.com`` from getpeercert()'s tuple of RDNs."""
    short = {
        "commonName": "CN",
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "countryName": "C",
        "localityName": "L",
        "stateOrProvinceName": "ST",
    }
    parts = []
    for rdn in rdns or ():
        for key, value in rdn:
            parts.append(f"{short.get(key, key)}={value}")
    return ", ".join(parts)


def _tls_facts(
    ssl_object: Any, target: CheckTarget, now: datetime
) -> tuple[str, list[str], list[str], dict[str, Any]]:
    """Summary, notes, warnings and details of an established TLS session."""
    version = ssl_object.version() if ssl_object is not None else None
    cipher = ssl_object.cipher() if ssl_object is not None else None
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    details: dict[str, Any] = {
        "version": version,
        "cipher": cipher[0] if cipher else None,
        "bits": cipher[2] if cipher else None,
    }
    summary = " ".join(str(x) for x in (version, details["cipher"]) if x)
    if details["bits"]:
        summary += f" ({details['bits']} bits)"
    notes: list[str] = []
    warnings: list[str] = []
    if cert:
        subject = _name(cert.get("subject"))
        issuer = _name(cert.get("issuer"))
        names = [value for _name_type, value in cert.get("subjectAltName", ())]
        details.update(
            subject=subject,
            issuer=issuer,
            names=names,
            not_before=cert.get("notBefore"),
            not_after=cert.get("notAfter"),
        )
        notes.append(f"subject:  {subject or '(empty)'}")
        if names:
            notes.append(f"names:    {', '.join(dict.fromkeys(names))}")
        notes.append(f"issuer:   {issuer}")
        not_after = cert.get("notAfter")
        if not_after:
            expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), timezone.utc)
            days = (expires - now).days
            details["expires"] = expires.isoformat()
            details["days_left"] = days
            notes.append(f"expires:  {expires:%Y-%m-%d %H:%M} UTC (in {days} days)")
            if days < _EXPIRY_WARNING_DAYS:
                warnings.append(
                    f"the certificate expires in {days} days: the server's operator must renew it"
                )
        trusted = "the CA file" if target.ca_file else "the system's CAs"
        details["verified"] = True
        notes.append(f"verified: yes ({target.host} matches; signed by {trusted})")
    else:
        # Verification is always on here, so an empty certificate means no certificate.
        details["verified"] = False
        notes.append("verified: no certificate details available")
    return summary, notes, warnings, details


def _capabilities(smtp: aiosmtplib.SMTP) -> tuple[list[str], dict[str, Any]]:
    """Notes and details for what EHLO advertised."""
    extensions = smtp.esmtp_extensions
    offered: list[str] = []
    lacking: list[str] = []
    details: dict[str, Any] = {}
    for keyword in _CAPABILITIES:
        key = keyword.lower()
        present = key in extensions
        if keyword == "SIZE":
            limit = extensions.get("size", "")
            details["size"] = int(limit) if limit.isdigit() else (0 if present else None)
            if present:
                shown = f"SIZE {limit}" if limit.isdigit() and int(limit) else "SIZE (no limit)"
                if limit.isdigit() and int(limit) >= 1 << 20:
                    shown += f" ({int(limit) / (1 << 20):.0f} MiB)"
                offered.append(shown)
        elif keyword == "AUTH":
            mechanisms = [m.upper() for m in smtp.server_auth_methods]
            details["auth"] = mechanisms
            if mechanisms:
                offered.append("AUTH " + " ".join(mechanisms))
            present = bool(mechanisms)
        else:
            details[key] = present
        if not present:
            lacking.append(keyword)
        elif keyword not in ("SIZE", "AUTH"):
            offered.append(keyword)
    details["extensions"] = {k.upper(): v for k, v in extensions.items()}
    notes = [f"offers:   {', '.join(offered) or 'nothing'}"]
    if lacking:
        notes.append(f"lacks:    {', '.join(lacking)}")
    return notes, details


def _first_line(response: SMTPResponse) -> str:
    return f"{response.code} {response.message.splitlines()[0] if response.message else ''}".strip()


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
    probe = _Probe(target, clock, slow_after)
    started = clock()
    try:
        await _probe_server(probe, settings)
        if message is not None:
            await _send_test(probe, settings, message)
    except _StepFailedError:
        pass
    steps = tuple(probe.steps)
    if settings.password is not None:
        # The AUTH step's reply is redacted where it is read (send_credentials); a
        # server may echo the password elsewhere too (a proxy, a debug banner), so the
        # same rule runs over the whole report.
        secrets = SecretForms.for_password(
            target.username or "", settings.password.get_secret_value()
        )
        steps = tuple(_redact_step(step, secrets) for step in steps)
    return CheckReport(target=target, steps=steps, seconds=clock() - started)


def _redact(value: Any, secrets: SecretForms) -> Any:
    if isinstance(value, str):
        return secrets.redact(value)
    if isinstance(value, Mapping):
        return {key: _redact(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(item, secrets) for item in value)
    return value


def _redact_step(step: CheckStep, secrets: SecretForms) -> CheckStep:
    return replace(
        step,
        summary=_redact(step.summary, secrets),
        notes=_redact(step.notes, secrets),
        warnings=_redact(step.warnings, secrets),
        details=_redact(step.details, secrets),
        error=_redact(step.error, secrets),
        explanation=_redact(step.explanation, secrets),
        cause=_redact(step.cause, secrets),
        hint=_redact(step.hint, secrets),
    )


async def _probe_server(probe: _Probe, settings: MailerSettings) -> None:
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
        error = translate_error(last_exc, Phase.CONNECT, server=target.url)
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
    context = _tls_context(target, marks, clock) if target.tls is not TLSMode.NONE else None
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
    probe: _Probe,
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
        server=target.url,
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

    def __init__(self, probe: _Probe, smtp: aiosmtplib.SMTP, marks: list[float]) -> None:
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
            _first_line(greeting),
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
                f"{_first_line(response)} (HELO: the server does not speak ESMTP)",
                notes=["no extensions: no STARTTLS, AUTH, SIZE or SMTPUTF8"],
                details={"esmtp": False, "code": response.code},
            )
            return
        notes, details = _capabilities(smtp)
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
            _first_line(response),
            notes=notes,
            warnings=warnings,
            details=details,
        )

    def _starttls_passed(self, record: StepRecord, now: float) -> None:
        ssl_object = self.smtp.get_transport_info("ssl_object")
        summary, notes, warnings, details = _tls_facts(
            ssl_object, self.probe.target, datetime.now(timezone.utc)
        )
        details["reply"] = _first_line(record.response)
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
            f"{_first_line(record.response)} ({record.mechanism} as {target.username})",
            warnings=warnings,
            details={
                "mechanism": record.mechanism,
                "username": target.username,
                "code": record.response.code,
            },
        )

    # -- the step that failed ----------------------------------------------------------

    def failure(self, exc: Exception) -> _StepFailedError:
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
        error = translate_error(exc, step.phase, server=target.url)
        details = None
        if step is Step.AUTH:
            mechanism = password_mechanism(self.smtp.server_auth_methods)
            details = {"mechanism": mechanism, "username": target.username}
        return probe.failed(name, title, seconds, error, cause=exc, details=details)

    def _greeting_failed(self, exc: Exception) -> _StepFailedError:
        probe, target, marks, begun = self.probe, self.probe.target, self.marks, self.begun
        implicit = target.tls is TLSMode.IMPLICIT
        now = probe.clock()
        if implicit and not marks:
            error = translate_error(exc, Phase.TLS, server=target.url)
            return probe.failed("tls", "TLS handshake", now - begun, error, cause=exc)
        if implicit:
            _tls_passed(probe, self.smtp, marks[0] - begun)
            error = translate_error(exc, Phase.CONNECT, server=target.url)
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
        error = translate_error(exc, Phase.CONNECT, server=target.url)
        # TCP is up, so a timeout here means no "220": typically a plain or STARTTLS
        # client on an implicit-TLS port, where the server waits for a TLS hello.
        rule = "no-greeting" if isinstance(error, SMTPTimeoutError) else None
        return probe.failed("greeting", "Greeting", now - begun, error, cause=exc, rule=rule)


def _tls_passed(probe: _Probe, smtp: aiosmtplib.SMTP, seconds: float) -> None:
    ssl_object = smtp.get_transport_info("ssl_object") if smtp.is_connected else None
    summary, notes, warnings, details = _tls_facts(
        ssl_object, probe.target, datetime.now(timezone.utc)
    )
    probe.passed(
        "tls", "TLS handshake", seconds, summary, notes=notes, warnings=warnings, details=details
    )


def recipient_rows(result: SendResult) -> list[dict[str, Any]]:
    """One JSON-ready row per recipient of ``result``."""
    return [
        {
            "recipient": recipient,
            "outcome": status.outcome.value,
            "code": status.reply.code if status.reply else None,
            "enhanced_code": status.reply.enhanced_code if status.reply else None,
            "text": status.reply.text if status.reply else None,
            "explanation": status.explanation or None,
            "message_id": result.message_id,
        }
        for recipient, status in result.recipients.items()
    ]


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


async def _send_test(probe: _Probe, settings: MailerSettings, message: Message) -> None:
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
            rows = recipient_rows(error.result) if error.result is not None else []
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
            "recipients": recipient_rows(result),
        },
    )
