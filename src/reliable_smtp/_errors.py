"""Every error reliable-smtp raises, in one tree.

::

    ReliableSMTPError                         base of everything below
    ├── ConfigurationError (ValueError)        settings or arguments that cannot work; raised at
    │                                          construction, before any I/O
    ├── InvalidMessageError (ValueError)       the message cannot be sent as it is; nothing was sent
    │   └── InvalidAddressError                a malformed, unsafe or refused address
    │       └── RecipientsRejectedError        every address the RecipientPolicy refused, and why
    │                                          (defined in reliable_smtp._validation)
    ├── TransportClosedError (RuntimeError)    the mailer or transport was used after close()
    └── DeliveryError                          the message did not reach every recipient
        ├── TransientError                     4xx or a broken link before the final dot;
        │   │                                  retried, raised once retries are exhausted
        │   ├── ConnectionFailedError (ConnectionError)   refused, reset, dropped before the dot
        │   ├── SMTPTimeoutError (TimeoutError)           no reply in time, before the dot
        │   ├── PoolExhaustedError             every pooled connection stayed busy (local)
        │   └── ThrottledError                 rate limit, reputation throttle or quota
        ├── PermanentError                     5xx: bad mailbox, too big, policy; never retried
        │   └── ProtocolError                  a garbled reply, or a command the server did not
        │                                      understand
        ├── AuthOrConfigError                  credentials, TLS or sender identity; never retried
        └── AmbiguousDeliveryError             the link broke after the final dot: the server may
                                               have the message; not retried by default

One warning: ``InsecureConfigurationWarning`` (a ``UserWarning``) when a setting
works but exposes secrets, such as a password over plain SMTP to a remote host.

Every :class:`DeliveryError` carries the SMTP facts - ``code``, ``enhanced_code``,
``text``, ``phase``, ``recipient`` - plus its ``verdict`` (the
:class:`~reliable_smtp.Verdict`: ``outcome``, a one-line ``explanation`` with the
usual fix, ``retryable``, ``delay_hint``, ``setting``), and ``result``: the
:class:`~reliable_smtp.SendResult` that says which recipients did get the message.
The class of an error is derived from its verdict alone (:func:`error_class`), so
the two never disagree; errors are immutable (``error.replace(...)``,
``error.with_result(result)`` return copies) and survive pickling, result included.
A transport that runs a local program (sendmail) adds ``program_exit``, a
:class:`ProgramExit` (exit code, signal, stderr). ``AmbiguousDeliveryError`` is
deliberately *not* a ``ConnectionError``: code that retries every
``ConnectionError`` would send the message twice.

Foreign exceptions (aiosmtplib, ``OSError``, ``ssl.SSLError``, subprocess
failures) are translated to this tree at one boundary per transport, always with
``raise ... from exc``. :func:`error_for` picks the class for a verdict; a
transport written outside the library uses its public spellings,
:meth:`DeliveryError.from_reply`, :meth:`DeliveryError.from_verdict` and
:meth:`DeliveryError.from_connection_loss`. An
exception nobody expected (a bug) never escapes ``send``, ``send_many`` or
``stream`` as itself: it becomes an ``AmbiguousDeliveryError`` (how far the send
got is unknown) with the original as ``__cause__`` and its traceback logged at ERROR.

When recipients of one message fail in different ways, ``send()`` raises the class
of the outcome that comes first in this order (``mailer.FAILURE_PRECEDENCE``):

1. ``AMBIGUOUS`` - ``AmbiguousDeliveryError``: one recipient may have the message,
   so the message must not be re-queued as a whole, whatever happened to the others;
2. ``AUTH_OR_CONFIG`` - ``AuthOrConfigError``: a person must fix a setting before a
   retry can help;
3. ``THROTTLED`` - ``ThrottledError``: wait longer before a retry;
4. ``TRANSIENT`` - ``TransientError`` (or ``ConnectionFailedError`` /
   ``SMTPTimeoutError`` when the whole last attempt failed that way): retry later;
5. ``PERMANENT`` - ``PermanentError`` / ``ProtocolError``: only when every failed
   recipient failed for good is giving up the right reaction.

So ``except TransientError: requeue(message)`` never re-sends to a recipient that
may already have the message; ``error.result`` still tells each recipient's status
(re-queue ``error.result.rejected`` minus the ambiguous ones to be exact).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ._deprecations import transport_name_given, warn_server_attribute
from ._replies import (
    Outcome,
    Phase,
    Reply,
    Verdict,
    VerdictAttribute,
    classify,
    classify_connection_loss,
)

if TYPE_CHECKING:
    from ._result import SendResult

_E = TypeVar("_E", bound="DeliveryError")

#: Set in an error's __dict__ once its constructor has run: from then on it is immutable.
_FROZEN = "_frozen"
#: The verdict fields an error's constructor and replace() accept as shorthand.
_VERDICT_SHORTHAND = ("explanation", "outcome", "retryable", "delay_hint", "setting")

__all__ = [
    "AmbiguousDeliveryError",
    "AuthOrConfigError",
    "ConfigurationError",
    "ConnectionFailedError",
    "DeliveryError",
    "InsecureConfigurationWarning",
    "InvalidAddressError",
    "InvalidMessageError",
    "PermanentError",
    "PoolExhaustedError",
    "ProgramExit",
    "ProtocolError",
    "ReliableSMTPError",
    "SMTPTimeoutError",
    "ThrottledError",
    "TransientError",
    "TransportClosedError",
    "error_class",
    "error_for",
]


class ReliableSMTPError(Exception):
    """Base class of every error this library raises."""

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructors defeat Exception's default pickling; keep the facts
        # across processes (multiprocessing, task queues) by restoring args and attributes.
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


def _rebuild(
    cls: type[ReliableSMTPError], args: tuple[object, ...], state: dict[str, object]
) -> ReliableSMTPError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class InsecureConfigurationWarning(UserWarning):
    """A setting that works but exposes secrets or mail (a password over plain SMTP)."""


class ConfigurationError(ReliableSMTPError, ValueError):
    """Settings or constructor arguments that cannot work. Raised before any I/O.

    ``setting`` names the argument or ``RELIABLE_SMTP_*`` variable to change.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class InvalidMessageError(ReliableSMTPError, ValueError):
    """The message cannot be sent as it is (no recipients, header injection, ...).

    Raised before anything reaches a server.
    """


class InvalidAddressError(InvalidMessageError):
    """An address is malformed, unsafe (CR, LF, NUL) or refused by the recipient policy.

    ``address`` is the offending address (as given); ``reason`` says why.
    """

    def __init__(self, message: str, *, address: str, reason: str = "") -> None:
        super().__init__(message)
        self.address = address
        self.reason = reason or message


class TransportClosedError(ReliableSMTPError, RuntimeError):
    """A mailer or transport was used after ``close()``/``aclose()``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgramExit:
    """How a local program (the sendmail binary) ended: its side of a failed hand-over."""

    exit_code: int | None
    """The exit status, ``None`` when it died by a signal."""
    signal: int | None = None
    """The signal that killed it, when one did."""
    stderr: str = ""
    """What it wrote to stderr (decoded, possibly trimmed)."""


class DeliveryError(ReliableSMTPError):
    """The message was not accepted for every recipient.

    Attributes (``None`` where they do not apply):

    * ``verdict`` - the :class:`~reliable_smtp.Verdict`: the one outcome value, from
      which the class of the error, ``outcome``, ``explanation``, ``retryable``,
      ``delay_hint`` and ``setting`` are all read;
    * ``code``, ``enhanced_code``, ``text`` - the server's reply (``reply``);
    * ``phase`` - where it happened (:class:`~reliable_smtp.Phase`);
    * ``recipient`` - the recipient it concerns, for a per-recipient failure;
    * ``result`` - the :class:`~reliable_smtp.SendResult` with every recipient's
      status and every attempt (given by the mailer: :meth:`with_result`);
    * ``transport_name`` - the ``name`` of the transport that reported it, when known
      (``server`` is its old name, still accepted and readable for one release, with a
      ``DeprecationWarning``);
    * ``program_exit`` - for a transport that runs a local program (sendmail), how
      it ended (:class:`ProgramExit`: exit code, signal, stderr).

    An error is immutable once built: assigning an attribute raises
    ``AttributeError``; :meth:`replace` and :meth:`with_result` return a changed copy.
    The verdict's outcome must be the one the class stands for (a ``TransientError``
    cannot say ``THROTTLED``): build errors for a verdict with :func:`error_for`.
    """

    default_outcome: ClassVar[Outcome] = Outcome.PERMANENT
    #: Verdict flags the class itself stands for (a ProtocolError is a protocol error).
    _implied: ClassVar[Mapping[str, bool]] = MappingProxyType({})

    verdict: Verdict
    summary: str
    reply: Reply | None
    phase: Phase | None
    recipient: str | None
    transport_name: str | None
    result: SendResult | None
    program_exit: ProgramExit | None

    def __init__(
        self,
        summary: str,
        *,
        verdict: Verdict | None = None,
        reply: Reply | None = None,
        phase: Phase | None = None,
        recipient: str | None = None,
        transport_name: str | None = None,
        result: SendResult | None = None,
        program_exit: ProgramExit | None = None,
        server: str | None = None,
        explanation: str | None = None,
        outcome: Outcome | None = None,
        retryable: bool | None = None,
        delay_hint: float | None = None,
        setting: str | None = None,
    ) -> None:
        # explanation, outcome, retryable, delay_hint and setting are a shorthand for the
        # verdict of an error built without one (PermanentError("...", explanation=...)):
        # they are stored on the verdict, never beside it.
        if server is not None:  # the deprecated spelling
            transport_name = transport_name_given(
                f"{type(self).__name__}()", server, transport_name
            )
        base = verdict or Verdict(outcome=type(self).default_outcome, explanation="")
        verdict = base.updated(
            explanation=explanation,
            outcome=outcome,
            retryable=retryable,
            delay_hint=delay_hint,
            setting=setting,
            **self._implied,
        )
        if verdict.outcome is Outcome.SENT:
            raise ValueError("a SENT verdict is not an error")
        if not isinstance(self, _CLASS_FOR_OUTCOME[verdict.outcome]) and (
            verdict.outcome is not type(self).default_outcome
        ):
            raise ValueError(
                f"a {type(self).__name__} cannot carry the outcome {verdict.outcome.value} "
                f"(that is a {_CLASS_FOR_OUTCOME[verdict.outcome].__name__}): build the "
                "error with error_for(verdict, ...)"
            )
        super().__init__(summary)
        values: dict[str, object] = {
            "summary": summary,
            "verdict": verdict,
            "reply": reply,
            "phase": phase,
            "recipient": recipient,
            "transport_name": transport_name,
            "result": result,
            "program_exit": program_exit,
        }
        self.__dict__.update(values)
        self.__dict__[_FROZEN] = True

    # -- immutable: copies instead of patches --------------------------------------------

    def __setattr__(self, name: str, value: object) -> None:
        # Python's own bookkeeping (__cause__, __traceback__, __notes__ from add_note)
        # stays writable; the facts do not.
        if self.__dict__.get(_FROZEN) and not (name.startswith("__") and name.endswith("__")):
            raise AttributeError(
                f"{type(self).__name__} is immutable: build a changed copy with "
                f"error.replace({name}=...)"
            )
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if self.__dict__.get(_FROZEN) and not (name.startswith("__") and name.endswith("__")):
            raise AttributeError(f"{type(self).__name__} is immutable")
        super().__delattr__(name)

    def _fields(self) -> dict[str, object]:
        """What a copy needs to rebuild this error (subclasses add their own fields)."""
        return {
            "verdict": self.verdict,
            "reply": self.reply,
            "phase": self.phase,
            "recipient": self.recipient,
            "transport_name": self.transport_name,
            "result": self.result,
            "program_exit": self.program_exit,
        }

    def __getattr__(self, name: str) -> Any:
        # Called only for attributes not found: the sendmail transport used to attach
        # exit_code/signal/stderr to the error itself; they live on program_exit now.
        program_exit = self.__dict__.get("program_exit")
        if program_exit is not None and name in ("exit_code", "signal", "stderr"):
            warnings.warn(
                f"error.{name} is deprecated: read error.program_exit.{name}",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(program_exit, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def replace(self: _E, **changes: Any) -> _E:
        """A copy of this error with ``changes``, like :func:`dataclasses.replace`.

        ``changes`` name constructor arguments: ``summary``, ``verdict``, ``reply``,
        ``phase``, ``recipient``, ``transport_name``, ``result``, and the verdict's
        ``explanation``, ``retryable``, ``delay_hint``, ``setting`` (changed on the
        verdict). The copy keeps the original's cause, context and traceback.
        """
        if "server" in changes:
            changes["transport_name"] = transport_name_given(
                "error.replace()", changes.pop("server"), changes.get("transport_name")
            )
        verdict_changes = {k: changes.pop(k) for k in _VERDICT_SHORTHAND if k in changes}
        fields = {"summary": self.summary, **self._fields(), **changes}
        if verdict_changes:
            fields["verdict"] = dataclasses.replace(fields["verdict"], **verdict_changes)
        copy = type(self)(**fields)
        for name in ("__cause__", "__context__", "__suppress_context__", "__traceback__"):
            object.__setattr__(copy, name, getattr(self, name))
        if hasattr(self, "__notes__"):
            object.__setattr__(copy, "__notes__", list(self.__notes__))
        return copy

    def with_result(self: _E, result: SendResult) -> _E:
        """A copy of this error carrying ``result`` (what the mailer raises)."""
        return self.replace(result=result)

    # -- read from the verdict ---------------------------------------------------------

    @property
    def server(self) -> str | None:
        """Deprecated name of :attr:`transport_name` (it names a transport, not a server)."""
        warn_server_attribute(self)
        return self.transport_name

    outcome = VerdictAttribute[Outcome]("The :class:`~reliable_smtp.Outcome`.")
    explanation = VerdictAttribute[str]("What it means and what to do about it.")
    retryable = VerdictAttribute[bool]("Whether retrying soon may succeed.")
    delay_hint = VerdictAttribute["float | None"]("Seconds the server asked us to wait.")
    setting = VerdictAttribute["str | None"]("The setting to change, when it is known.")

    # -- the public kit for transports: the right class for a failure ------------------------
    # Called on DeliveryError; the class built is the one the verdict selects (error_for), so
    # a transport never has to choose between TransientError, ThrottledError, ... itself.

    @staticmethod
    def from_reply(
        reply: Reply,
        summary: str,
        *,
        phase: Phase,
        recipient: str | None = None,
        server: str | None = None,
        transport_name: str | None = None,
    ) -> DeliveryError:
        """The error for a refusal ``reply`` received in ``phase``, classified by the reply table.

        ``DeliveryError.from_reply(Reply(535, "5.7.8", "bad credentials"), "login refused",
        phase=Phase.AUTH, transport_name=self.name)`` is an :class:`AuthOrConfigError`; a 421 with
        "try again in 30 seconds" is a :class:`ThrottledError` with ``delay_hint=30``.
        Raises ``ValueError`` for a 2xx reply, which is no error.
        """
        return error_for(
            classify(reply, phase),
            summary,
            reply=reply,
            phase=phase,
            recipient=recipient,
            transport_name=transport_name_given(
                "DeliveryError.from_reply()", server, transport_name
            ),
        )

    @staticmethod
    def from_verdict(
        verdict: Verdict,
        summary: str,
        *,
        phase: Phase,
        reply: Reply | None = None,
        recipient: str | None = None,
        server: str | None = None,
        transport_name: str | None = None,
    ) -> DeliveryError:
        """The error for ``verdict``: for a failure the transport classified itself.

        A transport whose server does not speak SMTP (an HTTP API's 429 with
        ``Retry-After``, its 401) states the meaning as a :class:`~reliable_smtp.Verdict`
        and gets the matching class: ``Outcome.THROTTLED`` gives a
        :class:`ThrottledError` carrying ``verdict.delay_hint``, ``Outcome.AUTH_OR_CONFIG``
        an :class:`AuthOrConfigError`. Raises ``ValueError`` for a ``SENT`` verdict.
        """
        return error_for(
            verdict,
            summary,
            reply=reply,
            phase=phase,
            recipient=recipient,
            transport_name=transport_name_given(
                "DeliveryError.from_verdict()", server, transport_name
            ),
        )

    @staticmethod
    def from_connection_loss(
        summary: str,
        *,
        phase: Phase,
        timed_out: bool = False,
        server: str | None = None,
        transport_name: str | None = None,
    ) -> DeliveryError:
        """The error for a connection that broke, or a reply that never came, in ``phase``.

        Before the message was handed over it is a :class:`ConnectionFailedError` (or
        :class:`SMTPTimeoutError` with ``timed_out=True``), retried: nothing was
        delivered. In :attr:`Phase.DATA_END` - the whole message was written, its
        reply never read - it is an :class:`AmbiguousDeliveryError`: the server may
        have it, so it is not resent by default.
        """
        return error_for(
            classify_connection_loss(phase, timed_out=timed_out),
            summary,
            phase=phase,
            transport_name=transport_name_given(
                "DeliveryError.from_connection_loss()", server, transport_name
            ),
        )

    @property
    def code(self) -> int | None:
        return self.reply.code if self.reply else None

    @property
    def enhanced_code(self) -> str | None:
        return self.reply.enhanced_code if self.reply else None

    @property
    def text(self) -> str | None:
        return self.reply.text if self.reply else None

    def __str__(self) -> str:
        facts = []
        if self.reply is not None:
            facts.append(f"server replied {self.reply}")
        if self.phase is not None:
            facts.append(f"phase {self.phase.value}")
        if self.recipient is not None:
            facts.append(f"recipient {self.recipient}")
        if self.transport_name:
            facts.append(f"server {self.transport_name}")
        text = self.summary
        if facts:
            text += f" ({'; '.join(facts)})"
        if self.explanation:
            text += f": {self.explanation}"
        if self.result is not None:
            text += f" [{self.result.summary()}]"
        return text


class TransientError(DeliveryError):
    """A temporary failure (4xx, or a broken link before the final dot). Retried."""

    default_outcome = Outcome.TRANSIENT


class ConnectionFailedError(TransientError, ConnectionError):
    """The connection was refused, reset or dropped before the final dot.

    Nothing was delivered to the recipients it names (``result`` has every status;
    if any recipient were ambiguous, ``AmbiguousDeliveryError`` would be raised instead).
    """

    _implied = MappingProxyType({"connection_lost": True})


class SMTPTimeoutError(TransientError, TimeoutError):
    """The server did not answer in time, before the final dot. Nothing was delivered."""

    _implied = MappingProxyType({"timed_out": True})


class PoolExhaustedError(TransientError):
    """No pooled connection became free in time. Nothing was sent; the server is fine.

    A local condition (too much concurrency for ``max_connections``), so failover
    transports never count it against the server.
    """


class ThrottledError(TransientError):
    """A rate limit, reputation throttle or quota. Retried after a longer wait, if at all.

    ``retryable`` is False for quotas that clear only in hours (for example
    ``550 5.4.5 Daily user sending quota exceeded``).
    """

    default_outcome = Outcome.THROTTLED


class PermanentError(DeliveryError):
    """The server refused for good: unknown mailbox, message too big, policy. Never retried."""


class ProtocolError(PermanentError):
    """A reply that is not SMTP (no code, a code outside 2xx-5xx, a truncated reply), or a
    5.5.x reply to a command the server did not understand."""

    _implied = MappingProxyType({"protocol_error": True})


class AuthOrConfigError(DeliveryError):
    """Credentials, TLS settings or the sender identity are wrong. Never retried.

    ``setting`` (``verdict.setting``) names the setting to fix, when it is known.
    """

    default_outcome = Outcome.AUTH_OR_CONFIG


class AmbiguousDeliveryError(DeliveryError):
    """The link broke, or the reply timed out, after the final dot.

    The server may have accepted the message. It is not resent unless the retry
    policy says ``retry_ambiguous=True``; then it is resent with the same Message-ID.
    """

    default_outcome = Outcome.AMBIGUOUS


_CLASS_FOR_OUTCOME: Mapping[Outcome, type[DeliveryError]] = MappingProxyType(
    {
        Outcome.TRANSIENT: TransientError,
        Outcome.THROTTLED: ThrottledError,
        Outcome.PERMANENT: PermanentError,
        Outcome.AUTH_OR_CONFIG: AuthOrConfigError,
        Outcome.AMBIGUOUS: AmbiguousDeliveryError,
    }
)


def error_class(verdict: Verdict) -> type[DeliveryError]:
    """The class of the error for ``verdict``, read from the verdict alone.

    The outcome picks the family; within it the verdict's flags pick the most
    specific class: ``protocol_error`` (the server did not understand us, or did not
    speak SMTP: 500-504, 555, an unexpected 3xx, a code outside 2xx-5xx) makes a
    permanent verdict a :class:`ProtocolError`; ``timed_out`` / ``connection_lost``
    (no reply came) make a transient one an :class:`SMTPTimeoutError` /
    :class:`ConnectionFailedError`. Raises ``ValueError`` for a ``SENT`` verdict.
    """
    if verdict.outcome is Outcome.SENT:
        raise ValueError("a SENT verdict is not an error")
    if verdict.outcome is Outcome.PERMANENT and verdict.protocol_error:
        return ProtocolError
    if verdict.outcome is Outcome.TRANSIENT and verdict.timed_out:
        return SMTPTimeoutError
    if verdict.outcome is Outcome.TRANSIENT and verdict.connection_lost:
        return ConnectionFailedError
    return _CLASS_FOR_OUTCOME[verdict.outcome]


def error_for(
    verdict: Verdict,
    summary: str,
    *,
    reply: Reply | None = None,
    phase: Phase | None = None,
    recipient: str | None = None,
    server: str | None = None,
    connection_lost: bool = False,
    timed_out: bool = False,
    transport_name: str | None = None,
) -> DeliveryError:
    """Build the error for ``verdict``, of the class :func:`error_class` derives from it.

    The error carries ``verdict`` unchanged. ``connection_lost``/``timed_out`` are a
    shorthand for setting those flags on the verdict (a failure that had no reply).
    """
    if (connection_lost and not verdict.connection_lost) or (timed_out and not verdict.timed_out):
        verdict = dataclasses.replace(
            verdict,
            connection_lost=verdict.connection_lost or connection_lost,
            timed_out=verdict.timed_out or timed_out,
        )
    return error_class(verdict)(
        summary,
        verdict=verdict,
        reply=reply,
        phase=phase,
        recipient=recipient,
        transport_name=transport_name_given("error_for()", server, transport_name),
    )
