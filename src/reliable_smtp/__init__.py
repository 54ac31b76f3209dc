"""reliable-smtp: send transactional email and know exactly what happened to every message.

::

    from reliable_smtp import Mailer, Message, SMTPTransport

    with Mailer(SMTPTransport("smtp.example.com", username="app", password="...")) as mailer:
        result = mailer.send(Message(sender="App <no-reply@example.com>",
                                     to=["alice@example.org"], subject="Your code",
                                     text="123456"))
        result.accepted                      # who has it
        result.recipients["alice@example.org"].reply   # what the server said

This module is the one list of public names; implementation modules are free to
change. Test helpers live in :mod:`reliable_smtp.testing`.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ._diagnostics import CheckReport, check_connection
from ._envelope import Envelope
from ._errors import (
    AmbiguousDeliveryError,
    AuthOrConfigError,
    ConfigurationError,
    ConnectionFailedError,
    DeliveryError,
    InsecureConfigurationWarning,
    InvalidAddressError,
    InvalidMessageError,
    PermanentError,
    PoolExhaustedError,
    ProtocolError,
    ReliableSMTPError,
    SMTPTimeoutError,
    ThrottledError,
    TransientError,
    TransportClosedError,
)
from ._hooks import (
    AttemptFinished,
    AttemptStarted,
    MailerHooks,
    SendFinished,
    SendStarted,
    SessionEvent,
)
from ._mailer import AsyncMailer, Completed, Mailer, SendResultOrError
from ._message import Attachment, Message, RenderedMessage, render
from ._outbox import (
    AsyncOutbox,
    EntryNotFoundError,
    EntryState,
    EntryStateError,
    Outbox,
    OutboxEntry,
    OutboxError,
    OutboxSchedule,
    OutboxUnavailableError,
    RecipientState,
)
from ._outbox.limits import OutboxLimits
from ._outbox.worker import OutboxWorker
from ._ratelimit import RateLimit
from ._replies import Outcome, Phase, Reply, Verdict, classify, explain
from ._result import Attempt, DeliveryReport, RecipientStatus, SendResult
from ._retry import RetryPolicy
from ._settings import MailerSettings
from ._transports.base import Transport
from ._transports.composite import FailoverTransport, RoundRobinTransport, is_server_failure
from ._transports.file import FileTransport
from ._transports.memory import MemoryTransport
from ._transports.sendmail import SendmailTransport
from ._transports.smtp import SMTPTransport, TLSMode
from ._validation import RecipientPolicy, RecipientsRejectedError

if TYPE_CHECKING:
    from ._otel import (
        OpenTelemetryHooks,
        extract_trace_context,
        inject_trace_context,
        observe_outbox,
        use_trace_context,
    )

#: Imported on first use: they import the OpenTelemetry API (when installed), whose
#: propagators are looked up at import, which applications without tracing never pay.
_OTEL_NAMES = frozenset(
    {
        "OpenTelemetryHooks",
        "extract_trace_context",
        "inject_trace_context",
        "observe_outbox",
        "use_trace_context",
    }
)


#: Names that left this list, still importable for one release with a DeprecationWarning:
#: name -> (module, name) to import instead.
_MOVED = {
    "MockTransport": ("reliable_smtp.testing", "MockTransport"),
    "SendOutcome": ("reliable_smtp", "SendResultOrError"),
    "SentMessage": ("reliable_smtp.testing", "SentMessage"),
}


def __getattr__(name: str) -> Any:
    if name in _OTEL_NAMES:
        from . import _otel

        return getattr(_otel, name)
    if name in _MOVED:
        home, new_name = _MOVED[name]
        warnings.warn(
            f"reliable_smtp.{name} is deprecated and goes in the next release; "
            f"use `from {home} import {new_name}`",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), new_name)
    raise AttributeError(f"module 'reliable_smtp' has no attribute {name!r}")


# A library never configures logging; this only keeps Python's last-resort handler from
# printing our warnings (a give-up per failed send) when the application has no logging set up.
logging.getLogger("reliable_smtp").addHandler(logging.NullHandler())

try:
    __version__ = version("reliable-smtp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
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
