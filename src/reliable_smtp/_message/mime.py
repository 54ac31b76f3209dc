"""The message values and MIME assembly: what an application builds and the bytes it becomes.

This module owns :class:`Message` and :class:`Attachment` (validated when
built, immutable), :class:`RenderedMessage` (what a transport sends), and the
hand-written MIME assembly of :func:`render_message`: text parts in 7bit or
quoted-printable, base64 attachments, and the ``multipart/related``,
``alternative`` and ``mixed`` structure around them. The parts are produced
lazily and the message is built once, so an attachment is never held as
several full-size copies; an :meth:`Attachment.from_path` file is read and
encoded block by block while the message is built, never held whole. The
renderer vouches for its output (:mod:`reliable_smtp._wire_form`), so the
transport does not check it again.
"""

from __future__ import annotations

import binascii
import dataclasses
import io
import mimetypes
import os
import re
import secrets
import stat
import struct
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .._envelope import dedupe_addresses
from .._errors import InvalidAddressError, InvalidMessageError
from .._wire_form import WireForm, vouch
from .mailbox import bad_address, parse_mailbox, parse_sender
from .words import (
    HARD_LIMIT,
    MAX_ID,
    check_extra_header,
    check_header_name,
    check_header_value,
    check_message_id,
    fold,
    header_words,
    id_domain,
    mailbox_words,
    param_words,
    split_words,
    unstructured_words,
)

__all__ = ["Attachment", "Message", "RenderedMessage", "render_message"]

_ADDRESS_WHAT = {
    "to": "to address",
    "cc": "cc address",
    "bcc": "bcc address",
    "reply_to": "reply_to address",
}
# Shared by every Message without extra headers: immutable and empty, so nothing can leak.
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})

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
        sender = parse_sender(self.sender)
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
        if type(value) is tuple and not value:  # the default of cc, bcc and reply_to
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


# --------------------------------------------------------------------------- MIME assembly

# A part is its header block (str, CRLF-terminated lines) and its encoded body as a
# sequence of byte chunks, produced lazily: render_message writes each chunk into the
# message as it comes, so a large attachment is never held twice (raw base64 and
# wrapped, or parts and their join) on top of the message itself.
_Part = tuple[str, Iterable[bytes]]

#: Raw bytes base64-encoded at a time: 1024 lines of 76 characters (RFC 2045 §6.8).
_BLOCK = 57 * 1024
_LINE = 76
#: A whole block's base64 cut into its 1024 lines by one C call.
_BLOCK_LINES = struct.Struct(f"{_LINE}s" * (_BLOCK // 57))


def _lines_fit(text: str) -> bool:
    """Whether every line of ``text`` (split at LF) has at most :data:`HARD_LIMIT` characters.

    A window at a time instead of splitting into lines: the last LF within the next
    ``HARD_LIMIT + 1`` characters ends a line that fits, and none there means one that
    does not; a typical body takes one or two steps.
    """
    start, size = 0, len(text)
    while size - start > HARD_LIMIT:
        newline = text.rfind("\n", start, start + HARD_LIMIT + 1)
        if newline < 0:
            return False
        start = newline + 1
    return True


def _text_part(text: str, subtype: str) -> _Part:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # 7bit when it is safe: ASCII, no NUL, lines within 998 octets, and no "=_",
    # the prefix of every boundary, so no boundary can occur in a 7bit body.
    # Quoted-printable and base64 can never produce "=_".
    if text.isascii() and "\x00" not in text and "=_" not in text and _lines_fit(text):
        cte = "7bit"
        # Encoded first: replacing in bytes is cheaper than in str, with the same result.
        body = text.encode("ascii").replace(b"\n", b"\r\n")
    else:
        cte = "quoted-printable"
        body = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    return (
        f"Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n",
        (body,),
    )


def base64_lines(content: bytes) -> Iterator[bytes]:
    """``content`` in base64, 76-character lines joined by CRLF (none after the last)."""
    view = memoryview(content)
    return _base64_blocks(view[start : start + _BLOCK] for start in range(0, len(view), _BLOCK))


def _base64_blocks(blocks: Iterable[memoryview]) -> Iterator[bytes]:
    """:func:`base64_lines` of the concatenated ``blocks``, each but the last ``_BLOCK`` long.

    Each block is encoded by one C call and cut into lines by another (``struct``),
    ~4x cheaper than ``base64.encodebytes`` (a Python loop over 57-byte slices) and
    its CRLF rewrite. A block is consumed before the next is asked for, so a
    reader may hand over the same buffer each time.
    """
    first = True
    for block in blocks:
        encoded = binascii.b2a_base64(block, newline=False)
        lines: Sequence[bytes]
        if len(encoded) == _BLOCK_LINES.size:
            lines = _BLOCK_LINES.unpack(encoded)
        else:  # the last block
            full, rest = divmod(len(encoded), _LINE)
            lines = [*struct.unpack_from(f"{_LINE}s" * full, encoded)]
            if rest:
                lines.append(encoded[-rest:])
        if not first:
            yield b"\r\n"
        first = False
        yield b"\r\n".join(lines)


def _file_blocks(attachment: Attachment, path: Path) -> Iterator[memoryview]:
    """The file at ``path`` in blocks of ``_BLOCK`` bytes (the last one shorter).

    Read into one buffer, reused for every block: the file is never held whole.
    """
    buffer = memoryview(bytearray(_BLOCK))
    try:
        with open(path, "rb", buffering=0) as file:
            while True:
                filled = 0
                while filled < _BLOCK:
                    got = file.readinto(buffer[filled:])
                    if not got:
                        break
                    filled += got
                if filled:
                    yield buffer[:filled]
                if filled < _BLOCK:
                    return
    except OSError as exc:
        raise _unreadable(attachment, path, exc) from exc


def _unreadable(attachment: Attachment, path: Path, exc: OSError) -> InvalidMessageError:
    # Opened when from_path() made it, gone or unreadable now: nothing was sent.
    return InvalidMessageError(
        f"attachment {attachment.filename!r}: cannot read {str(path)!r} "
        f"({exc.strerror or exc}); it was readable when Attachment.from_path() was called"
    )


def _raw_size(attachment: Attachment) -> int:
    """The attachment's size in bytes, without reading a from_path file."""
    path = attachment._path
    if path is None:
        return len(attachment.content)
    try:
        return path.stat().st_size
    except OSError as exc:
        raise _unreadable(attachment, path, exc) from exc


#: Attachments that encode to more than this reserve the message's buffer up front, with
#: this much to spare for the rest of the message. Below it the buffer grows as written:
#: glibc then reuses the heap memory of earlier messages, where a fresh reservation
#: would fault in every page again (~20% of the CPU of a 1 MiB attachment).
_RESERVE_FROM = 8 * 1024 * 1024
_RESERVE_SPARE = 256 * 1024


def _base64_size(raw: int) -> int:
    """The length of :func:`base64_lines` for ``raw`` bytes."""
    encoded = (raw + 2) // 3 * 4
    return encoded + 2 * max(0, (encoded + 75) // 76 - 1)


def _attachment_part(attachment: Attachment) -> _Part:
    content_type = attachment.content_type or "application/octet-stream"
    filename = attachment.filename
    disposition = "inline" if attachment.inline else "attachment"
    lines = [
        fold("Content-Type", [*split_words(content_type + ";"), *param_words("name", filename)]),
        "Content-Transfer-Encoding: base64\r\n",
        fold("Content-Disposition", [disposition + ";", *param_words("filename", filename)]),
    ]
    if attachment.content_id is not None:
        lines.append(f"Content-ID: <{attachment.content_id}>\r\n")
    path = attachment._path
    if path is None:
        return "".join(lines), base64_lines(attachment.content)
    return "".join(lines), _base64_blocks(_file_blocks(attachment, path))


def _multipart(subtype: str, boundary: str, parts: Sequence[_Part], extra: str = "") -> _Part:
    header = f'Content-Type: multipart/{subtype};{extra}\r\n boundary="{boundary}"\r\n'
    return header, _multipart_body(boundary.encode("ascii"), parts)


def _multipart_body(boundary: bytes, parts: Sequence[_Part]) -> Iterator[bytes]:
    delimiter = b"--" + boundary
    for headers, body in parts:
        yield delimiter + b"\r\n" + headers.encode("utf-8") + b"\r\n"
        yield from body
        yield b"\r\n"
    yield delimiter + b"--\r\n"


def _dot_line(data: bytes) -> bool:
    """True if a line of ``data`` (CRLF lines) starts with a dot."""
    return data.startswith(b".") or b"\n." in data


def _body(message: Message) -> tuple[_Part, bool]:
    """The body part of ``message``, and True if no line of it starts with a dot."""
    token = secrets.token_hex(12)
    inline = [a for a in message.attachments if a.inline]
    regular = [a for a in message.attachments if not a.inline]

    html = _text_part(message.html, "html") if message.html is not None else None
    text = _text_part(message.text, "plain") if message.text is not None else None
    # Only a text part can start a line with a dot: base64 lines have none, and part
    # headers, boundaries and the blank lines between never start with one.
    dot_free = not any(_dot_line(data) for part in (html, text) if part for data in part[1])
    if html is not None and inline:
        related = [html, *map(_attachment_part, inline)]
        html = _multipart("related", f"=_{token}_r", related, ' type="text/html";')
    elif inline:
        # Nothing refers to them: send them along with the other attachments,
        # keeping their inline disposition.
        regular = list(message.attachments)

    body: _Part | None
    if text is not None and html is not None:
        body = _multipart("alternative", f"=_{token}_a", [text, html])
    else:
        body = text or html
    if regular:
        parts = [body] if body is not None else []
        parts += map(_attachment_part, regular)
        body = _multipart("mixed", f"=_{token}_m", parts)
    return (body if body is not None else _text_part("", "plain")), dot_free


# --------------------------------------------------------------------------- rendering a Message


# The Date of the messages rendered in the current second: (epoch second, its text).
_this_second: tuple[int, str] = (-1, "")


def _date(given: datetime | None) -> str:
    """The Date header's value: ``given``, or now (formatted once per second, not per message)."""
    global _this_second
    if given is not None:
        return format_datetime(given)
    # datetime.now(timezone.utc) reads this same clock; the header has whole seconds.
    second = int(time.time())
    cached, text = _this_second
    if cached != second:
        text = format_datetime(datetime.fromtimestamp(second, timezone.utc))
        _this_second = (second, text)
    return text


def render_message(message: Message, domain: str | None) -> RenderedMessage:
    """:func:`~reliable_smtp.render` for a :class:`Message`: RFC 5322 bytes and the envelope."""
    boxes = message._mailboxes
    message_id = message.message_id or (
        f"{secrets.token_hex(16)}@{id_domain(domain, boxes.sender[1])}"
    )
    lines = [fold("From", mailbox_words((boxes.sender,)))]
    if boxes.reply_to:
        lines.append(fold("Reply-To", mailbox_words(boxes.reply_to)))
    if boxes.to:
        lines.append(fold("To", mailbox_words(boxes.to)))
    if boxes.cc:
        lines.append(fold("Cc", mailbox_words(boxes.cc)))
    lines.append(fold("Subject", unstructured_words(message.subject)))
    lines.append(f"Date: {_date(message.date)}\r\nMessage-ID: <{message_id}>\r\n")
    for name, value in message.headers.items():
        lines.append(fold(name, header_words(value)))
    lines.append("MIME-Version: 1.0\r\n")
    (part_headers, body), dot_free = _body(message)
    lines.append(part_headers)
    lines.append("\r\n")
    head = "".join(lines).encode("utf-8")
    if message.attachments:
        content = _buffered(head, body, message.attachments)
    else:
        # Text parts only: a few small chunks, joined at once (the buffer is for messages
        # whose attachments must never be held twice).
        chunks = [head, *filter(None, body)]  # head ends with CRLF: the check below is exact
        if not chunks[-1].endswith(b"\r\n"):
            chunks.append(b"\r\n")
        content = b"".join(chunks)
    recipients = dedupe_addresses(addr for _, addr in (*boxes.to, *boxes.cc, *boxes.bcc))
    rendered = RenderedMessage(
        content=content,
        message_id=message_id,
        sender=boxes.envelope_sender,
        recipients=recipients,
    )
    # Every line above ends in CRLF (header values hold no line breaks, text parts are
    # normalised, base64 and boundaries are ours) and so does the message: vouch for
    # it, and for the absence of leading dots when no header or text line has one
    # (the header block starts with "From:").
    form = vouch(content, dot_free=dot_free and b"\n." not in head)
    object.__setattr__(rendered, "_wire_form", form)
    return rendered


def _buffered(head: bytes, body: Iterable[bytes], attachments: Sequence[Attachment]) -> bytes:
    """The message with attachments: ``head`` and the body's chunks, written into one buffer."""
    # Built once: every chunk is copied straight into the buffer, and getvalue() hands
    # over the buffer's own bytes object without a copy (the size matches exactly).
    buffer = io.BytesIO()
    encoded = sum(_base64_size(_raw_size(a)) for a in attachments)
    if encoded > _RESERVE_FROM:
        # One allocation for the attachments' share (and then some), not a buffer grown
        # step by step: on glibc those steps stay behind as heap holes the size of the
        # message. Whatever is not used is cut off before getvalue().
        buffer.seek(encoded + _RESERVE_SPARE)
        buffer.write(b"\0")
        buffer.seek(0)
    buffer.write(head)
    last = b""
    for chunk in body:
        if chunk:
            buffer.write(chunk)
            last = chunk
    if last and not last.endswith(b"\r\n"):
        buffer.write(b"\r\n")
    buffer.truncate()
    return buffer.getvalue()
