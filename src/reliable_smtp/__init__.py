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

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ._hooks import (
    AttemptFinished,
    AttemptStarted,
    MailerHooks,
    SendFinished,
    SendStarted,
    SessionEvent,
)
from ._outbox import (
    AsyncOutbox,
    EntryNotFoundError,
    EntryState,
    EntryStateError,
    Outbox,
    OutboxEntry,
    OutboxError,
    OutboxRecipient,
    OutboxSchedule,
    OutboxStats,
    OutboxUnavailableError,
    RecipientState,
)
from ._outbox.limits import OutboxLimits
from ._outbox.worker import OutboxWorker
from .envelope import Envelope
from .errors import (
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
from .mailer import AsyncMailer, Completed, Mailer, SendOutcome, SendResultOrError
from .message import Attachment, Message, RenderedMessage, render
from .ratelimit import RateLimit
from .replies import Outcome, Phase, Reply, Verdict, classify, explain
from .result import Attempt, DeliveryReport, RecipientStatus, SendResult
from .retry import RetryPolicy
from .settings import MailerSettings
from .transports.base import Transport
from .transports.composite import FailoverTransport, RoundRobinTransport
from .transports.file import FileTransport
from .transports.memory import MemoryTransport, SentMessage
from .transports.mock import MockTransport
from .transports.sendmail import SendmailTransport
from .transports.smtp import SMTPTransport, TLSMode
from .validation import AddressProblem, RecipientCheck, RecipientPolicy, RecipientsRejectedError

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


def __getattr__(name: str) -> Any:
    if name in _OTEL_NAMES:
        from . import _otel

        return getattr(_otel, name)
    raise AttributeError(f"module 'reliable_smtp' has no attribute {name!r}")


# A library never configures logging; this only keeps Python's last-resort handler from
# printing our warnings (a give-up per failed send) when the application has no logging set up.
logging.getLogger("reliable_smtp").addHandler(logging.NullHandler())

try:
    __version__ = version("reliable-smtp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
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
