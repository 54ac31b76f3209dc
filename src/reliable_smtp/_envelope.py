"""The SMTP envelope: who the message is from (MAIL FROM) and to whom it goes (RCPT TO).

The envelope is separate from the message headers: Bcc recipients are in the
envelope but never in the headers, and a bounce address may differ from From:.
Transports see only an :class:`Envelope` and the rendered bytes.

This module also owns the one rule for line breaks in anything that goes on a
line of its own - an SMTP command or a header: :func:`line_break_problem`.
Every path (sender and recipients) is checked by the :class:`Envelope` itself,
so an address reaches ``MAIL FROM:<...>`` / ``RCPT TO:<...>`` exactly as given
whether or not a :class:`~reliable_smtp.RecipientPolicy` ran before, and whichever
transport is used. Paths found valid are remembered (a set of at most
``_VALID_PATHS_SIZE``, cleared when full): the check is pure, and the sender is the
same on nearly every message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from ._checks import address_key
from ._errors import InvalidAddressError, InvalidMessageError

__all__ = [
    "Envelope",
    "check_no_line_breaks",
    "dedupe_addresses",
    "line_break_problem",
    "slot_setter",
]

_T = TypeVar("_T")

# Every character one of Python's line splitters treats as the end of a line
# (str.splitlines, and with it the email package's header folders; bytes and io
# split at CR and LF), plus NUL. A value with one of these can start a new
# header or SMTP command wherever it is split or refolded, so none of them may
# be in a header or a path: one set, used for both.
_LINE_BREAKS = re.compile("[\x00\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_LINE_BREAK_NAMES = {
    "\x00": "NUL",
    "\n": "LF",
    "\r": "CR",
    "\x0b": "VT (\\x0b)",
    "\x0c": "FF (\\x0c)",
    "\x1c": "FS (\\x1c)",
    "\x1d": "GS (\\x1d)",
    "\x1e": "RS (\\x1e)",
    "\x85": "NEL (U+0085)",
    "\u2028": "LINE SEPARATOR (U+2028)",
    "\u2029": "PARAGRAPH SEPARATOR (U+2029)",
}

# RFC 5321 §4.1.2 path syntax, as far as safety needs it: a local part (an
# unquoted run, or one quoted-string that may hold '@'), one '@', a domain.
# Never '<', '>', whitespace or a control character anywhere (they would end
# the path early, add ESMTP parameters such as NOTIFY=/ORCPT=, or split the
# line); non-ASCII letters are allowed (RFC 6531 SMTPUTF8, IDNA domains in
# U-label form).
_PATH_CHAR = r'[^\s\x00-\x1f\x7f-\x9f<>@"\\]'
_QUOTED_CHAR = r'[^\s\x00-\x1f\x7f-\x9f<>"\\]|\\[^\s\x00-\x1f\x7f-\x9f<>]'
_PATH = re.compile(rf'(?:{_PATH_CHAR}+|"(?:{_QUOTED_CHAR})*")@{_PATH_CHAR}+')
_UNSAFE_IN_PATH = re.compile(r"[\s\x00-\x1f\x7f-\x9f<>]")
# RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets.
_MAX_PATH_OCTETS = 254

# Paths already found valid, so that a repeat costs a set lookup instead of the regular
# expression: the sender is the same on nearly every message, and alert recipients
# repeat. Only exact str: a subclass may redefine __eq__ and __hash__ to match an entry.
# Bounded: cleared when full (a burst of new addresses then refills it).
_VALID_PATHS: set[str] = set()
_VALID_PATHS_SIZE = 1024


def line_break_problem(value: str) -> str | None:
    """Why ``value`` may not go into a header or an SMTP command, or ``None`` if it may.

    The answer names the first line-break character (any that a Python line
    splitter recognizes: CR, LF, VT, FF, FS, GS, RS, U+0085, U+2028, U+2029)
    or NUL in ``value``.
    """
    if value.isprintable():  # the common case: none of those characters is printable
        return None
    found = _LINE_BREAKS.search(value)
    if found is None:
        return None
    return (
        f"contains a {_LINE_BREAK_NAMES[found.group()]} character; remove it (a line break "
        "of any kind, or NUL, would let it inject other headers or SMTP commands)"
    )


def check_no_line_breaks(value: str, *, what: str) -> None:
    """Raise :class:`InvalidAddressError` if ``value`` holds a line break or NUL."""
    problem = line_break_problem(value)
    if problem is not None:
        raise InvalidAddressError(f"{what} {value!r} {problem}", address=value, reason=problem)


def _path_problem(path: str) -> str | None:
    """Why ``path`` cannot be written as ``<path>`` in MAIL FROM/RCPT TO, or ``None``."""
    exact = type(path) is str
    if exact and path in _VALID_PATHS:
        return None
    if _PATH.fullmatch(path) is not None:
        if path.isascii():
            size = len(path)
        else:
            try:
                size = len(path.encode("utf-8"))
            except UnicodeEncodeError:
                return "contains a lone surrogate that cannot be encoded as UTF-8"
        if size <= _MAX_PATH_OCTETS:
            if exact:
                if len(_VALID_PATHS) >= _VALID_PATHS_SIZE:
                    _VALID_PATHS.clear()
                _VALID_PATHS.add(path)
            return None
        return f"is {size} octets long; an SMTP path allows at most {_MAX_PATH_OCTETS}"
    problem = line_break_problem(path)
    if problem is not None:
        return problem
    unsafe = _UNSAFE_IN_PATH.search(path)
    if unsafe is not None:
        char = unsafe.group()
        kind = "whitespace" if char.isspace() else "control character"
        if char in "<>":
            kind = "angle bracket"
        return (
            f"contains the {kind} {char!r}; give the bare address (local@domain), without "
            "angle brackets, display name, spaces or SMTP parameters"
        )
    return "is not an address of the form local@domain (one '@', outside any quoted local part)"


def dedupe_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """Drop repeated addresses (domain compared case-insensitively), keeping first occurrences."""
    given = tuple(addresses)  # no copy of a tuple
    if len(given) < 2:  # nothing to repeat: the usual single recipient
        return given
    seen: set[str] = set()
    unique: list[str] = []
    for address in given:
        key = address_key(address)
        if key not in seen:
            seen.add(key)
            unique.append(address)
    return tuple(unique)


def slot_setter(cls: type[_T], name: str) -> Callable[[_T, object], None]:
    """The setter of the slot ``name`` of ``cls``: builds a frozen dataclass without ``__init__``.

    A third cheaper than ``object.__setattr__``, which finds the slot by name on every
    call; for the objects built once per message (an envelope, a recipient check).
    """
    setter: Callable[[_T, object], None] = vars(cls)[name].__set__
    return setter


def _check_paths(sender: object, recipients: tuple[object, ...]) -> None:
    """Raise unless ``sender`` and ``recipients`` can be MAIL FROM and RCPT TO."""
    if not isinstance(sender, str):
        raise InvalidAddressError(
            f"envelope sender must be a str, got {type(sender).__name__}",
            address=repr(sender),
            reason="not a str",
        )
    if sender:
        problem = _path_problem(sender)
        if problem is not None:
            raise InvalidAddressError(
                f"envelope sender {sender!r} {problem} (use '' for the null sender <>)",
                address=sender,
                reason=problem,
            )
    if not recipients:
        raise InvalidMessageError(
            "the envelope has no recipients: give at least one To, Cc or Bcc address"
        )
    for recipient in recipients:
        if not isinstance(recipient, str):
            raise InvalidAddressError(
                f"envelope recipient must be a str, got {type(recipient).__name__}",
                address=repr(recipient),
                reason="not a str",
            )
        problem = _path_problem(recipient)
        if problem is not None:
            raise InvalidAddressError(
                f"envelope recipient {recipient!r} {problem}",
                address=recipient,
                reason=problem,
            )


@dataclass(frozen=True, slots=True)
class Envelope:
    """MAIL FROM and RCPT TO for one message.

    ``sender`` is the bare reverse-path address (``""`` for the null sender ``<>``
    used by bounces); ``recipients`` are bare addresses, deduplicated, in order.
    Use :meth:`build` to deduplicate; the constructor only validates.

    Every path is checked here, whoever built the envelope: ``local@domain``
    with exactly one ``@`` outside a quoted local part, at most 254 octets, and
    no ``<``, ``>``, whitespace, control or line-break character, so that it
    cannot end the path early or add SMTP parameters. Non-ASCII addresses
    (SMTPUTF8, IDNA domains) are allowed. Raises
    :class:`~reliable_smtp.InvalidAddressError` otherwise.
    """

    sender: str
    recipients: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.recipients, tuple):
            object.__setattr__(self, "recipients", tuple(self.recipients))
        _check_paths(self.sender, self.recipients)

    @classmethod
    def build(cls, sender: str, recipients: Iterable[str]) -> Envelope:
        """An envelope with ``recipients`` deduplicated (first occurrence kept)."""
        given = tuple(recipients)  # no copy of a tuple
        try:
            unique = dedupe_addresses(given)
        except AttributeError:
            # A recipient that is not a str: the checks below say so, whatever the count.
            unique = given
        if cls is not Envelope:
            return cls(sender, unique)  # a subclass may add its own __init__ or checks
        # The same checks as the constructor's, and the same object, without the frozen
        # dataclass's __init__: its two object.__setattr__ calls cost a tenth of a build.
        _check_paths(sender, unique)
        envelope = object.__new__(Envelope)
        _SET_SENDER(envelope, sender)
        _SET_RECIPIENTS(envelope, unique)
        return envelope

    @property
    def needs_smtputf8(self) -> bool:
        """True when an address has non-ASCII characters (RFC 6531 SMTPUTF8 needed)."""
        return not (self.sender.isascii() and all(map(str.isascii, self.recipients)))

    def only(self, recipients: Iterable[str]) -> Envelope:
        """The same envelope restricted to ``recipients`` (used to retry the pending ones)."""
        wanted = set(recipients)
        kept = tuple(r for r in self.recipients if r in wanted)
        if kept == self.recipients:
            return self  # immutable: every first attempt and every one-chunk transaction
        if not kept:
            return Envelope(self.sender, kept)  # raises: an envelope needs a recipient
        # Every path was checked when this envelope was built, and a subset adds none:
        # skip checking them again (this runs at least twice per send).
        subset = object.__new__(Envelope)
        _SET_SENDER(subset, self.sender)
        _SET_RECIPIENTS(subset, kept)
        return subset


# The slots' own setters, for build and only.
_SET_SENDER = slot_setter(Envelope, "sender")
_SET_RECIPIENTS = slot_setter(Envelope, "recipients")
