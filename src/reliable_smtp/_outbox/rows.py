"""Rows <-> values: how an entry, a recipient and a recipient update look as table rows.

The column lists and the tuples built from (or read into) them live here, once,
for every query of the SQL store (``sql``, ``leases``, ``operator_actions``);
nothing here talks to a database.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

from .._replies import Outcome, Phase, Reply
from .._result import RecipientStatus
from .model import EntryState, OutboxEntry, OutboxRecipient, RecipientState
from .schedule import RecipientUpdate, describe_status

__all__ = [
    "ENTRY_COLUMNS",
    "RECIPIENT_COLUMNS",
    "entry_of",
    "metadata_of",
    "new_recipient_row",
    "recipient_of",
    "update_row",
]

ENTRY_COLUMNS = (
    "id, state, message_id, sender, content, idempotency_key, attempts, created_at, "
    "updated_at, due_at, expires_at, last_error, metadata"
)
RECIPIENT_COLUMNS = (
    "entry_id, position, address, state, outcome, reply_code, enhanced_code, reply_text, "
    "phase, explanation, attempts, due_at, dot_at, updated_at"
)


def new_recipient_row(
    entry_id: int, position: int, address: str, refusal: RecipientStatus | None, now: float
) -> tuple[object, ...]:
    """The ``RECIPIENT_COLUMNS`` of a recipient being enqueued: pending and due now, or
    FAILED at once with the reason the recipient policy refused it."""
    if refusal is None:
        return (entry_id, position, address, "pending", None, None, None, None, None, "", 0, now,
                None, now)  # fmt: skip
    reply = refusal.reply
    return (
        entry_id,
        position,
        address,
        RecipientState.FAILED.value,
        refusal.outcome.value,
        reply.code if reply else None,
        reply.enhanced_code if reply else None,
        reply.text if reply else None,
        refusal.phase.value,
        refusal.explanation or describe_status(refusal),
        0,
        None,
        None,
        now,
    )


def recipient_of(row: Sequence[Any]) -> OutboxRecipient:
    """The recipient a row of ``RECIPIENT_COLUMNS`` holds."""
    (_, position, address, state, outcome, code, enhanced, text, phase, explanation, attempts,
     due_at, dot_at, updated_at) = row  # fmt: skip
    return OutboxRecipient(
        address=address,
        position=int(position),
        state=RecipientState(state),
        outcome=Outcome(outcome) if outcome else None,
        reply=Reply(int(code), enhanced, text or "") if code is not None else None,
        phase=Phase(phase) if phase else None,
        explanation=explanation or "",
        attempts=int(attempts),
        due_at=due_at,
        dot_at=dot_at,
        updated_at=float(updated_at),
    )


def entry_of(row: Sequence[Any], recipients: list[OutboxRecipient]) -> OutboxEntry:
    """The entry a row of ``ENTRY_COLUMNS`` holds, with its recipients (read separately)."""
    (entry_id, state, message_id, sender, content, key, attempts, created_at, updated_at, due_at,
     expires_at, last_error, metadata) = row  # fmt: skip
    return OutboxEntry(
        id=int(entry_id),
        state=EntryState(state),
        message_id=message_id,
        sender=sender,
        recipients=tuple(recipients),
        content=bytes(content),
        idempotency_key=key,
        attempts=int(attempts),
        created_at=float(created_at),
        updated_at=float(updated_at),
        due_at=due_at,
        expires_at=float(expires_at),
        last_error=last_error or "",
        metadata=metadata_of(metadata),
    )


def metadata_of(text: str | None) -> MappingProxyType[str, Any]:
    """The entry's metadata column (JSON text), read-only."""
    if not text or text == "{}":
        return _NO_METADATA  # most entries have none: no JSON parse for them
    return MappingProxyType(json.loads(text))


# Shared by every entry without metadata: read-only and empty, so nothing can leak.
_NO_METADATA: MappingProxyType[str, Any] = MappingProxyType({})


def update_row(update: RecipientUpdate, entry_id: int, now: float) -> tuple[object, ...]:
    """The parameters of the recipient UPDATE in ``leases.apply_settlement``."""
    reply = update.reply
    return (
        update.state.value,
        update.outcome.value if update.outcome else None,
        reply.code if reply else None,
        reply.enhanced_code if reply else None,
        reply.text if reply else None,
        update.phase.value if update.phase else None,
        update.explanation,
        update.attempts,
        update.due_at,
        update.dot_at,
        1 if update.dot_at is None else 0,  # no mark, no token
        now,
        entry_id,
        update.position,
    )
