"""Helpers for testing code that sends mail with reliable-smtp.

* :class:`FakeClock` - inject as ``clock=``/``sleep=`` so retries take no time;
* :class:`LocalSMTPServer` - a real SMTP server on 127.0.0.1 (TLS, AUTH, scripted
  faults); needs the ``testing`` extra: ``pip install 'reliable-smtp[testing]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clock import FakeClock

if TYPE_CHECKING:
    from .server import Fault, LocalSMTPServer, ReceivedMessage, ServerTLS

__all__ = ["FakeClock", "Fault", "LocalSMTPServer", "ReceivedMessage", "ServerTLS"]

_SERVER_NAMES = {"Fault", "LocalSMTPServer", "ReceivedMessage", "ServerTLS"}


def __getattr__(name: str) -> Any:
    # The server needs aiosmtpd and trustme (the testing extra); import it only when asked.
    if name in _SERVER_NAMES:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
