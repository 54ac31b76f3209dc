"""The renderer's shortcuts give the bytes of the long way round: pure checks, no sleeps.

Each shortcut of :mod:`reliable_smtp._message` (a remembered header line, a
header that fits on one line, ...) is checked here against the general code it
skips, and every remembered value against a bound on how many are kept.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reliable_smtp._envelope import dedupe_addresses
from reliable_smtp._errors import InvalidAddressError, InvalidMessageError
from reliable_smtp._message import Message, render
from reliable_smtp._message.assembly import _sender_line
from reliable_smtp._message.mailbox import parse_mailbox
from reliable_smtp._message.words import (
    check_header_value,
    fold,
    mailbox_words,
    split_words,
    unstructured_line,
    unstructured_words,
)
from reliable_smtp._wire_form import wire_form


def reference_fold(name: str, words: Sequence[str]) -> str:
    """:func:`fold` as it is specified: a word at a time, a new line before 78 is passed."""
    if not words:
        return f"{name}: \r\n"
    lines: list[str] = []
    line = f"{name}: {words[0]}"
    for word in words[1:]:
        if word and len(line) + 1 + len(word) > 78:
            lines.append(line)
            line = " " + word
        else:
            line = f"{line} {word}"
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


WORD = st.text(st.sampled_from("ab =?ü"), max_size=90)


@given(name=st.sampled_from(["To", "Subject", "X-" + "n" * 70]), words=st.lists(WORD, max_size=8))
def test_fold_matches_the_word_by_word_fold(name: str, words: list[str]) -> None:
    assert fold(name, words) == reference_fold(name, words)


@given(text=st.text(st.sampled_from("ab =?\tü"), max_size=120))
def test_unstructured_words_of_short_texts_are_measured_as_long_ones(text: str) -> None:
    words = unstructured_words(text)
    # Literal words (never longer than 76 characters) give the text back; else encoded.
    if words and not words[0].startswith("=?utf-8?"):
        assert " ".join(words) == text
        assert max(map(len, words)) <= 76
        assert words == split_words(text)


@given(
    name=st.sampled_from(["Subject", "X-" + "n" * 60]),
    text=st.text(st.sampled_from("ab =?\tü"), max_size=90) | st.sampled_from(["", "a" * 66]),
)
def test_an_unstructured_line_is_its_folded_words(name: str, text: str) -> None:
    assert unstructured_line(name, text) == fold(name, unstructured_words(text))


# --------------------------------------------------------------------------- remembered lines


def test_a_remembered_sender_line_is_the_folded_one() -> None:
    senders = [
        (("Example Shop", "no-reply@example.com"),),
        (("", "no-reply@example.com"),),
        (("Jörg Müller", "joerg@example.de"),),
        (("Doe, John", "john@example.com"),),
        (("A" * 120, "a@example.com"),),
        (("One", "one@example.com"), ("Two", "two@example.com")),
    ]
    for mailboxes in senders:
        expected = fold("From", mailbox_words(mailboxes))
        assert _sender_line("From", mailboxes) == expected
        assert _sender_line("From", mailboxes) == expected  # remembered now
        assert _sender_line("Reply-To", mailboxes) == fold("Reply-To", mailbox_words(mailboxes))


def test_remembered_sender_lines_are_bounded() -> None:
    for index in range(300):
        render(Message(sender=f"S{index} <s{index}@example.com>", to="a@example.org", text="x"))
    info = _sender_line.cache_info()
    assert info.maxsize == 256
    assert info.currsize <= 256


def test_messages_from_one_sender_share_nothing_else() -> None:
    first = render(Message(sender="Shop <s@example.com>", to="a@example.org", subject="A"))
    second = render(
        Message(
            sender="Shop <s@example.com>",
            to="b@example.org",
            reply_to="Help <h@example.com>",
            subject="B",
        )
    )
    assert first.content.startswith(b"From: Shop <s@example.com>\r\nTo: a@example.org\r\n")
    assert second.content.startswith(
        b"From: Shop <s@example.com>\r\nReply-To: Help <h@example.com>\r\nTo: b@example.org\r\n"
    )
    assert b"Subject: A\r\n" in first.content
    assert b"Subject: B\r\n" in second.content


# --------------------------------------------------------------------------- the vouch


@pytest.mark.parametrize(
    ("before", "after", "headers", "dot_free"),
    [
        ("", "", {}, True),
        ("", ".a dot\n", {}, False),
        (".a dot\n", "", {}, False),
        ("", "", {".X-Dot": "v"}, False),
    ],
    ids=["dot-free", "dot-at-the-end", "dot-first", "dotted-header"],
)
@pytest.mark.parametrize("lines", [4, 4000], ids=["small", "large"])
def test_the_vouch_says_whether_a_line_starts_with_a_dot(
    before: str, after: str, headers: dict[str, str], dot_free: bool, lines: int
) -> None:
    text = before + "plain line\n" * lines + after
    rendered = render(
        Message(sender="a@example.com", to="b@example.org", text=text, headers=headers)
    )
    form = wire_form(rendered.content)
    assert form is not None
    assert form.dot_free is dot_free


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("no equals sign\n", "7bit"),
        ("a=b and c= _d\n", "7bit"),
        ("a=b then =_\n", "quoted-printable"),
        ("=_ first\n", "quoted-printable"),
    ],
)
def test_a_text_with_equals_signs_is_7bit_unless_it_holds_a_boundary_prefix(
    text: str, encoding: str
) -> None:
    content = render(Message(sender="a@example.com", to="b@example.org", text=text)).content
    assert f"\r\nContent-Transfer-Encoding: {encoding}\r\n".encode() in content


def test_the_message_id_and_the_boundaries_take_different_random_bytes() -> None:
    seen: set[str] = set()
    for _ in range(50):
        rendered = render(Message(sender="a@example.com", to="b@example.org", text="t", html="h"))
        unique = rendered.message_id.removesuffix("@example.com")
        found = re.search(rb'boundary="=_([0-9a-f]+)_a"', rendered.content)
        assert found is not None
        boundary = found.group(1).decode()
        assert re.fullmatch("[0-9a-f]{32}", unique)
        assert re.fullmatch("[0-9a-f]{24}", boundary)
        assert boundary not in unique
        seen.update((unique, boundary))
    assert len(seen) == 100


@pytest.mark.parametrize(
    "fields",
    [
        {"to": "Ann <ann@Example.org>"},
        {"to": ["ann@example.org", "ann@EXAMPLE.org"]},
        {"to": "ann@example.org", "cc": "ann@example.ORG"},
        {"to": "ann@example.org", "bcc": "bob@example.org"},
        {"cc": "ann@example.org"},
        {"bcc": "ann@example.org"},
    ],
)
def test_recipients_of_one_or_more_addresses(fields: dict[str, str | list[str]]) -> None:
    message = Message(sender="a@example.com", text="t", **fields)  # type: ignore[arg-type]
    boxes = message._mailboxes
    expected = dedupe_addresses(addr for _, addr in (*boxes.to, *boxes.cc, *boxes.bcc))
    assert render(message).recipients == expected


# --------------------------------------------------------------------------- building a Message


def test_the_parsed_mailboxes_are_immutable() -> None:
    message = Message(sender="Shop <s@example.com>", to=["a@example.org"], cc="c@example.org")
    boxes = message._mailboxes
    assert boxes == (
        ("Shop", "s@example.com"),
        (("", "a@example.org"),),
        (("", "c@example.org"),),
        (),
        (),
        "s@example.com",
    )
    with pytest.raises(AttributeError):
        boxes.sender = ("Evil", "evil@example.com")  # type: ignore[misc]
    assert copy.copy(message)._mailboxes == boxes


def parsed_or_refused(value: str) -> object:
    try:
        return parse_mailbox(value, what="to address")
    except InvalidAddressError as exc:
        return ("refused", exc.reason)


ADDRESS_TEXT = st.text(st.sampled_from('ab@.ü <>",;\\\n\u2028\x00\x85'), max_size=12)


@given(
    value=ADDRESS_TEXT
    | st.sampled_from(
        ["a@b.c", "a@b..c", "a@.b", "a@b.", "a..b@c.d", ".a@b", "ü@ü.de", "a@b\udc80"]
        + ["a" * n + "@b.c" for n in (250, 251, 252)]
    )
)
def test_a_bare_address_is_read_as_the_long_way_reads_it(value: str) -> None:
    # Spaces around the value take the general path (they are stripped): same answer.
    assert parsed_or_refused(value) == parsed_or_refused(f" {value} ")


@pytest.mark.parametrize("empty", [(), [], iter(())], ids=["tuple", "list", "iterator"])
def test_empty_address_fields_given_or_defaulted_are_the_same(empty: object) -> None:
    given = Message(sender="a@example.com", to="b@example.org", cc=empty, bcc=empty)  # type: ignore[arg-type]
    defaulted = Message(sender="a@example.com", to="b@example.org")
    assert given == defaulted
    assert given.cc == given.bcc == given.reply_to == defaulted.cc == ()
    assert given._mailboxes == defaulted._mailboxes
    changed = dataclasses.replace(defaulted, cc="c@example.org")
    assert changed._mailboxes.cc == (("", "c@example.org"),)
    assert render(changed).recipients == ("b@example.org", "c@example.org")


@pytest.mark.parametrize("sender", ["", "   ", "\t"])
def test_an_empty_sender_is_refused_every_time(sender: str) -> None:
    for _ in range(2):  # a refusal is never remembered
        with pytest.raises(InvalidAddressError, match="sender is empty; give the From address"):
            Message(sender=sender, to="a@example.org")


@given(value=st.text(st.sampled_from("a ~\t\n\x00\x7fü\u2028\ud800"), max_size=6))
def test_header_values_printable_ascii_or_not_are_checked_alike(value: str) -> None:
    class Text(str):
        pass

    try:
        checked: object = check_header_value(value, what="subject")
    except InvalidMessageError as exc:
        checked = str(exc)
    try:
        general: object = check_header_value(Text(value), what="subject")  # not the shortcut
    except InvalidMessageError as exc:
        general = str(exc)
    assert checked == general
    if value.isascii() and value.isprintable():
        assert checked is value
