"""The public API is exactly the pinned lists below: reliable_smtp and reliable_smtp.testing.

Adding or removing a public name is a decision about what users may rely on, so
these tests fail on any change until the pin is updated in the same commit.
"""

from __future__ import annotations

from types import ModuleType

import reliable_smtp
import reliable_smtp.testing

#: ``reliable_smtp.__all__``. Update deliberately, in the same change as the API.
PUBLIC_API = [
    "AddressProblem",
    "AmbiguousDeliveryError",
    "AsyncMailer",
    "AsyncOutbox",
    "Attachment",
    "Attempt",
    "AttemptFinished",
    "AttemptStarted",
    "AuthOrConfigError",
    "Completed",
    "ConfigurationError",
    "ConnectionFailedError",
    "DeliveryError",
    "DeliveryReport",
    "EntryNotFoundError",
    "EntryState",
    "EntryStateError",
    "Envelope",
    "FailoverTransport",
    "FileTransport",
    "InsecureConfigurationWarning",
    "InvalidAddressError",
    "InvalidMessageError",
    "Mailer",
    "MailerHooks",
    "MailerSettings",
    "MemoryTransport",
    "Message",
    "MockTransport",
    "OpenTelemetryHooks",
    "Outbox",
    "OutboxEntry",
    "OutboxError",
    "OutboxLimits",
    "OutboxRecipient",
    "OutboxSchedule",
    "OutboxStats",
    "OutboxUnavailableError",
    "OutboxWorker",
    "Outcome",
    "PermanentError",
    "Phase",
    "PoolExhaustedError",
    "ProtocolError",
    "RateLimit",
    "RecipientCheck",
    "RecipientPolicy",
    "RecipientState",
    "RecipientStatus",
    "RecipientsRejectedError",
    "ReliableSMTPError",
    "RenderedMessage",
    "Reply",
    "RetryPolicy",
    "RoundRobinTransport",
    "SMTPTimeoutError",
    "SMTPTransport",
    "SendFinished",
    "SendOutcome",
    "SendResult",
    "SendResultOrError",
    "SendStarted",
    "SendmailTransport",
    "SentMessage",
    "SessionEvent",
    "TLSMode",
    "ThrottledError",
    "TransientError",
    "Transport",
    "TransportClosedError",
    "Verdict",
    "__version__",
    "classify",
    "explain",
    "extract_trace_context",
    "inject_trace_context",
    "observe_outbox",
    "render",
    "use_trace_context",
]

#: ``reliable_smtp.testing.__all__``. Update deliberately, in the same change as the API.
TESTING_API = [
    "CONTRACT_RULES",
    "FakeClock",
    "Fault",
    "LocalSMTPServer",
    "Outbox",
    "OutboxAttachment",
    "OutboxMessage",
    "ReceivedMessage",
    "ScriptEntry",
    "ScriptError",
    "ScriptStep",
    "ScriptedCall",
    "ScriptedTransport",
    "ServerTLS",
    "TextMatch",
    "TransportContractError",
    "TransportFactory",
    "accept",
    "check_transport",
    "check_transport_sync",
    "disconnect",
    "no_retry_waits",
    "recorded_waits",
    "reply",
    "timeout",
]


def assert_exports_exactly(module: ModuleType, pinned: list[str]) -> None:
    names = list(module.__all__)
    added = sorted(set(names) - set(pinned))
    removed = sorted(set(pinned) - set(names))
    assert (added, removed) == ([], []), (
        f"{module.__name__}.__all__ changed: added {added}, removed {removed}. The public "
        "API is pinned in tests/test_exported_members.py: if this change is deliberate, "
        "update the pin there in the same commit (and say so in the CHANGELOG)."
    )
    assert names == sorted(names), f"keep {module.__name__}.__all__ sorted"
    assert len(names) == len(set(names)), f"{module.__name__}.__all__ lists a name twice"
    # Every listed name resolves: `from module import *` binds exactly the list.
    namespace: dict[str, object] = {}
    exec(f"from {module.__name__} import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(pinned)


def test_public_api_is_exactly_the_pinned_list() -> None:
    assert_exports_exactly(reliable_smtp, PUBLIC_API)


def test_testing_api_is_exactly_the_pinned_list() -> None:
    assert_exports_exactly(reliable_smtp.testing, TESTING_API)


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
        "OutboxWorker",
    ):
        assert name in reliable_smtp.__all__, name


def test_public_objects_are_documented() -> None:
    for name in reliable_smtp.__all__:
        obj = getattr(reliable_smtp, name)
        if callable(obj) and not name.startswith("_"):
            assert obj.__doc__, f"{name} has no docstring"
