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

The implementation lives in the private package ``reliable_smtp._message``:
``mailbox`` (address syntax), ``words`` (header text: checks, RFC 2047
encoded-words, RFC 2231 parameters, folding), ``mime`` (the values and MIME
assembly) and ``stdlib`` (stdlib messages). This module is their public face.

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

from ._message import Attachment, Message, RenderedMessage, render
from ._message.mailbox import bare_address as bare_address

# Pickles of a Message made before the split name its rebuild function here.
from ._message.mime import _rebuild_message as _rebuild_message

__all__ = ["Attachment", "Message", "RenderedMessage", "render"]
