"""MIME assembly: the bytes a :class:`~.mime.Message` becomes (:func:`render_message`).

Hand-written: text parts in 7bit or quoted-printable, base64 attachments, and
the ``multipart/related``, ``alternative`` and ``mixed`` structure around them.
The parts are produced lazily and the message is built once, so an attachment
is never held as several full-size copies; an :meth:`Attachment.from_path` file
is read and encoded block by block while the message is built, never held
whole. The renderer vouches for its output (:mod:`reliable_smtp._wire_form`),
so the transport does not check it again.
"""

from __future__ import annotations

import binascii
import functools
import io
import secrets
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path

from .._envelope import dedupe_addresses
from .._errors import InvalidMessageError
from .._wire_form import vouch
from .mime import Attachment, Message, RenderedMessage
from .words import (
    HARD_LIMIT,
    fold,
    header_words,
    id_domain,
    mailbox_words,
    param_words,
    split_words,
    unstructured_line,
)

__all__ = ["base64_lines", "render_message"]


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
    # Quoted-printable and base64 can never produce "=_". (A text without "=" is
    # found by one memchr(); the search for "=_" costs several times that.)
    if (
        text.isascii()
        and "\x00" not in text
        and ("=" not in text or "=_" not in text)
        and _lines_fit(text)
    ):
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
    # rfind, not ``in``: on CPython 3.11 its reverse search is 2.5x as fast here (~0.45 µs
    # for a 1.3 KB text part, against ~1.2 µs); and CRLF lines let the pattern be three
    # bytes long, which skips further.
    return data.startswith(b".") or data.rfind(b"\r\n.") >= 0


def _body(message: Message, token: str) -> tuple[_Part, tuple[_Part | None, _Part | None]]:
    """The body part of ``message``, and its HTML and text parts (``None`` if absent).

    ``token`` makes its boundaries unique. Only a text part can start a line with a
    dot: base64 lines have none, and part headers, boundaries and the blank lines
    between never start with one.
    """
    inline: list[Attachment] = []
    regular: list[Attachment] = []
    if message.attachments:  # (a comprehension is a function call: none made for none)
        inline = [a for a in message.attachments if a.inline]
        regular = [a for a in message.attachments if not a.inline]

    html = _text_part(message.html, "html") if message.html is not None else None
    text = _text_part(message.text, "plain") if message.text is not None else None
    texts = (html, text)
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
    return (body if body is not None else _text_part("", "plain")), texts


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


@functools.lru_cache(maxsize=256)
def _sender_line(name: str, mailboxes: tuple[tuple[str, str], ...]) -> str:
    """The folded ``name`` (From or Reply-To) line for ``mailboxes``, remembered.

    An application sends from a few senders, with a few reply addresses, so nearly
    every message would encode and fold the same line again. The key and the line
    are immutable, and a pure function of each other.
    """
    return fold(name, mailbox_words(mailboxes))


def render_message(message: Message, domain: str | None) -> RenderedMessage:
    """:func:`~reliable_smtp.render` for a :class:`Message`: RFC 5322 bytes and the envelope."""
    sender, to, cc, bcc, reply_to, envelope_sender = message._mailboxes
    # One draw from os.urandom for both: 16 bytes for a Message-ID, 12 for the boundaries.
    token = secrets.token_hex(28)
    message_id = message.message_id or f"{token[:32]}@{id_domain(domain, sender[1])}"
    lines = [_sender_line("From", (sender,))]
    if reply_to:
        lines.append(_sender_line("Reply-To", reply_to))
    if to:
        lines.append(fold("To", mailbox_words(to)))
    if cc:
        lines.append(fold("Cc", mailbox_words(cc)))
    lines.append(unstructured_line("Subject", message.subject))
    lines.append(f"Date: {_date(message.date)}\r\nMessage-ID: <{message_id}>\r\n")
    if message.headers:  # most messages have none: no items view and iterator made
        for name, value in message.headers.items():
            lines.append(fold(name, header_words(value)))
    lines.append("MIME-Version: 1.0\r\n")
    (part_headers, body), texts = _body(message, token[32:])
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
    recipients: tuple[str, ...]
    if len(to) == 1 and not cc and not bcc:
        recipients = (to[0][1],)  # the common case: one recipient, no duplicates
    else:
        recipients = dedupe_addresses(addr for _, addr in (*to, *cc, *bcc))
    rendered = RenderedMessage(
        content=content,
        message_id=message_id,
        sender=envelope_sender,
        recipients=recipients,
    )
    # Every line above ends in CRLF (header values hold no line breaks, text parts are
    # normalised, base64 and boundaries are ours) and so does the message: vouch for
    # it, and for the absence of leading dots when no header or text line has one
    # (the header block starts with "From:").
    dot_free = not _dot_line(head) and not any(
        _dot_line(data) for part in texts if part for data in part[1]
    )
    object.__setattr__(rendered, "_wire_form", vouch(content, dot_free=dot_free))
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
