"""The one place that reaches below aiosmtplib's public command API.

aiosmtplib's ``SMTP.data()`` writes DATA, waits for 354, writes the body and
waits for the final reply as one call, raising the same exception for a refused
DATA command and for a connection lost after the final dot. Those two cases
mean opposite things: before the dot nothing was delivered (safe to retry);
after it the server may have the message (ambiguous). So the SMTP transport
sends ``DATA`` with the public ``execute_command`` and then, here, writes the
body and reads the final reply itself, with its own (long) timeout.

Written against aiosmtplib 5.1.3 (``SMTPProtocol.write`` and
``SMTPProtocol.read_response``); ``tests/test_wire.py`` fails if an upgrade
changes what this relies on. ``pyproject.toml`` pins ``aiosmtplib<6``.
"""

from __future__ import annotations

import re

from aiosmtplib import SMTP, SMTPServerDisconnected
from aiosmtplib.response import SMTPResponse

__all__ = ["BodyNotSentError", "dot_stuff", "send_body"]

_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


class BodyNotSentError(Exception):
    """The body could not even be handed to the socket: the server has nothing."""


def dot_stuff(content: bytes) -> bytes:
    """CRLF-normalise ``content``, double leading dots (RFC 5321 §4.5.2), add the final dot."""
    body = _LINE_ENDINGS.sub(b"\r\n", content)
    body = _LEADING_DOT.sub(b"..", body)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


async def send_body(smtp: SMTP, content: bytes, *, timeout: float) -> SMTPResponse:
    """Write the message body and the final dot; return the server's final reply.

    Call only after DATA was answered with 354. Raises :class:`BodyNotSentError` when
    the connection was already gone (nothing sent); any exception after that is
    from the post-dot window and must be treated as ambiguous.
    """
    protocol = smtp.protocol
    if protocol is None or not smtp.is_connected:
        raise BodyNotSentError("connection lost before the message body was sent")
    try:
        protocol.write(dot_stuff(content))
    except SMTPServerDisconnected as exc:
        raise BodyNotSentError(str(exc)) from exc
    # No await between write() and read_response(): aiosmtplib 5.1.3 discards data
    # that arrives while no reply is pending, and read_response() marks one pending.
    return await protocol.read_response(timeout=timeout)
