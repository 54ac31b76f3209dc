"""The public API is exactly the pinned lists below: reliable_smtp and reliable_smtp.testing.

Adding or removing a public name is a decision about what users may rely on, so
these tests fail on any change until the pin is updated in the same commit.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import pytest

import reliable_smtp
import reliable_smtp.testing
from reliable_smtp._outbox import OutboxRecipient, OutboxStats
from reliable_smtp._validation import AddressProblem, RecipientCheck

#: ``reliable_smtp.__all__``. Update deliberately, in the same change as the API.
PUBLIC_API = [
    "AmbiguousDeliveryError",
    "AsyncMailer",
    "AsyncOutbox",
    "Attachment",
    "Attempt",
    "AttemptFinished",
    "AttemptStarted",
    "AuthOrConfigError",
    "CheckReport",
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
    "OpenTelemetryHooks",
    "Outbox",
    "OutboxEntry",
    "OutboxError",
    "OutboxLimits",
    "OutboxSchedule",
    "OutboxUnavailableError",
    "OutboxWorker",
    "Outcome",
    "PermanentError",
    "Phase",
    "PoolExhaustedError",
    "ProtocolError",
    "RateLimit",
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
    "SendResult",
    "SendResultOrError",
    "SendStarted",
    "SendmailTransport",
    "SessionEvent",
    "TLSMode",
    "ThrottledError",
    "TransientError",
    "Transport",
    "TransportClosedError",
    "Verdict",
    "__version__",
    "check_connection",
    "classify",
    "explain",
    "extract_trace_context",
    "inject_trace_context",
    "is_server_failure",
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
    "MockTransport",
    "Outbox",
    "OutboxAttachment",
    "OutboxMessage",
    "ReceivedMessage",
    "ScriptEntry",
    "ScriptError",
    "ScriptStep",
    "ScriptedCall",
    "ScriptedTransport",
    "SentMessage",
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


#: Names that left ``reliable_smtp.__all__`` and still resolve for one release, with a
#: DeprecationWarning naming the import to write instead: name -> (module, name).
DEPRECATED = {
    "MockTransport": ("reliable_smtp.testing", "MockTransport"),
    "SendOutcome": ("reliable_smtp", "SendResultOrError"),
    "SentMessage": ("reliable_smtp.testing", "SentMessage"),
}


@pytest.mark.parametrize(("name", "new_home"), DEPRECATED.items())
def test_a_moved_name_still_resolves_with_a_warning_naming_its_new_home(
    name: str, new_home: tuple[str, str]
) -> None:
    module, new_name = new_home
    with pytest.warns(
        DeprecationWarning, match=rf"reliable_smtp\.{name} .*from {module} import {new_name}"
    ) as caught:
        value = getattr(reliable_smtp, name)
    assert value is getattr(importlib.import_module(module), new_name)
    # The warning points at the caller's line, not at the shim.
    assert caught[0].filename == __file__
    assert name not in reliable_smtp.__all__


def test_from_import_of_a_moved_name_warns() -> None:
    with pytest.warns(DeprecationWarning, match="reliable_smtp.testing import MockTransport"):
        from reliable_smtp import MockTransport
    assert MockTransport is reliable_smtp.testing.MockTransport


def test_public_names_do_not_warn_and_unknown_names_still_fail() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in reliable_smtp.__all__:
            getattr(reliable_smtp, name)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        reliable_smtp.NoSuchName  # noqa: B018


def test_cut_names_live_in_their_own_modules() -> None:
    # Values users only read (entry.recipients, outbox.stats(), error.problems, what
    # RecipientPolicy.check() decided), never released from the top level nor documented
    # there: they left the list without a shim and stay where they are defined.
    for value in (OutboxRecipient, OutboxStats, AddressProblem, RecipientCheck):
        assert not hasattr(reliable_smtp, value.__name__), value.__name__
        assert value.__doc__


def test_is_server_failure_is_the_composite_rule() -> None:
    from reliable_smtp._transports.composite import is_server_failure

    assert reliable_smtp.is_server_failure is is_server_failure
