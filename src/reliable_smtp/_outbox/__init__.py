"""The durable outbox: messages that survive crashes, deploys and day-long outages.

Layout (private; the public names are exported from :mod:`reliable_smtp`):

* ``model`` - states, entries, claims, counts (pure values);
* ``schedule`` - the retry schedule and the one settle/recovery rule (pure);
* ``store`` - the :class:`Store` interface and :func:`open_store`;
* ``sql`` - the SQL both stores share, with ``leases`` (claim to settle),
  ``limit_rows`` (the shared limits' rows), ``operator_actions``, ``pool``
  (connections) and ``rows`` (rows <-> values);
* ``sqlite`` / ``postgres`` - the two stores; ``schema`` - their DDL and migrations;
* ``facade`` - :class:`Outbox` and :class:`AsyncOutbox`, what applications use;
* ``worker`` - :class:`OutboxWorker`, with ``attempt`` (one claim's send),
  ``group_commit``, ``worker_limits`` (its part in ``limits.OutboxLimits``) and
  ``wakeup``.
"""

from __future__ import annotations

from .errors import (
    EntryNotFoundError,
    EntryStateError,
    LeaseLostError,
    OutboxError,
    OutboxUnavailableError,
)
from .facade import AsyncOutbox, Outbox
from .model import (
    Claim,
    EntryState,
    NewEntry,
    OutboxEntry,
    OutboxRecipient,
    OutboxStats,
    RecipientState,
)
from .schedule import OutboxSchedule

__all__ = [
    "AsyncOutbox",
    "Claim",
    "EntryNotFoundError",
    "EntryState",
    "EntryStateError",
    "LeaseLostError",
    "NewEntry",
    "Outbox",
    "OutboxEntry",
    "OutboxError",
    "OutboxRecipient",
    "OutboxSchedule",
    "OutboxStats",
    "OutboxUnavailableError",
    "RecipientState",
]
