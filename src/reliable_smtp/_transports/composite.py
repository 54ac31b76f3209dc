"""Transports made of transports: :class:`FailoverTransport` and :class:`RoundRobinTransport`.

This module owns the two composites, the pure predicate :func:`is_server_failure`
that decides what moves a message to another member, and the members' health
(the "down" marks). A member is any :class:`~reliable_smtp.Transport`: an
:class:`~reliable_smtp.SMTPTransport`, a sendmail transport, another composite.

Which failures move on (:func:`is_server_failure`)
--------------------------------------------------
Only a failure of the *server* moves recipients to the next member and marks the
failed member down for ``down_for`` seconds (or longer, when the server asked for
a longer wait with "try again in N s"). In this order:

1. ``SENT`` and ``AMBIGUOUS`` never do. An ambiguous delivery (the link broke after
   the final dot) may already be in the server's queue: sending it through another
   server could deliver it twice, so it is returned as it is and whether to resend
   is the mailer's :class:`~reliable_smtp.RetryPolicy` business
   (``retry_ambiguous``). It does not mark the server down either.
2. A ``421`` reply, in any phase: the server is closing the channel.
3. ``THROTTLED``, in any phase, quotas included: a throttled server is rested.
   The classification table calls ``4.7.x`` replies throttles, greylisting's
   ``451 4.7.1`` included (a submission server rarely greylists its own clients).
4. Anything in the phases ``CONNECT``, ``TLS``, ``EHLO`` and ``AUTH``, whatever its
   outcome (refused, timed out, bad certificate, wrong password, ``554`` greeting).
5. A lost link or a reply that never came before the final dot
   (:class:`~reliable_smtp.ConnectionFailedError`,
   :class:`~reliable_smtp.SMTPTimeoutError`, or a ``TRANSIENT`` status without a
   reply).

Everything else is about the message, the sender or one recipient and stays where
it happened: ``550 5.1.1`` unknown user, a ``451 4.3.0`` or ``450`` on one
recipient, ``452`` too many recipients (the mailer splits), the message too big,
a sender refused at ``MAIL`` (``AUTH_OR_CONFIG`` after ``AUTH``: an operator must
fix it, and another server would hide the problem).

One call to ``deliver``
-----------------------
The call works through a *plan*: the members not marked down, in the composite's
order (list order for :class:`FailoverTransport`; for :class:`RoundRobinTransport`
the healthy members rotated by one more place on every call). Each member is tried
at most once per call.

* **Raised error.** A server failure marks the member down and the next member of
  the plan gets the same recipients. Any other error propagates at once when no
  member has reported yet (nothing was delivered); after a report it becomes the
  status of the recipients that member was given.
* **Report.** Recipients whose status is a server failure (a ``421`` mid-RCPT makes
  them all ``TRANSIENT``; a throttled RCPT) go to the next member at once, in a new
  transaction for just them (``envelope.only``), and the member is marked down.
  Every other status is final for this call: ``SENT``, ``PERMANENT``,
  ``AUTH_OR_CONFIG``, ``AMBIGUOUS`` and recipient-level ``TRANSIENT``. A recipient
  that was accepted is therefore never given to a second member.
* **Merged report.** Exactly one status per envelope recipient, in envelope order,
  each the latest word about it; its ``server`` names the member that produced it
  (filled in when a member left it empty). ``DeliveryReport.transport_name`` names the last
  member tried. Recipients still failing when the plan runs out keep the last
  member's status: the mailer's retry policy decides what happens next.
* **Every member raised.** The composite raises the last *retryable* error if
  there is one (another attempt may succeed there, so the mailer should retry),
  otherwise the last error. Its ``server`` names the member that raised it, and its
  ``explanation`` ends with what else happened (``[failover(...): smtp://a:587:
  connection problem ...; skipped smtp://c:587, down for another 12 s]``).
* **Everything down.** When no member is healthy at the start of a call, the plan
  is the one member whose down period ends soonest (the first one listed on a
  tie): a composite never refuses to send just because every member was marked
  down. Its error then says so.

A member comes back when its down period ends, or as soon as it delivers without
a server failure. :class:`FailoverTransport` always prefers the first healthy
member, so traffic returns to the primary once it is back.

Each failover and down-marking is logged at INFO on the ``reliable_smtp`` logger
with ``extra`` fields ``event`` (``"failover"``, or ``"server_down"`` when no member
is left to try), ``server``, ``next_server``, ``reason``, ``down_until`` (on the
composite's clock) and ``recipients``; a member coming back logs ``"server_up"``.
"""

from __future__ import annotations

import abc
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from .._checks import check_seconds
from .._envelope import Envelope
from .._errors import (
    ConfigurationError,
    DeliveryError,
    PoolExhaustedError,
)
from .._replies import Outcome, Phase, Reply
from .._result import DeliveryReport, RecipientStatus, missing_status
from .base import Transport

__all__ = ["FailoverTransport", "RoundRobinTransport", "is_server_failure"]

logger = logging.getLogger("reliable_smtp")

_C = TypeVar("_C", bound="_CompositeTransport")

# Before MAIL the server has not looked at the message: whatever fails there is the
# server's (or our account's with it), never the message's.
_SERVER_PHASES = frozenset({Phase.CONNECT, Phase.TLS, Phase.EHLO, Phase.AUTH})


def is_server_failure(item: RecipientStatus | DeliveryError, /) -> bool:
    """Whether ``item`` is a failure of the server rather than of the message.

    True means: move the recipients to another server now and rest this one. The
    rules, in order (see the module docstring for why): ``SENT`` and ``AMBIGUOUS``
    never; a ``421`` always; ``THROTTLED`` always; any failure at ``CONNECT``,
    ``TLS``, ``EHLO`` or ``AUTH``; a lost link or a missing reply before the final
    dot. Nothing else.
    """
    outcome = item.outcome
    if outcome in (Outcome.SENT, Outcome.AMBIGUOUS) or isinstance(item, PoolExhaustedError):
        return False  # a busy local pool says nothing about the server
    reply = item.reply
    if reply is not None and reply.code == 421:
        return True
    if outcome is Outcome.THROTTLED:
        return True
    if item.phase in _SERVER_PHASES:
        return True
    if item.verdict.connection_lost or item.verdict.timed_out:
        return True  # no reply came, before the final dot (after it that is AMBIGUOUS)
    # A transport's own TRANSIENT failure without a reply (a custom transport's outage).
    return outcome is Outcome.TRANSIENT and reply is None and item.phase is not Phase.DATA_END


def _reason(item: RecipientStatus | DeliveryError) -> str:
    """A short account of a failure for logs and error notes (replies carry no secrets)."""
    where = f" during {item.phase.value}" if item.phase is not None else ""
    if item.reply is not None:
        return f"{item.reply}{where}"
    if isinstance(item, DeliveryError):
        return item.summary
    return f"{item.outcome.value}{where}: {item.explanation}"


@dataclass(frozen=True, slots=True)
class _Plan:
    order: tuple[int, ...]
    """Member positions to try, in order."""
    skipped: tuple[int, ...]
    """Members left out because they are marked down."""
    probing: bool
    """Every member was down: ``order`` is the one due back soonest."""


class _CompositeTransport(Transport):
    """What both composites share: members, health, the failover walk. See the module."""

    _strategy = "composite"

    def __init__(
        self,
        transports: Iterable[Transport],
        *,
        down_for: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        class_name = type(self).__name__
        try:
            members = tuple(transports)
        except TypeError:
            raise ConfigurationError(
                f"{class_name} takes a list of transports, got {type(transports).__name__}: "
                f"write {class_name}([primary, backup])",
                setting="transports",
            ) from None
        if not members:
            raise ConfigurationError(
                f"{class_name} needs at least one transport: {class_name}([primary, backup])",
                setting="transports",
            )
        for position, member in enumerate(members):
            if not isinstance(member, Transport):
                raise ConfigurationError(
                    f"{class_name} member {position} is a {type(member).__name__}, not a "
                    "Transport: pass SMTPTransport(...) or other reliable_smtp transports",
                    setting="transports",
                )
        seen: set[int] = set()
        for member in members:
            if id(member) in seen:
                raise ConfigurationError(
                    f"{member.name} is given to {class_name} twice: each member must be a distinct "
                    "transport object (create a second transport to the same server if you "
                    "mean to)",
                    setting="transports",
                )
            seen.add(id(member))
        down_for = check_seconds(
            "down_for",
            down_for,
            why="it is how long a failed server is left alone (30 s by default)",
        )
        if not callable(clock):
            raise ConfigurationError(
                f"clock must be a callable returning monotonic seconds, got {clock!r}",
                setting="clock",
            )
        self.transports: tuple[Transport, ...] = members
        # The outbox can trust the hook only if every member that may carry a send calls it.
        self.marks_final_dot = all(member.marks_final_dot for member in members)
        self.down_for = down_for
        self._clock = clock
        self._down_until = [-math.inf] * len(members)
        self.name = f"{self._strategy}({', '.join(m.name for m in members)})"

    async def __aenter__(self: _C) -> _C:
        # Typed as the composite, so ``async with FailoverTransport(...) as t`` sees
        # ``t.down_until`` and ``t.transports``.
        return self

    # -- health --------------------------------------------------------------------------

    def down_until(self, transport: Transport) -> float | None:
        """When ``transport`` (a member) is tried again, on the composite's clock;
        ``None`` when it is healthy."""
        until = self._down_until[self._position(transport)]
        return until if until > self._clock() else None

    def _position(self, transport: Transport) -> int:
        for position, member in enumerate(self.transports):
            if member is transport:
                return position
        raise ValueError(f"{transport!r} is not a member of {self.name}")

    def _plan(self) -> _Plan:
        now = self._clock()
        healthy = [i for i, until in enumerate(self._down_until) if until <= now]
        if healthy:
            skipped = tuple(i for i in range(len(self.transports)) if i not in healthy)
            return _Plan(tuple(self._order(healthy)), skipped, probing=False)
        # Never refuse to send because everything was marked down: try the member due
        # back first (min keeps the first listed on a tie).
        soonest = min(range(len(self.transports)), key=self._down_until.__getitem__)
        return _Plan((soonest,), (), probing=True)

    @abc.abstractmethod
    def _order(self, healthy: list[int]) -> Sequence[int]:
        """The healthy members' positions in the order this call tries them."""

    def _mark_down(
        self,
        position: int,
        failures: Sequence[RecipientStatus | DeliveryError],
        next_position: int | None,
        *,
        recipients: int,
    ) -> None:
        hints = [f.delay_hint for f in failures if f.delay_hint is not None]
        # A server that named a longer wait ("try again in 120 s") is rested that long.
        period = max([self.down_for, *hints])
        until = self._clock() + period
        self._down_until[position] = until
        member = self.transports[position]
        following = self.transports[next_position].name if next_position is not None else None
        reason = _reason(failures[0])
        logger.info(
            "%s marked down for %.3g s (%s): %s",
            member.name,
            period,
            reason,
            f"failing over to {following}" if following else "no other server to try",
            extra={
                "event": "failover" if following else "server_down",
                "server": member.name,
                "next_server": following,
                "reason": reason,
                "down_until": until,
                "recipients": recipients,
            },
        )

    def _mark_up(self, position: int) -> None:
        if self._down_until[position] == -math.inf:
            return
        self._down_until[position] = -math.inf
        name = self.transports[position].name
        logger.info(
            "%s is back: it delivered without a server failure",
            name,
            extra={"event": "server_up", "server": name},
        )

    # -- the contract --------------------------------------------------------------------

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        """Deliver through the first member that can; see the module docstring."""
        self.ensure_open()
        plan = self._plan()
        if plan.probing:
            logger.info(
                "every server of %s is marked down: trying %s, the first due back",
                self.name,
                self.transports[plan.order[0]].name,
                extra={
                    "event": "all_down",
                    "server": self.transports[plan.order[0]].name,
                    "down_until": self._down_until[plan.order[0]],
                },
            )
        statuses: dict[str, RecipientStatus] = {}
        failures: list[DeliveryError] = []
        pending = envelope
        final_reply: Reply | None = None
        last = plan.order[0]
        for step, position in enumerate(plan.order):
            member = self.transports[position]
            next_position = plan.order[step + 1] if step + 1 < len(plan.order) else None
            last = position
            try:
                report = await member.deliver(pending, content)
            except DeliveryError as raised:
                error = (
                    raised if raised.transport_name else raised.replace(transport_name=member.name)
                )
                if not is_server_failure(error):
                    if not statuses:
                        # About the message, not the server: no other member can help.
                        raise self._annotated(error, failures, plan) from raised.__cause__
                    statuses.update(_from_error(pending, error, member))
                    break
                self._mark_down(
                    position, [error], next_position, recipients=len(pending.recipients)
                )
                failures.append(error)
                if statuses:
                    statuses.update(_from_error(pending, error, member))
                continue
            moved: list[str] = []
            for recipient in pending.recipients:
                status = _status_in(report, recipient, member)
                statuses[recipient] = status
                if is_server_failure(status):
                    moved.append(recipient)
            if report.final_reply is not None:
                final_reply = report.final_reply
            if not moved:
                self._mark_up(position)
                break
            self._mark_down(
                position, [statuses[r] for r in moved], next_position, recipients=len(moved)
            )
            pending = pending.only(moved)
        if not statuses:
            # Every member raised a server failure: nothing was delivered anywhere.
            retryable = [e for e in failures if e.retryable]
            chosen = (retryable or failures)[-1]
            raise self._annotated(chosen, failures, plan)
        return DeliveryReport(
            recipients={r: statuses[r] for r in envelope.recipients},
            transport_name=self.transports[last].name,
            final_reply=final_reply,
        )

    def _annotated(
        self, error: DeliveryError, failures: Sequence[DeliveryError], plan: _Plan
    ) -> DeliveryError:
        """``error`` with what else happened in this call appended to its explanation."""
        notes: list[str] = []
        if plan.probing:
            notes.append(
                f"every server was marked down; tried {self.transports[plan.order[0]].name}, "
                "the first due back"
            )
        notes.extend(f"{e.transport_name}: {_reason(e)}" for e in failures if e is not error)
        now = self._clock()
        notes.extend(
            f"skipped {self.transports[i].name}, down for another {self._down_until[i] - now:.3g} s"
            for i in plan.skipped
        )
        if not notes:
            return error
        text = "; ".join(notes)
        prefix = f"{error.explanation} " if error.explanation else ""
        return error.replace(explanation=f"{prefix}[{self.name}: {text}]")

    async def aclose(self) -> None:
        """Close every member, even when one fails; then raise the first failure.

        Later failures are logged at WARNING. Closing twice is fine.
        """
        if self._closed:
            return
        self._closed = True
        first: Exception | None = None
        for member in self.transports:
            try:
                await member.aclose()
            except Exception as exc:
                if first is None:
                    first = exc
                else:
                    logger.warning(
                        "closing %s failed: %r",
                        member.name,
                        exc,
                        extra={"event": "close_failed", "server": member.name},
                    )
        if first is not None:
            raise first

    def forget_connections(self) -> None:
        for member in self.transports:
            member.forget_connections()

    async def limit_connections(self, maximum: int) -> None:
        for member in self.transports:
            await member.limit_connections(maximum)


def _status_in(report: DeliveryReport, recipient: str, member: Transport) -> RecipientStatus:
    status = report.recipients.get(recipient)
    if status is None:
        return missing_status(recipient, member.name)
    return status if status.transport_name else replace(status, transport_name=member.name)


def _from_error(
    envelope: Envelope, error: DeliveryError, member: Transport
) -> Iterable[tuple[str, RecipientStatus]]:
    return (
        (r, RecipientStatus.from_error(r, error, transport_name=member.name))
        for r in envelope.recipients
    )


class FailoverTransport(_CompositeTransport):
    """Send through the first healthy transport; on a server failure, the next one.

    ::

        transport = FailoverTransport([
            SMTPTransport("smtp.primary.example", username="app", password="..."),
            SMTPTransport("smtp.backup.example", username="app", password="..."),
        ], down_for=30.0)

    A member that fails as a server (refused, TLS, AUTH, 421, throttled, timed out
    before the final dot) is marked down for ``down_for`` seconds (on ``clock``) and
    the recipients go to the next member in the same call; a recipient's own refusal
    (``550 5.1.1``) and an ambiguous delivery never move. The first healthy member
    is always preferred, so traffic returns to the primary once it is back. When
    every member is down, the one due back first is tried anyway.
    ``aclose()`` closes every member. The rules in full are in this module's
    docstring.
    """

    _strategy = "failover"

    def _order(self, healthy: list[int]) -> Sequence[int]:
        return healthy


class RoundRobinTransport(_CompositeTransport):
    """Spread sends over several transports, with :class:`FailoverTransport`'s rules.

    Each ``deliver`` call starts at the next healthy member in turn (so 6 sends over
    3 healthy members give 2 each) and fails over through the others in the same
    rotated order. Members marked down are skipped until ``down_for`` has passed.
    """

    _strategy = "round_robin"
    _turn = 0  # the next member to start at; the first send makes it the instance's own

    def _order(self, healthy: list[int]) -> Sequence[int]:
        start = self._turn % len(healthy)
        self._turn += 1
        return healthy[start:] + healthy[:start]
