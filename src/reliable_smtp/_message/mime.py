"""The message values: what an application builds.

This module owns :class:`Message` and :class:`Attachment` (validated when
built, immutable, picklable by their fields) and :class:`RenderedMessage` (what
a transport sends). The bytes a message becomes are :mod:`.assembly`'s.
"""

from __future__ import annotations

import dataclasses
import mimetypes
import os
import re
import secrets
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from .._errors import InvalidMessageError
from .._wire_form import WireForm
from .mailbox import bad_address, parse_mailbox, parse_sender
from .words import (
    HARD_LIMIT,
    MAX_ID,
    check_extra_header,
    check_header_name,
    check_header_value,
    check_message_id,
    split_words,
)

__all__ = ["Attachment", "Message", "RenderedMessage"]

_ADDRESS_WHAT = {
    "to": "to address",
    "cc": "cc address",
    "bcc": "bcc address",
    "reply_to": "reply_to address",
}
# Shared by every Message without extra headers: immutable and empty, so nothing can leak.
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
# The default of the address fields: most messages have no cc, bcc or reply_to, and
# this very object needs no parsing.
_NO_ADDRESSES: tuple[str, ...] = ()

_CONTENT_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+")
_MIME_NAME = r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+"
_CONTENT_TYPE = re.compile(rf"({_MIME_NAME})/({_MIME_NAME})\s*(;[ -~]*)?")


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """A file attached to a :class:`Message`, or an inline image the HTML refers to.

    ``content_type`` defaults to a guess from ``filename`` (``application/octet-stream``
    when unknown). An ``inline`` attachment gets a ``content_id`` when none is given:
    refer to it from the HTML as ``<img src="cid:{attachment.content_id}">``.
    ``content_id`` is stored without angle brackets.

    An attachment made by :meth:`from_path` of a regular file keeps only its path: it is
    read when a message is rendered (block by block, never whole) and whenever
    ``content`` is asked for. Equality, hashing, ``copy`` and ``pickle`` see its bytes;
    a copy or an unpickled one holds those bytes, as an ``Attachment(content=...)``.
    """

    filename: str
    content: bytes
    content_type: str | None = None
    inline: bool = False
    content_id: str | None = None
    # Set by from_path only: the file ``content`` is read from. Its ``content`` slot
    # then stays empty (see __getattr__), so the Attachment never holds the file's bytes.
    _path: Path | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        filename = check_header_value(self.filename, what="attachment filename")
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
            cid = check_header_value(self.content_id, what="attachment content_id").strip()
            if cid.startswith("<") and cid.endswith(">"):
                cid = cid[1:-1]
            if _CONTENT_ID.fullmatch(cid) is None:
                raise InvalidMessageError(
                    f"attachment {filename!r}: content_id {self.content_id!r} must be printable "
                    "ASCII without spaces, brackets or quotes (for example 'logo@example.com')"
                )
            if len(cid) > MAX_ID:
                raise InvalidMessageError(
                    f"attachment {filename!r}: content_id is {len(cid)} characters long; at "
                    f"most {MAX_ID} fit on the Content-ID line (RFC 5322 allows {HARD_LIMIT} "
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
        text = check_header_value(given, what=f"attachment {filename!r} content_type").strip()
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
        longest = max(map(len, split_words(content_type + ";")))
        if len("Content-Type: ") + longest > HARD_LIMIT:
            raise InvalidMessageError(
                f"attachment {filename!r}: content_type has {longest} characters without a "
                f"space; a header line may not exceed {HARD_LIMIT} octets (RFC 5322 §2.1.1), "
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
        """Attach the file at ``path`` under its file name; a regular file is read when the
        message is rendered, anything else (a pipe, ``/dev/stdin``) now. Raises
        ``OSError`` now if it cannot be opened for reading."""
        file = Path(path)
        # Opened now, as reading it whole used to be: a missing or unreadable file is
        # the caller's OSError here, not a failed send later.
        with file.open("rb") as opened:
            # Anything but a regular file can be read only once: keep its bytes now.
            regular = stat.S_ISREG(os.fstat(opened.fileno()).st_mode)
            content = None if regular else opened.read()
        attachment = cls(
            filename=file.name,
            content=content or b"",
            content_type=content_type,
            inline=inline,
            content_id=content_id,
        )
        if content is not None:
            return attachment
        # Absolute: a later chdir() must not change which file is sent.
        object.__setattr__(attachment, "_path", file.absolute())
        object.__delattr__(attachment, "content")
        return attachment

    if not TYPE_CHECKING:  # hidden from mypy, which would then accept any attribute name

        def __getattr__(self, name: str) -> object:
            # Called only when the ordinary lookup fails: for the empty ``content`` slot
            # of a from_path attachment, which reads the file (each time: it is not kept).
            if name == "content" and self._path is not None:
                return self._path.read_bytes()
            if name == "_path":
                return None  # unpickled from before the field existed
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self
            )

    def __reduce__(self) -> tuple[object, ...]:
        # pickle and copy take the bytes (a from_path file is read now) and rebuild
        # through __init__: the copy is an ordinary Attachment, independent of the file.
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return (_rebuild_attachment, (fields,))


def _rebuild_attachment(fields: dict[str, Any]) -> Attachment:
    return Attachment(**fields)


class _Mailboxes(NamedTuple):
    """The parsed ``(display_name, addr_spec)`` pairs of a Message, validated once.

    A named tuple, not a frozen dataclass: as immutable, and built for a fraction of
    the instructions (a frozen dataclass sets each field through object.__setattr__).
    """

    sender: tuple[str, str]
    to: tuple[tuple[str, str], ...]
    cc: tuple[tuple[str, str], ...]
    bcc: tuple[tuple[str, str], ...]
    reply_to: tuple[tuple[str, str], ...]
    envelope_sender: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One email, validated when built. Render it with :func:`~reliable_smtp.render`.

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
    to: Sequence[str] | str = _NO_ADDRESSES
    cc: Sequence[str] | str = _NO_ADDRESSES
    bcc: Sequence[str] | str = _NO_ADDRESSES
    reply_to: Sequence[str] | str = _NO_ADDRESSES
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
        sender = parse_sender(self.sender)
        to = self._mailbox_list("to")
        cc = () if self.cc is _NO_ADDRESSES else self._mailbox_list("cc")
        bcc = () if self.bcc is _NO_ADDRESSES else self._mailbox_list("bcc")
        reply_to = () if self.reply_to is _NO_ADDRESSES else self._mailbox_list("reply_to")
        if not (to or cc or bcc):
            raise InvalidMessageError(
                "the message has no recipients: give at least one of to, cc or bcc"
            )
        object.__setattr__(
            self,
            "_mailboxes",
            _Mailboxes(sender, to, cc, bcc, reply_to, self._envelope_sender(sender[1])),
        )

        check_header_value(self.subject, what="subject")
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

        if self.headers is not _NO_HEADERS:  # the default needs no check and no copy
            self._check_headers()

        if self.message_id is not None:
            object.__setattr__(self, "message_id", check_message_id(self.message_id))
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

    def _check_headers(self) -> None:
        if not isinstance(self.headers, Mapping):
            raise InvalidMessageError(
                f"headers must be a mapping of str to str, got {type(self.headers).__name__}"
            )
        if self.headers:
            headers = {
                check_header_name(name): check_extra_header(name, value)
                for name, value in self.headers.items()
            }
            object.__setattr__(self, "headers", MappingProxyType(headers))
        elif type(self.headers) is not MappingProxyType:
            object.__setattr__(self, "headers", _NO_HEADERS)

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuild through __init__ (re-validating) so pickle and copy work: the
        # read-only headers proxy cannot be pickled itself.
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        fields["headers"] = dict(self.headers)
        return (_rebuild_message, (fields,))

    def _mailbox_list(self, field_name: str) -> tuple[tuple[str, str], ...]:
        """Normalize one address field to a tuple of str and return its parsed mailboxes."""
        value = getattr(self, field_name)
        if type(value) is tuple and not value:  # the default of to (or any empty tuple)
            return ()
        entries: tuple[str, ...]
        if isinstance(value, str):
            entries = (value,)
        elif type(value) in (list, tuple):  # the common cases, without the ABC check below
            entries = tuple(value)
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
        if len(entries) == 1:  # the common case, without the function call of a comprehension
            return (parse_mailbox(entries[0], what=what),)
        return tuple([parse_mailbox(entry, what=what) for entry in entries])

    def _envelope_sender(self, sender_address: str) -> str:
        if self.envelope_sender is None:
            return sender_address
        if self.envelope_sender == "":
            return ""  # the null reverse-path <>
        display, address = parse_mailbox(self.envelope_sender, what="envelope_sender")
        if display:
            raise bad_address(
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
    # render_message's vouch for ``content`` (see _wire_form): kept here so that it
    # lives exactly as long as this RenderedMessage.
    _wire_form: WireForm | None = field(default=None, init=False, repr=False, compare=False)
