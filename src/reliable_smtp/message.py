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

import base64
import binascii
import copy
import dataclasses
import email.errors
import email.message
import email.policy
import itertools
import mimetypes
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.header import Header
from email.utils import format_datetime, getaddresses
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from .envelope import check_no_line_breaks, dedupe_addresses, line_break_problem
from .errors import (
    ConfigurationError,
    InvalidAddressError,
    InvalidMessageError,
    ReliableSMTPError,
)

__all__ = ["Attachment", "Message", "RenderedMessage", "render"]

# RFC 5322 §2.1.1: lines SHOULD be at most 78 characters and MUST be at most 998.
_SOFT_LIMIT = 78
_HARD_LIMIT = 998
# RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets.
_MAX_ADDRESS_OCTETS = 254
# A literal (unencoded) header word longer than this is sent as encoded-words
# instead, so that folding can keep every line near the 78-character limit.
_MAX_LITERAL_WORD = 76
# Encoded-words are capped below RFC 2047's 75 so that "Reply-To: " plus one
# encoded-word still fits in 78 characters.
_MAX_ENCODED_WORD = 68
# The longest header name that still leaves room on its line for any first word
# the renderer writes after it (literal words are capped at _MAX_LITERAL_WORD).
_MAX_HEADER_NAME = _HARD_LIMIT - len(": ") - _MAX_LITERAL_WORD
# "Message-ID: <id>" and "Content-ID: <id>" are single, unfoldable lines.
_MAX_ID = _HARD_LIMIT - len("Message-ID: <>")

_ADDRESS_WHAT = {
    "to": "to address",
    "cc": "cc address",
    "bcc": "bcc address",
    "reply_to": "reply_to address",
}
# Shared by every Message without extra headers: immutable and empty, so nothing can leak.
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})

# An addr-spec as this library accepts it: no whitespace, no controls (C1 included), no
# specials; non-ASCII is allowed (SMTPUTF8, RFC 6531/6532). Quoted local parts
# and domain literals are deliberately unsupported.
_ADDR_SPEC = re.compile(
    r'[^\s\x00-\x1f\x7f-\x9f<>()\[\],;:\\"@]+@[^\s\x00-\x1f\x7f-\x9f<>()\[\],;:\\"@]+'
)
# Characters that end or split a mailbox when they appear unquoted in a display name.
_PHRASE_SPECIALS = re.compile(r"[,;:@<>\[\]\\]")
# Display names that can be written as-is: atoms (RFC 5322 atext) separated by single spaces.
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# RFC 5322 field-name: printable ASCII except ':' (and no space).
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_DOT_ATOM_TEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_MSG_ID = re.compile(rf"{_DOT_ATOM_TEXT}@{_DOT_ATOM_TEXT}")
_ID_DOMAIN = re.compile(_DOT_ATOM_TEXT)
_CONTENT_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+")
_MIME_NAME = r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+"
_CONTENT_TYPE = re.compile(rf"({_MIME_NAME})/({_MIME_NAME})\s*(;[ -~]*)?")
# ASCII control characters other than HTAB: invalid in a raw header value.
_HEADER_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A fold in a parsed header value: a line break (as the email parser splits lines)
# followed by a space or tab.
_FOLDED_LINE_BREAK = re.compile(r"(?:\r\n|\r|\n)(?=[ \t])")

# Headers the Message writes itself, and what to do instead of setting them.
_RESERVED_HEADERS = {
    "from": "use Message(sender=...) instead",
    "to": "use Message(to=...) instead",
    "cc": "use Message(cc=...) instead",
    "bcc": "use Message(bcc=...) instead",
    "reply-to": "use Message(reply_to=...) instead",
    "subject": "use Message(subject=...) instead",
    "date": "use Message(date=...) instead",
    "message-id": "use Message(message_id=...) instead",
    "mime-version": "remove it: the renderer always writes MIME-Version: 1.0",
    "content-type": (
        "use Message(text=..., html=..., attachments=...) instead: the renderer builds the "
        "MIME structure"
    ),
    "content-transfer-encoding": (
        "remove it: the renderer picks 7bit, quoted-printable or base64 for each part"
    ),
}

# RFC 2047 "Q" encoding restricted to the characters allowed in a phrase
# (§5 rule 3), so the same encoded-words are valid in a Subject and a display name.
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_ASCII = tuple(
    chr(i) if chr(i) in _Q_SAFE else ("_" if i == 0x20 else f"={i:02X}") for i in range(128)
)
_EW_OVERHEAD = len("=?utf-8?q?") + len("?=")


# --------------------------------------------------------------------------- validation


def _check_header_value(value: object, *, what: str) -> str:
    """A header-bound str without line breaks of any kind or NUL (they would inject headers).

    The renderer would encode most of them safely, but a decoded header that
    still holds a line break becomes a new header wherever it is refolded
    (Python's email package splits at all of them), and stdlib messages must
    refuse them anyway: one rule for every path.
    """
    if not isinstance(value, str):
        raise InvalidMessageError(f"{what} must be a str, got {type(value).__name__}")
    problem = line_break_problem(value)
    if problem is not None:
        raise InvalidMessageError(f"{what} {value!r} {problem}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidMessageError(
                f"{what} {value!r} contains a lone surrogate that cannot be encoded as UTF-8; "
                "decode the text properly before building the message"
            ) from exc
    return value


def _bad_address(value: str, what: str, problem: str) -> InvalidAddressError:
    return InvalidAddressError(
        f"{what} {value!r} {problem}; give one address as 'local@domain' or "
        "'Display Name <local@domain>'",
        address=value,
        reason=problem,
    )


def _check_addr_spec(addr: str, value: str, what: str) -> str:
    if _ADDR_SPEC.fullmatch(addr) is None:
        raise _bad_address(
            value, what, f"has {addr!r}, which is not an address of the form local@domain"
        )
    domain = addr.rpartition("@")[2]
    if domain.startswith(".") or domain.endswith(".") or ".." in domain:
        raise _bad_address(value, what, f"has an invalid domain {domain!r}")
    size = len(addr) if addr.isascii() else len(addr.encode("utf-8", "surrogatepass"))
    if size > _MAX_ADDRESS_OCTETS:
        raise _bad_address(
            value, what, f"is {size} octets long; SMTP allows at most {_MAX_ADDRESS_OCTETS}"
        )
    if not addr.isascii():
        try:
            addr.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad_address(value, what, "contains a lone surrogate") from None
    return addr


def _unquote_phrase(text: str, value: str, what: str) -> str:
    """The display name before '<', with quoted-strings unquoted; rejects unquoted specials."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            i += 1
            while True:
                if i >= n:
                    raise _bad_address(value, what, "has an unclosed '\"' in its display name")
                char = text[i]
                if char == '"':
                    break
                if char == "\\" and i + 1 < n:
                    i += 1
                    char = text[i]
                out.append(char)
                i += 1
        elif _PHRASE_SPECIALS.match(char):
            raise _bad_address(
                value,
                what,
                f"has {char!r} outside quotes in its display name: give one address per entry, "
                "and quote a display name with specials ('\"Doe, John\" <john@example.com>')",
            )
        else:
            out.append(char)
        i += 1
    return "".join(out)


def _parse_mailbox(value: object, *, what: str) -> tuple[str, str]:
    """``(display_name, addr_spec)`` of one ``'addr'`` or ``'Name <addr>'`` string."""
    if not isinstance(value, str):
        raise InvalidAddressError(
            f"{what} must be a str such as 'Name <local@domain>', got {type(value).__name__}",
            address=repr(value),
            reason="not a str",
        )
    check_no_line_breaks(value, what=what)
    text = value.strip()
    if not text:
        raise InvalidAddressError(
            f"{what} is empty; give an address such as 'App <no-reply@example.com>'",
            address=value,
            reason="empty",
        )
    if _ADDR_SPEC.fullmatch(text) is not None:
        return "", _check_addr_spec(text, value, what)
    if not text.endswith(">"):
        if "," in text or ";" in text:
            raise _bad_address(
                value,
                what,
                "looks like several addresses in one string; give one address per list entry "
                "(to=['a@example.com', 'b@example.com'])",
            )
        raise _bad_address(value, what, "is not an address of the form local@domain")
    if '"' not in text:
        # Fast path: no quoted-string, so the first '<' starts the address.
        start = text.find("<")
        name = text[:start]
        special = _PHRASE_SPECIALS.search(name) if start >= 0 else None
        if special is not None:
            raise _bad_address(
                value,
                what,
                f"has {special.group()!r} outside quotes in its display name: give one address "
                "per entry, and quote a display name with specials "
                "('\"Doe, John\" <john@example.com>')",
            )
    else:
        start = _find_angle(text, value, what)
        name = _unquote_phrase(text[:start], value, what)
    if start < 0:
        raise _bad_address(value, what, "ends with '>' but has no '<'")
    addr = text[start + 1 : -1].strip()
    return name.strip(), _check_addr_spec(addr, value, what)


def bare_address(value: str, *, what: str) -> str:
    """The ``local@domain`` of one ``'local@domain'`` or ``'Name <local@domain>'`` string.

    The same rules as every address field of :class:`Message`; raises
    :class:`~reliable_smtp.InvalidAddressError` naming ``what`` otherwise.
    """
    return _parse_mailbox(value, what=what)[1]


def _find_angle(text: str, value: str, what: str) -> int:
    """Index of the first '<' outside a quoted-string, or -1."""
    in_quote = False
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if in_quote:
            if char == "\\":
                i += 1
            elif char == '"':
                in_quote = False
        elif char == '"':
            in_quote = True
        elif char == "<":
            return i
        i += 1
    if in_quote:
        raise _bad_address(value, what, "has an unclosed '\"' in its display name")
    return -1


def _check_header_name(name: object) -> str:
    if not isinstance(name, str) or _HEADER_NAME.fullmatch(name) is None:
        raise InvalidMessageError(
            f"header name {name!r} is not valid: use printable ASCII without spaces or ':' "
            "(for example 'List-Unsubscribe')"
        )
    if len(name) > _MAX_HEADER_NAME:
        raise InvalidMessageError(
            f"header name {name[:40]!r}... is {len(name)} characters long; at most "
            f"{_MAX_HEADER_NAME} fit on a header line (RFC 5322 allows {_HARD_LIMIT} octets)"
        )
    instead = _RESERVED_HEADERS.get(name.lower())
    if instead is not None:
        raise InvalidMessageError(
            f"headers[{name!r}] duplicates a header the Message writes itself; {instead}"
        )
    return name


def _check_extra_header(name: str, value: object) -> str:
    text = _check_header_value(value, what=f"headers[{name!r}]")
    if text.isascii():
        control = _HEADER_CONTROLS.search(text)
        if control is not None:
            raise InvalidMessageError(
                f"headers[{name!r}] {text!r} contains the control character "
                f"{control.group()!r}; remove it"
            )
        # The renderer folds only at spaces, keeping each run of spaces with the
        # word after it: the longest such piece must fit on one line.
        longest = max(map(len, _words(text)))
        if len(name) + 2 + longest > _HARD_LIMIT:
            raise InvalidMessageError(
                f"headers[{name!r}] has {longest} characters that cannot be folded (a word "
                f"and the spaces before it); a header line may not exceed {_HARD_LIMIT} octets "
                "(RFC 5322 §2.1.1), so shorten the word or collapse the spaces"
            )
    return text


def _check_message_id(value: object) -> str:
    text = _check_header_value(value, what="message_id").strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if _MSG_ID.fullmatch(text) is None:
        raise InvalidMessageError(
            f"message_id {value!r} is not of the form 'unique-part@domain' (printable ASCII, "
            "no spaces, brackets or quotes); leave it None to have one generated"
        )
    if len(text) > _MAX_ID:
        raise InvalidMessageError(
            f"message_id is {len(text)} characters long; at most {_MAX_ID} fit on the "
            f"Message-ID line (RFC 5322 allows {_HARD_LIMIT} octets): leave it None to have "
            "one generated"
        )
    return text


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """A file attached to a :class:`Message`, or an inline image the HTML refers to.

    ``content_type`` defaults to a guess from ``filename`` (``application/octet-stream``
    when unknown). An ``inline`` attachment gets a ``content_id`` when none is given:
    refer to it from the HTML as ``<img src="cid:{attachment.content_id}">``.
    ``content_id`` is stored without angle brackets.
    """

    filename: str
    content: bytes
    content_type: str | None = None
    inline: bool = False
    content_id: str | None = None

    def __post_init__(self) -> None:
        filename = _check_header_value(self.filename, what="attachment filename")
        if not filename:
            raise InvalidMessageError(
                "attachment filename is empty; give the name the recipient will see"
            )
        content: object = self.content
        if isinstance(content, (bytearray, memoryview)):
            object.__setattr__(self, "content", bytes(content))
        elif not isinstance(content, bytes):
            hint = " (encode it first: content=text.encode())" if isinstance(content, str) else ""
            raise InvalidMessageError(
                f"attachment {filename!r}: content must be bytes, got "
                f"{type(content).__name__}{hint}"
            )
        object.__setattr__(self, "content_type", self._content_type(filename))
        if self.content_id is not None:
            cid = _check_header_value(self.content_id, what="attachment content_id").strip()
            if cid.startswith("<") and cid.endswith(">"):
                cid = cid[1:-1]
            if _CONTENT_ID.fullmatch(cid) is None:
                raise InvalidMessageError(
                    f"attachment {filename!r}: content_id {self.content_id!r} must be printable "
                    "ASCII without spaces, brackets or quotes (for example 'logo@example.com')"
                )
            if len(cid) > _MAX_ID:
                raise InvalidMessageError(
                    f"attachment {filename!r}: content_id is {len(cid)} characters long; at "
                    f"most {_MAX_ID} fit on the Content-ID line (RFC 5322 allows {_HARD_LIMIT} "
                    "octets)"
                )
            object.__setattr__(self, "content_id", cid)
        elif self.inline:
            object.__setattr__(self, "content_id", f"{secrets.token_hex(12)}@reliable-smtp")

    def _content_type(self, filename: str) -> str:
        given = self.content_type
        if given is None:
            guessed = mimetypes.guess_type(filename, strict=False)[0]
            # message/* bodies may not be base64-encoded (RFC 2046 §5.2.1), and
            # multipart/* is not a file: send such files as opaque bytes.
            if guessed is None or guessed.startswith(("message/", "multipart/")):
                return "application/octet-stream"
            return guessed
        text = _check_header_value(given, what=f"attachment {filename!r} content_type").strip()
        match = _CONTENT_TYPE.fullmatch(text)
        if match is None:
            raise InvalidMessageError(
                f"attachment {filename!r}: content_type {given!r} is not a MIME type such as "
                "'application/pdf' (type/subtype, optional ASCII parameters)"
            )
        maintype = match.group(1).lower()
        if maintype in ("message", "multipart"):
            raise InvalidMessageError(
                f"attachment {filename!r}: content_type {given!r} cannot be sent base64-encoded; "
                "use 'application/octet-stream' (or leave content_type None)"
            )
        content_type = f"{maintype}/{match.group(2).lower()}{match.group(3) or ''}"
        # Rendered as "Content-Type: <content_type>;", folded only at its spaces.
        longest = max(map(len, _words(content_type + ";")))
        if len("Content-Type: ") + longest > _HARD_LIMIT:
            raise InvalidMessageError(
                f"attachment {filename!r}: content_type has {longest} characters without a "
                f"space; a header line may not exceed {_HARD_LIMIT} octets (RFC 5322 §2.1.1), "
                "so shorten its parameters"
            )
        return content_type

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        inline: bool = False,
        content_id: str | None = None,
    ) -> Attachment:
        """Read ``path`` now and attach it under its file name. Raises ``OSError`` if unreadable."""
        file = Path(path)
        return cls(
            filename=file.name,
            content=file.read_bytes(),
            content_type=content_type,
            inline=inline,
            content_id=content_id,
        )


@dataclass(frozen=True, slots=True)
class _Mailboxes:
    """The parsed ``(display_name, addr_spec)`` pairs of a Message, validated once."""

    sender: tuple[str, str]
    to: tuple[tuple[str, str], ...]
    cc: tuple[tuple[str, str], ...]
    bcc: tuple[tuple[str, str], ...]
    reply_to: tuple[tuple[str, str], ...]
    envelope_sender: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One email, validated when built. Render it with :func:`render`.

    Address fields (``sender``, ``to``, ``cc``, ``bcc``, ``reply_to``) take
    ``'local@domain'`` or ``'Display Name <local@domain>'``; ``to``/``cc``/``bcc``/
    ``reply_to`` take one such string or a sequence of them and are stored as
    tuples. A string holding several addresses (``'a@x.com, b@y.com'``) is
    rejected: give a list. Bcc recipients receive the message but never appear
    in its headers.

    ``headers`` are extra headers (``List-Unsubscribe``, ``X-Entity-Ref-ID``...);
    they may not repeat a header the Message writes itself. ``message_id`` is
    given without angle brackets (brackets are stripped); ``None`` generates one
    at render time, as does ``date=None`` (a given ``date`` must be timezone-aware).
    ``envelope_sender`` is the bounce address for MAIL FROM (default: the
    sender's address; ``""`` for the null sender).
    """

    sender: str
    to: Sequence[str] | str = ()
    cc: Sequence[str] | str = ()
    bcc: Sequence[str] | str = ()
    reply_to: Sequence[str] | str = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: Sequence[Attachment] = ()
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)
    message_id: str | None = None
    date: datetime | None = None
    envelope_sender: str | None = None
    _mailboxes: _Mailboxes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.sender, str) and not self.sender.strip():
            raise InvalidAddressError(
                "sender is empty; give the From address, e.g. sender='App <no-reply@example.com>'",
                address=self.sender,
                reason="empty",
            )
        sender = _parse_mailbox(self.sender, what="sender")
        to = self._mailbox_list("to")
        cc = self._mailbox_list("cc")
        bcc = self._mailbox_list("bcc")
        reply_to = self._mailbox_list("reply_to")
        if not (to or cc or bcc):
            raise InvalidMessageError(
                "the message has no recipients: give at least one of to, cc or bcc"
            )
        object.__setattr__(
            self,
            "_mailboxes",
            _Mailboxes(sender, to, cc, bcc, reply_to, self._envelope_sender(sender[1])),
        )

        _check_header_value(self.subject, what="subject")
        if self.text is not None and not isinstance(self.text, str):
            raise InvalidMessageError(f"text must be a str or None, got {type(self.text).__name__}")
        if self.html is not None and not isinstance(self.html, str):
            raise InvalidMessageError(f"html must be a str or None, got {type(self.html).__name__}")

        if self.attachments:
            attachments = tuple(self.attachments)
            for attachment in attachments:
                if not isinstance(attachment, Attachment):
                    raise InvalidMessageError(
                        "attachments must be Attachment objects, got "
                        f"{type(attachment).__name__} (use Attachment(...) or "
                        "Attachment.from_path(...))"
                    )
            object.__setattr__(self, "attachments", attachments)
        elif type(self.attachments) is not tuple:
            object.__setattr__(self, "attachments", ())

        if not isinstance(self.headers, Mapping):
            raise InvalidMessageError(
                f"headers must be a mapping of str to str, got {type(self.headers).__name__}"
            )
        if self.headers:
            headers = {
                _check_header_name(name): _check_extra_header(name, value)
                for name, value in self.headers.items()
            }
            object.__setattr__(self, "headers", MappingProxyType(headers))
        elif type(self.headers) is not MappingProxyType:
            object.__setattr__(self, "headers", _NO_HEADERS)

        if self.message_id is not None:
            object.__setattr__(self, "message_id", _check_message_id(self.message_id))
        if self.date is not None:
            if not isinstance(self.date, datetime):
                raise InvalidMessageError(
                    f"date must be a datetime, got {type(self.date).__name__}"
                )
            if self.date.utcoffset() is None:
                raise InvalidMessageError(
                    f"date {self.date!r} has no timezone; give an aware datetime, "
                    "e.g. datetime.now(timezone.utc)"
                )

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuild through __init__ (re-validating) so pickle and copy work: the
        # read-only headers proxy cannot be pickled itself.
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        fields["headers"] = dict(self.headers)
        return (_rebuild_message, (fields,))

    def _mailbox_list(self, field_name: str) -> tuple[tuple[str, str], ...]:
        """Normalize one address field to a tuple of str and return its parsed mailboxes."""
        value = getattr(self, field_name)
        if isinstance(value, str):
            entries: tuple[str, ...] = (value,)
        elif isinstance(value, (bytes, bytearray)) or not isinstance(value, Iterable):
            raise InvalidMessageError(
                f"{field_name} must be a str or a sequence of str, got {type(value).__name__}"
            )
        else:
            entries = tuple(value)
        object.__setattr__(self, field_name, entries)
        if not entries:
            return ()
        what = _ADDRESS_WHAT[field_name]
        return tuple([_parse_mailbox(entry, what=what) for entry in entries])

    def _envelope_sender(self, sender_address: str) -> str:
        if self.envelope_sender is None:
            return sender_address
        if self.envelope_sender == "":
            return ""  # the null reverse-path <>
        display, address = _parse_mailbox(self.envelope_sender, what="envelope_sender")
        if display:
            raise _bad_address(
                self.envelope_sender,
                "envelope_sender",
                "has a display name; give the bare bounce address (local@domain)",
            )
        return address


def _rebuild_message(fields: dict[str, Any]) -> Message:
    return Message(**fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderedMessage:
    """A message ready for a transport.

    ``content`` is the RFC 5322 message (CRLF line endings, no Bcc header);
    ``message_id`` is the Message-ID *without* angle brackets (``abc@example.com``);
    ``sender`` is the bare envelope sender (MAIL FROM; ``""`` for the null sender);
    ``recipients`` are the bare To, Cc and Bcc addresses, deduplicated, in that order.
    """

    content: bytes = field(repr=False)
    message_id: str
    sender: str
    recipients: tuple[str, ...]


# --------------------------------------------------------------------------- header formatting


def _fold(name: str, words: Sequence[str]) -> str:
    """``name: w1 w2 ...`` with CRLF-folding before a space when a line passes 78 characters.

    Folding only ever replaces a separating space by CRLF + that space, so
    unfolding (RFC 5322 §2.2.3) restores the value exactly.
    """
    if not words:
        return f"{name}: \r\n"
    line = f"{name}: {words[0]}"
    if len(words) == 1:
        return line + "\r\n"
    lines: list[str] = []
    for word in words[1:]:
        if word and len(line) + 1 + len(word) > _SOFT_LIMIT:
            lines.append(line)
            line = " " + word
        else:
            line = f"{line} {word}"
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 encoded-words for ``text`` (utf-8, Q or B, whichever is shorter).

    Each word is self-contained (never splits a character) and short enough to
    fold. RFC 2047 decoders drop the space between adjacent encoded-words, so
    spaces of the text are kept inside the words; words are split after a space
    where possible, so that decoders which keep that space (CPython's
    ``policy.default`` in display names, gh-128110) show a double space rather
    than a space in the middle of a word.
    """
    q_pieces = [_Q_ASCII[ord(c)] if c < "\x80" else _q_char(c) for c in text]
    q_costs = list(map(len, q_pieces))
    byte_costs = [1 if c < "\x80" else len(c.encode("utf-8")) for c in text]
    use_q = sum(q_costs) <= (sum(byte_costs) + 2) // 3 * 4
    costs = q_costs if use_q else byte_costs
    # Q text is measured in characters; B text in bytes before base64 (4 per 3).
    budget = _MAX_ENCODED_WORD - _EW_OVERHEAD
    if not use_q:
        budget = budget // 4 * 3

    cuts = [0]
    size = 0
    last_space = -1
    for index, cost in enumerate(costs):
        while size + cost > budget and index > cuts[-1]:
            cut = last_space + 1 if last_space >= cuts[-1] else index
            cuts.append(cut)
            size = sum(costs[cut:index])
            last_space = -1
        size += cost
        if text[index] == " ":
            last_space = index
    cuts.append(len(text))

    spans = itertools.pairwise(cuts)
    if use_q:
        return ["=?utf-8?q?" + "".join(q_pieces[a:b]) + "?=" for a, b in spans]
    return [
        "=?utf-8?b?" + base64.b64encode(text[a:b].encode("utf-8")).decode("ascii") + "?="
        for a, b in spans
    ]


def _q_char(char: str) -> str:
    return "".join(f"={b:02X}" for b in char.encode("utf-8"))


def _words(text: str) -> list[str]:
    """``text`` as words that rejoined with single spaces give ``text`` back.

    A run of spaces stays with the word after it (a trailing run with the last
    word), so that :func:`_fold`, which breaks lines only at the joining spaces,
    never writes a line of spaces alone, and a long run makes one long word that
    the callers encode or refuse instead of one line over 998 octets.
    """
    words = text.split(" ")
    if "" not in words:  # the common case: single spaces only
        return words
    merged: list[str] = []
    spaces = ""
    for word in words:
        if word:
            merged.append(spaces + word)
            spaces = ""
        else:
            spaces += " "
    if not merged:
        return [text]
    merged[-1] += spaces
    return merged


def _unstructured_words(text: str) -> list[str]:
    if not text:
        return []
    # Literal only when a parser will give back exactly this text: printable
    # ASCII (no tabs or controls), nothing that looks like an encoded-word, no
    # whitespace at either end (parsers strip it), and words short enough to
    # fold. Anything else becomes encoded-words, which fold anywhere.
    if (
        text.isascii()
        and text.isprintable()
        and "=?" not in text
        and text[0] != " "
        and text[-1] != " "
    ):
        words = _words(text)
        if max(map(len, words)) <= _MAX_LITERAL_WORD:
            return words
    return _encoded_words(text)


def _phrase_words(name: str) -> list[str]:
    """A display name as header words: atoms, one quoted-string, or encoded-words."""
    if name.isascii() and name.isprintable() and "=?" not in name:
        if _ATOMS.fullmatch(name) is not None:
            words = name.split(" ")
            if max(map(len, words)) <= _MAX_LITERAL_WORD:
                return words
        else:
            quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            if len(quoted) <= _MAX_LITERAL_WORD:
                return [quoted]
    return _encoded_words(name)


def _mailbox_words(mailboxes: Sequence[tuple[str, str]]) -> list[str]:
    words: list[str] = []
    for name, addr in mailboxes:
        if words:
            words[-1] += ","
        if name:
            words.extend(_phrase_words(name))
            words.append(f"<{addr}>")
        else:
            words.append(addr)
    return words


def _header_words(value: str) -> list[str]:
    # Extra headers may be structured (List-Unsubscribe), so ASCII values are
    # only folded at existing spaces, never encoded; non-ASCII values can only
    # be unstructured text and become encoded-words.
    if value.isascii():
        return _words(value) if value else []
    return _encoded_words(value)


def _param_words(attribute: str, value: str) -> list[str]:
    """``attribute="value"``, or RFC 2231 ``attribute*=utf-8''...`` (with continuations)."""
    # RFC 2231 for anything a quoted-string cannot carry plainly, and for text
    # that some parsers (CPython's included) would decode as an encoded-word.
    plain_ok = value.isascii() and value.isprintable() and "=?" not in value
    if plain_ok and '"' not in value and "\\" not in value:
        plain = f'{attribute}="{value}"'
        if len(plain) <= _MAX_LITERAL_WORD:
            return [plain]
    encoded = "utf-8''" + quote(value, safe="")
    single = f"{attribute}*={encoded}"
    if len(single) <= _MAX_LITERAL_WORD:
        return [single]
    words: list[str] = []
    budget = _MAX_LITERAL_WORD - len(attribute) - 8
    start = 0
    while start < len(encoded):
        end = min(start + budget, len(encoded))
        # Never split a %XX escape between two continuations.
        percent = encoded.rfind("%", end - 2, end)
        if end < len(encoded) and percent != -1:
            end = percent
        words.append(f"{attribute}*{len(words)}*={encoded[start:end]};")
        start = end
    words[-1] = words[-1][:-1]
    return words


# --------------------------------------------------------------------------- MIME assembly

# A part is its header block (str, CRLF-terminated lines) and its encoded body.
_Part = tuple[str, bytes]


def _text_part(text: str, subtype: str) -> _Part:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # 7bit when it is safe: ASCII, no NUL, lines within 998 octets, and no "=_",
    # the prefix of every boundary, so no boundary can occur in a 7bit body.
    # Quoted-printable and base64 can never produce "=_".
    if (
        text.isascii()
        and "\x00" not in text
        and "=_" not in text
        and (len(text) <= _HARD_LIMIT or max(map(len, text.split("\n"))) <= _HARD_LIMIT)
    ):
        cte = "7bit"
        body = text.replace("\n", "\r\n").encode("ascii")
    else:
        cte = "quoted-printable"
        body = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    return (
        f"Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n",
        body,
    )


def _attachment_part(attachment: Attachment) -> _Part:
    content_type = attachment.content_type or "application/octet-stream"
    filename = attachment.filename
    disposition = "inline" if attachment.inline else "attachment"
    lines = [
        _fold("Content-Type", [*_words(content_type + ";"), *_param_words("name", filename)]),
        "Content-Transfer-Encoding: base64\r\n",
        _fold("Content-Disposition", [disposition + ";", *_param_words("filename", filename)]),
    ]
    if attachment.content_id is not None:
        lines.append(f"Content-ID: <{attachment.content_id}>\r\n")
    # encodebytes writes 76-character lines ending in LF; SMTP needs CRLF.
    body = base64.encodebytes(attachment.content).rstrip(b"\n").replace(b"\n", b"\r\n")
    return "".join(lines), body


def _multipart(subtype: str, boundary: str, parts: Sequence[_Part], extra: str = "") -> _Part:
    delimiter = b"--" + boundary.encode("ascii")
    chunks: list[bytes] = []
    for headers, body in parts:
        chunks += (delimiter, b"\r\n", headers.encode("utf-8"), b"\r\n", body, b"\r\n")
    chunks += (delimiter, b"--\r\n")
    header = f'Content-Type: multipart/{subtype};{extra}\r\n boundary="{boundary}"\r\n'
    return header, b"".join(chunks)


def _body(message: Message) -> _Part:
    token = secrets.token_hex(12)
    inline = [a for a in message.attachments if a.inline]
    regular = [a for a in message.attachments if not a.inline]

    html = _text_part(message.html, "html") if message.html is not None else None
    if html is not None and inline:
        related = [html, *map(_attachment_part, inline)]
        html = _multipart("related", f"=_{token}_r", related, ' type="text/html";')
    elif inline:
        # Nothing refers to them: send them along with the other attachments,
        # keeping their inline disposition.
        regular = list(message.attachments)

    text = _text_part(message.text, "plain") if message.text is not None else None
    body: _Part | None
    if text is not None and html is not None:
        body = _multipart("alternative", f"=_{token}_a", [text, html])
    else:
        body = text or html
    if regular:
        parts = [body] if body is not None else []
        parts += map(_attachment_part, regular)
        body = _multipart("mixed", f"=_{token}_m", parts)
    return body if body is not None else _text_part("", "plain")


# --------------------------------------------------------------------------- render


def _check_domain(domain: object) -> None:
    if not isinstance(domain, str) or _ID_DOMAIN.fullmatch(domain) is None:
        raise ConfigurationError(
            f"domain {domain!r} cannot be used in a Message-ID: give a plain ASCII host name "
            "such as 'mail.example.com'",
            setting="domain",
        )


def _id_domain(domain: str | None, sender_address: str) -> str:
    if domain is not None:
        return domain
    sender_domain = sender_address.rpartition("@")[2]
    if sender_domain.isascii():
        return sender_domain
    try:
        return sender_domain.encode("idna").decode("ascii")
    except UnicodeError:
        # RFC 6532 allows UTF-8 here; it is only a fallback for domains IDNA 2003 rejects.
        return sender_domain


def _render_message(message: Message, domain: str | None) -> RenderedMessage:
    boxes = message._mailboxes
    message_id = message.message_id or (
        f"{secrets.token_hex(16)}@{_id_domain(domain, boxes.sender[1])}"
    )
    date = message.date or datetime.now(timezone.utc)
    lines = [_fold("From", _mailbox_words((boxes.sender,)))]
    if boxes.reply_to:
        lines.append(_fold("Reply-To", _mailbox_words(boxes.reply_to)))
    if boxes.to:
        lines.append(_fold("To", _mailbox_words(boxes.to)))
    if boxes.cc:
        lines.append(_fold("Cc", _mailbox_words(boxes.cc)))
    lines.append(_fold("Subject", _unstructured_words(message.subject)))
    lines.append(f"Date: {format_datetime(date)}\r\nMessage-ID: <{message_id}>\r\n")
    for name, value in message.headers.items():
        lines.append(_fold(name, _header_words(value)))
    lines.append("MIME-Version: 1.0\r\n")
    part_headers, body = _body(message)
    lines.append(part_headers)
    lines.append("\r\n")
    content = "".join(lines).encode("utf-8") + body
    if body and not body.endswith(b"\r\n"):
        content += b"\r\n"
    recipients = dedupe_addresses(addr for _, addr in (*boxes.to, *boxes.cc, *boxes.bcc))
    return RenderedMessage(
        content=content,
        message_id=message_id,
        sender=boxes.envelope_sender,
        recipients=recipients,
    )


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
        _check_domain(domain)
    try:
        if isinstance(message, Message):
            return _render_message(message, domain)
        if isinstance(message, email.message.Message):
            return _render_stdlib(message, domain)
    except UnicodeEncodeError as exc:
        raise InvalidMessageError(
            f"the message contains text that cannot be encoded ({exc.reason}: "
            f"{exc.object[exc.start : exc.end]!r}); remove lone surrogates from the text"
        ) from exc
    raise InvalidMessageError(
        f"render() takes a reliable_smtp.Message or an email.message.EmailMessage, "
        f"got {type(message).__name__}"
    )


# --------------------------------------------------------------------------- stdlib messages

# What the email package raises, from its own bugs or its strictness, while it
# parses, folds or writes a malformed header (an IndexError for "From: a@",
# AttributeError for a compat32 Header under a modern policy, HeaderWriteError
# on Python 3.13+ when a folded header would start a new line, ...). Each becomes
# an InvalidMessageError naming the header: nothing reaches the wire.
_STDLIB_FAILURES = (
    LookupError,
    ValueError,
    TypeError,
    AttributeError,
    AssertionError,
    RecursionError,
    email.errors.MessageError,
)


# A line break in a folded header that does not continue it (what Python 3.13's
# generator refuses with HeaderWriteError).
_NEW_LINE_IN_FOLDED = re.compile(rb"\r\n(?![ \t])|\r(?!\n)|(?<!\r)\n")


def _preview(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:80]) + "..."


def _check_stdlib_headers(message: email.message.Message) -> None:
    """Refuse invalid header names and header values with a line break, in every MIME part.

    Stdlib messages are refused rather than encoded: the renderer does not fold
    them itself, and the email package's folders split a value at every line
    break str.splitlines() knows (so a FF or U+2028 in a compat32 Subject, or in
    a parsed .eml, would be written as a new header line on Python < 3.13).
    """
    for part in message.walk():
        for name, value in part.raw_items():
            if _HEADER_NAME.fullmatch(name) is None:
                raise InvalidMessageError(
                    f"header name {name!r} is not valid: use printable ASCII without spaces or ':'"
                )
            text = str(value)
            if text.isprintable():
                continue
            # Parsed messages keep their folding (a line break, then a space or
            # tab) in raw values; any other line break would start a new header.
            problem = line_break_problem(_FOLDED_LINE_BREAK.sub("", _raw_text(name, text)))
            if problem is not None:
                raise InvalidMessageError(f"header {name} {_preview(text)} {problem}")


def _raw_text(name: str, text: str) -> str:
    """The text a receiver reads in a header value that came from bytes.

    A message parsed from bytes keeps 8-bit header bytes as surrogate escapes
    and they are written back as they were, so they are checked as what they
    are on the wire: UTF-8 (RFC 6532). Other 8-bit bytes cannot be read the same
    way by every receiver (0x85 is NEL in Latin-1), so they are refused.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8")
        except UnicodeError:
            raise InvalidMessageError(
                f"header {name} {_preview(text)} has 8-bit bytes that are not UTF-8; re-encode "
                "the header as UTF-8 or as RFC 2047 encoded-words (=?charset?q?...?=)"
            ) from None
    return text


def _stdlib_addresses(message: email.message.Message, name: str) -> list[str]:
    found: list[str] = []
    for value in message.get_all(name, ()):
        structured = getattr(value, "addresses", None)
        if structured is not None:  # a policy.default AddressHeader: already parsed
            pairs = [(a.display_name, a.addr_spec) for a in structured]
        else:
            pairs = getaddresses([str(value)])
        for _, addr in pairs:
            if addr:
                found.append(_check_addr_spec(addr, str(value), f"{name} address"))
    return found


def _shared_immutables(message: email.message.Message) -> dict[int, Any]:
    # Policies and header objects are immutable and the renderer never changes
    # them; sharing them makes the deep copy ~20x cheaper than a plain deepcopy.
    memo: dict[int, Any] = {}
    for part in message.walk():
        memo[id(part.policy)] = part.policy
        for _, value in part.raw_items():
            memo[id(value)] = value
    return memo


def _writable(name: str, value: Any) -> Any:
    """``value`` as the SMTP policy can write it.

    That policy writes str values as they are (so non-ASCII text would not be
    encoded, and cannot be written at all without SMTPUTF8) and cannot fold a
    compat32 :class:`email.header.Header`. Both become the policy's own header
    objects, which encode what needs encoding; anything else is kept.
    """
    if isinstance(value, Header):
        text = str(value)
    elif isinstance(value, str) and not hasattr(value, "name") and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value  # undecodable bytes of a parsed message: written back as they were
        text = value
    else:
        return value
    return email.policy.SMTP.header_factory(name, "".join(text.splitlines()))


def _make_writable(message: email.message.Message) -> None:
    """Apply :func:`_writable` to every header of every part of ``message``, in place."""
    for part in message.walk():
        items = list(part.raw_items())
        writable = [(name, _writable(name, value)) for name, value in items]
        if all(new is old for (_, new), (_, old) in zip(writable, items, strict=True)):
            continue
        for name in {name for name, _ in items}:
            del part[name]
        for name, value in writable:
            part.set_raw(name, value)


def _header_lines(content: bytes) -> list[bytes]:
    end = content.find(b"\r\n\r\n")
    return content[: end if end >= 0 else len(content)].split(b"\r\n")


def _check_written_headers(expected: Sequence[str], content: bytes) -> None:
    """The header block holds exactly the ``expected`` headers, each line within 998 octets.

    A second line of defence after :func:`_check_stdlib_headers`, which does not
    depend on the Python version: a header object whose ``fold()`` writes
    several header lines, or a folder that splits a value, is caught here.
    """
    written: list[str] = []
    for line in _header_lines(content):
        if line[:1] not in (b" ", b"\t"):
            written.append(line.partition(b":")[0].decode("ascii", "replace"))
        if len(line) > _HARD_LIMIT:
            name = written[-1] if written else "?"
            raise InvalidMessageError(
                f"header {name} is written with a line of {len(line)} octets; SMTP allows "
                f"{_HARD_LIMIT} (RFC 5322 §2.1.1): shorten it, or break up its long words and "
                "runs of spaces"
            )
    written_keys = [name.lower() for name in written]
    expected_keys = [name.lower() for name in expected]
    if written_keys != expected_keys:
        index = 0
        while written_keys[index : index + 1] == expected_keys[index : index + 1]:
            index += 1
        # The header before the first difference is the one that was split.
        culprit = expected[max(index - 1, 0)] if expected else "?"
        raise InvalidMessageError(
            f"header {culprit} would be written as more than one header line (the email "
            f"package wrote {written[index : index + 1] or ['nothing']!r} where "
            f"{expected[index : index + 1] or ['nothing']!r} was expected); remove the line "
            "breaks from its value"
        )


def _unrenderable(message: email.message.Message, exc: BaseException) -> InvalidMessageError:
    """An InvalidMessageError for ``exc``, naming the first header the email package chokes on.

    Runs only on the error path: each header is read the way the message's
    policy reads it and written the way the renderer writes it, one at a time.
    """
    cause = " ".join(f"{type(exc).__name__}: {exc}".split())
    for part in message.walk():
        for name, value in part.raw_items():
            try:
                part.policy.header_fetch_parse(name, value)
                folded = email.policy.SMTPUTF8.fold_binary(name, _writable(name, value))
            except _STDLIB_FAILURES as failure:
                reason = " ".join(f"{type(failure).__name__}: {failure}".split())
            else:
                if _NEW_LINE_IN_FOLDED.search(folded.removesuffix(b"\r\n")) is None:
                    continue
                reason = f"it is written as {folded!r}"
            return InvalidMessageError(
                f"header {name} {_preview(str(value))} is malformed: Python's email package "
                f"cannot read or write it safely ({reason}); correct or remove that header"
            )
    return InvalidMessageError(
        f"the message cannot be rendered ({cause}); build it with email.policy.default and "
        "set_content()/add_attachment()"
    )


def _render_stdlib(message: email.message.Message, domain: str | None) -> RenderedMessage:
    try:
        return _render_checked_stdlib(message, domain)
    except ReliableSMTPError:
        raise
    except _STDLIB_FAILURES as exc:
        raise _unrenderable(message, exc) from exc


def _render_checked_stdlib(message: email.message.Message, domain: str | None) -> RenderedMessage:
    _check_stdlib_headers(message)
    prefix = "Resent-" if message.get("Resent-Date") is not None else ""
    senders = _stdlib_addresses(message, "Sender") or _stdlib_addresses(message, "From")
    if not senders:
        raise InvalidAddressError(
            "the message has no From address; set message['From'] = 'App <no-reply@example.com>'",
            address="",
            reason="no From",
        )
    recipients = dedupe_addresses(
        addr
        for header in ("To", "Cc", "Bcc")
        for addr in _stdlib_addresses(message, prefix + header)
    )
    if not recipients:
        raise InvalidMessageError(
            f"the message has no recipients: give at least one of {prefix}To, {prefix}Cc or "
            f"{prefix}Bcc"
        )

    # Generating a multipart without a boundary sets one on the message, so
    # work on a copy: the caller's object is never changed.
    clone = copy.deepcopy(message, _shared_immutables(message))
    _make_writable(clone)
    del clone["Bcc"]
    del clone["Resent-Bcc"]
    existing_id = clone.get("Message-ID")
    if existing_id is None:
        message_id = f"{secrets.token_hex(16)}@{_id_domain(domain, senders[0])}"
        clone["Message-ID"] = f"<{message_id}>"
    else:
        given = str(existing_id).strip()
        message_id = given.removeprefix("<").removesuffix(">")
        # Checked here, not left to the email package: whether it even parses
        # "<a@" depends on the Python version.
        if _MSG_ID.fullmatch(message_id) is None or given != f"<{message_id}>":
            raise InvalidMessageError(
                f"header Message-ID {_preview(given)} is not of the form <unique-part@domain> "
                "(printable ASCII, no spaces or quotes); correct it, or remove the header to "
                "have one generated"
            )
    if clone.get("Date") is None:
        clone["Date"] = format_datetime(datetime.now(timezone.utc))

    utf8 = not all(a.isascii() for a in (*senders, *recipients))
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    try:
        content = clone.as_bytes(policy=policy)
    except (UnicodeError, LookupError) as exc:
        raise InvalidMessageError(
            f"the EmailMessage cannot be rendered ({exc}); build it with "
            "email.policy.default and set_content()/add_attachment()"
        ) from exc
    if content.count(b"\n") != content.count(b"\r\n") or content.count(b"\r") != content.count(
        b"\n"
    ):
        # 8bit payloads are written as they were stored; SMTP wants CRLF only.
        content = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    _check_written_headers(clone.keys(), content)
    longest = max(map(len, content.split(b"\r\n")))
    if longest > _HARD_LIMIT:
        raise InvalidMessageError(
            f"the EmailMessage has a line of {longest} octets; SMTP allows {_HARD_LIMIT}: use "
            "quoted-printable or base64 for that part (set_content(..., cte='quoted-printable'))"
        )
    return RenderedMessage(
        content=content,
        message_id=message_id,
        sender=senders[0],
        recipients=recipients,
    )
