"""The public API is exactly the sorted list in reliable_smtp.__all__."""

from __future__ import annotations

import reliable_smtp
import reliable_smtp.testing


def test_all_is_sorted_and_complete() -> None:
    names = reliable_smtp.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(reliable_smtp, name), name


def test_design_names_are_public() -> None:
    # The names DESIGN.md fixes (checks and docs rely on them).
    for name in (
        "AsyncMailer",
        "Mailer",
        "Message",
        "SMTPTransport",
        "SendmailTransport",
        "MemoryTransport",
        "FileTransport",
        "TLSMode",
        "RetryPolicy",
        "MailerSettings",
        "SendResult",
        "DeliveryError",
        "Transport",
        "Envelope",
        "DeliveryReport",
        # The durable outbox (issue 13).
        "Outbox",
        "AsyncOutbox",
        "OutboxEntry",
        "EntryState",
        "OutboxSchedule",
        "OutboxError",
        "OutboxUnavailableError",
        "EntryNotFoundError",
        "LeaseLostError",
        "OutboxWorker",
    ):
        assert name in reliable_smtp.__all__, name


def test_public_objects_are_documented() -> None:
    for name in reliable_smtp.__all__:
        obj = getattr(reliable_smtp, name)
        if callable(obj) and not name.startswith("_"):
            assert obj.__doc__, f"{name} has no docstring"


def test_testing_module_has_its_own_all() -> None:
    for name in reliable_smtp.testing.__all__:
        assert getattr(reliable_smtp.testing, name) is not None
