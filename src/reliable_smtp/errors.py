"""Every error reliable-smtp raises, in one tree.

::

    ReliableSMTPError                         base of everything below
    ├── ConfigurationError (ValueError)        settings or arguments that cannot work; raised at
    │                                          construction, before any I/O
    ├── InvalidMessageError (ValueError)       the message cannot be sent as it is; nothing was sent
    │   └── InvalidAddressError                a malformed, unsafe or refused address
    │       └── RecipientsRejectedError        every address the RecipientPolicy refused, and why
    │                                          (defined in reliable_smtp.validation)
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
``text``, ``phase``, ``recipient`` - plus ``outcome``, a one-line ``explanation``
with the usual fix, and ``result``: the :class:`~reliable_smtp.SendResult` that
says which recipients did get the message. ``AmbiguousDeliveryError`` is
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

from typing import TYPE_CHECKING

from .replies import Outcome, Phase, Reply, Verdict, classify, classify_connection_loss

if TYPE_CHECKING:
    from .result import SendResult

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
    "ProtocolError",
    "ReliableSMTPError",
    "SMTPTimeoutError",
    "ThrottledError",
    "TransientError",
    "TransportClosedError",
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


class DeliveryError(ReliableSMTPError):
    """The message was not accepted for every recipient.

    Attributes (``None`` where they do not apply):

    * ``code``, ``enhanced_code``, ``text`` - the server's reply;
    * ``phase`` - where it happened (:class:`~reliable_smtp.Phase`);
    * ``recipient`` - the recipient it concerns, for a per-recipient failure;
    * ``outcome`` - the :class:`~reliable_smtp.Outcome` class;
    * ``explanation`` - what it means and what to do about it;
    * ``retryable`` - whether retrying soon may succeed;
    * ``result`` - the :class:`~reliable_smtp.SendResult` with every recipient's
      status and every attempt (set by the mailer);
    * ``server`` - which server answered, when known.
    """

    default_outcome = Outcome.PERMANENT

    def __init__(
        self,
        summary: str,
        *,
        reply: Reply | None = None,
        phase: Phase | None = None,
        recipient: str | None = None,
        explanation: str = "",
        outcome: Outcome | None = None,
        retryable: bool = False,
        delay_hint: float | None = None,
        server: str | None = None,
        result: SendResult | None = None,
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.reply = reply
        self.phase = phase
        self.recipient = recipient
        self.explanation = explanation
        self.outcome = outcome if outcome is not None else self.default_outcome
        self.retryable = retryable
        self.delay_hint = delay_hint
        self.server = server
        self.result = result

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
    ) -> DeliveryError:
        """The error for a refusal ``reply`` received in ``phase``, classified by the reply table.

        ``DeliveryError.from_reply(Reply(535, "5.7.8", "bad credentials"), "login refused",
        phase=Phase.AUTH, server=self.name)`` is an :class:`AuthOrConfigError`; a 421 with
        "try again in 30 seconds" is a :class:`ThrottledError` with ``delay_hint=30``.
        Raises ``ValueError`` for a 2xx reply, which is no error.
        """
        return error_for(
            classify(reply, phase),
            summary,
            reply=reply,
            phase=phase,
            recipient=recipient,
            server=server,
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
    ) -> DeliveryError:
        """The error for ``verdict``: for a failure the transport classified itself.

        A transport whose server does not speak SMTP (an HTTP API's 429 with
        ``Retry-After``, its 401) states the meaning as a :class:`~reliable_smtp.Verdict`
        and gets the matching class: ``Outcome.THROTTLED`` gives a
        :class:`ThrottledError` carrying ``verdict.delay_hint``, ``Outcome.AUTH_OR_CONFIG``
        an :class:`AuthOrConfigError`. Raises ``ValueError`` for a ``SENT`` verdict.
        """
        return error_for(
            verdict, summary, reply=reply, phase=phase, recipient=recipient, server=server
        )

    @staticmethod
    def from_connection_loss(
        summary: str, *, phase: Phase, timed_out: bool = False, server: str | None = None
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
            server=server,
            connection_lost=not timed_out,
            timed_out=timed_out,
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
        if self.server:
            facts.append(f"server {self.server}")
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


class SMTPTimeoutError(TransientError, TimeoutError):
    """The server did not answer in time, before the final dot. Nothing was delivered."""


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


class AuthOrConfigError(DeliveryError):
    """Credentials, TLS settings or the sender identity are wrong. Never retried.

    ``setting`` names the setting to fix, when it is known.
    """

    default_outcome = Outcome.AUTH_OR_CONFIG

    def __init__(self, summary: str, *, setting: str | None = None, **kwargs: object) -> None:
        super().__init__(summary, **kwargs)  # type: ignore[arg-type]
        self.setting = setting


class AmbiguousDeliveryError(DeliveryError):
    """The link broke, or the reply timed out, after the final dot.

    The server may have accepted the message. It is not resent unless the retry
    policy says ``retry_ambiguous=True``; then it is resent with the same Message-ID.
    """

    default_outcome = Outcome.AMBIGUOUS


_CLASS_FOR_OUTCOME: dict[Outcome, type[DeliveryError]] = {
    Outcome.TRANSIENT: TransientError,
    Outcome.THROTTLED: ThrottledError,
    Outcome.PERMANENT: PermanentError,
    Outcome.AUTH_OR_CONFIG: AuthOrConfigError,
    Outcome.AMBIGUOUS: AmbiguousDeliveryError,
}


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
) -> DeliveryError:
    """Build the most specific error for ``verdict``.

    ``connection_lost``/``timed_out`` select :class:`ConnectionFailedError` /
    :class:`SMTPTimeoutError` for transient failures that had no reply; a permanent
    verdict with ``protocol_error`` (the server did not understand us, or did not
    speak SMTP: 500-504, 555, an unexpected 3xx, a code outside 2xx-5xx) is a
    :class:`ProtocolError`.
    """
    cls: type[DeliveryError]
    if verdict.outcome is Outcome.PERMANENT and verdict.protocol_error:
        cls = ProtocolError
    elif verdict.outcome is Outcome.TRANSIENT and timed_out:
        cls = SMTPTimeoutError
    elif verdict.outcome is Outcome.TRANSIENT and connection_lost:
        cls = ConnectionFailedError
    elif verdict.outcome is Outcome.SENT:
        raise ValueError("a SENT verdict is not an error")
    else:
        cls = _CLASS_FOR_OUTCOME[verdict.outcome]
    return cls(
        summary,
        reply=reply,
        phase=phase,
        recipient=recipient,
        explanation=verdict.explanation,
        outcome=verdict.outcome,
        retryable=verdict.retry_in_process,
        delay_hint=verdict.delay_hint,
        server=server,
    )
