"""What your tests need to test an application that sends mail with reliable-smtp.

No network, no monkeypatching: hand the application's mailer one of these.

* :class:`Outbox` - a transport that keeps every message, with assertion helpers
  (``find``, ``one``, ``assert_sent``, ``assert_nothing_sent``) and parsed access
  (:class:`OutboxMessage`: ``text``, ``html``, ``attachments``, ``headers``...);
* :class:`ScriptedTransport` - replays a script of server behaviour, one entry per
  delivery: :func:`accept`, :func:`reply` (to the whole transaction or to one
  recipient), :func:`disconnect` and :func:`timeout` (before or after the final
  dot); it reports exactly what :class:`~reliable_smtp.SMTPTransport` would;
* :class:`MockTransport` - its server is a function you write,
  ``handler(envelope, content)``, returning a :class:`~reliable_smtp.Reply`, one
  reply per recipient, a :class:`~reliable_smtp.DeliveryReport` or ``None``;
* :class:`SentMessage` - one message a :class:`~reliable_smtp.MemoryTransport`
  kept (``envelope``, ``content``); :class:`OutboxMessage` adds the parsed view;
* :func:`no_retry_waits` - a mailer retries without waiting, inside a ``with``
  block; :func:`recorded_waits` - it waits on a :class:`FakeClock` instead, which
  records every wait;
* :class:`FakeClock` - a clock that moves only when something sleeps on it
  (``clock=fake, sleep=fake.sleep``);
* :func:`check_transport` / :func:`check_transport_sync` - the conformance check
  for your own :class:`~reliable_smtp.Transport` subclass;
* :class:`LocalSMTPServer` - a real SMTP server on 127.0.0.1 (TLS, AUTH, scripted
  replies, drops and hangs); it needs the ``testing`` extra:
  ``pip install 'reliable-smtp[testing]'``, and is imported only when used.

With pytest, the ``reliable_smtp`` plugin (installed with the package) provides
the fixtures ``smtp_outbox``, ``outbox_mailer``, ``async_outbox_mailer`` and
``smtp_server``; see :mod:`reliable_smtp.testing.pytest_plugin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._transports.memory import SentMessage
from ._clock import FakeClock
from ._conformance import (
    CONTRACT_RULES,
    TransportContractError,
    TransportFactory,
    check_transport,
    check_transport_sync,
)
from ._mock import MockTransport
from ._outbox import Outbox, OutboxAttachment, OutboxMessage, TextMatch
from ._scripted import (
    ScriptedCall,
    ScriptedTransport,
    ScriptEntry,
    ScriptError,
    ScriptStep,
    accept,
    disconnect,
    reply,
    timeout,
)
from ._waits import no_retry_waits, recorded_waits

if TYPE_CHECKING:
    from ._server import Fault, LocalSMTPServer, ReceivedMessage, ServerTLS

__all__ = [
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

# The server needs aiosmtpd and trustme (the testing extra): import it only when asked,
# so everything else here works without them.
_SERVER_NAMES = frozenset({"Fault", "LocalSMTPServer", "ReceivedMessage", "ServerTLS"})


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        from . import _server as server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
