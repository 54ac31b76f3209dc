"""The scripted transport: a server that misbehaves exactly as the test says, without a socket.

This module owns :class:`ScriptedTransport` and the steps of its script:

* :func:`accept` - the server takes the message (``250 2.0.0 OK`` by default);
* :func:`reply` - the server answers with a reply: to one recipient's RCPT
  (``recipient=``), or to the whole transaction at a :class:`~reliable_smtp.Phase`
  (the final dot by default);
* :func:`disconnect` - the link breaks, before the final dot (nothing delivered)
  or after it (the server may have the message: ambiguous);
* :func:`timeout` - the server stops answering, before or after the final dot.

Each call to ``deliver`` plays the next entry of the script: one step, or a list
of steps (several per-recipient replies plus at most one step for the whole
transaction). When the script runs out, the transport accepts everything
(``on_exhausted="accept"``, the default) or raises :class:`ScriptError`
(``on_exhausted="fail"``).

What a step produces is what :class:`~reliable_smtp.SMTPTransport` produces when a
real server behaves that way, because both hand the replies (or the lost link) to
the same interpreter, ``reliable_smtp._transports._transaction.Transaction``: a
failure before RCPT raises the :class:`~reliable_smtp.DeliveryError` subclass
:func:`~reliable_smtp._errors.error_for` picks, and anything from RCPT on is a
:class:`~reliable_smtp.DeliveryReport` with a status for every recipient. The
script plays a serial (unpipelined) server: commands are answered one at a time,
and a step for the whole transaction at RCPT answers every recipient without a
step of its own, so a ``421`` or a lost link there ends the transaction at the
first of them. The tests compare the two, step by step, against a real server.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from .._envelope import Envelope
from .._errors import DeliveryError, error_for
from .._replies import Outcome, Phase, Reply, classify
from .._result import DeliveryReport
from .._transports._transaction import (
    LinkLostError,
    Next,
    ReplyTimeoutError,
    Transaction,
    WireError,
    failure_error,
)
from ._outbox import Outbox, OutboxMessage, _address

__all__ = [
    "ScriptEntry",
    "ScriptError",
    "ScriptStep",
    "ScriptedCall",
    "ScriptedTransport",
    "accept",
    "disconnect",
    "reply",
    "timeout",
]

StepAction: TypeAlias = Literal["accept", "reply", "disconnect", "timeout"]

# Phase is declared in dialogue order: CONNECT ... RCPT, DATA, DATA_END.
_ORDER = {phase: index for index, phase in enumerate(Phase)}


class ScriptError(AssertionError):
    """The script and the deliveries disagree: a bug in the test, not a delivery outcome.

    Deliberately not a :class:`~reliable_smtp.DeliveryError`, so application code that
    handles delivery failures cannot swallow it.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptStep:
    """One scripted server behaviour. Build it with :func:`accept`, :func:`reply`,
    :func:`disconnect` or :func:`timeout`, which check it makes sense."""

    action: StepAction
    phase: Phase
    reply: Reply | None = None
    recipient: str | None = None
    """For a per-recipient reply: the recipient whose RCPT gets it."""

    def __post_init__(self) -> None:
        if self.action not in ("accept", "reply", "disconnect", "timeout"):
            raise ValueError(f"unknown script action {self.action!r}")
        if not isinstance(self.phase, Phase):
            raise TypeError(f"phase must be a Phase, got {self.phase!r}")
        if (self.reply is None) != (self.action in ("disconnect", "timeout")):
            raise ValueError(
                f"a {self.action!r} step {'needs' if self.reply is None else 'has'} a reply"
            )
        if self.recipient is not None and (self.action != "reply" or self.phase is not Phase.RCPT):
            raise ValueError("only a reply at RCPT can target one recipient")
        if self.action == "accept":
            if self.phase is not Phase.DATA_END:
                raise ValueError("a message is accepted by the reply to the final dot (DATA_END)")
            if self.reply is not None and self.reply.severity != 2:
                raise ValueError(
                    f"accept() needs a 2xx reply, got {self.reply}; use reply() for a refusal"
                )
        elif self.reply is not None and classify(self.reply, self.phase).outcome is Outcome.SENT:
            raise ValueError(
                f"{self.reply} at {self.phase.value} is a success; use accept() for the final "
                "reply, or leave the step out"
            )

    def __str__(self) -> str:
        what = self.action if self.reply is None else f"{self.action} {self.reply}"
        target = f" to {self.recipient}" if self.recipient is not None else ""
        return f"{what} at {self.phase.value}{target}"


#: One entry of a script: a step, or the steps of one transaction (per-recipient
#: replies plus at most one step for the whole transaction).
ScriptEntry: TypeAlias = "ScriptStep | Sequence[ScriptStep]"


def accept(code: int = 250, enhanced: str | None = "2.0.0", text: str = "OK") -> ScriptStep:
    """The server takes the message: every recipient not refused is ``SENT``."""
    return ScriptStep(action="accept", phase=Phase.DATA_END, reply=Reply(code, enhanced, text))


def reply(
    code: int,
    enhanced: str | None = None,
    text: str = "",
    *,
    recipient: str | None = None,
    phase: Phase | None = None,
) -> ScriptStep:
    """The server answers ``code enhanced text``.

    With ``recipient``, that recipient's RCPT gets the reply (phase RCPT) and the
    others go on; a ``421`` there closes the connection, so every recipient still
    pending gets it too. Without it, the reply goes to the whole transaction at
    ``phase``: the final dot (DATA_END) by default; CONNECT, TLS, EHLO, AUTH or MAIL
    fail the transaction before any recipient (the error is raised); RCPT refuses
    every recipient; DATA refuses the DATA command.
    """
    if recipient is not None:
        if phase not in (None, Phase.RCPT):
            raise ValueError(f"a reply to one recipient is a reply to RCPT, not to {phase}")
        phase = Phase.RCPT
    elif phase is None:
        phase = Phase.DATA_END
    return ScriptStep(
        action="reply", phase=phase, reply=Reply(code, enhanced, text), recipient=recipient
    )


def _lost_phase(before_dot: bool | None, phase: Phase | None) -> Phase:
    if phase is None:
        return Phase.DATA if before_dot in (None, True) else Phase.DATA_END
    if before_dot is not None and before_dot == (phase is Phase.DATA_END):
        raise ValueError(
            f"before_dot={before_dot} contradicts phase={phase.value}: DATA_END is the only "
            "phase after the final dot"
        )
    return phase


def disconnect(*, before_dot: bool | None = None, phase: Phase | None = None) -> ScriptStep:
    """The server drops the connection without a reply.

    Before the final dot (the default: while sending DATA; or at ``phase``) nothing
    was delivered: a :class:`~reliable_smtp.ConnectionFailedError` before RCPT, or
    ``TRANSIENT`` statuses from RCPT on. After it (``before_dot=False``) the server
    may have the message: every accepted recipient is ``AMBIGUOUS``, and the message
    is kept in the outbox, as a real server would have kept it.
    """
    return ScriptStep(action="disconnect", phase=_lost_phase(before_dot, phase))


def timeout(*, before_dot: bool | None = None, phase: Phase | None = None) -> ScriptStep:
    """The server stops answering: like :func:`disconnect`, but a timeout
    (:class:`~reliable_smtp.SMTPTimeoutError` before RCPT). No real time passes."""
    return ScriptStep(action="timeout", phase=_lost_phase(before_dot, phase))


_ACCEPT = accept()
_QUEUED = Reply(250, "2.0.0", "OK")
# What the scripted server answers to the commands a step does not script.
_MAIL_OK = Reply(250, "2.1.0", "OK")
_RCPT_OK = Reply(250, "2.1.5", "OK")
_GO_AHEAD = Reply(354, None, "End data with <CR><LF>.<CR><LF>")


def _entry(entry: object) -> tuple[ScriptStep, ...]:
    steps = (entry,) if isinstance(entry, ScriptStep) else entry
    if not isinstance(steps, (list, tuple)) or not steps:
        raise TypeError(
            f"a script entry is a step (accept(), reply(...), disconnect(), timeout()) or a "
            f"non-empty list of steps, got {entry!r}"
        )
    for step in steps:
        if not isinstance(step, ScriptStep):
            raise TypeError(f"a script entry holds {step!r}, not a step built by reply() & co")
    whole = [s for s in steps if s.recipient is None]
    if len(whole) > 1:
        raise ValueError(
            f"one transaction can hold at most one step without a recipient, got "
            f"{', '.join(map(str, whole))}"
        )
    targets = [_address(s.recipient) for s in steps if s.recipient is not None]
    if len(targets) != len(set(targets)):
        raise ValueError(f"a recipient is scripted twice in one transaction: {targets}")
    return tuple(steps)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptedCall:
    """One call to :meth:`ScriptedTransport.deliver` and what it gave back."""

    envelope: Envelope
    content: bytes = field(repr=False)
    steps: tuple[ScriptStep, ...]
    """The script entry played; empty when the script had run out."""
    report: DeliveryReport | None = None
    error: DeliveryError | ScriptError | None = None
    """The error raised, when one was."""


class ScriptedTransport(Outbox):
    """A transport that replays ``script``, one entry per delivery.

    ::

        transport = ScriptedTransport([reply(451, "4.7.1", "try later"), accept()])

    ``calls`` records every delivery (envelope, content, the steps played, the
    report or error). Messages the "server" got - accepted, or sent before a link
    broke after the final dot - are kept, as in an :class:`Outbox`, for the
    recipients that got them, so ``find``/``one``/``assert_sent`` work.
    """

    name = "scripted"

    def __init__(
        self,
        script: Iterable[ScriptEntry] = (),
        *,
        on_exhausted: Literal["accept", "fail"] = "accept",
    ) -> None:
        super().__init__()
        if on_exhausted not in ("accept", "fail"):
            raise ValueError(f"on_exhausted must be 'accept' or 'fail', got {on_exhausted!r}")
        self.on_exhausted = on_exhausted
        self._script: deque[tuple[ScriptStep, ...]] = deque(_entry(e) for e in script)
        self._played = 0
        self.calls: list[ScriptedCall] = []

    def add(self, *entries: ScriptEntry) -> None:
        """Append entries to the script."""
        self._script.extend(_entry(e) for e in entries)

    @property
    def remaining(self) -> tuple[tuple[ScriptStep, ...], ...]:
        """The entries not played yet."""
        return tuple(self._script)

    def assert_script_done(self) -> None:
        """Assert every entry of the script was played."""
        if self._script:
            left = "; ".join(" + ".join(map(str, entry)) for entry in self._script)
            raise AssertionError(
                f"{len(self._script)} script entr{'ies' if len(self._script) != 1 else 'y'} "
                f"never played (after {len(self.calls)} deliveries): {left}"
            )

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        """Play the next script entry against this delivery."""
        self.ensure_open()
        content = bytes(content)
        steps = self._script.popleft() if self._script else ()
        if steps:
            self._played += 1
        try:
            if not steps and self.on_exhausted == "fail":
                raise ScriptError(
                    f"ScriptedTransport: delivery {len(self.calls) + 1} (to "
                    f"{', '.join(envelope.recipients)}) came after the script ran out "
                    f"({self._played} entries played); script more steps, or use "
                    "on_exhausted='accept'"
                )
            report = self._play(envelope, content, steps or (_ACCEPT,))
        except (DeliveryError, ScriptError) as error:
            self.calls.append(
                ScriptedCall(envelope=envelope, content=content, steps=steps, error=error)
            )
            raise
        self.calls.append(
            ScriptedCall(envelope=envelope, content=content, steps=steps, report=report)
        )
        return report

    # -- acting a transaction out, as SMTPTransport would report it ----------------------

    def _play(
        self, envelope: Envelope, content: bytes, steps: tuple[ScriptStep, ...]
    ) -> DeliveryReport:
        whole = next((s for s in steps if s.recipient is None), _ACCEPT)
        refusals = {_address(s.recipient): s for s in steps if s.recipient is not None}
        present = {_address(r) for r in envelope.recipients}
        strangers = [s.recipient for key, s in refusals.items() if key not in present]
        if strangers:
            raise ScriptError(
                f"the script replies to {', '.join(map(str, strangers))}, not in this "
                f"delivery's envelope ({', '.join(envelope.recipients)}); a retry only "
                "carries the recipients still pending"
            )
        if _ORDER[whole.phase] < _ORDER[Phase.MAIL]:
            raise self._failure(whole)  # setting up the session failed: no transaction

        # The same interpreter as SMTPTransport's, fed one command at a time. A step for
        # the whole transaction happens at its phase: at RCPT, to every recipient without
        # a step of its own (a 421 or a lost link there ends the transaction).
        transaction = Transaction(envelope, pipelined=False, transport_name=self.name)
        step = self._act(transaction, whole, Phase.MAIL, _MAIL_OK, transaction.on_mail)
        for recipient in envelope.recipients:
            if step is not Next.GO_ON:
                break
            own = refusals.get(_address(recipient))
            if own is not None and own.reply is not None:
                step = transaction.on_rcpt(own.reply)
            else:
                step = self._act(transaction, whole, Phase.RCPT, _RCPT_OK, transaction.on_rcpt)
        if step is Next.GO_ON:
            step = self._act(transaction, whole, Phase.DATA, _GO_AHEAD, transaction.on_data)
        if step is Next.SEND_BODY:
            transaction.on_body_written()
            self._act(transaction, whole, Phase.DATA_END, _QUEUED, transaction.on_final)
            # The server has the message: it said so, or the link broke after the dot.
            if transaction.final_reply is None or transaction.final_reply.severity == 2:
                self.outbox.append(
                    OutboxMessage(envelope=envelope.only(transaction.accepted), content=content)
                )
        return transaction.result()

    @staticmethod
    def _act(
        transaction: Transaction,
        whole: ScriptStep,
        phase: Phase,
        default: Reply,
        answer: Callable[[Reply], Next],
    ) -> Next:
        """Answer the command of ``phase``: as ``whole`` says if it is for this phase."""
        if whole.phase is not phase:
            return answer(default)
        if whole.reply is not None:
            return answer(whole.reply)
        if whole.action == "timeout":
            return transaction.on_failure(ReplyTimeoutError("scripted timeout"))
        return transaction.on_failure(LinkLostError("scripted disconnect"))

    def _failure(self, step: ScriptStep) -> DeliveryError:
        """The error of a step before MAIL (CONNECT, TLS, EHLO, AUTH)."""
        if step.reply is not None:
            return error_for(
                classify(step.reply, step.phase),
                f"the server refused during {step.phase.value}",
                reply=step.reply,
                phase=step.phase,
                transport_name=self.name,
            )
        failure: WireError = (
            ReplyTimeoutError("scripted timeout")
            if step.action == "timeout"
            else LinkLostError("scripted disconnect")
        )
        return failure_error(failure, step.phase, transport_name=self.name)
