"""The transport contract.

A transport delivers one rendered message to the recipients of one envelope and
reports, per recipient, what the server said. It is the only layer that does
I/O. Subclass :class:`Transport` and implement :meth:`Transport.deliver`; that is
all a test double needs.

Contract for :meth:`Transport.deliver`:

* Return a :class:`~reliable_smtp.DeliveryReport` with a status for **every**
  envelope recipient once the transaction reached the recipients (per-recipient
  refusals, a refused or lost message after DATA, an ambiguous final dot).
* Raise a :class:`~reliable_smtp.DeliveryError` subclass when the transaction
  failed for everyone before any recipient could receive the message (connect,
  TLS, EHLO, AUTH, MAIL, a lost link before the final dot).
* Never let a foreign exception (aiosmtplib, OSError, ssl, subprocess) escape:
  translate it at the transport's boundary with ``raise ... from exc``.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import TypeVar

from ..envelope import Envelope
from ..errors import TransportClosedError
from ..result import DeliveryReport

__all__ = ["Transport"]

_SelfTransport = TypeVar("_SelfTransport", bound="Transport")


class Transport(abc.ABC):
    """Base class of every transport. Async; use it through a mailer or ``async with``."""

    #: A short name for reports and logs (``smtp://host:587``, ``memory``...); no secrets.
    name: str = "transport"
    #: True when ``deliver`` calls :func:`~reliable_smtp.transports._commit.before_final_dot`
    #: right before its commit point (the outbox worker then records the "dot about to be
    #: sent" mark at that instant). False: the worker marks every recipient before calling
    #: ``deliver``, which after a crash can only give a false "ambiguous", never a duplicate.
    marks_final_dot: bool = False
    _closed: bool = False

    @abc.abstractmethod
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        """Deliver ``content`` (RFC 5322 bytes, CRLF line endings) to ``envelope``."""

    async def aclose(self) -> None:
        """Release connections and resources. Closing twice is fine."""
        self._closed = True

    def _after_fork(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Called in a child process after ``fork``: forget (never close) inherited connections."""

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(
                f"{self.name} transport is closed; create a new one (or a new mailer) to send"
            )

    async def __aenter__(self: _SelfTransport) -> _SelfTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
