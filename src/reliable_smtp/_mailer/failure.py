"""Which error a failed send raises, and what it says.

This module owns the precedence between the recipients' outcomes
(:data:`FAILURE_PRECEDENCE`: ambiguous first, permanent last), the error built from
them (:func:`_final_error`), its headline (:func:`_failure_summary`, which never
contradicts the statuses), and the ambiguous error a foreign exception becomes
(:func:`_unexpected`: a bug, logged, never a crash, never resent).
"""

from __future__ import annotations

import logging

from .._errors import AmbiguousDeliveryError, DeliveryError, error_for
from .._replies import Outcome, Phase
from .._result import RecipientStatus, SendResult

logger = logging.getLogger("reliable_smtp")


#: The class ``send()`` raises when recipients failed in different ways: the first of
#: these outcomes that any recipient has. Ambiguous first: a caller who re-queues on
#: ``TransientError`` must never be told "retry" while a recipient may have the message.
#: Then what needs a person (credentials, TLS, sender identity), then what clears with
#: time (throttled before transient: the longer wait is right for the whole message),
#: and permanent last, because only when every failure is permanent is giving up right.
FAILURE_PRECEDENCE: tuple[Outcome, ...] = (
    Outcome.AMBIGUOUS,
    Outcome.AUTH_OR_CONFIG,
    Outcome.THROTTLED,
    Outcome.TRANSIENT,
    Outcome.PERMANENT,
)


def _final_error(result: SendResult, last_error: DeliveryError | None) -> DeliveryError:
    """The error ``send()`` raises, carrying ``result``: its class is the failed recipients'
    outcome that comes first in :data:`FAILURE_PRECEDENCE`."""
    failed = [result.recipients[r] for r in result.rejected]
    total = len(result.recipients)
    top = min(failed, key=lambda s: FAILURE_PRECEDENCE.index(s.outcome)).outcome
    if last_error is not None and all(
        s.outcome is last_error.outcome
        and s.reply == last_error.reply
        and s.phase is (last_error.phase or Phase.CONNECT)
        for s in failed
    ):
        # The whole last attempt failed the same way (connect, AUTH, MAIL...): that error
        # is the story; give it the result.
        return last_error.with_result(result)
    # Otherwise the first recipient of the top outcome tells it: its status carries the
    # verdict, so the class (ProtocolError for a 500 5.5.1, ...) follows from it.
    first = next(s for s in failed if s.outcome is top)
    error = error_for(
        first.verdict,
        _failure_summary(result.message_id, failed, total),
        reply=first.reply,
        phase=first.phase,
        recipient=first.recipient,
        transport_name=first.transport_name or None,
    )
    return error.with_result(result)


def _unexpected(exc: Exception, transport_name: str, where: str) -> AmbiguousDeliveryError:
    """A foreign exception from a transport or the mailer: a bug, kept visible, never a crash.

    How far the send got is unknown, so the message may have been delivered: it is
    reported ambiguous (never resent automatically), the traceback is logged at ERROR
    and kept as ``__cause__``.
    """
    logger.error(
        "unexpected %s %s (a bug in reliable-smtp or in the transport; please report it)",
        type(exc).__name__,
        where,
        exc_info=exc,
        extra={"server": transport_name},
    )
    error = AmbiguousDeliveryError(
        f"unexpected {type(exc).__name__} {where}: {exc}",
        phase=Phase.DATA_END,
        transport_name=transport_name,
        explanation="an error the library did not expect (a bug: please report it with the "
        "logged traceback); the message may or may not have been sent, so it is not resent "
        "automatically, to avoid a duplicate",
    )
    error.__cause__ = exc
    return error


def _failure_summary(message_id: str, failed: list[RecipientStatus], total: int) -> str:
    """The headline of the error ``send()`` raises; it never contradicts the statuses.

    An AMBIGUOUS recipient (the link broke after the final dot) may have the message,
    so the headline says "may have been delivered", never "was not delivered".
    """
    recipients = f"recipient{'s' * (total != 1)}"
    ambiguous = sum(s.outcome is Outcome.AMBIGUOUS for s in failed)
    if not ambiguous:
        return f"message {message_id} was not delivered to {len(failed)} of {total} {recipients}"
    summary = (
        f"message {message_id} may have been delivered to {ambiguous} of {total} {recipients} "
        "(the server may have it: do not resend blindly)"
    )
    others = len(failed) - ambiguous
    if others:
        summary += f"; it was not delivered to {others} other{'s' * (others != 1)}"
    return summary
