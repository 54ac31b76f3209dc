"""The message model and its renderer.

This module owns what an application hands to the mailer and how it becomes
bytes on the wire:

* :class:`Message` - a validated, immutable description of one email (sender,
  recipients, subject, text/HTML bodies, attachments, extra headers);
* :class:`Attachment` - one attached file or inline image;
* :func:`render` - turn a :class:`Message` (or a stdlib
  :class:`email.message.EmailMessage`) into RFC 5322 bytes plus the envelope
  facts a transport needs, as a :class:`RenderedMessage`.

Rendering is on the hot path of every send, so :func:`render` assembles MIME by
hand (string building, :mod:`binascii` quoted-printable and base64) instead of
going through the stdlib ``email.policy.default`` header machinery, which costs
several hundred microseconds per message. Every header value is validated once,
when the :class:`Message` is built; the renderer then only formats.

Layout:

* ``mailbox`` - one address with its display name: RFC 5322 mailbox syntax as
  this library accepts it;
* ``words`` - header text: its checks, RFC 2047 encoded-words, RFC 2231
  parameters, folding within 998 octets;
* ``mime`` - :class:`Message`, :class:`Attachment`, :class:`RenderedMessage`;
* ``assembly`` - the MIME assembly of a :class:`Message`: its bytes;
* ``stdlib`` - rendering a stdlib :class:`email.message.Message`;
* this package - :func:`render`, which takes either.

Conventions (documented once, relied upon everywhere):

* One address per entry. ``to="a@x.com"`` is one recipient;
  ``to="a@x.com, b@y.com"`` is rejected (give a list) rather than split, so a
  display name with an unquoted comma can never silently become two recipients.
  Each entry is ``local@domain`` or ``Display Name <local@domain>``; a display
  name with ``, ; : @ < > [ ]`` or ``\\`` must be quoted
  (``"Doe, John" <john@example.com>``), which also makes
  ``"a@b.com" <evil@x.com>`` mean evil@x.com, never a@b.com.
* Display names are text: they are never decoded (``=?utf-8?q?...?=`` given as
  a name stays those characters) and are encoded as RFC 2047 encoded-words
  only when they are not plain ASCII.
* Non-ASCII addresses (``jörg@example.de``) are written as raw UTF-8 (RFC 6532);
  such a message needs a server that offers SMTPUTF8.
* Message-IDs and Content-IDs are stored and reported *without* angle brackets
  (``abc123@example.com``); the renderer adds them in the headers. Inputs are
  accepted with or without brackets.
* No header text holds a line break of any kind (any character
  ``str.splitlines()`` breaks at) or NUL, in a :class:`Message` or a stdlib
  message: :func:`reliable_smtp.envelope.line_break_problem` is the one rule.
* No line is longer than 998 octets (RFC 5322 §2.1.1). Headers fold at spaces,
  a run of spaces moving to the next line with the word after it; text that
  cannot fold is encoded (Subject, display names, non-ASCII values) or, where
  it cannot be encoded either (a structured value, a header name, an ID),
  refused when the :class:`Message` is built.
"""

from __future__ import annotations

import email.message

from .._errors import InvalidMessageError
from .assembly import render_message
from .mailbox import bare_address
from .mime import Attachment, Message, RenderedMessage
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
