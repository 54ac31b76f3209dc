"""One attempt at a claim: :class:`ClaimSender`, the worker's send of one leased entry.

One attempt per claim: the outbox schedule is the retry engine (minutes to
days); in-process only a "452 too many recipients" split is resent at once
(:class:`SplitsOnly`, :func:`one_attempt`, :func:`no_splits`). Before the final
dot of each SMTP transaction the recipients accepted in it are marked durably
(the guard of :mod:`reliable_smtp._transports._commit`); a transport that cannot
call the guard gets every recipient marked before the send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial

from .._envelope import Envelope
from .._errors import DeliveryError
from .._mailer import AsyncMailer
from .._otel import use_trace_context
from .._result import RecipientStatus
from .._retry import RetryPolicy
from .._transports._commit import FinalDotForbiddenError, guard_final_dot
from .errors import LeaseLostError
from .model import Claim

__all__ = ["ClaimSender", "SplitsOnly", "no_splits", "one_attempt"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitsOnly(RetryPolicy):
    """One attempt, except that recipients refused only for the transaction's size go again
    at once (a 452 "too many recipients" split); everything else waits for the schedule."""

    attempts: int = 1_000
    deadline: float = 86_400.0

    def should_retry(self, status: RecipientStatus) -> bool:
        return status.split


_ONE_ATTEMPT = SplitsOnly().without_waits()


def one_attempt(recipients: int) -> RetryPolicy:
    """The claim's policy: each split round takes at least one recipient, so a server
    that keeps answering 452 gets at most ``recipients`` extra transactions."""
    return _ONE_ATTEMPT.replace(attempts=recipients + 1)


def no_splits(statuses: Mapping[str, RecipientStatus]) -> Mapping[str, RecipientStatus]:
    """A split still pending after this claim's split rounds is an ordinary 4xx.

    The schedule resends a split at once; if the server refused the smaller
    transactions too (it says 452 to every RCPT), "at once" would be a tight loop
    against it. Such recipients wait for the schedule's backoff instead.
    """
    return {
        recipient: replace(status, verdict=status.verdict.updated(split=False))
        if status.split
        else status
        for recipient, status in statuses.items()
    }


class ClaimSender:
    """Sends a claim's due recipients once, through ``mailer``, guarding the final dot.

    ``record_mark`` writes a final-dot mark durably (the worker's group commit of
    ``Store.mark_final_dot_many``) and says whether the lease still held.
    ``reserve_next`` waits for the place of each transaction after a claim's first in
    the shared rate (the worker reserves the first before calling :meth:`send`).
    """

    def __init__(
        self,
        mailer: AsyncMailer,
        record_mark: Callable[[tuple[Claim, tuple[str, ...]]], Awaitable[bool]],
        *,
        reserve_next: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._mailer = mailer
        self._record_mark = record_mark
        self._reserve_next = reserve_next
        self._marks = bool(mailer.transport.marks_final_dot)
        policy = mailer.recipient_policy
        self._chunk_size = policy.max_recipients_per_transaction if policy is not None else None

    async def send(self, claim: Claim) -> Mapping[str, RecipientStatus] | None:
        """One attempt at the claim's due recipients: their statuses (``None``: not tried)."""
        envelope = Envelope(claim.sender, claim.recipients)
        if not self._marks:
            # The transport cannot tell us the instant before its commit: mark everyone
            # now. A crash before the send then gives a false "ambiguous", never a duplicate.
            try:
                await self._mark(claim, claim.recipients)
            except FinalDotForbiddenError as forbidden:
                if isinstance(forbidden.__cause__, LeaseLostError):
                    raise forbidden.__cause__ from None
                return {r: forbidden.status(r, transport_name="outbox") for r in claim.recipients}
            return await self._deliver(claim, envelope)
        with guard_final_dot(partial(self._mark, claim)):
            return await self._deliver(claim, envelope)

    async def _deliver(self, claim: Claim, envelope: Envelope) -> Mapping[str, RecipientStatus]:
        try:
            # The send span is the child of the span that enqueued the entry (docs: README
            # "Observability"): one trace shows the request and the mail it caused.
            with use_trace_context(claim.metadata):
                result = await self._mailer._deliver(
                    envelope,
                    claim.content,
                    claim.message_id,
                    refused={},
                    chunk_size=self._chunk_size,
                    policy=one_attempt(len(envelope.recipients)),
                    before_next_transaction=self._reserve_next,
                )
        except DeliveryError as error:
            if error.result is None:
                return {
                    r: RecipientStatus.from_error(
                        r, error, transport_name=error.transport_name or ""
                    )
                    for r in envelope.recipients
                }
            return no_splits(error.result.recipients)
        return result.recipients

    async def _mark(self, claim: Claim, recipients: tuple[str, ...]) -> None:
        """The final-dot guard: record durably that the dot is about to go to ``recipients``."""
        try:
            marked = await self._record_mark((claim, recipients))
        except Exception as exc:
            raise FinalDotForbiddenError(
                f"the outbox could not record the final-dot mark ({exc})"
            ) from exc
        if not marked:
            raise FinalDotForbiddenError("the outbox lease was lost") from LeaseLostError(
                f"lease on outbox entry {claim.entry_id} was lost"
            )
