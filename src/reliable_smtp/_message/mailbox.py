"""Mailbox syntax: one address, with or without a display name, as a Message takes it.

This module owns reading ``'local@domain'`` and ``'Display Name <local@domain>'``
(RFC 5322 §3.4, as restricted by :mod:`reliable_smtp._message`'s conventions):
the addr-spec this library accepts (no quoted local parts or domain literals,
non-ASCII allowed for SMTPUTF8, at most 254 octets), display names with
quoted-strings unquoted and unquoted specials refused, one address per entry,
and the :class:`~reliable_smtp.InvalidAddressError` that says which entry is
wrong and how to write it.
"""

from __future__ import annotations

import functools
import re

from .._envelope import check_no_line_breaks
from .._errors import InvalidAddressError

# RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets.
_MAX_ADDRESS_OCTETS = 254

# An addr-spec as this library accepts it: no whitespace, no controls (C1 included), no
# specials; non-ASCII is allowed (SMTPUTF8, RFC 6531/6532). Quoted local parts
# and domain literals are deliberately unsupported.
_NOT_IN_ADDR = r'\s\x00-\x1f\x7f-\x9f<>()\[\],;:\\"@'
_ADDR_SPEC = re.compile(rf"[^{_NOT_IN_ADDR}]+@[^{_NOT_IN_ADDR}]+")
# An ASCII addr-spec that passes every check of check_addr_spec but its length: its
# domain is labels joined by single dots. The common bare address, found by one match.
_GOOD_ADDR_SPEC = re.compile(rf"[^{_NOT_IN_ADDR}]+@[^{_NOT_IN_ADDR}.]+(?:\.[^{_NOT_IN_ADDR}.]+)*")
# Characters that end or split a mailbox when they appear unquoted in a display name.
_PHRASE_SPECIALS = re.compile(r"[,;:@<>\[\]\\]")


def bad_address(value: str, what: str, problem: str) -> InvalidAddressError:
    return InvalidAddressError(
        f"{what} {value!r} {problem}; give one address as 'local@domain' or "
        "'Display Name <local@domain>'",
        address=value,
        reason=problem,
    )


def check_addr_spec(addr: str, value: str, what: str) -> str:
    if _ADDR_SPEC.fullmatch(addr) is None:
        raise bad_address(
            value, what, f"has {addr!r}, which is not an address of the form local@domain"
        )
    return _check_matched_addr_spec(addr, value, what)


def _check_matched_addr_spec(addr: str, value: str, what: str) -> str:
    """:func:`check_addr_spec` of an ``addr`` that ``_ADDR_SPEC`` matches."""
    domain = addr.rpartition("@")[2]
    if domain.startswith(".") or domain.endswith(".") or ".." in domain:
        raise bad_address(value, what, f"has an invalid domain {domain!r}")
    size = len(addr) if addr.isascii() else len(addr.encode("utf-8", "surrogatepass"))
    if size > _MAX_ADDRESS_OCTETS:
        raise bad_address(
            value, what, f"is {size} octets long; SMTP allows at most {_MAX_ADDRESS_OCTETS}"
        )
    if not addr.isascii():
        try:
            addr.encode("utf-8")
        except UnicodeEncodeError:
            raise bad_address(value, what, "contains a lone surrogate") from None
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
                    raise bad_address(value, what, "has an unclosed '\"' in its display name")
                char = text[i]
                if char == '"':
                    break
                if char == "\\" and i + 1 < n:
                    i += 1
                    char = text[i]
                out.append(char)
                i += 1
        elif _PHRASE_SPECIALS.match(char):
            raise bad_address(
                value,
                what,
                f"has {char!r} outside quotes in its display name: give one address per entry, "
                "and quote a display name with specials ('\"Doe, John\" <john@example.com>')",
            )
        else:
            out.append(char)
        i += 1
    return "".join(out)


def parse_mailbox(value: object, *, what: str) -> tuple[str, str]:
    """``(display_name, addr_spec)`` of one ``'addr'`` or ``'Name <addr>'`` string."""
    if (
        type(value) is str
        and value.isascii()
        and len(value) <= _MAX_ADDRESS_OCTETS
        and _GOOD_ADDR_SPEC.fullmatch(value) is not None
    ):
        # The common case, a bare address, checked at once: its characters exclude
        # whitespace and every line break (nothing to strip, no line break to look
        # for), and being ASCII its length is its size in octets.
        return "", value
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
        return "", _check_matched_addr_spec(text, value, what)
    if not text.endswith(">"):
        if "," in text or ";" in text:
            raise bad_address(
                value,
                what,
                "looks like several addresses in one string; give one address per list entry "
                "(to=['a@example.com', 'b@example.com'])",
            )
        raise bad_address(value, what, "is not an address of the form local@domain")
    if '"' not in text:
        # Fast path: no quoted-string, so the first '<' starts the address.
        start = text.find("<")
        name = text[:start]
        special = _PHRASE_SPECIALS.search(name) if start >= 0 else None
        if special is not None:
            raise bad_address(
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
        raise bad_address(value, what, "ends with '>' but has no '<'")
    addr = text[start + 1 : -1].strip()
    return name.strip(), check_addr_spec(addr, value, what)


def parse_sender(value: object) -> tuple[str, str]:
    """:func:`parse_mailbox` of a Message's ``sender``, remembered: an application sends
    from a few addresses, so most messages would parse the same one again."""
    if type(value) is str:  # hashable and by value (a subclass may redefine __eq__)
        return _parsed_sender(value)
    return _parse_sender(value)


@functools.lru_cache(maxsize=256)
def _parsed_sender(value: str) -> tuple[str, str]:
    return _parse_sender(value)  # pure: an error is raised, never cached


def _parse_sender(value: object) -> tuple[str, str]:
    if isinstance(value, str) and not value.strip():
        raise InvalidAddressError(
            "sender is empty; give the From address, e.g. sender='App <no-reply@example.com>'",
            address=value,
            reason="empty",
        )
    return parse_mailbox(value, what="sender")


def bare_address(value: str, *, what: str) -> str:
    """The ``local@domain`` of one ``'local@domain'`` or ``'Name <local@domain>'`` string.

    The same rules as every address field of :class:`Message`; raises
    :class:`~reliable_smtp.InvalidAddressError` naming ``what`` otherwise.
    """
    return parse_mailbox(value, what=what)[1]


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
        raise bad_address(value, what, "has an unclosed '\"' in its display name")
    return -1
