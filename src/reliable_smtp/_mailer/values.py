"""The names the mailer's parts share: what a message may be, what a bulk send gives
per message, and the "argument not given" sentinel."""

from __future__ import annotations

from email.message import EmailMessage
from enum import Enum
from typing import TypeAlias

from .._errors import ReliableSMTPError
from .._message import Message
from .._result import SendResult

AnyMessage: TypeAlias = "Message | EmailMessage"
SendResultOrError: TypeAlias = "SendResult | ReliableSMTPError"
"""What ``send_many`` returns per message: the result, or the error that send() would raise."""
SendOutcome: TypeAlias = SendResultOrError
"""Deprecated name of :data:`SendResultOrError` (it is not an :class:`~reliable_smtp.Outcome`);
kept for one release."""


class _Default(Enum):
    """Sentinel type: "argument not given, use the default" (``None`` means "off")."""

    DEFAULT = "default"


DEFAULT = _Default.DEFAULT
