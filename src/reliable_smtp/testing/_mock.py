"""The mock transport: describe the server as a handler function.

This module owns :class:`MockTransport`, whose replies come from a function the
test writes (the shape of ``httpx.MockTransport``). Each reply becomes a status by
:meth:`~reliable_smtp.RecipientStatus.from_reply`, as in every other transport.

The handler is called as ``handler(envelope, content)``, plain or ``async``, and
returns one of:

* a :class:`~reliable_smtp.DeliveryReport` - returned as it is;
* a :class:`~reliable_smtp.Reply` - the reply to the final dot, for every
  recipient, classified by :func:`~reliable_smtp.classify` (2xx is ``SENT``);
* a mapping ``{recipient: Reply}`` - one reply per recipient, as if given to its
  RCPT; recipients left out are ``SENT`` with ``250 2.0.0 OK``;
* ``None`` - every recipient ``SENT``.

It may also raise a :class:`~reliable_smtp.DeliveryError` subclass to fail the
whole transaction; that error propagates unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeAlias

from .._envelope import Envelope
from .._errors import DeliveryError, PermanentError
from .._replies import Phase, Reply
from .._result import DeliveryReport, RecipientStatus
from .._transports.base import Transport

__all__ = ["MockHandler", "MockResponse", "MockTransport"]

#: What a :class:`MockTransport` handler may return.
MockResponse: TypeAlias = DeliveryReport | Reply | Mapping[str, Reply] | None
#: A :class:`MockTransport` handler: ``handler(envelope, content)``, plain or async.
MockHandler: TypeAlias = Callable[[Envelope, bytes], MockResponse | Awaitable[MockResponse]]

_OK = Reply(250, "2.0.0", "OK")


class MockTransport(Transport):
    """A transport whose server is ``handler``; see the module docstring for its returns.

    ``calls`` records every ``(envelope, content)`` it was given, in order,
    including calls whose handler raised.

    An exception from the handler that is not a :class:`~reliable_smtp.DeliveryError`
    is raised as :class:`~reliable_smtp.PermanentError` (with the original as
    ``__cause__``): a transport never lets a foreign exception escape, and the
    mailer only knows how to classify the error tree. ``PermanentError`` because a
    bug in a handler does not go away on retry.
    """

    name = "mock"

    def __init__(self, handler: MockHandler) -> None:
        self.handler = handler
        self.calls: list[tuple[Envelope, bytes]] = []

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        """Call the handler and turn what it returns into a report."""
        self.ensure_open()
        self.calls.append((envelope, content))
        try:
            response = self.handler(envelope, content)
            if inspect.isawaitable(response):
                response = await response
        except DeliveryError:
            raise
        except Exception as exc:
            raise PermanentError(
                f"MockTransport handler raised {type(exc).__name__}: {exc}",
                phase=Phase.DATA_END,
                transport_name=self.name,
                explanation="a bug in the test's handler; fix the handler",
            ) from exc
        try:
            return self._report(envelope, response)
        except (TypeError, ValueError) as exc:
            raise PermanentError(
                f"MockTransport handler returned an unusable response: {exc}",
                phase=Phase.DATA_END,
                transport_name=self.name,
                explanation="a bug in the test's handler; fix what it returns",
            ) from exc

    def _report(self, envelope: Envelope, response: object) -> DeliveryReport:
        if response is None:
            return DeliveryReport.all_sent(envelope, transport_name=self.name)
        if isinstance(response, DeliveryReport):
            return response
        if isinstance(response, Reply):
            return DeliveryReport(
                recipients={
                    r: RecipientStatus.from_reply(
                        r, response, phase=Phase.DATA_END, transport_name=self.name
                    )
                    for r in envelope.recipients
                },
                transport_name=self.name,
                final_reply=response,
            )
        if isinstance(response, Mapping):
            return self._per_recipient(envelope, response)
        raise TypeError(
            f"MockTransport handler returned {response!r}; return a DeliveryReport, a Reply, "
            "a mapping of recipient to Reply, or None"
        )

    def _per_recipient(
        self, envelope: Envelope, replies: Mapping[object, object]
    ) -> DeliveryReport:
        unknown = [r for r in replies if r not in envelope.recipients]
        if unknown:
            raise ValueError(
                f"MockTransport handler replied for {unknown!r}, not in the envelope "
                f"{list(envelope.recipients)!r}"
            )
        statuses: dict[str, RecipientStatus] = {}
        for recipient in envelope.recipients:
            reply = replies.get(recipient, _OK)
            if not isinstance(reply, Reply):
                raise TypeError(
                    f"MockTransport handler's reply for {recipient!r} is {reply!r}, not a Reply"
                )
            # A refusal is a reply to RCPT; an acceptance counts once the message is in.
            phase = Phase.DATA_END if reply.severity == 2 else Phase.RCPT
            statuses[recipient] = RecipientStatus.from_reply(
                recipient, reply, phase=phase, transport_name=self.name
            )
        accepted = any(status.accepted for status in statuses.values())
        return DeliveryReport(
            recipients=statuses, transport_name=self.name, final_reply=_OK if accepted else None
        )
