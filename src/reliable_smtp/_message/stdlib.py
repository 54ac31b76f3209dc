"""Rendering a stdlib :class:`email.message.Message`: refuse what is unsafe, never change it.

This module owns the path :func:`~reliable_smtp.render` takes for an
``EmailMessage`` (or a compat32 message, under any policy): header names and
values checked in every MIME part (line breaks, 8-bit bytes that are not UTF-8),
the envelope read from Sender/From and To/Cc/Bcc (or their Resent- forms),
rendering from a copy through ``email.policy.SMTP``/``SMTPUTF8``, the written
header block checked again (one line per header, none over 998 octets), and
everything the email package raises for a malformed header turned into an
:class:`~reliable_smtp.InvalidMessageError` naming that header.
"""

from __future__ import annotations

import copy
import email.errors
import email.message
import email.policy
import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timezone
from email.header import Header
from email.utils import format_datetime, getaddresses
from typing import Any

from .._envelope import dedupe_addresses, line_break_problem
from .._errors import InvalidAddressError, InvalidMessageError, ReliableSMTPError
from .mailbox import check_addr_spec
from .mime import RenderedMessage
from .words import HARD_LIMIT, HEADER_NAME, MSG_ID, id_domain

# A fold in a parsed header value: a line break (as the email parser splits lines)
# followed by a space or tab.
_FOLDED_LINE_BREAK = re.compile(r"(?:\r\n|\r|\n)(?=[ \t])")

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
            if HEADER_NAME.fullmatch(name) is None:
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
                found.append(check_addr_spec(addr, str(value), f"{name} address"))
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
        if len(line) > HARD_LIMIT:
            name = written[-1] if written else "?"
            raise InvalidMessageError(
                f"header {name} is written with a line of {len(line)} octets; SMTP allows "
                f"{HARD_LIMIT} (RFC 5322 §2.1.1): shorten it, or break up its long words and "
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


def render_stdlib(message: email.message.Message, domain: str | None) -> RenderedMessage:
    """:func:`~reliable_smtp.render` for a stdlib message: RFC 5322 bytes and the envelope."""
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
        message_id = f"{secrets.token_hex(16)}@{id_domain(domain, senders[0])}"
        clone["Message-ID"] = f"<{message_id}>"
    else:
        given = str(existing_id).strip()
        message_id = given.removeprefix("<").removesuffix(">")
        # Checked here, not left to the email package: whether it even parses
        # "<a@" depends on the Python version.
        if MSG_ID.fullmatch(message_id) is None or given != f"<{message_id}>":
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
    if longest > HARD_LIMIT:
        raise InvalidMessageError(
            f"the EmailMessage has a line of {longest} octets; SMTP allows {HARD_LIMIT}: use "
            "quoted-printable or base64 for that part (set_content(..., cte='quoted-printable'))"
        )
    return RenderedMessage(
        content=content,
        message_id=message_id,
        sender=senders[0],
        recipients=recipients,
    )
