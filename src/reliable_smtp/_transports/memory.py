"""The in-memory transport: an outbox for tests and development.

This module owns :class:`MemoryTransport`, which keeps every message it is given
in its own ``outbox`` and reports every recipient ``SENT``, and
:class:`SentMessage`, one entry of that outbox (the envelope, the exact bytes, and
the parsed message for assertions), public as
:class:`reliable_smtp.testing.SentMessage`.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage

from .._envelope import Envelope
from .._replies import Reply
from .._result import DeliveryReport
from ._commit import before_commit
from .base import Transport

__all__ = ["MemoryTransport", "SentMessage"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SentMessage:
    """One message a :class:`MemoryTransport` accepted.

    ``content`` is exactly the bytes the transport was given; ``message`` parses
    them (once, on first use) with :data:`email.policy.default`, so headers come
    back decoded: ``sent.message["To"]``, ``sent.message.get_body()``.
    """

    envelope: Envelope
    content: bytes
    _parsed: EmailMessage | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def message(self) -> EmailMessage:
        """The content parsed as an :class:`~email.message.EmailMessage` (cached)."""
        if self._parsed is None:
            parsed = email.message_from_bytes(self.content, policy=email.policy.default)
            # message_from_bytes builds EmailMessage under policy.default; the
            # stubs only promise Message.
            assert isinstance(parsed, EmailMessage)
            object.__setattr__(self, "_parsed", parsed)
            return parsed
        return self._parsed

    @property
    def subject(self) -> str | None:
        """The decoded Subject header, or ``None`` when there is none."""
        subject = self.message["Subject"]
        return None if subject is None else str(subject)

    @property
    def sender(self) -> str:
        """The envelope sender (MAIL FROM), which may differ from the From header."""
        return self.envelope.sender

    @property
    def recipients(self) -> tuple[str, ...]:
        """The envelope recipients (RCPT TO), Bcc included."""
        return self.envelope.recipients


#: The reply every stored message gets (immutable: one for all).
_STORED = Reply(250, "2.0.0", "stored in memory")


class MemoryTransport(Transport):
    """Keep messages in ``outbox`` instead of sending them; every recipient is ``SENT``.

    Each instance has its own outbox; it stays readable after :meth:`aclose`.
    ``deliver`` runs on one event loop; reading ``outbox`` from another thread
    (for example the test body behind a sync ``Mailer``) is fine once the send
    has returned.
    """

    name = "memory"
    marks_final_dot = True

    def __init__(self) -> None:
        self.outbox: list[SentMessage] = []

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        """Append the message to ``outbox`` and report every recipient ``SENT``."""
        self.ensure_open()
        await before_commit(envelope, transport_name=self.name)
        self.outbox.append(SentMessage(envelope=envelope, content=bytes(content)))
        return DeliveryReport.all_sent(envelope, transport_name=self.name, reply=_STORED)

    def clear(self) -> None:
        """Empty the outbox."""
        self.outbox.clear()
