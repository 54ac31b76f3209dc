"""Header text: what a header may hold, and how it is written as words and folded lines.

This module owns

* the checks made on header text when a :class:`~reliable_smtp.Message` is built:
  no line breaks or NUL, valid header names, no header the Message writes
  itself, no word too long to fold, Message-IDs and the ``domain`` of a
  generated one;
* the renderer's header formatting: splitting text into words that fold at
  spaces (:func:`split_words`), RFC 2047 encoded-words for text that cannot be
  written literally, display names as atoms, a quoted-string or encoded-words,
  RFC 2231 parameters (``filename*=utf-8''...``, with continuations), and
  :func:`fold`, which keeps every line near 78 characters and never over 998
  octets (RFC 5322 §2.1.1).
"""

from __future__ import annotations

import base64
import itertools
import re
from collections.abc import Sequence
from urllib.parse import quote

from .._envelope import line_break_problem
from .._errors import ConfigurationError, InvalidMessageError

# RFC 5322 §2.1.1: lines SHOULD be at most 78 characters and MUST be at most 998.
_SOFT_LIMIT = 78
HARD_LIMIT = 998
# A literal (unencoded) header word longer than this is sent as encoded-words
# instead, so that folding can keep every line near the 78-character limit.
_MAX_LITERAL_WORD = 76
# Encoded-words are capped below RFC 2047's 75 so that "Reply-To: " plus one
# encoded-word still fits in 78 characters.
_MAX_ENCODED_WORD = 68
# The longest header name that still leaves room on its line for any first word
# the renderer writes after it (literal words are capped at _MAX_LITERAL_WORD).
_MAX_HEADER_NAME = HARD_LIMIT - len(": ") - _MAX_LITERAL_WORD
# "Message-ID: <id>" and "Content-ID: <id>" are single, unfoldable lines.
MAX_ID = HARD_LIMIT - len("Message-ID: <>")

# Display names that can be written as-is: atoms (RFC 5322 atext) separated by single spaces.
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# RFC 5322 field-name: printable ASCII except ':' (and no space).
HEADER_NAME = re.compile(r"[!-9;-~]+")
_DOT_ATOM_TEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
MSG_ID = re.compile(rf"{_DOT_ATOM_TEXT}@{_DOT_ATOM_TEXT}")
_ID_DOMAIN = re.compile(_DOT_ATOM_TEXT)
# ASCII control characters other than HTAB: invalid in a raw header value.
_HEADER_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

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


# --------------------------------------------------------------------------- header checks


def check_header_value(value: object, *, what: str) -> str:
    """A header-bound str without line breaks of any kind or NUL (they would inject headers).

    The renderer would encode most of them safely, but a decoded header that
    still holds a line break becomes a new header wherever it is refolded
    (Python's email package splits at all of them), and stdlib messages must
    refuse them anyway: one rule for every path.
    """
    if type(value) is str and value.isascii() and value.isprintable():
        return value  # the common case: no line break (none is printable), nothing to encode
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


def check_header_name(name: object) -> str:
    if not isinstance(name, str) or HEADER_NAME.fullmatch(name) is None:
        raise InvalidMessageError(
            f"header name {name!r} is not valid: use printable ASCII without spaces or ':' "
            "(for example 'List-Unsubscribe')"
        )
    if len(name) > _MAX_HEADER_NAME:
        raise InvalidMessageError(
            f"header name {name[:40]!r}... is {len(name)} characters long; at most "
            f"{_MAX_HEADER_NAME} fit on a header line (RFC 5322 allows {HARD_LIMIT} octets)"
        )
    instead = _RESERVED_HEADERS.get(name.lower())
    if instead is not None:
        raise InvalidMessageError(
            f"headers[{name!r}] duplicates a header the Message writes itself; {instead}"
        )
    return name


def check_extra_header(name: str, value: object) -> str:
    text = check_header_value(value, what=f"headers[{name!r}]")
    if text.isascii():
        control = _HEADER_CONTROLS.search(text)
        if control is not None:
            raise InvalidMessageError(
                f"headers[{name!r}] {text!r} contains the control character "
                f"{control.group()!r}; remove it"
            )
        # The renderer folds only at spaces, keeping each run of spaces with the
        # word after it: the longest such piece must fit on one line.
        longest = max(map(len, split_words(text)))
        if len(name) + 2 + longest > HARD_LIMIT:
            raise InvalidMessageError(
                f"headers[{name!r}] has {longest} characters that cannot be folded (a word "
                f"and the spaces before it); a header line may not exceed {HARD_LIMIT} octets "
                "(RFC 5322 §2.1.1), so shorten the word or collapse the spaces"
            )
    return text


# --------------------------------------------------------------------------- Message-IDs


def check_message_id(value: object) -> str:
    text = check_header_value(value, what="message_id").strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if MSG_ID.fullmatch(text) is None:
        raise InvalidMessageError(
            f"message_id {value!r} is not of the form 'unique-part@domain' (printable ASCII, "
            "no spaces, brackets or quotes); leave it None to have one generated"
        )
    if len(text) > MAX_ID:
        raise InvalidMessageError(
            f"message_id is {len(text)} characters long; at most {MAX_ID} fit on the "
            f"Message-ID line (RFC 5322 allows {HARD_LIMIT} octets): leave it None to have "
            "one generated"
        )
    return text


def check_domain(domain: object) -> None:
    if not isinstance(domain, str) or _ID_DOMAIN.fullmatch(domain) is None:
        raise ConfigurationError(
            f"domain {domain!r} cannot be used in a Message-ID: give a plain ASCII host name "
            "such as 'mail.example.com'",
            setting="domain",
        )


def id_domain(domain: str | None, sender_address: str) -> str:
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


# --------------------------------------------------------------------------- header formatting


def fold(name: str, words: Sequence[str]) -> str:
    """``name: w1 w2 ...`` with CRLF-folding before a space when a line passes 78 characters.

    Folding only ever replaces a separating space by CRLF + that space, so
    unfolding (RFC 5322 §2.2.3) restores the value exactly.
    """
    # Most headers fit on one line: joined at once, without the loop below.
    line = f"{name}: {' '.join(words)}"
    if len(line) <= _SOFT_LIMIT or len(words) < 2:
        return line + "\r\n"
    line = f"{name}: {words[0]}"
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


def split_words(text: str) -> list[str]:
    """``text`` as words that rejoined with single spaces give ``text`` back.

    A run of spaces stays with the word after it (a trailing run with the last
    word), so that :func:`fold`, which breaks lines only at the joining spaces,
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


def _literal_text(text: str) -> bool:
    """Whether unstructured ``text`` (not empty) may be written as it is.

    Only when a parser will give back exactly this text: printable ASCII (no tabs
    or controls), nothing that looks like an encoded-word, and no whitespace at
    either end (parsers strip it).
    """
    return (
        text.isascii()
        and text.isprintable()
        and "=?" not in text
        and text[0] != " "
        and text[-1] != " "
    )


def unstructured_words(text: str) -> list[str]:
    if not text:
        return []
    # Literal when it may be, and its words are short enough to fold. Anything else
    # becomes encoded-words, which fold anywhere.
    if _literal_text(text):
        words = split_words(text)
        # A text that short has no longer word: no need to measure them.
        if len(text) <= _MAX_LITERAL_WORD or max(map(len, words)) <= _MAX_LITERAL_WORD:
            return words
    return _encoded_words(text)


def unstructured_line(name: str, text: str) -> str:
    """``fold(name, unstructured_words(text))``: the header line of an unstructured text."""
    if not text or (len(name) + 2 + len(text) <= _SOFT_LIMIT and _literal_text(text)):
        return f"{name}: {text}\r\n"  # the common short Subject: one line, as it is
    return fold(name, unstructured_words(text))


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


def mailbox_words(mailboxes: Sequence[tuple[str, str]]) -> list[str]:
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


def header_words(value: str) -> list[str]:
    # Extra headers may be structured (List-Unsubscribe), so ASCII values are
    # only folded at existing spaces, never encoded; non-ASCII values can only
    # be unstructured text and become encoded-words.
    if value.isascii():
        return split_words(value) if value else []
    return _encoded_words(value)


def param_words(attribute: str, value: str) -> list[str]:
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
