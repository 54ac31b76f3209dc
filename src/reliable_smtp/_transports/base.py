"""The transport contract.

A transport delivers one rendered message to the recipients of one envelope and
reports, per recipient, what the server said. It is the only layer that does
I/O. Subclass :class:`Transport` and implement :meth:`Transport.deliver`; that is
all a test double needs.

Contract for :meth:`Transport.deliver`:

* Call :meth:`Transport.ensure_open` first: a closed transport raises
  :class:`~reliable_smtp.TransportClosedError`.
* Return a :class:`~reliable_smtp.DeliveryReport` with a status for **every**
  envelope recipient once the transaction reached the recipients (per-recipient
  refusals, a refused or lost message after DATA, an ambiguous final dot).
* Raise a :class:`~reliable_smtp.DeliveryError` subclass when the transaction
  failed for everyone before any recipient could receive the message (connect,
  TLS, EHLO, AUTH, MAIL, a lost link before the final dot).
* Never let a foreign exception (aiosmtplib, OSError, ssl, subprocess) escape:
  translate it at the transport's boundary with ``raise ... from exc``.

The kit for writing one is public: :meth:`RecipientStatus.from_reply
<reliable_smtp.RecipientStatus.from_reply>` (a recipient's status from a server
reply, classified by the library's reply table), :meth:`DeliveryError.from_reply
<reliable_smtp.DeliveryError.from_reply>`, :meth:`~reliable_smtp.DeliveryError.from_verdict`
and :meth:`~reliable_smtp.DeliveryError.from_connection_loss` (the right error
class for a failure), :meth:`Transport.ensure_open` and
:meth:`Transport.forget_connections` (the fork hook). ``examples/http_api_transport.py``
uses nothing else.
"""

from __future__ import annotations

import abc
import warnings
from types import TracebackType
from typing import TypeVar

from .._envelope import Envelope
from .._errors import TransportClosedError
from .._result import DeliveryReport

__all__ = ["Transport"]

_SelfTransport = TypeVar("_SelfTransport", bound="Transport")


class Transport(abc.ABC):
    """Base class of every transport. Async; use it through a mailer or ``async with``."""

    #: A short name for reports and logs (``smtp://host:587``, ``memory``...); no secrets.
    name: str = "transport"
    #: True when ``deliver`` calls :func:`~reliable_smtp._transports._commit.before_final_dot`
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

    def forget_connections(self) -> None:
        """Drop, without closing, every connection this transport holds. Empty by default.

        The synchronous :class:`~reliable_smtp.Mailer` calls it in a child process after
        ``fork()``: the inherited sockets belong to the parent, so the child must not
        use them or say QUIT on them; it opens its own on the next send. Override it
        if your transport keeps connections (or a pool, or an event loop's objects);
        a transport that wraps others forwards it to each of them.
        """
        if type(self)._after_fork is not Transport._after_fork:
            # A subclass written against the old private spelling still gets its hook.
            _deprecated("overriding Transport._after_fork()", "forget_connections()")
            self._after_fork()

    async def limit_connections(self, maximum: int) -> None:
        """Keep at most ``maximum`` connections open from now on; does nothing by default.

        The outbox worker calls it whenever its share of the outbox's shared connection
        slots (``OutboxLimits(max_connections=...)``) changes, so that the connections it
        no longer has a slot for are closed instead of sitting idle against the
        provider's cap. A pooling transport closes idle connections beyond ``maximum``
        at once and lent ones as they come back, never above its own configured
        maximum; a transport that wraps others forwards it to each of them.
        """
        return  # a transport without connections of its own has nothing to close

    def _after_fork(self) -> None:
        """Deprecated alias of :meth:`forget_connections` (removed in the next release)."""
        _deprecated("Transport._after_fork()", "forget_connections()")
        if type(self).forget_connections is not Transport.forget_connections:
            self.forget_connections()

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._closed

    def ensure_open(self) -> None:
        """Raise :class:`~reliable_smtp.TransportClosedError` if :meth:`aclose` was called.

        Call it first in :meth:`deliver`.
        """
        if self._closed:
            raise TransportClosedError(
                f"{self.name} transport is closed; create a new one (or a new mailer) to send"
            )

    def _check_open(self) -> None:
        """Deprecated alias of :meth:`ensure_open` (removed in the next release)."""
        _deprecated("Transport._check_open()", "ensure_open()")
        self.ensure_open()

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


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=3,
    )
