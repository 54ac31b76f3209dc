"""A tiny application that sends password-reset mail with reliable-smtp.

The mailer is passed in, so production code hands it an SMTP mailer and tests hand
it one over an outbox or a scripted transport (see ``tests/test_app.py``).

What the application decides, per outcome of the send:

* delivered: done;
* a permanent refusal (``550 5.1.1`` no such mailbox...): the address is bad - tell
  the user to check it, never retry;
* a transient failure that outlasted the mailer's retries (``451``, a dropped
  link, a throttle): keep the message and let a background job send it later;
* an ambiguous loss after the final dot: the server may have it - do not resend
  (the user can ask again), so nobody gets two reset links;
* credentials or configuration (``535``...): an operator must act - let it raise.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from reliable_smtp import (
    AmbiguousDeliveryError,
    AsyncMailer,
    Mailer,
    Message,
    PermanentError,
    TransientError,
)

__all__ = ["PasswordResets", "ResetOutcome", "reset_message"]

logger = logging.getLogger("sample_app")


class ResetOutcome(str, enum.Enum):
    SENT = "sent"
    BAD_ADDRESS = "bad_address"
    DEFERRED = "deferred"
    MAYBE_SENT = "maybe_sent"


def reset_message(email: str, token: str, *, base_url: str, sender: str) -> Message:
    """The password-reset message for ``email``."""
    link = f"{base_url}/reset/{token}"
    return Message(
        sender=sender,
        to=[email],
        subject="Reset your password",
        text=f"Someone asked to reset your password. If it was you, open:\n{link}\n",
        html=f'<p>Someone asked to reset your password. <a href="{link}">Reset it</a>.</p>',
        headers={"X-Entity-Ref-ID": f"reset-{token}"},
    )


@dataclass
class PasswordResets:
    """Sends reset links; keeps the ones to send again later in ``deferred``."""

    mailer: Mailer | AsyncMailer
    base_url: str = "https://app.example.com"
    sender: str = "App <no-reply@app.example.com>"
    deferred: list[Message] = field(default_factory=list)

    def send(self, email: str, token: str) -> ResetOutcome:
        """Send a reset link with a sync :class:`Mailer`."""
        if not isinstance(self.mailer, Mailer):
            raise TypeError("send() needs a Mailer; use send_async() with an AsyncMailer")
        message = reset_message(email, token, base_url=self.base_url, sender=self.sender)
        try:
            self.mailer.send(message)
        except (PermanentError, TransientError, AmbiguousDeliveryError) as error:
            return self._after_failure(message, error)
        return ResetOutcome.SENT

    async def send_async(self, email: str, token: str) -> ResetOutcome:
        """Send a reset link with an :class:`AsyncMailer`."""
        if not isinstance(self.mailer, AsyncMailer):
            raise TypeError("send_async() needs an AsyncMailer; use send() with a Mailer")
        message = reset_message(email, token, base_url=self.base_url, sender=self.sender)
        try:
            await self.mailer.send(message)
        except (PermanentError, TransientError, AmbiguousDeliveryError) as error:
            return self._after_failure(message, error)
        return ResetOutcome.SENT

    def _after_failure(
        self, message: Message, error: PermanentError | TransientError | AmbiguousDeliveryError
    ) -> ResetOutcome:
        if isinstance(error, PermanentError):
            logger.info("reset mail refused for good: %s", error.explanation)
            return ResetOutcome.BAD_ADDRESS
        if isinstance(error, AmbiguousDeliveryError):
            logger.warning("reset mail may have been delivered: %s", error)
            return ResetOutcome.MAYBE_SENT
        # Retries ran out (or a quota says "not now"): a job sends it later.
        logger.warning("reset mail deferred: %s", error)
        self.deferred.append(message)
        return ResetOutcome.DEFERRED
