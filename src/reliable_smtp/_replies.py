"""SMTP replies as data, and what they mean.

This module owns:

* :class:`Phase` - where in the SMTP dialogue something happened;
* :class:`Reply` - one server reply (basic code, enhanced status code, text);
* :class:`Outcome` - the delivery classes every failure is sorted into;
* :class:`Verdict` - an outcome plus a one-line explanation with the usual fix;
* :class:`Rule` and :data:`RULES` - the classification table, as data;
* :func:`classify` - the pure function from (reply, phase) to a verdict: the first
  rule of :data:`RULES` that matches wins;
* :func:`explain` - the explanation alone, for logs and error messages;
* :func:`parse_delay_hint` - "try again in 15 seconds" and friends, as seconds;
* :func:`classify_connection_loss` - the verdict for a lost link or a timeout,
  which depends only on the phase (before the final dot: safe to retry; after it:
  ambiguous);
* :func:`classify_tls_failure` - the verdict for a failed TLS handshake.

Nothing here does I/O; everything is unit-tested case by case.

The table
---------
:data:`RULES` follows the recommended classification of the protocol reference
(``smtp-semantics.md`` A.4, rows 3-18; rows 1-2 are
:func:`classify_connection_loss`, row 3 is :func:`classify_tls_failure` and the
caller's own checks). The first digit of the basic code decides (RFC 5321 §4.2),
and every rule that lets the enhanced code or the text override it is a
deliberate, commented deviation (A.1 "Consequence"). When the enhanced code's
class disagrees with the basic code, the basic code wins: enhanced patterns are
written ``X.<subject>.<detail>`` and ignore the class digit (RFC 3463 and A.2).
Texts are matched case-insensitively anywhere in the reply, all lines; the
enhanced code comes from the first line only (:meth:`Reply.from_server`).

A.4 has nine classes; :class:`Outcome` has six. The extra ones map as follows:

* ``OK`` -> :attr:`Outcome.SENT` for every 2xx (251 and 252 too), and for the
  expected intermediate replies (354 to DATA, 334 during AUTH): the command
  succeeded. Only a 2xx in :attr:`Phase.DATA_END` means the message was taken.
  Any other 3xx, and a 2xx to DATA (which expects 354), is a protocol error.
* After the final dot (:attr:`Phase.DATA_END`) only a valid 2xx, 4xx or 5xx reply
  decides: anything else (354, 199, 600, ...) is :attr:`Outcome.AMBIGUOUS`, since the
  server has the whole message and did not refuse it. Before the dot such a reply is
  a protocol error.
* ``QUOTA`` -> :attr:`Outcome.THROTTLED` with ``quota=True`` and
  ``retryable=False``: a daily or billing limit clears in hours, so the
  caller should defer the message (and stop sending on that account), not retry now.
* ``SPLIT`` -> :attr:`Outcome.TRANSIENT` with ``split=True`` and
  ``retryable=True``: the refused recipients go out at once in a new
  transaction.
* ``PROTOCOL_BUG`` (500, 501, 502, 503, 504, 555, unexpected 3xx, codes outside
  2xx-5xx) -> :attr:`Outcome.PERMANENT` with ``protocol_error=True``.
* ``AUTH_CONFIG`` -> :attr:`Outcome.AUTH_OR_CONFIG`.

Deviations from A.4 and refinements of it, each commented at its rule:

* mailbox full (X.2.2, or "mailbox full" / "over quota" texts) is decided before the
  quota texts and the 452 split: "quota exceeded" and Gmail's ``452 4.2.2`` on RCPT
  also describe a full mailbox. A 4xx mailbox-full is TRANSIENT but not retried
  in-process (it clears in hours, if ever; A.3);
* a 4xx that names a wait ("try again in 15 seconds", "try again after <date>") is
  THROTTLED, as A.3 reads those replies (A.4 row 13 would say TRANSIENT);
* X.3.2 alone is not a throttle (Exchange sends ``421 4.3.2 Service not
  available``); M365's "sender thread limit" text is;
* Postfix's ``421 4.7.0 Error: too many errors`` is TRANSIENT, not a throttle, and
  so is ``454`` in the TLS phase ("TLS not available due to local problem");
* "too many recipients from <client>" and per-hour recipient limits are throttles,
  not splits; X.5.3 or "too many recipients" on RCPT splits with a 5xx too (RFC 3463
  X.5.3, RFC 5321 §4.5.3.1.10);
* AUTH_OR_CONFIG beyond A.4: 530/534/535/538 in any phase, "too many auth failures"
  in any phase (retrying makes it worse), 504 to AUTH (mechanism not supported),
  relay denied, X.1.x to MAIL (our sender address), a rejected EHLO name;
* row 18 (first digit not 2-5) is the last rule, but every other rule filters on the
  code, so no text can promote a non-SMTP code.

:func:`classify` takes a ``rules`` argument, so a caller can run its own table (for
example one that treats 5.2.2 as transient, A.4 row 12); a table without a match
falls back to the first digit (A.1).
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from enum import Enum
from types import MappingProxyType
from typing import Any, Generic, TypeVar, overload

__all__ = [
    "RULES",
    "Outcome",
    "Phase",
    "Reply",
    "Rule",
    "Verdict",
    "classify",
    "classify_connection_loss",
    "classify_tls_failure",
    "explain",
    "likely_phase",
    "parse_delay_hint",
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


_V = TypeVar("_V")

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


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Verdict:
    """The meaning of a reply (or of a failure without one): the one outcome value.

    A transport classifies once; the :class:`~reliable_smtp.RecipientStatus` and the
    :class:`~reliable_smtp.DeliveryError` built from the verdict carry it unchanged
    (``status.verdict``, ``error.verdict``), and the error's class is derived from it
    alone (:func:`~reliable_smtp._errors.error_for`).
    """

    outcome: Outcome
    explanation: str
    """One line: what happened and the usual fix."""
    retryable: bool = False
    """Whether retrying within this call can help (False for quotas that clear in hours)."""
    split: bool = False
    """Too many recipients: resend the rest in a new transaction right away."""
    delay_hint: float | None = None
    """Seconds the server asked us to wait ("try again in 30 seconds"), when it said so."""
    quota: bool = False
    """A daily or billing quota (A.4 ``QUOTA``): defer for hours, stop sending on the account."""
    protocol_error: bool = False
    """The server did not understand us, or did not speak SMTP (A.4 ``PROTOCOL_BUG``)."""
    connection_lost: bool = False
    """No reply came because the link broke (refused, reset, closed)."""
    timed_out: bool = False
    """No reply came in time."""
    setting: str | None = None
    """The setting (argument or ``RELIABLE_SMTP_*`` variable) to change, when one is known."""
    rule: str = ""
    """The name of the rule that decided (a :class:`Rule` name, or a connection/TLS rule)."""

    def __init__(
        self,
        *,
        outcome: Outcome,
        explanation: str,
        retryable: bool | None = None,
        split: bool = False,
        delay_hint: float | None = None,
        quota: bool = False,
        protocol_error: bool = False,
        connection_lost: bool = False,
        timed_out: bool = False,
        setting: str | None = None,
        rule: str = "",
        retry_in_process: bool | None = None,
    ) -> None:
        if retry_in_process is not None:
            warnings.warn(
                "Verdict(retry_in_process=...) is deprecated: write Verdict(retryable=...)",
                DeprecationWarning,
                stacklevel=2,
            )
            if retryable is None:
                retryable = retry_in_process
        # At least one verdict per reply: set the slots directly (frozen dataclass).
        setter = object.__setattr__
        setter(self, "outcome", outcome)
        setter(self, "explanation", explanation)
        setter(self, "retryable", bool(retryable))
        setter(self, "split", split)
        setter(self, "delay_hint", delay_hint)
        setter(self, "quota", quota)
        setter(self, "protocol_error", protocol_error)
        setter(self, "connection_lost", connection_lost)
        setter(self, "timed_out", timed_out)
        setter(self, "setting", setting)
        setter(self, "rule", rule)

    def updated(self, **fields: Any) -> Verdict:
        """This verdict with every field of ``fields`` that is not ``None``.

        Like :func:`dataclasses.replace`, but ``None`` means "keep": the shorthand
        arguments of ``RecipientStatus(...)`` and ``DeliveryError(...)`` (``outcome=``,
        ``explanation=``, ...) land on the verdict through it. Returns ``self`` when
        nothing changes.
        """
        changes = {name: value for name, value in fields.items() if value is not None}
        if all(getattr(self, name) == value for name, value in changes.items()):
            return self
        return dataclasses.replace(self, **changes)

    @property
    def retry_in_process(self) -> bool:
        """Deprecated spelling of :attr:`retryable` (one name per concept)."""
        warnings.warn(
            "Verdict.retry_in_process is deprecated: read Verdict.retryable",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.retryable


class VerdictAttribute(Generic[_V]):
    """A read-only attribute that is the same-named field of the owner's ``verdict``.

    ``RecipientStatus.outcome`` and ``DeliveryError.explanation`` are declared with it,
    so the verdict stays the one place the fact is kept.
    """

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> VerdictAttribute[_V]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _V: ...
    def __get__(
        self, instance: object | None, owner: type | None = None
    ) -> VerdictAttribute[_V] | _V:
        if instance is None:
            return self
        value: _V = getattr(instance.verdict, self.name)  # type: ignore[attr-defined]
        return value

    def __set__(self, instance: object, value: object) -> None:
        raise AttributeError(
            f"{self.name} is read from the verdict: build a new {type(instance).__name__} "
            "(or replace() one) with the verdict you mean"
        )


# --------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------

_PATTERN = re.compile(r"X\.(\d{1,3})\.(\d{1,3}|\*)")


def _parse_pattern(pattern: str) -> tuple[int, int | None]:
    match = _PATTERN.fullmatch(pattern)
    if match is None:
        raise ValueError(f"enhanced pattern must look like 'X.7.1' or 'X.7.*', got {pattern!r}")
    detail = match.group(2)
    return int(match.group(1)), None if detail == "*" else int(detail)


def _enhanced_matches(
    parts: tuple[int, int, int] | None, patterns: tuple[tuple[int, int | None], ...]
) -> bool:
    if parts is None:
        return False
    _, subject, detail = parts  # the class digit is ignored: the basic code decides (A.2)
    return any(s == subject and (d is None or d == detail) for s, d in patterns)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One row of the classification table.

    A rule matches a (reply, phase) when every condition it sets holds:

    * ``phases``, ``severities`` (first digit) and ``codes`` are filters (``None``:
      any);
    * ``enhanced`` (patterns ``"X.7.1"``, ``"X.7.*"``; the class digit is ignored)
      and ``text`` (a regex searched in the reply text) are triggers: when a rule
      sets both, either one suffices; when it sets neither, the filters decide;
    * ``unless_enhanced`` and ``unless_text`` exclude replies that would otherwise
      match.

    The rest is the verdict the rule gives.
    """

    name: str
    outcome: Outcome
    explanation: str
    phases: frozenset[Phase] | None = None
    severities: frozenset[int] | None = None
    codes: frozenset[int] | None = None
    enhanced: tuple[str, ...] = ()
    text: re.Pattern[str] | None = None
    unless_enhanced: tuple[str, ...] = ()
    unless_text: re.Pattern[str] | None = None
    retryable: bool = False
    split: bool = False
    quota: bool = False
    protocol_error: bool = False
    _enhanced: tuple[tuple[int, int | None], ...] = field(init=False, repr=False, compare=False)
    _unless_enhanced: tuple[tuple[int, int | None], ...] = field(
        init=False, repr=False, compare=False
    )
    # The verdict without a delay hint, built once: verdicts are immutable, so every
    # reply this rule decides without a hint (every 250, most refusals) shares it.
    _plain_verdict: Verdict = field(init=False, repr=False, compare=False)
    retry_in_process: InitVar[bool | None] = None
    """Deprecated spelling of ``retryable`` (one name per concept), for one release."""

    def __post_init__(self, retry_in_process: bool | None) -> None:
        if retry_in_process is not None:
            warnings.warn(
                "Rule(retry_in_process=...) is deprecated: write Rule(retryable=...)",
                DeprecationWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "retryable", retry_in_process)
        if not self.name or not self.explanation:
            raise ValueError("a rule needs a name and an explanation")
        if self.split and self.outcome is not Outcome.TRANSIENT:
            raise ValueError(f"rule {self.name}: split implies Outcome.TRANSIENT")
        if self.quota and (self.outcome is not Outcome.THROTTLED or self.retryable):
            raise ValueError(f"rule {self.name}: quota implies THROTTLED, not retried in-process")
        object.__setattr__(self, "_enhanced", tuple(map(_parse_pattern, self.enhanced)))
        object.__setattr__(
            self, "_unless_enhanced", tuple(map(_parse_pattern, self.unless_enhanced))
        )
        object.__setattr__(self, "_plain_verdict", self._verdict(None))

    def matches(self, reply: Reply, phase: Phase) -> bool:
        """Whether this rule applies to ``reply`` received in ``phase``."""
        if self.phases is not None and phase not in self.phases:
            return False
        if self.severities is not None and reply.severity not in self.severities:
            return False
        if self.codes is not None and reply.code not in self.codes:
            return False
        # The enhanced code is parsed only for a rule that looks at it (most do not).
        parts = reply.enhanced_parts if self._enhanced or self._unless_enhanced else None
        if _enhanced_matches(parts, self._unless_enhanced):
            return False
        if self.unless_text is not None and self.unless_text.search(reply.text):
            return False
        if not self._enhanced and self.text is None:
            return True
        if _enhanced_matches(parts, self._enhanced):
            return True
        return self.text is not None and self.text.search(reply.text) is not None

    def verdict(self, *, delay_hint: float | None = None) -> Verdict:
        """The verdict this rule gives, with the server's delay hint if any."""
        if delay_hint is None:
            return self._plain_verdict
        return self._verdict(delay_hint)

    def _verdict(self, delay_hint: float | None) -> Verdict:
        explanation = self.explanation
        if delay_hint is not None:
            explanation += f" (server hint: wait {delay_hint:g} s)"
        return Verdict(
            outcome=self.outcome,
            explanation=explanation,
            retryable=self.retryable,
            split=self.split,
            delay_hint=delay_hint,
            quota=self.quota,
            protocol_error=self.protocol_error,
            rule=self.name,
        )


def _rule_retry_in_process(rule: Rule) -> bool:
    """Deprecated spelling of :attr:`Rule.retryable`."""
    warnings.warn(
        "Rule.retry_in_process is deprecated: read Rule.retryable", DeprecationWarning, stacklevel=2
    )
    return rule.retryable


# The InitVar's default is baked into __init__; reading the old name gives the real value.
setattr(Rule, "retry_in_process", property(_rule_retry_in_process))  # noqa: B010


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def _codes(*codes: int) -> frozenset[int]:
    return frozenset(codes)


def _phases(*phases: Phase) -> frozenset[Phase]:
    return frozenset(phases)


_SUCCESS = _codes(2)
_TEMP = _codes(4)
_PERM = _codes(5)
_FAIL = _codes(4, 5)

# Texts from real servers (A.3, A.4 and G); each is searched case-insensitively.
_THROTTLE_TEXT = _re(
    r"\brate(?:limit(?:ed)?)?\b|too many|too fast|throttl|try again later"
    r"|temporarily (?:deferred|rate[- ]limited|restricted)|limit exceeded"
)
_DELAY_TEXT = _re(r"(?:try again|retry|come back|wait)\s+(?:in|after|until)\b")
_QUOTA_TEXT = _re(
    r"quota exceeded|exceeded (?:\w+ ){0,3}quota|daily\b.*\blimit|sending limit"
    r"|maximum credits|credits exceeded|messaging limits"
)
_MAILBOX_FULL_TEXT = _re(
    r"mailbox.{0,40}\bfull\b|inbox.{0,40}(?:\bfull\b|out of storage)|over quota"
    r"|out of storage|mailbox.{0,40}quota|quota.{0,40}mailbox"
)
_PER_PERIOD_TEXT = _re(
    r"too many recipients from\b|\brate\b|\b(?:per|this|an?|each)\s+(?:second|minute|hour|day)\b"
)
_TOO_MANY_RCPTS_TEXT = _re(r"too many recipients")
_RELAY_DENIED_TEXT = _re(
    r"relay(?:ing)? (?:access )?(?:denied|not permitted|not allowed|prohibited)"
    r"|(?:unable|not permitted|not allowed) to relay|we do not relay"
)
_MESSAGE_TOO_BIG_TEXT = _re(
    r"message (?:size|too (?:big|large))|too (?:big|large)|size (?:exceeds|limit)"
    r"|exceeds? (?:the )?(?:maximum |max )?(?:message )?size"
)
_USER_UNKNOWN_TEXT = _re(
    r"user unknown|unknown (?:user|recipient)|no such (?:user|mailbox|recipient)"
    r"|(?:mailbox|user|recipient|address) (?:does not|doesn't) exist|mailbox not found"
)

_TOO_MANY_RECIPIENTS = (
    "too many recipients for one transaction: the rest are sent at once in a new "
    "transaction (split)"
)

# Each rule says where it comes from: "A.4 row N" (the reference's recommended table),
# "A.3" (a real provider reply), an RFC, or "deviation" with the reason.
RULES: tuple[Rule, ...] = (
    # ---- Success and intermediate replies (RFC 5321 §4.2.1; RFC 4954 for 334) ----
    Rule(
        name="delivered",
        phases=_phases(Phase.DATA_END),
        severities=_SUCCESS,
        outcome=Outcome.SENT,
        explanation="the server accepted the message for delivery",
    ),
    Rule(
        # After the final dot the server has the whole message: a reply that is not a
        # valid 2xx/4xx/5xx (354, 199, 600, ...) does not say it refused it, so it may
        # have kept it. Not a protocol error, which would invite a resend (issue 11 B2).
        name="not-a-final-reply",
        phases=_phases(Phase.DATA_END),
        severities=_codes(0, 1, 3, 6, 7, 8, 9),
        outcome=Outcome.AMBIGUOUS,
        explanation=(
            "the server answered the final dot with a reply that is neither success nor "
            "refusal: it may or may not have accepted the message; not resent "
            "automatically, to avoid a duplicate"
        ),
    ),
    Rule(
        # DATA expects 354; a 2xx means the server is out of step (it would read the
        # message body as commands). Nothing was sent: a protocol error.
        name="data-without-354",
        phases=_phases(Phase.DATA),
        severities=_SUCCESS,
        outcome=Outcome.PERMANENT,
        protocol_error=True,
        explanation=(
            "the server answered DATA with a success code instead of 354: the dialogue "
            "is out of step; the message was not sent and the connection is dropped"
        ),
    ),
    Rule(
        name="accepted",
        severities=_SUCCESS,
        outcome=Outcome.SENT,
        explanation="the server accepted the command",
    ),
    Rule(
        name="ready-for-data",
        phases=_phases(Phase.DATA),
        codes=_codes(354),
        outcome=Outcome.SENT,
        explanation="the server is ready for the message body",
    ),
    Rule(
        name="auth-challenge",
        phases=_phases(Phase.AUTH),
        codes=_codes(334),
        outcome=Outcome.SENT,
        explanation="the server sent an authentication challenge: the login goes on",
    ),
    Rule(
        # 3yz anywhere else: the dialogue is out of step (A.1 §4.2.1).
        name="unexpected-intermediate",
        severities=_codes(3),
        outcome=Outcome.PERMANENT,
        protocol_error=True,
        explanation=(
            "the server sent an intermediate (3xx) reply where none belongs: the "
            "dialogue is out of step; not retried, the connection is dropped"
        ),
    ),
    # ---- Authentication and account configuration (A.4 rows 4 and 8; G) ----
    Rule(
        # A.3/G.1 M365 5.7.139; any phase, so before the generic AUTH rules.
        name="smtp-auth-disabled",
        severities=_FAIL,
        enhanced=("X.7.139",),
        text=_re(
            r"SmtpClientAuthentication is disabled|basic authentication is disabled"
            r"|smtp auth(?:entication)? is disabled"
        ),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "SMTP AUTH is disabled for this mailbox or tenant: enable SMTP AUTH for the "
            "mailbox (Microsoft 365 admin), or use OAuth2"
        ),
    ),
    Rule(
        # A.3/G.1 M365 550 5.7.30 after the Basic-auth retirement.
        name="basic-auth-retired",
        severities=_FAIL,
        enhanced=("X.7.30",),
        text=_re(r"basic authentication is not supported"),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "basic (password) authentication is retired for SMTP submission: switch to "
            "OAuth2, or enable basic auth for the mailbox while the provider still allows it"
        ),
    ),
    Rule(
        # RFC 4954 534 5.7.9 "mechanism too weak"; Gmail: 2-step verification is on (A.3, G.2).
        name="app-password-required",
        severities=_PERM,
        codes=_codes(534),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the provider wants an app password (the account has 2-step verification) or "
            "OAuth2, not the account password; or a stronger AUTH mechanism"
        ),
    ),
    Rule(
        # RFC 3207 "530 5.7.0 Must issue a STARTTLS command first": encryption, not a
        # login, is what is missing. Any phase: it names a setting, not a message.
        name="starttls-required",
        severities=_PERM,
        codes=_codes(530),
        text=_re(r"starttls|\btls\b|encrypt"),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the server wants STARTTLS first: use tls='starttls' (RELIABLE_SMTP_TLS=starttls, "
            "port 587) or tls='implicit' (port 465)"
        ),
    ),
    Rule(
        # RFC 4954 530 5.7.0 "Authentication required"; M365 5.7.57 at MAIL (A.3).
        # STARTTLS-required 530s are the rule above, so what is missing is a login.
        name="auth-required",
        severities=_PERM,
        codes=_codes(530),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the server requires a login before sending and none was made: credentials "
            "are missing - set username and password (RELIABLE_SMTP_USERNAME and "
            "RELIABLE_SMTP_PASSWORD)"
        ),
    ),
    Rule(
        name="auth-required-m365",
        severities=_PERM,
        enhanced=("X.7.57",),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the server wants AUTH before MAIL FROM (anonymous mail is refused): set a "
            "username and password, and check that the login succeeded"
        ),
    ),
    Rule(
        name="encryption-required",  # RFC 4954 538 5.7.11
        severities=_PERM,
        codes=_codes(538),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the server requires encryption for this login: enable STARTTLS or use "
            "implicit TLS on port 465"
        ),
    ),
    Rule(
        # RFC 4954 535 5.7.8; Gmail BadCredentials, M365 5.7.3 (A.3).
        name="bad-credentials",
        severities=_PERM,
        codes=_codes(535),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "authentication failed: check the username and password; the provider may "
            "need an app password or OAuth2 (for OAuth2, refresh the token)"
        ),
    ),
    Rule(
        # A.3 Oracle "421 Too many auth failures": retrying makes it worse, so this is
        # AUTH_OR_CONFIG in any phase although the first digit is 4 (deviation).
        name="too-many-auth-failures",
        severities=_FAIL,
        text=_re(
            r"too many (?:failed )?(?:auth|authentication|login) (?:failures|errors)"
            r"|\bauth(?:entication)? failures"
        ),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the server refuses logins after too many failures: fix the credentials "
            "before trying again; retrying makes the lockout longer"
        ),
    ),
    Rule(
        # An AUTH mechanism the server lacks is a setting, not a client bug (deviation
        # from row 14).
        name="auth-mechanism-unsupported",
        phases=_phases(Phase.AUTH),
        codes=_codes(504),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the server does not support this authentication mechanism: choose one it "
            "advertises in EHLO (for example PLAIN or LOGIN over TLS)"
        ),
    ),
    Rule(
        name="auth-refused",  # A.4 row 4: any 5.7.x at AUTH
        phases=_phases(Phase.AUTH),
        severities=_PERM,
        enhanced=("X.7.*",),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the server refused the login for policy reasons: check the credentials and "
            "that the account may use SMTP submission"
        ),
    ),
    # ---- STARTTLS (deviation: Postfix "454 4.7.0 TLS not available due to local problem"
    # is a server fault, not a throttle, although it carries 4.7.0) ----
    Rule(
        name="starttls-unavailable",
        phases=_phases(Phase.TLS),
        codes=_codes(454),
        outcome=Outcome.TRANSIENT,
        retryable=True,
        explanation="the server cannot start TLS right now (a problem on its side): retried",
    ),
    # ---- Quotas (A.4 row 7): THROTTLED, quota, not retried in-process, even for 5xx ----
    Rule(
        # M365 554 5.2.0 SubmissionQuotaExceededException; "5.2.2 Submission quota
        # exceeded" (A.3, G.1). Before mailbox-full: 5.2.2 + "submission" is a quota.
        name="quota-submission",
        severities=_FAIL,
        text=_re(r"submission ?quota"),
        outcome=Outcome.THROTTLED,
        quota=True,
        explanation=(
            "the mailbox's daily submission limit is reached (Microsoft 365: 10,000 "
            "recipients a day): retry after it resets (about 24 h); not retried now"
        ),
    ),
    Rule(
        name="quota-daily-recipients",  # M365 5.1.90 (A.3)
        severities=_FAIL,
        enhanced=("X.1.90",),
        outcome=Outcome.THROTTLED,
        quota=True,
        explanation=(
            "the daily limit for message recipients is reached: retry after it resets "
            "(about 24 h); not retried now"
        ),
    ),
    Rule(
        # Gmail 550 5.4.5 Daily user sending quota/limit exceeded (A.3, G.2). X.4.5 with a
        # 4xx is "mail system congestion" (RFC 3463): a throttle, row 10.
        name="quota-daily-sending",
        severities=_PERM,
        enhanced=("X.4.5",),
        outcome=Outcome.THROTTLED,
        quota=True,
        explanation=(
            "daily sending quota reached: retry after it resets (about 24 h); not retried "
            "now (a higher quota needs a paid or verified account)"
        ),
    ),
    Rule(
        # A.4 row 12, moved before the quota texts and the 452 split (deviation): a full
        # mailbox also says "quota exceeded", and Gmail sends it as 452 4.2.2 on RCPT.
        # RFC 3463 X.2.2 is persistent transient; it clears in hours if ever (A.3), so a
        # 4xx is not retried in-process.
        name="mailbox-full-temporary",
        severities=_TEMP,
        enhanced=("X.2.2",),
        text=_MAILBOX_FULL_TEXT,
        outcome=Outcome.TRANSIENT,
        explanation=(
            "the recipient's mailbox is full: retry in a few hours (it may never clear); "
            "not retried now"
        ),
    ),
    Rule(
        # 5xx mailbox full: Postfix and most MTAs bounce it; PERMANENT by default (row 12).
        name="mailbox-full",
        severities=_PERM,
        enhanced=("X.2.2",),
        text=_MAILBOX_FULL_TEXT,
        outcome=Outcome.PERMANENT,
        explanation=(
            "the recipient's mailbox is full: the server refused it for good; ask the "
            "recipient to make room"
        ),
    ),
    Rule(
        name="quota-credits",  # SendGrid "451 Authentication failed: Maximum credits exceeded"
        severities=_FAIL,
        text=_re(r"maximum credits|credits exceeded"),
        outcome=Outcome.THROTTLED,
        quota=True,
        explanation=(
            "the account has run out of sending credits: add credits or upgrade the plan; "
            "not retried now"
        ),
    ),
    Rule(
        name="quota",  # SES daily quota, SendGrid messaging limits, generic texts (A.3)
        severities=_FAIL,
        text=_QUOTA_TEXT,
        outcome=Outcome.THROTTLED,
        quota=True,
        explanation=(
            "the account's sending quota is used up: retry after it resets (often about "
            "24 h); not retried now"
        ),
    ),
    # ---- Sender identity and account configuration (A.4 row 8), even for 4xx ----
    Rule(
        name="sender-not-verified",  # SES "Email address is not verified" (A.3)
        severities=_FAIL,
        text=_re(r"\bnot verified\b"),
        # Recipient verification ("450 4.1.1 ... unverified address") is about the
        # recipient, not our identity.
        unless_enhanced=("X.1.*",),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the sender identity is not verified with the provider: verify the sender "
            "address or domain (in the Amazon SES sandbox, the recipients too)"
        ),
    ),
    Rule(
        # M365 SendAsDenied 5.2.252 / 5.2.0 (A.3), 5.7.60; Postfix
        # reject_sender_login_mismatch ("not owned by user").
        name="send-as-denied",
        severities=_FAIL,
        enhanced=("X.7.60", "X.2.252"),
        text=_re(r"SendAsDenied|not allowed to send as|permissions? to send as|not owned by"),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "this login may not send as the From/sender address: send from the "
            "mailbox's own address, or grant it Send As permission"
        ),
    ),
    Rule(
        # SendGrid "403 You are not authorized to send from that email address" (A.3).
        name="sender-not-authorized",
        severities=_FAIL,
        text=_re(r"not authori[sz]ed to send from"),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the account may not send from this address: verify the sender identity with "
            "the provider (SendGrid: Sender Authentication)"
        ),
    ),
    Rule(
        # Mailgun "421 Domain ... is not allowed to send: Please activate your Mailgun
        # account" (A.3).
        name="account-not-activated",
        severities=_FAIL,
        text=_re(r"is not allowed to send: please activate|please activate your .{0,20}account"),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the sending account or domain is not activated: activate it with the "
            "provider (a sandbox domain sends only to authorized recipients)"
        ),
    ),
    Rule(
        # M365 tenant/IP/account bans (A.3): 5.7.705, 5.7.708, 5.7.750, 5.1.8, 5.7.501-503.
        name="sender-blocked",
        severities=_FAIL,
        enhanced=("X.7.705", "X.7.708", "X.7.750", "X.1.8", "X.7.501", "X.7.502", "X.7.503"),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the provider blocks this sender, account, tenant or IP (often after abuse or "
            "a compromised account): stop sending and contact the provider"
        ),
    ),
    Rule(
        # Postfix "554 5.7.1 <x>: Relay access denied": the client is not authenticated or
        # may not use this sender domain; an operator must act (deviation from row 15/17).
        name="relay-denied",
        severities=_FAIL,
        text=_RELAY_DENIED_TEXT,
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "relaying denied: authenticate (set a username and password), or the sender "
            "domain is not allowed on this server"
        ),
    ),
    Rule(
        # Postfix reject_non_fqdn_helo_hostname: a setting of ours (deviation from row 14).
        name="ehlo-name-rejected",
        severities=_FAIL,
        text=_re(
            r"helo command rejected|need fully-qualified hostname|invalid e?hlo (?:host)?name"
        ),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the server rejected our EHLO name: set the client's local hostname to a "
            "fully-qualified domain name"
        ),
    ),
    Rule(
        # X.1.x at MAIL is about our envelope sender: a setting, not one message.
        name="sender-refused",
        phases=_phases(Phase.MAIL),
        severities=_PERM,
        enhanced=("X.1.*",),
        outcome=Outcome.AUTH_OR_CONFIG,
        explanation=(
            "the server refused the sender address: check the configured envelope sender "
            "(From) and that its domain exists"
        ),
    ),
    # ---- AUTH temporary failures (A.4 rows 5 and 6) ----
    Rule(
        # Gmail "454 4.7.0 Too many login attempts" (A.3, G.2).
        name="too-many-logins",
        phases=_phases(Phase.AUTH),
        severities=_TEMP,
        text=_re(r"too many (?:login|logon|auth|authentication) attempts"),
        outcome=Outcome.THROTTLED,
        retryable=True,
        explanation=(
            "too many login attempts: wait before logging in again, and reuse one "
            "connection instead of logging in for every message"
        ),
    ),
    Rule(
        # RFC 4954 432 4.7.12. M365's "432 4.3.2 ... sender thread limit exceeded" is a
        # concurrency limit (row 10), hence the exclusion.
        name="auth-password-transition",
        phases=_phases(Phase.AUTH),
        codes=_codes(432),
        unless_enhanced=("X.3.2",),
        outcome=Outcome.TRANSIENT,
        retryable=True,
        explanation=(
            "the server needs a password transition: log in once with PLAIN (over TLS), "
            "then this mechanism works; retried"
        ),
    ),
    Rule(
        # RFC 4954 454 4.7.0: "SHOULD NOT prompt the user for another password". Throttle
        # texts (SES "454 Throttling failure") fall through to row 10.
        name="auth-temporary",
        phases=_phases(Phase.AUTH),
        codes=_codes(454),
        unless_text=_THROTTLE_TEXT,
        outcome=Outcome.TRANSIENT,
        retryable=True,
        explanation=(
            "temporary authentication failure on the server's side: retried; the "
            "credentials are not in doubt"
        ),
    ),
    # ---- Too many recipients: split (A.4 row 9; RFC 5321 §4.5.3.1.10, RFC 3463 X.5.3) ----
    Rule(
        name="too-many-recipients",
        phases=_phases(Phase.RCPT),
        severities=_FAIL,
        enhanced=("X.5.3",),
        outcome=Outcome.TRANSIENT,
        split=True,
        retryable=True,
        explanation=_TOO_MANY_RECIPIENTS,
    ),
    Rule(
        # The text, except Postfix's anvil rate limit "450 4.7.1 Error: too many
        # recipients from <client>" and per-hour limits, which are throttles (A.2).
        name="too-many-recipients-text",
        phases=_phases(Phase.RCPT),
        severities=_FAIL,
        text=_TOO_MANY_RCPTS_TEXT,
        unless_enhanced=("X.7.*",),
        unless_text=_PER_PERIOD_TEXT,
        outcome=Outcome.TRANSIENT,
        split=True,
        retryable=True,
        explanation=_TOO_MANY_RECIPIENTS,
    ),
    Rule(
        # 452 on RCPT is the RFC's too-many-recipients code (§4.5.3.1.10). A 552 on RCPT
        # splits only through the two rules above (Postfix keeps a bare 552 permanent, A.1).
        name="too-many-recipients-452",
        phases=_phases(Phase.RCPT),
        codes=_codes(452),
        unless_enhanced=("X.7.*",),
        unless_text=_PER_PERIOD_TEXT,
        outcome=Outcome.TRANSIENT,
        split=True,
        retryable=True,
        explanation=(
            "the server takes no more recipients in this transaction (452): the rest are "
            "sent at once in a new transaction (split)"
        ),
    ),
    # ---- Throttles (A.4 row 10): 4xx only; the first digit stays authoritative for 5xx ----
    Rule(
        # Postfix "421 4.7.0 <host> Error: too many errors": not a rate; the session ended.
        name="too-many-errors",
        severities=_TEMP,
        text=_re(r"too many errors"),
        outcome=Outcome.TRANSIENT,
        retryable=True,
        explanation=(
            "the server ended the session after too many errors (look at the earlier "
            "replies): retried on a new connection"
        ),
    ),
    Rule(
        # M365 "432 4.3.2 ... sender thread limit exceeded", Postfix "too many connections".
        # X.3.2 alone is not enough: Exchange's "421 4.3.2 Service not available" is not a
        # throttle (deviation).
        name="concurrency-limit",
        severities=_TEMP,
        text=_re(
            r"thread limit"
            r"|too many (?:concurrent |simultaneous |parallel )?(?:connections|sessions)"
        ),
        outcome=Outcome.THROTTLED,
        retryable=True,
        explanation=(
            "too many simultaneous connections to this server or mailbox: lower the "
            "concurrency; slowed down and retried later"
        ),
    ),
    Rule(
        # Gmail 450 4.2.1 per-recipient rate and "Peak SMTP relay limit exceeded" (A.3).
        name="recipient-rate-limit",
        severities=_TEMP,
        enhanced=("X.2.1",),
        outcome=Outcome.THROTTLED,
        retryable=True,
        explanation=(
            "the recipient (or the relay account) is receiving mail too fast: slowed down "
            "and retried later"
        ),
    ),
    Rule(
        # "422 try again in 15 seconds", Mailgun "try again after <date>" (A.3): the
        # server names a wait, so it is throttling (A.3's reading; A.4 row 13 would
        # say TRANSIENT; either way the hint is honoured).
        name="delay-requested",
        severities=_TEMP,
        text=_DELAY_TEXT,
        outcome=Outcome.THROTTLED,
        retryable=True,
        explanation="the server asked us to wait before trying again: retried after the delay",
    ),
    Rule(
        # RFC 3463 calls X.7.1 permanent-only, but real servers use 4.7.x for greylisting,
        # reputation and rate limits (A.2): 4.7.x is a throttle.
        name="throttled",
        severities=_TEMP,
        enhanced=("X.7.*", "X.4.5"),
        text=_THROTTLE_TEXT,
        outcome=Outcome.THROTTLED,
        retryable=True,
        explanation=(
            "the server is throttling us (sending too fast, or the sender's reputation): "
            "slowed down and retried later"
        ),
    ),
    # ---- 421 (A.4 row 11): the server closes the channel (RFC 5321 §3.8, §4.2.3) ----
    Rule(
        name="closing-connection",
        codes=_codes(421),
        outcome=Outcome.TRANSIENT,
        retryable=True,
        explanation=(
            "the server is closing the connection, usually temporary: retried on a new connection"
        ),
    ),
    # ---- Other 4xx (A.4 row 13; RFC 5321 §4.2.3 texts) ----
    Rule(
        name="mailbox-busy",
        codes=_codes(450),
        outcome=Outcome.TRANSIENT,
        retryable=True,
        explanation="the mailbox is busy or temporarily unavailable: retried with backoff",
    ),
    Rule(
        name="server-error",
        codes=_codes(451),
        outcome=Outcome.TRANSIENT,
        retryable=True,
        explanation="the server had a local error in processing: retried with backoff",
    ),
    Rule(
        name="insufficient-storage",
        codes=_codes(452),
        outcome=Outcome.TRANSIENT,
        retryable=True,
        explanation="the server is short of storage: retried with backoff",
    ),
    Rule(
        name="parameters-not-accommodated",
        codes=_codes(455),
        outcome=Outcome.TRANSIENT,
        retryable=True,
        explanation=(
            "the server cannot accommodate the MAIL/RCPT parameters right now: retried with backoff"
        ),
    ),
    Rule(
        name="temporary",
        severities=_TEMP,
        outcome=Outcome.TRANSIENT,
        retryable=True,
        explanation="temporary failure (4xx): retried with backoff",
    ),
    # ---- Addresses (A.4 row 15), before the protocol rules so that 501 5.1.3 is an
    # address problem, not a client bug ----
    Rule(
        name="mailbox-does-not-exist",
        severities=_PERM,
        enhanced=("X.1.1",),
        text=_USER_UNKNOWN_TEXT,
        outcome=Outcome.PERMANENT,
        explanation="the mailbox does not exist: check the address; do not retry",
    ),
    Rule(
        name="domain-does-not-exist",
        severities=_PERM,
        enhanced=("X.1.2",),
        outcome=Outcome.PERMANENT,
        explanation=(
            "the recipient's domain does not exist or accepts no mail: check the domain; "
            "do not retry"
        ),
    ),
    Rule(
        name="bad-address-syntax",
        severities=_PERM,
        enhanced=("X.1.3",),
        outcome=Outcome.PERMANENT,
        explanation="the server found the address malformed: fix the address; do not retry",
    ),
    Rule(
        # Postfix "553 5.6.7 Must declare SMTPUTF8 to send unicode address".
        name="smtputf8-required",
        severities=_PERM,
        enhanced=("X.6.7",),
        outcome=Outcome.PERMANENT,
        explanation=(
            "a non-ASCII address needs SMTPUTF8, which this server refused or was not "
            "asked for: use an ASCII address or a server that supports SMTPUTF8"
        ),
    ),
    # ---- Protocol errors (A.4 row 14): our command, or our state, was wrong ----
    Rule(
        name="bad-sequence",
        codes=_codes(503),
        outcome=Outcome.PERMANENT,
        protocol_error=True,
        explanation=(
            "the server rejected the order of commands (503): the session was in an "
            "unexpected state; reset or reconnect; a client bug if it repeats"
        ),
    ),
    Rule(
        name="not-implemented",
        codes=_codes(502, 504),
        outcome=Outcome.PERMANENT,
        protocol_error=True,
        explanation=(
            "the server does not implement this command or parameter: the client asked "
            "for something the server did not advertise"
        ),
    ),
    Rule(
        name="parameters-not-recognized",
        codes=_codes(555),
        outcome=Outcome.PERMANENT,
        protocol_error=True,
        explanation=(
            "the server did not recognise a MAIL/RCPT parameter (SIZE, SMTPUTF8, 8BITMIME, "
            "...): the client used an extension the server does not offer"
        ),
    ),
    Rule(
        name="syntax-error",
        codes=_codes(500, 501),
        outcome=Outcome.PERMANENT,
        protocol_error=True,
        explanation=(
            "the server did not understand our command (syntax error or line too long): "
            "a client bug; please report it"
        ),
    ),
    # ---- Permanent refusals (A.4 rows 15-17) ----
    Rule(
        name="user-not-local",  # RFC 5321 §3.4: 551 may name the new address
        codes=_codes(551),
        outcome=Outcome.PERMANENT,
        explanation=(
            "the recipient is not local to this server (the reply may name a new "
            "address): update the address; do not retry"
        ),
    ),
    Rule(
        name="mailbox-name-not-allowed",
        codes=_codes(553),
        outcome=Outcome.PERMANENT,
        explanation=(
            "the server does not allow this mailbox name (syntax or policy): check the "
            "address; do not retry"
        ),
    ),
    Rule(
        name="address-refused",  # any other X.1.x (RFC 3463 addressing)
        severities=_PERM,
        enhanced=("X.1.*",),
        outcome=Outcome.PERMANENT,
        explanation="the server refused the address: check it; do not retry",
    ),
    Rule(
        # Row 16: X.3.4 / X.2.3 or a size text anywhere; 552 on MAIL (SIZE, RFC 1870) or
        # after DATA.
        name="message-too-large",
        severities=_PERM,
        enhanced=("X.3.4", "X.2.3"),
        text=_MESSAGE_TOO_BIG_TEXT,
        outcome=Outcome.PERMANENT,
        explanation=(
            "message too large for the server: make it smaller (shrink or drop "
            "attachments, send a link); not retried"
        ),
    ),
    Rule(
        name="message-exceeds-storage",
        phases=_phases(Phase.MAIL, Phase.DATA, Phase.DATA_END),
        codes=_codes(552),
        outcome=Outcome.PERMANENT,
        explanation=(
            "the message exceeds the server's storage allocation (usually: too large): "
            "make it smaller; not retried"
        ),
    ),
    Rule(
        # A bare 552 on RCPT: RFC 5321 §4.5.3.1.10 says treat it as temporary, Postfix
        # keeps it permanent (A.1); we follow Postfix unless it says too many recipients.
        name="recipient-storage-exceeded",
        codes=_codes(552),
        outcome=Outcome.PERMANENT,
        explanation=(
            "the recipient's storage allocation is exceeded: the server refused it for "
            "good; do not retry"
        ),
    ),
    Rule(
        name="no-service",  # RFC 5321 §4.2.3: 554 at the greeting, "No SMTP service here"
        phases=_phases(Phase.CONNECT),
        codes=_codes(554),
        outcome=Outcome.PERMANENT,
        explanation=(
            "the server refuses service to this client (554 at connect; often the "
            "client's IP is on a blocklist): use another server or ask its operator"
        ),
    ),
    Rule(
        # RFC 5321 §3.3: DATA answered 503/554 when no RCPT was accepted.
        name="no-valid-recipients",
        severities=_PERM,
        text=_re(r"no valid recipients"),
        outcome=Outcome.PERMANENT,
        explanation="the server accepted none of the recipients, so it refused the message",
    ),
    Rule(
        # Gmail 5.7.23-27: SPF, DKIM, DMARC and reverse-DNS checks (RFC 5248 registry).
        name="sender-authentication-failed",
        severities=_PERM,
        enhanced=("X.7.23", "X.7.24", "X.7.25", "X.7.26", "X.7.27"),
        outcome=Outcome.PERMANENT,
        explanation=(
            "the message failed sender authentication (SPF, DKIM or DMARC) or a reverse-"
            "DNS check: fix the sending domain's DNS records"
        ),
    ),
    Rule(
        name="policy-rejection",  # row 17: 5.7.x policy, "alert: reputation"
        severities=_PERM,
        enhanced=("X.7.*",),
        outcome=Outcome.PERMANENT,
        explanation=(
            "refused by the server's policy (spam filter, reputation, blocklist or sender "
            "checks): not retried; read the server's text"
        ),
    ),
    Rule(
        # A.3 "550 ... Failure sending mail. Try again later.": maybe a rate limit, but a
        # 5xx; the first digit stays authoritative (A.1), the explanation says so.
        name="permanent-try-later",
        severities=_PERM,
        text=_re(r"try again later"),
        outcome=Outcome.PERMANENT,
        explanation=(
            "refused with a permanent code although the text says to try again later (some "
            "relays rate-limit this way): not retried; check the provider's sending limits"
        ),
    ),
    Rule(
        name="recipient-refused",
        phases=_phases(Phase.RCPT),
        codes=_codes(550),
        outcome=Outcome.PERMANENT,
        explanation="the recipient was refused (550): check the address; do not retry",
    ),
    Rule(
        name="mailbox-unavailable",
        codes=_codes(550),
        outcome=Outcome.PERMANENT,
        explanation=(
            "mailbox unavailable or refused for policy reasons (550): not retried; read "
            "the server's text"
        ),
    ),
    Rule(
        name="transaction-failed",
        codes=_codes(554),
        outcome=Outcome.PERMANENT,
        explanation="the transaction failed (554): not retried; read the server's text",
    ),
    Rule(
        name="permanent",
        severities=_PERM,
        outcome=Outcome.PERMANENT,
        explanation="permanent failure (5xx): not retried; read the server's text",
    ),
    # ---- A.4 row 18: a first digit that is not 2-5 is not SMTP (RFC 5321 §4.2, §4.3.2) ----
    Rule(
        name="not-smtp",
        outcome=Outcome.PERMANENT,
        protocol_error=True,
        explanation=(
            "the reply code is not SMTP (first digit not 2-5): the server is not speaking "
            "SMTP, or the reply was garbled; check host and port"
        ),
    ),
)
"""The classification table: evaluated in order, the first matching rule wins."""

# The first-digit fallback (A.1) for a caller's own table that matches nothing.
_FALLBACK: Mapping[int, str] = MappingProxyType(
    {2: "accepted", 3: "unexpected-intermediate", 4: "temporary", 5: "permanent"}
)


def _fallback(reply: Reply) -> Rule:
    name = _FALLBACK.get(reply.severity, "not-smtp")
    return next(rule for rule in RULES if rule.name == name)


def classify(
    reply: Reply,
    phase: Phase,
    *,
    now: datetime | None = None,
    rules: Sequence[Rule] = RULES,
) -> Verdict:
    """Classify a server reply received in ``phase``.

    The first rule of ``rules`` (default :data:`RULES`) that matches decides. The
    first digit decides (RFC 5321 §4.2); the enhanced code and known provider
    texts refine it, as documented in the module docstring. A transient or
    throttled verdict carries the server's delay hint, if its text has one;
    ``now`` is the clock for a "try again after <date>" hint (default: the
    current UTC time).
    """
    for rule in rules:
        if rule.matches(reply, phase):
            break
    else:
        rule = _fallback(reply)
    hint = None
    if rule.outcome in (Outcome.TRANSIENT, Outcome.THROTTLED):
        hint = parse_delay_hint(reply.text, now=now)
    return rule.verdict(delay_hint=hint)


# Where a reply is most often seen, for explain() without a phase.
_LIKELY_PHASE: Mapping[int, Phase] = MappingProxyType(
    {
        220: Phase.CONNECT,
        235: Phase.AUTH,
        334: Phase.AUTH,
        354: Phase.DATA,
        432: Phase.AUTH,
        450: Phase.RCPT,
        452: Phase.RCPT,
        454: Phase.AUTH,
        530: Phase.MAIL,
        534: Phase.AUTH,
        535: Phase.AUTH,
        538: Phase.AUTH,
        550: Phase.RCPT,
        551: Phase.RCPT,
        553: Phase.RCPT,
        555: Phase.MAIL,
    }
)
_TLS_TEXT = re.compile(r"\b(?:TLS|SSL)\b", re.IGNORECASE)


def likely_phase(reply: Reply) -> Phase:
    if reply.code == 454 and _TLS_TEXT.search(reply.text):
        return Phase.TLS
    return _LIKELY_PHASE.get(reply.code, Phase.DATA_END)


def explain(reply: Reply, phase: Phase | None = None) -> str:
    """The one-line explanation of ``reply``, with the usual fix.

    Without ``phase``, the reply is classified as if it came in the phase where
    that code is most often seen: AUTH for 235, 334, 432, 454, 534, 535 and 538
    (TLS for a 454 that mentions TLS); RCPT for 450, 452, 550, 551 and 553; MAIL
    for 530 and 555; CONNECT for 220; DATA for 354; DATA_END (the reply to the
    final dot) for everything else.
    """
    return classify(reply, phase if phase is not None else likely_phase(reply)).explanation


# --------------------------------------------------------------------------------------
# Delay hints
# --------------------------------------------------------------------------------------

_MIN_DELAY = 1.0
_MAX_DELAY = 3600.0
_UNIT_SECONDS: Mapping[str, float] = MappingProxyType({"s": 1.0, "m": 60.0, "h": 3600.0})
_DELAY_AMOUNT = re.compile(
    r"\b(?:in|after|wait|for)\s+(?:about\s+|approximately\s+|at\s+least\s+)?"
    r"(?P<amount>\d+(?:\.\d+)?|an?|one)\s*"
    r"(?P<unit>s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?)\b",
    re.IGNORECASE,
)
# RFC 1123 (RFC 5322) dates: "Tue, 04 Jun 2024 13:05:00 UTC", weekday optional.
_DELAY_DATE = re.compile(
    r"\b(?:after|until)\s+(?P<date>(?:[A-Za-z]{3},\s*)?\d{1,2}\s+[A-Za-z]{3}\s+\d{2,4}"
    r"\s+\d{1,2}:\d{2}(?::\d{2})?(?:\s+(?:[A-Za-z]{1,5}|[+-]\d{4}))?)"
)


def _clamp(seconds: float) -> float:
    return min(_MAX_DELAY, max(_MIN_DELAY, seconds))


def parse_delay_hint(text: str, *, now: datetime | None = None) -> float | None:
    """Seconds the server asks us to wait, from its free text; ``None`` if it says nothing.

    SMTP has no Retry-After (A.4): servers write "try again in 15 seconds",
    "Please come back in 2040 seconds", "in 2 minutes" or "try again after
    <RFC 1123 date>". The result is clamped to 1 s .. 3600 s, so a hint can neither
    spin nor stall an in-process retry. ``now`` is the clock for the date form
    (default: the current UTC time; a naive ``now`` or date is taken as UTC).
    """
    amount = _DELAY_AMOUNT.search(text)
    if amount is not None:
        number = amount.group("amount").lower()
        value = 1.0 if number in ("a", "an", "one") else float(number)
        seconds = value * _UNIT_SECONDS[amount.group("unit")[0].lower()]
        return _clamp(seconds if math.isfinite(seconds) else _MAX_DELAY)
    date = _DELAY_DATE.search(text)
    if date is not None:
        try:
            when = parsedate_to_datetime(date.group("date"))
        except (TypeError, ValueError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        if now is None:
            now = datetime.now(timezone.utc)
        elif now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        return _clamp((when - now).total_seconds())
    return None


# --------------------------------------------------------------------------------------
# Failures without a reply: lost links (A.4 rows 1-2) and TLS (row 3)
# --------------------------------------------------------------------------------------

# Per-phase explanations of a lost link before the final dot; ``{what}`` says whether
# it broke or timed out.
_LOSS_EXPLANATION: Mapping[Phase, str] = MappingProxyType(
    {
        Phase.CONNECT: (
            "could not connect ({what}): check host and port, and that a firewall does not "
            "block it; retried"
        ),
        Phase.TLS: (
            "TLS handshake failed ({what}): check that the port matches the TLS mode (465 "
            "implicit TLS, 587 STARTTLS); retried"
        ),
        Phase.EHLO: (
            "{what} at the greeting or EHLO: the server may be limiting connections or "
            "refusing this client; retried"
        ),
        Phase.AUTH: (
            "{what} during login; nothing was delivered: retried (if it repeats, check the "
            "AUTH mechanism and credentials)"
        ),
    }
)


# Which setting bounds the wait that ran out, for a timeout's explanation.
_SLOW_COMMAND = (
    "if the server is just slow, raise command_timeout (RELIABLE_SMTP_TIMEOUT, seconds "
    "per command reply)"
)
_TIMEOUT_SETTING: Mapping[Phase, str] = MappingProxyType(
    {
        Phase.CONNECT: "if the server is just slow to accept or greet, raise connect_timeout "
        "(RELIABLE_SMTP_CONNECT_TIMEOUT)",
        Phase.TLS: "if the server is just slow, raise connect_timeout "
        "(RELIABLE_SMTP_CONNECT_TIMEOUT, which also bounds the TLS handshake)",
    }
)


def classify_connection_loss(phase: Phase, *, timed_out: bool) -> Verdict:
    """Verdict for a connection that broke (or a reply that never came) in ``phase``.

    After the final dot the server may have the message (AMBIGUOUS, A.4 row 1,
    RFC 5321 §4.5.3.2); before it nothing was delivered and the failure counts
    "as if a 451 response had been received" (TRANSIENT, row 2, RFC 5321 §3.8).
    """
    what = "no reply in time" if timed_out else "the connection was lost"
    if phase is Phase.DATA_END:
        slow = (
            "; a server this slow to answer the final dot needs a longer data_timeout "
            "(RELIABLE_SMTP_DATA_TIMEOUT)"
            if timed_out
            else ""
        )
        return Verdict(
            outcome=Outcome.AMBIGUOUS,
            explanation=(
                f"{what} after the message was sent: the server may have accepted it; "
                f"not resent automatically, to avoid a duplicate{slow}"
            ),
            connection_lost=not timed_out,
            timed_out=timed_out,
            rule="lost-after-final-dot",
        )
    template = _LOSS_EXPLANATION.get(phase, "{what} during {phase}; nothing was delivered: retried")
    explanation = template.format(what=what, phase=phase.value)
    if timed_out:
        explanation += f"; {_TIMEOUT_SETTING.get(phase, _SLOW_COMMAND)}"
    return Verdict(
        outcome=Outcome.TRANSIENT,
        explanation=explanation,
        retryable=True,
        connection_lost=not timed_out,
        timed_out=timed_out,
        rule="lost-before-final-dot",
    )


_TLS_RULES: tuple[tuple[str, re.Pattern[str], Outcome, str], ...] = (
    (
        # An implicit-TLS client talking to a plaintext (STARTTLS) port reads "220 ..."
        # as a TLS record: OpenSSL says "wrong version number".
        "tls-wrong-port",
        _re(r"wrong[ _]version[ _]number|unknown protocol"),
        Outcome.AUTH_OR_CONFIG,
        "this port does not speak implicit TLS: use STARTTLS (usually port 587), or "
        "implicit TLS on port 465",
    ),
    (
        "tls-certificate",
        _re(
            r"certificate[ _]verify[ _]failed|hostname mismatch|doesn't match"
            r"|self[- ]signed certificate|certificate has expired|unable to get local issuer"
        ),
        Outcome.AUTH_OR_CONFIG,
        "the server's certificate did not verify: fix the CA bundle or the hostname; never "
        "disable verification in production",
    ),
    (
        "tls-no-common-protocol",
        _re(r"unsupported protocol|protocol version|no shared cipher|no ciphers available"),
        Outcome.AUTH_OR_CONFIG,
        "the server and the client share no TLS version or cipher: the server is too old, "
        "or the minimum TLS version is set too high",
    ),
    (
        # A.4 row 3: STARTTLS required but not advertised (aiosmtplib's message).
        "tls-not-offered",
        _re(r"starttls extension not supported|starttls (?:is )?not (?:supported|advertised)"),
        Outcome.AUTH_OR_CONFIG,
        "the server does not offer STARTTLS: use implicit TLS on port 465 or another "
        "server; never fall back to cleartext",
    ),
)


def classify_tls_failure(reason: str) -> Verdict:
    """Verdict for a failed TLS handshake, from the SSL error's text (``str(exc)``).

    Certificate, protocol and port mismatches are AUTH_OR_CONFIG (A.4 row 3):
    retrying cannot help. Anything else (a reset mid-handshake, a timeout) is
    TRANSIENT.
    """
    detail = " ".join(reason.split())
    suffix = f" ({detail})" if detail else ""
    for name, pattern, outcome, explanation in _TLS_RULES:
        if pattern.search(reason):
            return Verdict(
                outcome=outcome, explanation=explanation + suffix, setting="tls", rule=name
            )
    return Verdict(
        outcome=Outcome.TRANSIENT,
        explanation="TLS handshake failed: retried" + suffix,
        retryable=True,
        connection_lost=True,
        rule="tls-handshake-failed",
    )
