"""The check's record of its steps as they run (:class:`Probe`: passed, skipped, failed),
and what the check adds to the library's explanation of a failure: the cause's short
name and which setting to change (:data:`_HINTS`, keyed by the name of the library rule
that decided - :func:`rule_for`).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from .._errors import DeliveryError, SMTPTimeoutError
from .._replies import Outcome, Phase, classify, classify_tls_failure
from .._transports.smtp import find_cause
from .report import CheckStep, CheckTarget

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


def diagnose(rule: str, error_text: str, target: CheckTarget) -> tuple[str, str | None]:
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


def rule_for(error: DeliveryError, cause: BaseException | None) -> str:
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


class StepFailedError(Exception):
    """Stops the probe: the failing step has been recorded."""


class Probe:
    """The steps of one check, in order, as they end: passed, skipped or failed (with the
    cause, the fix and the rule that decided); ``clock`` times them."""

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
    ) -> StepFailedError:
        """Record a failed step; return the exception that stops the probe."""
        rule = rule or rule_for(error, cause)
        error_text = str(error.reply) if error.reply is not None else error.summary
        explanation = explanation or error.explanation or None
        ssl_error = find_cause(cause, ssl.SSLError)
        if explanation and ssl_error is not None:
            # classify_tls_failure() appends the SSL message, which is already the error.
            explanation = explanation.removesuffix(f" ({' '.join(str(ssl_error).split())})")
        short_cause, hint = diagnose(rule, error_text, self.target)
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
        return StepFailedError(name)
