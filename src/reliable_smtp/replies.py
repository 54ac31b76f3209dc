"""SMTP replies as data, and what they mean.

This module owns:

* :class:`Phase` - where in the SMTP dialogue something happened;
* :class:`Reply` - one server reply (basic code, enhanced status code, text);
* :class:`Outcome` - the delivery classes every failure is sorted into;
* :class:`Verdict` - an outcome plus a one-line explanation with the usual fix;
* :func:`classify` - the pure function from (reply, phase) to a verdict, driven by
  the rule table in this module;
* :func:`classify_connection_loss` - the verdict for a lost link or a timeout,
  which depends only on the phase (before the final dot: safe to retry; after it:
  ambiguous).

Nothing here does I/O; everything is unit-tested case by case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "Outcome",
    "Phase",
    "Reply",
    "Verdict",
    "classify",
    "classify_connection_loss",
]


class Phase(str, Enum):
    """Where in the SMTP dialogue a reply or failure happened."""

    CONNECT = "connect"
    TLS = "tls"
    EHLO = "ehlo"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    """The ``DATA`` command itself, before the server's 354."""
    DATA_END = "data_end"
    """The message body and the final dot; a failure here may mean the server has it."""

    def __str__(self) -> str:
        return self.value


class Outcome(str, Enum):
    """What a reply (or failure) means for the message."""

    SENT = "sent"
    """The server took responsibility for the message (2xx after the final dot)."""
    TRANSIENT = "transient"
    """Temporary failure; retried with exponential backoff."""
    THROTTLED = "throttled"
    """Rate limit, reputation throttle or quota; retried later, if at all."""
    PERMANENT = "permanent"
    """The server refused for good (bad mailbox, message too big, policy); never retried."""
    AUTH_OR_CONFIG = "auth_or_config"
    """Credentials, TLS or sender identity are wrong; never retried, an operator must act."""
    AMBIGUOUS = "ambiguous"
    """The link broke after the final dot: the server may or may not have the message."""

    def __str__(self) -> str:
        return self.value


_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: ``Reply(451, "4.7.1", "try later")``.

    ``enhanced_code`` is the RFC 3463 status code (``"5.1.1"``) or ``None`` when the
    server sent none. ``text`` is the server's text without the basic code and
    without the first line's enhanced code; continuation lines are joined with
    ``"\\n"``.
    """

    code: int
    enhanced_code: str | None = None
    text: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.code, bool) or not isinstance(self.code, int):
            raise TypeError(f"Reply code must be an int, got {self.code!r}")
        if self.enhanced_code is not None and not _ENHANCED.match(self.enhanced_code):
            raise ValueError(
                f"enhanced_code must look like '5.1.1' (RFC 3463), got {self.enhanced_code!r}"
            )

    @classmethod
    def from_server(cls, code: int, message: str) -> Reply:
        """Build a reply from a basic code and the raw text after it.

        The enhanced status code is taken from the first line only: some servers
        (Gmail among them) put placeholders on continuation lines.
        """
        first, sep, rest = message.partition("\n")
        match = _ENHANCED.match(first)
        if match is None:
            return cls(code, None, message)
        enhanced = match.group(0)
        first = first[match.end() :].lstrip()
        return cls(code, enhanced, first + sep + rest)

    @property
    def severity(self) -> int:
        """The first digit of the basic code (2 success, 3 go on, 4 transient, 5 permanent)."""
        return self.code // 100

    @property
    def enhanced_parts(self) -> tuple[int, int, int] | None:
        """``(class, subject, detail)`` of the enhanced code, or ``None``."""
        if self.enhanced_code is None:
            return None
        klass, subject, detail = self.enhanced_code.split(".")
        return int(klass), int(subject), int(detail)

    def __str__(self) -> str:
        parts = [str(self.code)]
        if self.enhanced_code:
            parts.append(self.enhanced_code)
        if self.text:
            parts.append(self.text.replace("\n", " / "))
        return " ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The meaning of a reply: its outcome class and what to do about it."""

    outcome: Outcome
    explanation: str
    """One line: what happened and the usual fix."""
    retry_in_process: bool = False
    """Whether retrying within this call can help (False for quotas that clear in hours)."""
    split: bool = False
    """Too many recipients: resend the rest in a new transaction right away."""
    delay_hint: float | None = None
    """Seconds the server asked us to wait ("try again in 30 seconds"), when it said so."""


def classify(reply: Reply, phase: Phase) -> Verdict:
    """Classify a server reply received in ``phase``.

    The first digit decides (RFC 5321 §4.2); the enhanced code and known provider
    texts refine it. See the rule table in this module.
    """
    # Placeholder rules: first digit only. The full table replaces this.
    if reply.severity == 2:
        return Verdict(outcome=Outcome.SENT, explanation="accepted")
    if reply.severity == 4:
        return Verdict(
            outcome=Outcome.TRANSIENT,
            explanation="temporary failure: retried",
            retry_in_process=True,
        )
    return Verdict(outcome=Outcome.PERMANENT, explanation="permanent failure: not retried")


def classify_connection_loss(phase: Phase, *, timed_out: bool) -> Verdict:
    """Verdict for a connection that broke (or a reply that never came) in ``phase``."""
    what = "no reply in time" if timed_out else "the connection was lost"
    if phase is Phase.DATA_END:
        return Verdict(
            outcome=Outcome.AMBIGUOUS,
            explanation=(
                f"{what} after the message was sent: the server may have accepted it; "
                "not resent automatically, to avoid a duplicate"
            ),
        )
    return Verdict(
        outcome=Outcome.TRANSIENT,
        explanation=f"{what} during {phase.value}; nothing was delivered: retried",
        retry_in_process=True,
    )
