"""The outbox's values: entry and recipient states, entries as read back, claims, counts.

Pure data, no I/O. Both stores (SQLite, PostgreSQL) build these from their
rows; the facade and the worker only ever see these values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from .._envelope import Envelope
from .._replies import Outcome, Phase, Reply
from .._result import RecipientStatus

__all__ = [
    "Claim",
    "EntryState",
    "NewEntry",
    "OutboxEntry",
    "OutboxRecipient",
    "OutboxStats",
    "RecipientState",
    "entry_state",
]


class EntryState(str, Enum):
    """Where an outbox entry is in its life. The final states are SENT, FAILED, CANCELLED."""

    QUEUED = "queued"
    """Waiting for its first attempt (or back after a worker died before the final dot)."""
    SENDING = "sending"
    """Leased by a worker."""
    DEFERRED = "deferred"
    """Some recipients are pending; the next try is at ``due_at``."""
    SENT = "sent"
    """Every recipient accepted it."""
    FAILED = "failed"
    """Some recipient failed for good (a 5xx, or expired with the last reply); none pending."""
    AMBIGUOUS = "ambiguous"
    """Some recipient may or may not have it (the link broke after the final dot): parked
    until an operator resolves it. Never resent on its own."""
    CANCELLED = "cancelled"
    """An operator cancelled the recipients that were still pending."""

    @property
    def final(self) -> bool:
        """Whether nothing will happen to the entry any more without an operator."""
        return self in _FINAL

    def __str__(self) -> str:
        return self.value


_FINAL = frozenset({EntryState.SENT, EntryState.FAILED, EntryState.CANCELLED})


class RecipientState(str, Enum):
    """One recipient's state inside an entry."""

    PENDING = "pending"
    """Will be tried at ``due_at``."""
    IN_FLIGHT = "in_flight"
    """The final dot was about to be sent to it (the mark is written before the dot)."""
    SENT = "sent"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


def entry_state(states: Iterable[RecipientState], *, tried: bool) -> EntryState:
    """The entry state its recipients' states imply (the one rule, for every store).

    Any recipient pending or in flight -> QUEUED (``tried`` false: no attempt has a
    recorded result yet) or DEFERRED; else any ambiguous -> AMBIGUOUS; else any
    failed -> FAILED; else any cancelled -> CANCELLED; else SENT.
    """
    present = set(states)
    if RecipientState.PENDING in present or RecipientState.IN_FLIGHT in present:
        return EntryState.DEFERRED if tried else EntryState.QUEUED
    for recipient, entry in (
        (RecipientState.AMBIGUOUS, EntryState.AMBIGUOUS),
        (RecipientState.FAILED, EntryState.FAILED),
        (RecipientState.CANCELLED, EntryState.CANCELLED),
    ):
        if recipient in present:
            return entry
    return EntryState.SENT


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRecipient:
    """One recipient of an entry: its state and the last reply that concerned it."""

    address: str
    position: int
    state: RecipientState
    outcome: Outcome | None = None
    """The outcome of the last attempt that reached a decision (``None``: not tried yet)."""
    reply: Reply | None = None
    phase: Phase | None = None
    explanation: str = ""
    attempts: int = 0
    due_at: float | None = None
    """When it is tried next (pending recipients only)."""
    dot_at: float | None = None
    """When the final dot was about to be sent to it, if ever."""
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEntry:
    """One queued message as the outbox holds it.

    ``content`` is the message exactly as it goes out (Message-ID included), so
    every retry sends the same bytes. ``recipients`` are in envelope order.
    """

    id: int
    state: EntryState
    message_id: str
    sender: str
    recipients: tuple[OutboxRecipient, ...]
    content: bytes = field(repr=False)
    idempotency_key: str | None = None
    attempts: int = 0
    """How many times a worker claimed it."""
    created_at: float = 0.0
    updated_at: float = 0.0
    due_at: float | None = None
    expires_at: float = 0.0
    last_error: str = ""
    metadata: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def recipient(self, address: str) -> OutboxRecipient:
        """The recipient with this envelope address (``KeyError`` if none)."""
        for recipient in self.recipients:
            if recipient.address == address:
                return recipient
        raise KeyError(address)

    @property
    def pending(self) -> tuple[str, ...]:
        """Addresses still to be tried."""
        return tuple(r.address for r in self.recipients if r.state is RecipientState.PENDING)

    @property
    def ambiguous(self) -> tuple[str, ...]:
        """Addresses that need an operator's decision (see ``Outbox.resolve``)."""
        return tuple(r.address for r in self.recipients if r.state is RecipientState.AMBIGUOUS)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEntry:
    """What ``enqueue`` writes: a validated, rendered message and its envelope.

    ``refused`` are recipients the RecipientPolicy skipped (``on_invalid="skip"``):
    stored as FAILED at once, with their reason, so the entry accounts for them.
    """

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    content: bytes = field(repr=False)
    expires_at: float
    idempotency_key: str | None = None
    refused: Mapping[str, RecipientStatus] = field(default_factory=dict)
    metadata: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """An entry a worker leased: what it sends, to whom, and the token that fences it.

    ``recipients`` are the pending recipients due now, in envelope order.
    """

    entry_id: int
    token: str
    owner: str
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    content: bytes = field(repr=False)
    lease_expires_at: float
    attempt: int
    """This claim's number (1 for the first)."""
    # Not compared: claims are hashed (sets of held claims), and a mapping is not hashable.
    metadata: Mapping[str, object] = field(
        default_factory=lambda: MappingProxyType({}), compare=False
    )
    """The entry's metadata (the enqueuing trace context travels in it)."""

    def envelope(self) -> Envelope:
        """MAIL FROM / RCPT TO for this attempt: the sender and the recipients due now."""
        return Envelope(self.sender, self.recipients)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxStats:
    """What the operator sees first: counts by state and how far behind the queue is."""

    counts: Mapping[EntryState, int]
    """Entries per state; every state is present (0 when none)."""
    oldest_due_age: float | None
    """Seconds since the oldest due (queued or deferred) entry became due; ``None`` if none."""

    @property
    def ambiguous(self) -> int:
        """Entries waiting for an operator's decision."""
        return self.counts[EntryState.AMBIGUOUS]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def full_counts(counts: Mapping[str, int]) -> Mapping[EntryState, int]:
    """Counts keyed by every :class:`EntryState`, zero for states with no entry."""
    return MappingProxyType({state: int(counts.get(state.value, 0)) for state in EntryState})
