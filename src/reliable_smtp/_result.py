"""What happened to a message: per recipient, per transaction, per send.

* :class:`RecipientStatus` - one recipient's outcome and the reply that decided it;
* :class:`DeliveryReport` - what a transport returns for one transaction;
* :class:`Attempt` - one try of the retry loop, for the record;
* :class:`SendResult` - everything the caller learns from ``send()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from ._deprecations import transport_name_given, warn_server_attribute
from ._envelope import Envelope
from ._replies import Outcome, Phase, Reply, Verdict, VerdictAttribute, classify

if TYPE_CHECKING:
    from ._errors import DeliveryError

__all__ = ["Attempt", "DeliveryReport", "RecipientStatus", "SendResult"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class RecipientStatus:
    """One recipient's outcome.

    ``verdict`` is the :class:`~reliable_smtp.Verdict` that decided it - the one
    outcome value: ``outcome``, ``explanation``, ``retryable``, ``split`` and
    ``delay_hint`` are read from it. ``reply`` is the server reply that decided it
    (the RCPT refusal, or the reply to the final dot), ``None`` when there was none
    (a lost connection, or a recipient never contacted). ``transport_name`` is the
    ``name`` of the transport that delivered or refused it (``"memory"``,
    ``"smtp://mx.example.com:587"``; ``"recipient-policy"`` when the mailer's
    recipient policy refused the address before any transport saw it). ``server`` is
    its old name, still accepted and readable for one release, with a
    ``DeprecationWarning``.

    Build one with :meth:`from_reply`, :meth:`from_verdict` or :meth:`from_error`.
    The constructor also takes ``outcome=``/``explanation=``/``retryable=``/
    ``split=``/``delay_hint=`` instead of (or on top of) a verdict: a shorthand
    that builds the verdict.
    """

    recipient: str
    verdict: Verdict
    phase: Phase
    reply: Reply | None = None
    transport_name: str = ""
    attempts: int = 1
    """How many attempts included this recipient."""

    def __init__(
        self,
        *,
        recipient: str,
        phase: Phase,
        verdict: Verdict | None = None,
        reply: Reply | None = None,
        transport_name: str = "",
        attempts: int = 1,
        server: str | None = None,
        outcome: Outcome | None = None,
        explanation: str | None = None,
        retryable: bool | None = None,
        split: bool | None = None,
        delay_hint: float | None = None,
    ) -> None:
        if server is not None:  # the deprecated spelling
            transport_name = transport_name_given("RecipientStatus()", server, transport_name)
        if verdict is None:
            if outcome is None:
                raise TypeError("RecipientStatus needs a verdict (or an outcome)")
            verdict = Verdict(outcome=outcome, explanation="")
        if (
            outcome is not None
            or explanation is not None
            or retryable is not None
            or split is not None
            or delay_hint is not None
        ):
            verdict = verdict.updated(
                outcome=outcome,
                explanation=explanation,
                retryable=retryable,
                split=split,
                delay_hint=delay_hint,
            )
        # One status per recipient per attempt: set the slots directly (frozen dataclass).
        setter = object.__setattr__
        setter(self, "recipient", recipient)
        setter(self, "verdict", verdict)
        setter(self, "phase", phase)
        setter(self, "reply", reply)
        setter(self, "transport_name", transport_name)
        setter(self, "attempts", attempts)

    # Read from the verdict (the names transports and the retry policy always used).
    outcome = VerdictAttribute[Outcome]("The recipient's :class:`~reliable_smtp.Outcome`.")
    explanation = VerdictAttribute[str]("What happened and the usual fix.")
    retryable = VerdictAttribute[bool]("Whether a new attempt soon may succeed.")
    split = VerdictAttribute[bool]("Refused only for too many recipients: resend now.")
    delay_hint = VerdictAttribute["float | None"]("Seconds the server asked us to wait.")

    @property
    def server(self) -> str:
        """Deprecated name of :attr:`transport_name` (it names a transport, not a server)."""
        warn_server_attribute(self)
        return self.transport_name

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.SENT

    @classmethod
    def from_verdict(
        cls,
        recipient: str,
        verdict: Verdict,
        *,
        phase: Phase,
        reply: Reply | None = None,
        server: str | None = None,
        transport_name: str = "",
    ) -> RecipientStatus:
        """The status a reply's verdict gives ``recipient`` (the verdict is kept as is)."""
        return cls(
            recipient=recipient,
            verdict=verdict,
            phase=phase,
            reply=reply,
            transport_name=transport_name_given(
                "RecipientStatus.from_verdict()", server, transport_name
            ),
        )

    @classmethod
    def from_reply(
        cls,
        recipient: str,
        reply: Reply,
        *,
        phase: Phase,
        server: str | None = None,
        transport_name: str = "",
    ) -> RecipientStatus:
        """The status ``reply``, received in ``phase``, gives ``recipient``.

        The reply is classified by :func:`~reliable_smtp.classify` (the library's
        reply table): a 2xx is ``SENT``; otherwise the verdict sets the outcome, the
        explanation, whether a retry may help and any delay the server asked for.
        For a transport that reports one reply per recipient (an SMTP RCPT refusal,
        an HTTP API's per-recipient result); ``transport_name`` is the transport's
        ``name`` (``server`` is its deprecated spelling).
        """
        return cls.from_verdict(
            recipient,
            classify(reply, phase),
            phase=phase,
            reply=reply,
            transport_name=transport_name_given(
                "RecipientStatus.from_reply()", server, transport_name
            ),
        )

    @classmethod
    def from_error(
        cls,
        recipient: str,
        error: DeliveryError,
        *,
        server: str | None = None,
        transport_name: str = "",
    ) -> RecipientStatus:
        """The status of ``recipient`` when the whole transaction failed with ``error``.

        The status carries the error's verdict (an error without an explanation
        lends its summary).
        """
        verdict = error.verdict
        if not verdict.explanation:
            verdict = dataclasses.replace(verdict, explanation=error.summary)
        return cls(
            recipient=recipient,
            verdict=verdict,
            phase=error.phase or Phase.CONNECT,
            reply=error.reply,
            transport_name=(
                transport_name_given("RecipientStatus.from_error()", server, transport_name)
                or error.transport_name
                or ""
            ),
        )


#: The verdict of every recipient of :meth:`DeliveryReport.all_sent` (verdicts are immutable).
_ACCEPTED = Verdict(outcome=Outcome.SENT, explanation="accepted")

#: The verdict for a recipient a transport returned no status for.
_NO_STATUS = Verdict(
    outcome=Outcome.PERMANENT,
    explanation="the transport returned no status for this recipient (a transport bug)",
    rule="no-status",
)


def missing_status(recipient: str, transport_name: str) -> RecipientStatus:
    """The status of ``recipient`` when transport ``transport_name`` returned none for it.

    A transport that forgets a recipient breaks its contract: never count that
    recipient as sent, and never resend it elsewhere (it may have been delivered).
    """
    return RecipientStatus(
        recipient=recipient,
        verdict=_NO_STATUS,
        phase=Phase.DATA_END,
        transport_name=transport_name,
    )


def _frozen(mapping: Mapping[str, RecipientStatus]) -> Mapping[str, RecipientStatus]:
    return MappingProxyType(dict(mapping))


def _rebuild(cls: type[_T], fields: dict[str, Any]) -> _T:
    return cls(**fields)


def _reduce(value: DeliveryReport | SendResult) -> tuple[object, ...]:
    # A MappingProxyType cannot be pickled: hand pickle a plain dict of the statuses
    # (the constructor freezes it again). Task queues pickle errors, and an error
    # carries its SendResult.
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    fields["recipients"] = dict(value.recipients)
    return (_rebuild, (type(value), fields))


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class DeliveryReport:
    """A transport's account of one transaction: a status for every envelope recipient.

    ``transport_name`` is the ``name`` of the transport that reports it (``server``:
    its old name, still accepted and readable for one release, with a ``DeprecationWarning``).
    """

    recipients: Mapping[str, RecipientStatus]
    transport_name: str = ""
    final_reply: Reply | None = None
    """The reply to the final dot, when the transaction got that far."""

    def __init__(
        self,
        *,
        recipients: Mapping[str, RecipientStatus],
        transport_name: str = "",
        final_reply: Reply | None = None,
        server: str | None = None,
    ) -> None:
        if server is not None:  # the deprecated spelling
            transport_name = transport_name_given("DeliveryReport()", server, transport_name)
        object.__setattr__(self, "recipients", _frozen(recipients))
        object.__setattr__(self, "transport_name", transport_name)
        object.__setattr__(self, "final_reply", final_reply)

    @property
    def server(self) -> str:
        """Deprecated name of :attr:`transport_name`."""
        warn_server_attribute(self)
        return self.transport_name

    def __reduce__(self) -> tuple[object, ...]:
        return _reduce(self)

    @classmethod
    def in_envelope_order(
        cls,
        envelope: Envelope,
        statuses: Mapping[str, RecipientStatus],
        *,
        server: str | None = None,
        final_reply: Reply | None = None,
        transport_name: str = "",
    ) -> DeliveryReport:
        """A report listing ``statuses`` in envelope order (every recipient must have one)."""
        return cls(
            recipients={r: statuses[r] for r in envelope.recipients},
            transport_name=transport_name_given(
                "DeliveryReport.in_envelope_order()", server, transport_name
            ),
            final_reply=final_reply,
        )

    @classmethod
    def all_sent(
        cls,
        envelope: Envelope,
        *,
        reply: Reply | None = None,
        server: str | None = None,
        transport_name: str = "",
    ) -> DeliveryReport:
        """Every recipient accepted: the report of a transport that cannot fail per recipient."""
        reply = reply or Reply(250, "2.0.0", "OK")
        name = transport_name_given("DeliveryReport.all_sent()", server, transport_name)
        return cls(
            recipients={
                r: RecipientStatus(
                    recipient=r,
                    verdict=_ACCEPTED,
                    phase=Phase.DATA_END,
                    reply=reply,
                    transport_name=name,
                )
                for r in envelope.recipients
            },
            transport_name=name,
            final_reply=reply,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One try at delivering to the recipients still pending."""

    number: int
    started_at: float
    """Wall-clock time (``time.time()``) when the attempt began."""
    duration: float
    recipients: tuple[str, ...]
    outcome: Outcome
    phase: Phase | None = None
    reply: Reply | None = None
    error: str | None = None
    delay_after: float | None = None
    """The backoff waited after this attempt, if another followed."""


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class SendResult:
    """Everything known about one message after ``send()``.

    ``recipients`` maps every envelope recipient to its final status;
    ``accepted``/``rejected`` list them; ``attempts`` records every try.
    """

    message_id: str
    envelope: Envelope
    recipients: Mapping[str, RecipientStatus]
    attempts: tuple[Attempt, ...] = ()
    elapsed: float = 0.0
    transport_name: str = ""
    """The ``name`` of the mailer's transport (``server``: its old name, for one release, with a
    ``DeprecationWarning``)."""
    extra: Mapping[str, str] = field(default_factory=dict)

    def __init__(
        self,
        *,
        message_id: str,
        envelope: Envelope,
        recipients: Mapping[str, RecipientStatus],
        attempts: tuple[Attempt, ...] = (),
        elapsed: float = 0.0,
        transport_name: str = "",
        extra: Mapping[str, str] | None = None,
        server: str | None = None,
    ) -> None:
        if server is not None:  # the deprecated spelling
            transport_name = transport_name_given("SendResult()", server, transport_name)
        for name, value in (
            ("message_id", message_id),
            ("envelope", envelope),
            ("recipients", _frozen(recipients)),
            ("attempts", attempts),
            ("elapsed", elapsed),
            ("transport_name", transport_name),
            ("extra", {} if extra is None else extra),
        ):
            object.__setattr__(self, name, value)

    @property
    def server(self) -> str:
        """Deprecated name of :attr:`transport_name`."""
        warn_server_attribute(self)
        return self.transport_name

    def __reduce__(self) -> tuple[object, ...]:
        return _reduce(self)

    @property
    def accepted(self) -> tuple[str, ...]:
        """Recipients the server took responsibility for."""
        return tuple(r for r, s in self.recipients.items() if s.outcome is Outcome.SENT)

    @property
    def rejected(self) -> tuple[str, ...]:
        """Recipients that did not get the message, or may not have (ambiguous)."""
        return tuple(r for r, s in self.recipients.items() if s.outcome is not Outcome.SENT)

    @property
    def ok(self) -> bool:
        """True when every recipient was accepted."""
        return not self.rejected

    def describe(self) -> str:
        """Several lines for people: the summary, then each recipient and its reply."""
        lines = [self.summary()]
        for recipient, status in self.recipients.items():
            reply = f" - {status.reply}" if status.reply is not None else ""
            why = "" if status.accepted else f" ({status.explanation})"
            lines.append(f"  {recipient}: {status.outcome.value}{reply}{why}")
        return "\n".join(lines)

    def recipient_rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per recipient: its outcome, the reply that decided it (code,
        enhanced code, text), the explanation of a refusal, and the Message-ID.

        The rows ``reliable-smtp send --results`` writes and ``check --json`` reports.
        """
        return [
            {
                "recipient": recipient,
                "outcome": status.outcome.value,
                "code": status.reply.code if status.reply else None,
                "enhanced_code": status.reply.enhanced_code if status.reply else None,
                "text": status.reply.text if status.reply else None,
                "explanation": status.explanation or None,
                "message_id": self.message_id,
            }
            for recipient, status in self.recipients.items()
        ]

    def summary(self) -> str:
        """One line: how many accepted, how many not, after how many attempts."""
        counts: dict[str, int] = {}
        for status in self.recipients.values():
            counts[status.outcome.value] = counts.get(status.outcome.value, 0) + 1
        parts = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
        attempts = len(self.attempts)
        return f"{self.message_id}: {parts} after {attempts} attempt{'s' * (attempts != 1)}"
