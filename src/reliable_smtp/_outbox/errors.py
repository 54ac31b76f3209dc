"""The outbox's errors, a branch of :class:`~reliable_smtp.ReliableSMTPError`.

::

    OutboxError                              base of every outbox error
    ├── OutboxUnavailableError               cannot open / connect / lock the database, or it is
    │                                        corrupt; says which URL (password redacted) and what
    │                                        to check
    ├── EntryNotFoundError (KeyError)        no entry with that id
    ├── EntryStateError (ValueError)         the operator action does not fit the entry's state
    └── LeaseLostError                       this worker no longer owns the entry (its lease
                                             expired and was recovered); the worker must not send

A bad URL is a :class:`~reliable_smtp.ConfigurationError` naming
``RELIABLE_SMTP_OUTBOX_URL``.
"""

from __future__ import annotations

from .._errors import ReliableSMTPError

__all__ = [
    "EntryNotFoundError",
    "EntryStateError",
    "LeaseLostError",
    "OutboxError",
    "OutboxUnavailableError",
]


class OutboxError(ReliableSMTPError):
    """Base class of the durable outbox's errors."""


class OutboxUnavailableError(OutboxError):
    """The outbox database cannot be used: unreachable, locked too long, or corrupt.

    ``url`` is the outbox URL with any password redacted. Nothing was written:
    an ``enqueue()`` that raises this did not queue the message.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class EntryNotFoundError(OutboxError, KeyError):
    """No outbox entry has this id (it may have been purged)."""

    def __init__(self, entry_id: int) -> None:
        super().__init__(f"no outbox entry with id {entry_id} (purged, or another outbox?)")
        self.entry_id = entry_id

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class EntryStateError(OutboxError, ValueError):
    """An operator action that does not fit the entry's current state."""


class LeaseLostError(OutboxError):
    """The worker's lease on an entry is gone: another worker may own it now.

    Raised by ``mark_final_dot``; the worker must drop the SMTP connection
    without sending the final dot.
    """
