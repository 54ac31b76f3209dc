"""The message model and its renderer (private: the public names are in
:mod:`reliable_smtp.message` and :mod:`reliable_smtp`).

Layout:

* ``mailbox`` - one address with its display name: RFC 5322 mailbox syntax as
  this library accepts it;
* ``words`` - header text: its checks, RFC 2047 encoded-words, RFC 2231
  parameters, folding within 998 octets;
* ``mime`` - :class:`Message`, :class:`Attachment`, :class:`RenderedMessage`
  and the MIME assembly of a :class:`Message`;
* ``stdlib`` - rendering a stdlib :class:`email.message.Message`;
* this package - :func:`render`, which takes either.

The conventions every module relies on are documented once, in
:mod:`reliable_smtp.message`.
"""

from __future__ import annotations

import email.message

from ..errors import InvalidMessageError
from .mailbox import bare_address
from .mime import Attachment, Message, RenderedMessage, render_message
from .stdlib import render_stdlib
from .words import check_domain

__all__ = ["Attachment", "Message", "RenderedMessage", "bare_address", "render"]


def render(
    message: Message | email.message.Message, *, domain: str | None = None
) -> RenderedMessage:
    """Render ``message`` to RFC 5322 bytes and the envelope facts a transport needs.

    ``domain`` is the right-hand side of a generated Message-ID (default: the
    sender's domain). A Date and a Message-ID are added when the message has
    none. Bcc never appears in the output.

    A stdlib :class:`email.message.EmailMessage` (or compat32
    :class:`email.message.Message`), under any policy, is accepted too: it is
    rendered from a copy (the caller's object is never changed) through
    ``email.policy.SMTP`` (``SMTPUTF8`` when an address is non-ASCII); the
    envelope sender is its ``Sender`` or first ``From`` address, the recipients
    its To, Cc and Bcc addresses (Resent-To/Cc/Bcc when it has a Resent-Date).

    Raises :class:`~reliable_smtp.InvalidMessageError` (or its subclass
    :class:`~reliable_smtp.InvalidAddressError`) when the message cannot be sent
    as it is: for a stdlib message also when a header holds a line break or is
    malformed (what the email package raises for it, ``HeaderWriteError``
    included, becomes this error, naming the header).
    """
    if domain is not None:
        check_domain(domain)
    try:
        if isinstance(message, Message):
            return render_message(message, domain)
        if isinstance(message, email.message.Message):
            return render_stdlib(message, domain)
    except UnicodeEncodeError as exc:
        raise InvalidMessageError(
            f"the message contains text that cannot be encoded ({exc.reason}: "
            f"{exc.object[exc.start : exc.end]!r}); remove lone surrogates from the text"
        ) from exc
    raise InvalidMessageError(
        f"render() takes a reliable_smtp.Message or an email.message.EmailMessage, "
        f"got {type(message).__name__}"
    )
