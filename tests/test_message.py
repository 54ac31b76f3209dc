"""Message, Attachment and render(): pure checks, no network, no sleeps.

Rendered bytes are parsed back with the stdlib's strict parser
(``email.policy.default``) to check structure and content, and checked on the
wire-format rules every message must keep (CRLF only, lines within 998 octets).
"""

from __future__ import annotations

import copy
import dataclasses
import email
import email.message
import email.policy
import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.header import Header, decode_header, make_header
from email.message import EmailMessage, MIMEPart
from email.mime.text import MIMEText
from email.parser import BytesParser, Parser
from email.utils import collapse_rfc2231_value, parseaddr
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliable_smtp._errors import (
    ConfigurationError,
    InvalidAddressError,
    InvalidMessageError,
    ReliableSMTPError,
)
from reliable_smtp._message import Attachment, Message, RenderedMessage, render
from reliable_smtp._message.assembly import _lines_fit

SENDER = "App <no-reply@example.com>"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def parse(rendered: RenderedMessage) -> EmailMessage:
    parsed = BytesParser(policy=email.policy.default).parsebytes(rendered.content)
    assert isinstance(parsed, EmailMessage)
    return parsed


def header_block(content: bytes) -> list[bytes]:
    return content.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def assert_wire_format(content: bytes, *, header_limit: int = 998) -> None:
    """CRLF line endings only, no line over 998 octets, headers within ``header_limit``."""
    assert content.endswith(b"\r\n")
    without_crlf = content.replace(b"\r\n", b"")
    assert b"\r" not in without_crlf, "bare CR"
    assert b"\n" not in without_crlf, "bare LF"
    assert max(map(len, content.split(b"\r\n"))) <= 998
    assert max(map(len, header_block(content))) <= header_limit


def rfc2047_mailbox(rendered: RenderedMessage, header: str) -> tuple[str, str]:
    """``(display_name, addr)`` of a one-address header, decoded by the RFC 2047 rules.

    CPython's ``policy.default`` parser keeps the space between adjacent
    encoded-words in display names (gh-128110) and collapses runs of spaces in
    them, so long or oddly spaced names are checked with the compat32 decoder,
    which follows RFC 2047 §6.2.
    """
    parsed = BytesParser(policy=email.policy.compat32).parsebytes(rendered.content)
    raw = re.sub(r"\r?\n", "", str(parsed[header]))
    name, addr = parseaddr(raw)
    return str(make_header(decode_header(name))), addr


def text_of(part: MIMEPart) -> str:
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def shape(part: MIMEPart) -> object:
    """The MIME tree as nested (content_type, [children]) / content_type."""
    if part.is_multipart():
        return (part.get_content_type(), [shape(p) for p in part.iter_parts()])
    return part.get_content_type()


def message(**overrides: object) -> Message:
    fields: dict[str, object] = {"sender": SENDER, "to": ["alice@example.org"], "text": "Hi"}
    fields.update(overrides)
    return Message(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- basic rendering


def test_text_only_message() -> None:
    rendered = render(message(subject="Your code", text="123456\nThanks"))
    assert_wire_format(rendered.content, header_limit=78)
    parsed = parse(rendered)
    assert parsed.get_content_type() == "text/plain"
    assert parsed["Content-Transfer-Encoding"] == "7bit"
    assert parsed.get_content_charset() == "utf-8"
    assert text_of(parsed) == "123456\nThanks\n"
    assert parsed["Subject"] == "Your code"
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["From"].addresses[0].display_name == "App"
    assert parsed["From"].addresses[0].addr_spec == "no-reply@example.com"
    assert not parsed.defects


def test_rendered_message_facts() -> None:
    rendered = render(
        message(to=["a@example.org", "b@example.org"], cc="c@example.org", bcc="d@example.org")
    )
    assert rendered.sender == "no-reply@example.com"
    assert rendered.recipients == (
        "a@example.org",
        "b@example.org",
        "c@example.org",
        "d@example.org",
    )
    assert "content" not in repr(rendered)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rendered.sender = "x@example.com"  # type: ignore[misc]


def test_generated_message_id_and_date() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    rendered = render(message())
    parsed = parse(rendered)
    # Reported without angle brackets, written with them; the domain is the sender's.
    assert re.fullmatch(r"[0-9a-f]{32}@example\.com", rendered.message_id)
    assert parsed["Message-ID"] == f"<{rendered.message_id}>"
    assert before <= parsed["Date"].datetime <= datetime.now(timezone.utc)
    assert render(message()).message_id != rendered.message_id


def test_message_id_domain_argument() -> None:
    assert render(message(), domain="mail.example.net").message_id.endswith("@mail.example.net")
    for msg in (message(), message(message_id="given@example.com"), stdlib_message()):
        with pytest.raises(ConfigurationError) as info:
            render(msg, domain="bad domain")
        assert info.value.setting == "domain"


@pytest.mark.parametrize("given", ["abc.123@example.com", "<abc.123@example.com>"])
def test_given_message_id_and_date_are_kept(given: str) -> None:
    date = datetime(2024, 5, 17, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    msg = message(message_id=given, date=date)
    assert msg.message_id == "abc.123@example.com"
    rendered = render(msg)
    assert rendered.message_id == "abc.123@example.com"
    parsed = parse(rendered)
    assert parsed["Message-ID"] == "<abc.123@example.com>"
    assert parsed["Date"].datetime == date
    assert b"Date: Fri, 17 May 2024 09:30:00 +0200\r\n" in rendered.content


@pytest.mark.parametrize("bad", ["no-at-sign", "a b@example.com", "a@b@c", "<x@y", "é@example.com"])
def test_invalid_message_id_rejected(bad: str) -> None:
    with pytest.raises(InvalidMessageError, match="message_id"):
        message(message_id=bad)


def test_naive_date_rejected() -> None:
    with pytest.raises(InvalidMessageError, match="timezone"):
        message(date=datetime(2024, 5, 17, 9, 30))


# --------------------------------------------------------------------------- body structures


def related_message(**overrides: object) -> tuple[Message, Attachment]:
    logo = Attachment(filename="logo.png", content=PNG, inline=True)
    fields: dict[str, object] = {
        "html": f'<p>Hello</p><img src="cid:{logo.content_id}">',
        "attachments": [logo],
    }
    fields.update(overrides)
    return message(**fields), logo


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"text": "t"}, "text/plain"),
        ({"text": None, "html": "<p>h</p>"}, "text/html"),
        ({"text": "t", "html": "<p>h</p>"}, ("multipart/alternative", ["text/plain", "text/html"])),
        ({"text": None}, "text/plain"),
        (
            {"text": "t", "attachments": [Attachment(filename="a.pdf", content=b"%PDF")]},
            ("multipart/mixed", ["text/plain", "application/pdf"]),
        ),
        (
            {"text": None, "attachments": [Attachment(filename="a.pdf", content=b"%PDF")]},
            ("multipart/mixed", ["application/pdf"]),
        ),
        (
            {"text": "t", "attachments": [Attachment(filename="i.png", content=PNG, inline=True)]},
            ("multipart/mixed", ["text/plain", "image/png"]),
        ),
    ],
)
def test_body_shapes(fields: dict[str, object], expected: object) -> None:
    rendered = render(message(**fields))
    assert_wire_format(rendered.content, header_limit=78)
    parsed = parse(rendered)
    assert shape(parsed) == expected
    assert not parsed.defects


def test_empty_body_is_an_empty_text_part() -> None:
    parsed = parse(render(message(text=None)))
    assert parsed.get_content_type() == "text/plain"
    assert text_of(parsed) == ""


def test_alternative_has_text_first_and_both_bodies() -> None:
    parsed = parse(render(message(text="plain body", html="<p>html body</p>")))
    text, html = parsed.iter_parts()
    assert text_of(text) == "plain body"
    assert text_of(html) == "<p>html body</p>"


def test_inline_image_related_to_html_only() -> None:
    msg, logo = related_message(text=None)
    parsed = parse(render(msg))
    assert shape(parsed) == ("multipart/related", ["text/html", "image/png"])
    assert parsed.get_param("type") == "text/html"
    html, image = parsed.iter_parts()
    assert image["Content-ID"] == f"<{logo.content_id}>"
    assert image.get_content_disposition() == "inline"
    assert f"cid:{logo.content_id}" in text_of(html)
    assert image.get_content() == PNG


def test_full_shape_text_html_inline_and_attachment() -> None:
    pdf = Attachment(filename="invoice.pdf", content=b"%PDF-1.7\n" + bytes(range(256)) * 20)
    msg, logo = related_message(text="See the invoice.", attachments=[])
    msg = dataclasses.replace(msg, attachments=[logo, pdf])
    rendered = render(msg)
    assert_wire_format(rendered.content, header_limit=78)
    parsed = parse(rendered)
    assert shape(parsed) == (
        "multipart/mixed",
        [
            (
                "multipart/alternative",
                ["text/plain", ("multipart/related", ["text/html", "image/png"])],
            ),
            "application/pdf",
        ],
    )
    attachments = list(parsed.iter_attachments())
    assert len(attachments) == 1
    (attachment,) = attachments
    assert attachment.get_filename() == "invoice.pdf"
    assert attachment.get_content_disposition() == "attachment"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert attachment.get_content() == pdf.content
    image = next(p for p in parsed.walk() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == f"<{logo.content_id}>"
    # Base64 body lines are 76 characters, CRLF-terminated.
    body = rendered.content.split(b'filename="invoice.pdf"\r\n\r\n', 1)[1].split(b"\r\n--", 1)[0]
    assert {len(line) for line in body.split(b"\r\n")[:-1]} == {76}


def test_boundaries_are_unique_per_message() -> None:
    msg = message(html="<p>h</p>")
    first = parse(render(msg)).get_boundary()
    second = parse(render(msg)).get_boundary()
    assert first
    assert second
    assert first != second


# --------------------------------------------------------------------------- text encodings


def test_non_ascii_text_is_quoted_printable_utf8() -> None:
    rendered = render(message(text="Grüße, 東京 🎉\n"))
    assert rendered.content.isascii()
    parsed = parse(rendered)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert text_of(parsed) == "Grüße, 東京 🎉\n"


def test_long_ascii_lines_become_quoted_printable() -> None:
    text = "x" * 2000 + "\nshort line\n"
    rendered = render(message(text=text, html="<p>" + "y" * 1500 + "</p>"))
    assert_wire_format(rendered.content)
    parsed = parse(rendered)
    plain, html = parsed.iter_parts()
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert text_of(plain) == text
    assert text_of(html) == "<p>" + "y" * 1500 + "</p>"
    assert max(map(len, rendered.content.split(b"\r\n"))) <= 78


@pytest.mark.parametrize("text", ["a\rb\r\nc\nd", "line\n\n\nend\n", "trailing spaces   \nx"])
def test_line_endings_normalized_to_crlf(text: str) -> None:
    rendered = render(message(text=text, html="<p>x</p>"))
    assert_wire_format(rendered.content)
    plain = next(parse(rendered).iter_parts())
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert text_of(plain) == expected


def test_text_that_could_contain_a_boundary_is_not_7bit() -> None:
    # "=_" starts every boundary; quoted-printable can never produce it.
    text = "--=_not-a-boundary\nlink?a=_b\n"
    parsed = parse(render(message(text=text, html="<p>x</p>")))
    plain = next(parsed.iter_parts())
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert text_of(plain) == text


def test_nul_in_body_is_encoded() -> None:
    rendered = render(message(text="a\x00b"))
    assert b"\x00" not in rendered.content
    assert text_of(parse(rendered)).rstrip("\n") == "a\x00b"


def test_lone_surrogate_in_body_is_an_invalid_message() -> None:
    with pytest.raises(InvalidMessageError, match="surrogate"):
        render(message(text="bad \udc80 text"))


# --------------------------------------------------------------------------- subjects


@pytest.mark.parametrize(
    "subject",
    [
        "Your code",
        "",
        "Grüße aus Köln",
        "Ваш заказ отправлен",
        "🎉🚀 Party time 🎉",
        "Order #1 – shipped",
        "A " * 200 + "end",
        "Lange Betreffzeile mit Umlauten äöü " * 12,
        "x" * 300,
        "https://example.com/" + "a" * 150 + " trailing words",
        " leading and trailing spaces ",
        "double  spaces   inside",
        "=?utf-8?q?looks_encoded?=",
        "tab\there",
        'quotes "and" (parens) <angles> ; colons: commas,',
    ],
)
def test_subject_round_trip(subject: str) -> None:
    rendered = render(message(subject=subject))
    assert_wire_format(rendered.content, header_limit=85)
    parsed = parse(rendered)
    assert parsed["Subject"] == subject
    subject_lines = [
        line for line in header_block(rendered.content) if line.startswith((b"Subject:", b" "))
    ]
    # Folded near 78: only the first line may run a little long (header name + a word).
    assert all(len(line) <= 78 for line in subject_lines[1:])


def test_long_ascii_subject_is_folded_not_encoded() -> None:
    subject = "Your weekly report is ready " * 6
    rendered = render(message(subject=subject.strip()))
    assert b"=?" not in rendered.content
    assert b"Subject: Your weekly report" in rendered.content
    assert parse(rendered)["Subject"] == subject.strip()


def test_non_ascii_subject_uses_encoded_words() -> None:
    rendered = render(message(subject="Grüße"))
    assert b"Subject: =?utf-8?" in rendered.content
    assert rendered.content.isascii()


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("given", "name", "addr"),
    [
        ("alice@example.org", "", "alice@example.org"),
        ("  alice@example.org ", "", "alice@example.org"),
        ("<alice@example.org>", "", "alice@example.org"),
        ("Alice Example <alice@example.org>", "Alice Example", "alice@example.org"),
        ("Jörg Müller <joerg@example.de>", "Jörg Müller", "joerg@example.de"),
        ('"Doe, John" <john@example.com>', "Doe, John", "john@example.com"),
        ('"Say \\"hi\\"" <hi@example.com>', 'Say "hi"', "hi@example.com"),
        ('"back\\\\slash" <b@example.com>', "back\\slash", "b@example.com"),
        ("John Q. Public <jqp@example.com>", "John Q. Public", "jqp@example.com"),
        ('"a@b.com" <evil@x.com>', "a@b.com", "evil@x.com"),
        ('"Ann <ann@x.com>" <real@y.com>', "Ann <ann@x.com>", "real@y.com"),
        ("東京 太郎 <taro@example.jp>", "東京 太郎", "taro@example.jp"),
        # Display names are text, never decoded: an encoded-word stays literal.
        ("=?utf-8?q?J=C3=B6rg?= <j@example.de>", "=?utf-8?q?J=C3=B6rg?=", "j@example.de"),
    ],
)
def test_display_name_round_trip(given: str, name: str, addr: str) -> None:
    rendered = render(message(to=[given], cc=[SENDER]))
    assert_wire_format(rendered.content, header_limit=78)
    (address,) = parse(rendered)["To"].addresses
    assert (address.display_name, address.addr_spec) == (name, addr)
    assert rendered.recipients[0] == addr


def test_display_name_trick_sends_to_the_real_address() -> None:
    rendered = render(message(to='"ceo@example.com" <evil@x.com>'))
    assert rendered.recipients == ("evil@x.com",)


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ("a@x.com, b@y.com", "several addresses"),
        ("a@x.com; b@y.com", "several addresses"),
        ("a@x.com, Bob <b@y.com>", "outside quotes"),
        ("Doe, John <john@example.com>", "outside quotes"),
        ("a@b.com <evil@x.com>", "outside quotes"),
        ("not-an-address", "local@domain"),
        ("@example.com", "local@domain"),
        ("alice@", "local@domain"),
        ("alice@@example.com", "local@domain"),
        ("alice@example..com", "invalid domain"),
        ("alice@.example.com", "invalid domain"),
        ("Alice <alice@example.com", "local@domain"),
        ("Alice alice@example.com>", "no '<'"),
        ('"Alice <alice@example.com>', "unclosed"),
        ("Alice <a b@example.com>", "local@domain"),
        ('"quoted local"@example.com', "local@domain"),
        ("alice@[192.0.2.1]", "local@domain"),
        ("x" * 250 + "@example.com", "octets"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_bad_addresses_rejected(given: str, match: str) -> None:
    with pytest.raises(InvalidAddressError, match=match) as info:
        message(to=[given])
    assert info.value.address == given


def test_non_str_address_rejected() -> None:
    with pytest.raises(InvalidAddressError, match="must be a str"):
        message(to=[b"alice@example.org"])
    with pytest.raises(InvalidMessageError, match="str or a sequence"):
        message(to=b"alice@example.org")


def test_single_string_is_one_recipient_and_lists_become_tuples() -> None:
    msg = message(to="alice@example.org", cc=["b@example.org"], bcc=iter(["c@example.org"]))
    assert msg.to == ("alice@example.org",)
    assert msg.cc == ("b@example.org",)
    assert msg.bcc == ("c@example.org",)
    assert msg.reply_to == ()


def test_to_and_cc_present_bcc_absent() -> None:
    rendered = render(
        message(
            to="To Person <to@example.org>",
            cc=["cc@example.org"],
            bcc=["Hidden Person <hidden@example.org>", "also-hidden@example.net"],
            reply_to="Support <support@example.com>",
        )
    )
    assert b"hidden" not in rendered.content.lower()
    assert b"bcc" not in rendered.content.lower()
    parsed = parse(rendered)
    assert parsed["To"] == "To Person <to@example.org>"
    assert parsed["Cc"] == "cc@example.org"
    assert parsed["Reply-To"] == "Support <support@example.com>"
    assert parsed["Bcc"] is None
    assert rendered.recipients == (
        "to@example.org",
        "cc@example.org",
        "hidden@example.org",
        "also-hidden@example.net",
    )


def test_bcc_only_message() -> None:
    rendered = render(message(to=(), bcc="secret@example.org"))
    assert rendered.recipients == ("secret@example.org",)
    assert b"secret" not in rendered.content
    assert parse(rendered)["To"] is None


def test_recipients_deduplicated_domain_case_insensitive() -> None:
    rendered = render(
        message(
            to=["Alice <alice@Example.org>", "bob@example.org"],
            cc=["alice@example.ORG", "Bob@example.org"],
            bcc=["bob@EXAMPLE.org", "carol@example.org"],
        )
    )
    # The local part may be case-sensitive (RFC 5321 §2.4), so Bob@ stays.
    assert rendered.recipients == (
        "alice@Example.org",
        "bob@example.org",
        "Bob@example.org",
        "carol@example.org",
    )


def test_many_recipients_fold_at_78() -> None:
    to = [f"Person Number {i} <person.{i}@example.org>" for i in range(40)]
    rendered = render(message(to=to))
    assert_wire_format(rendered.content, header_limit=78)
    parsed = parse(rendered)
    assert [a.addr_spec for a in parsed["To"].addresses] == [
        f"person.{i}@example.org" for i in range(40)
    ]


def test_long_display_names_fold() -> None:
    name = "Ünïcødé " * 20
    rendered = render(
        message(sender=f"{name} <a@example.com>", to=f'"{"x, " * 40}" <b@example.org>')
    )
    assert_wire_format(rendered.content, header_limit=78)
    assert rfc2047_mailbox(rendered, "From") == (name.strip(), "a@example.com")
    assert rfc2047_mailbox(rendered, "To") == (("x, " * 40).strip(), "b@example.org")
    # Encoded-words are split after a space, never inside a word.
    from_words = header_block(rendered.content)[:6]
    assert len(from_words) == 6
    for line in from_words:
        ((chunk, charset),) = decode_header(line.decode("ascii").removeprefix("From:").strip())
        assert isinstance(chunk, bytes)
        assert chunk.decode(charset or "ascii").endswith(" ")


def test_non_ascii_local_part_stays_raw_utf8() -> None:
    rendered = render(message(sender="Jörg <jörg@example.de>", to="用户@例子.广告"))
    assert "To: 用户@例子.广告\r\n".encode() in rendered.content
    assert b"From: =?utf-8?" in rendered.content
    assert "<jörg@example.de>".encode() in rendered.content
    assert rendered.sender == "jörg@example.de"
    assert rendered.recipients == ("用户@例子.广告",)
    assert_wire_format(rendered.content)
    parsed = Parser(policy=email.policy.default).parsestr(rendered.content.decode("utf-8"))
    assert parsed["To"].addresses[0].addr_spec == "用户@例子.广告"
    assert parsed["From"].addresses[0].display_name == "Jörg"
    # An IDN sender domain gives an ASCII (punycode) Message-ID domain.
    assert render(message(sender="a@bücher.example")).message_id.endswith("@xn--bcher-kva.example")


def test_envelope_sender() -> None:
    assert render(message()).sender == "no-reply@example.com"
    bounced = render(message(envelope_sender="bounces+123@mail.example.com"))
    assert bounced.sender == "bounces+123@mail.example.com"
    assert b"bounces+123" not in bounced.content
    assert render(message(envelope_sender="")).sender == ""
    with pytest.raises(InvalidAddressError, match="display name"):
        message(envelope_sender="Bounces <b@example.com>")


def test_no_recipients_rejected() -> None:
    with pytest.raises(InvalidMessageError, match="give at least one of to, cc or bcc"):
        Message(sender=SENDER, subject="x")
    with pytest.raises(InvalidMessageError, match="give at least one of to, cc or bcc"):
        Message(sender=SENDER, to=[], reply_to="a@example.org")


@pytest.mark.parametrize("sender", ["", "   "])
def test_empty_sender_rejected(sender: str) -> None:
    with pytest.raises(InvalidAddressError, match="sender is empty"):
        message(sender=sender)


# --------------------------------------------------------------------------- extra headers


def test_extra_headers_rendered_and_immutable() -> None:
    given = {
        "List-Unsubscribe": "<https://example.com/unsubscribe?u=1>, <mailto:unsub@example.com>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "X-Campaign": "Grüße",
    }
    msg = message(headers=given)
    given["X-Later"] = "not seen"
    assert "X-Later" not in msg.headers
    with pytest.raises(TypeError):
        msg.headers["X-New"] = "x"  # type: ignore[index]
    parsed = parse(render(msg))
    assert parsed["List-Unsubscribe"] == given["List-Unsubscribe"]
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["X-Campaign"] == "Grüße"


def test_long_structured_header_is_folded_at_spaces_only() -> None:
    urls = ", ".join(f"<https://example.com/unsubscribe/{i}/{'a' * 30}>" for i in range(6))
    rendered = render(message(headers={"List-Unsubscribe": urls}))
    assert_wire_format(rendered.content)
    assert b"=?" not in rendered.content
    lines = rendered.content.split(b"List-Unsubscribe: ", 1)[1].split(b"\r\nMIME-Version")[0]
    # The first line cannot fold before its first word; the others stay within 78.
    assert all(len(line) <= 78 for line in lines.split(b"\r\n")[1:])
    assert parse(rendered)["List-Unsubscribe"] == urls


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("From", "sender="),
        ("to", "to="),
        ("CC", "cc="),
        ("Bcc", "bcc="),
        ("Reply-To", "reply_to="),
        ("Subject", "subject="),
        ("Date", "date="),
        ("Message-Id", "message_id="),
        ("MIME-Version", "MIME-Version"),
        ("Content-Type", "attachments="),
        ("content-transfer-encoding", "quoted-printable"),
    ],
)
def test_reserved_headers_rejected_with_the_field_to_use(name: str, field: str) -> None:
    with pytest.raises(InvalidMessageError, match="duplicates a header") as info:
        message(headers={name: "x"})
    assert field in str(info.value)


@pytest.mark.parametrize("name", ["", "X Space", "X:Colon", "X-Tëst", "X-Tab\t", "X-\x7f"])
def test_bad_header_names_rejected(name: str) -> None:
    with pytest.raises(InvalidMessageError, match="header name"):
        message(headers={name: "x"})


@pytest.mark.parametrize("value", ["a\x01b", "a\x7fb", "a\x1bb"])
def test_control_characters_in_extra_header_rejected(value: str) -> None:
    with pytest.raises(InvalidMessageError, match="control character"):
        message(headers={"X-Test": value})


def test_unfoldable_extra_header_rejected() -> None:
    with pytest.raises(InvalidMessageError, match="998"):
        message(headers={"X-Long": "a" * 1000})


# --------------------------------------------------------------------------- injection


INJECTIONS = ["\r\nBcc: victim@example.org", "\nX-Evil: 1", "\rX-Evil: 1", "nul\x00here"]


@pytest.mark.parametrize("payload", INJECTIONS)
@pytest.mark.parametrize(
    "build",
    [
        lambda p: message(subject=f"Hello{p}"),
        lambda p: message(sender=f"App{p} <a@example.com>"),
        lambda p: message(sender=f"a@example.com{p}"),
        lambda p: message(to=[f'"Alice{p}" <alice@example.org>']),
        lambda p: message(cc=f"cc@example.org{p}"),
        lambda p: message(bcc=[f"b{p}@example.org"]),
        lambda p: message(reply_to=f"r@example.org{p}"),
        lambda p: message(envelope_sender=f"b@example.org{p}"),
        lambda p: message(headers={"X-Test": f"value{p}"}),
        lambda p: message(headers={f"X-Test{p}": "value"}),
        lambda p: message(message_id=f"id{p}@example.com"),
        lambda p: Attachment(filename=f"a{p}.pdf", content=b""),
        lambda p: Attachment(filename="a.pdf", content=b"", content_type=f"application/pdf{p}"),
        lambda p: Attachment(filename="a.png", content=b"", inline=True, content_id=f"x{p}@y"),
    ],
    ids=[
        "subject",
        "display-name",
        "sender",
        "quoted-name",
        "cc",
        "bcc",
        "reply-to",
        "envelope-sender",
        "header-value",
        "header-name",
        "message-id",
        "filename",
        "content-type",
        "content-id",
    ],
)
def test_header_injection_rejected(build: object, payload: str) -> None:
    with pytest.raises(InvalidMessageError):
        build(payload)  # type: ignore[operator]


# --------------------------------------------------------------------------- attachments


def test_attachment_content_type_guessing() -> None:
    assert Attachment(filename="a.pdf", content=b"").content_type == "application/pdf"
    assert Attachment(filename="photo.JPG", content=b"").content_type == "image/jpeg"
    assert Attachment(filename="data.unknownext", content=b"").content_type == (
        "application/octet-stream"
    )
    # message/rfc822 may not be base64-encoded (RFC 2046 §5.2.1): sent as bytes.
    assert Attachment(filename="fwd.eml", content=b"").content_type == "application/octet-stream"
    assert Attachment(filename="a", content=b"", content_type="Text/CSV").content_type == "text/csv"
    given = "text/plain; charset=iso-8859-1"
    assert Attachment(filename="a.txt", content=b"", content_type=given).content_type == given


@pytest.mark.parametrize(
    "content_type", ["pdf", "application/", "a/b/c", "message/rfc822", "multipart/mixed"]
)
def test_bad_attachment_content_type_rejected(content_type: str) -> None:
    with pytest.raises(InvalidMessageError, match="content_type"):
        Attachment(filename="a", content=b"", content_type=content_type)


def test_attachment_content_must_be_bytes() -> None:
    with pytest.raises(InvalidMessageError, match=r"text\.encode\(\)"):
        Attachment(filename="a.txt", content="text")  # type: ignore[arg-type]
    copied = Attachment(filename="a", content=bytearray(b"xy"))  # type: ignore[arg-type]
    assert copied.content == b"xy"
    assert type(copied.content) is bytes
    with pytest.raises(InvalidMessageError, match="filename is empty"):
        Attachment(filename="", content=b"")
    with pytest.raises(InvalidMessageError, match="Attachment objects"):
        message(attachments=["a.pdf"])


def test_inline_attachment_content_id() -> None:
    generated = Attachment(filename="logo.png", content=PNG, inline=True)
    assert generated.content_id is not None
    assert re.fullmatch(r"[0-9a-f]{24}@reliable-smtp", generated.content_id)
    given = Attachment(
        filename="logo.png", content=PNG, inline=True, content_id="<logo@example.com>"
    )
    assert given.content_id == "logo@example.com"
    assert Attachment(filename="a.pdf", content=b"").content_id is None
    with pytest.raises(InvalidMessageError, match="content_id"):
        Attachment(filename="a.png", content=b"", content_id="has space")


@pytest.mark.parametrize(
    "filename",
    [
        "plain.txt",
        "résumé.pdf",
        "東京の地図.png",
        "😀 emoji.txt",
        'quote"and\\backslash.txt',
        "spaces and; semicolons, commas.txt",
        "=?utf-8?q?not_encoded?=.txt",
        " leading and trailing spaces ",
        "a" * 120 + ".txt",
        "Überlange Dateibezeichnung mit vielen Umlauten äöüß " * 4 + ".pdf",
    ],
)
def test_attachment_filename_round_trip(filename: str) -> None:
    attachment = Attachment(filename=filename, content=b"data", content_type="text/plain")
    rendered = render(message(attachments=[attachment]))
    assert_wire_format(rendered.content, header_limit=78)
    assert rendered.content.isascii()
    (part,) = parse(rendered).iter_attachments()
    assert part.get_filename() == filename.strip()  # get_filename() strips whitespace
    name = part.get_param("name")
    assert name is not None
    assert collapse_rfc2231_value(name) == filename
    assert part.get_content() == "data"


def test_attachment_from_path(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n")
    attachment = Attachment.from_path(path)
    assert attachment.filename == "report.csv"
    assert attachment.content == b"a,b\n1,2\n"
    assert attachment.content_type == "text/csv"
    inline = Attachment.from_path(
        str(path), content_type="text/plain", inline=True, content_id="c@d"
    )
    assert (inline.content_type, inline.inline, inline.content_id) == ("text/plain", True, "c@d")


def test_from_path_raises_at_once_for_a_file_it_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Attachment.from_path(tmp_path / "missing.pdf")
    with pytest.raises(IsADirectoryError):
        Attachment.from_path(tmp_path)


def test_a_from_path_attachment_is_its_bytes(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n")
    attachment = Attachment.from_path(path, inline=True, content_id="r@x")
    given = Attachment(filename="report.csv", content=b"a,b\n1,2\n", inline=True, content_id="r@x")
    assert attachment == given
    assert hash(attachment) == hash(given)
    assert repr(attachment) == repr(given)
    copies = [
        copy.copy(attachment),
        copy.deepcopy(attachment),
        pickle.loads(pickle.dumps(attachment)),
        pickle.loads(pickle.dumps(message(attachments=[attachment]))).attachments[0],
        dataclasses.replace(attachment, inline=True),
    ]
    path.unlink()
    # Copies hold the bytes, as the Attachment used to: the file is no longer needed.
    for clone in copies:
        assert clone == given
        assert clone.content == b"a,b\n1,2\n"
        assert type(clone) is Attachment
    with pytest.raises(AttributeError, match="no attribute 'contents'"):
        _ = attachment.contents  # type: ignore[attr-defined]


def test_from_path_keeps_reading_the_same_file_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.txt").write_bytes(b"from a")
    (tmp_path / "b" / "x.txt").write_bytes(b"from b")
    monkeypatch.chdir(tmp_path / "a")
    attachment = Attachment.from_path("x.txt")
    monkeypatch.chdir(tmp_path / "b")
    assert attachment.content == b"from a"
    (part,) = parse(render(message(attachments=[attachment]))).iter_attachments()
    assert part.get_content() == "from a"


def test_empty_and_large_attachments() -> None:
    big = bytes(range(256)) * 4096
    rendered = render(
        message(
            attachments=[
                Attachment(filename="empty.bin", content=b""),
                Attachment(filename="big.bin", content=big),
            ]
        )
    )
    assert_wire_format(rendered.content, header_limit=78)
    empty, large = parse(rendered).iter_attachments()
    assert empty.get_content() == b""
    assert large.get_content() == big


# --------------------------------------------------------------------------- the model


def test_message_is_frozen_and_replaceable() -> None:
    msg = message(subject="a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.subject = "b"  # type: ignore[misc]
    changed = dataclasses.replace(msg, subject="b", to=["x@example.org"])
    assert changed.subject == "b"
    assert render(changed).recipients == ("x@example.org",)
    assert msg == message(subject="a")
    assert "_mailboxes" not in repr(msg)


def test_message_copies_and_pickles() -> None:
    import pickle

    msg = message(headers={"X-A": "1"}, attachments=[Attachment(filename="a.txt", content=b"x")])
    for clone in (copy.deepcopy(msg), pickle.loads(pickle.dumps(msg))):
        assert clone == msg
        assert render(clone).recipients == render(msg).recipients


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"subject": None}, "subject must be a str"),
        ({"text": b"bytes"}, "text must be a str"),
        ({"html": 1}, "html must be a str"),
        ({"headers": [("X-A", "1")]}, "mapping"),
        ({"headers": {"X-A": 1}}, "must be a str"),
        ({"date": "today"}, "date must be a datetime"),
    ],
)
def test_wrong_types_rejected(fields: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidMessageError, match=match):
        message(**fields)


def test_render_rejects_other_objects() -> None:
    with pytest.raises(InvalidMessageError, match=r"takes a reliable_smtp\.Message"):
        render("From: a@b\r\n\r\nhi")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- EmailMessage input


def snapshot(msg: EmailMessage) -> list[object]:
    return [[(k, str(v)) for k, v in part.items()] for part in msg.walk()]


def stdlib_message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Shop <shop@example.com>"
    msg["To"] = "Alice <alice@example.org>, bob@example.org"
    msg["Cc"] = "carol@Example.org"
    msg["Bcc"] = "hidden@example.org, alice@example.ORG"
    msg["Subject"] = "Grüße"
    msg.set_content("plain")
    msg.add_alternative("<p>html</p>", subtype="html")
    msg.add_attachment(b"data", maintype="application", subtype="octet-stream", filename="a.bin")
    return msg


def test_email_message_input() -> None:
    msg = stdlib_message()
    before = snapshot(msg)
    rendered = render(msg)
    assert snapshot(msg) == before  # the caller's object, boundaries included, is unchanged
    assert msg["Bcc"] is not None
    assert msg.get_boundary() is None

    assert_wire_format(rendered.content, header_limit=78)
    assert b"hidden" not in rendered.content
    parsed = parse(rendered)
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Grüße"
    assert parsed["Message-ID"] == f"<{rendered.message_id}>"
    assert rendered.message_id.endswith("@example.com")
    assert parsed["Date"] is not None
    assert rendered.sender == "shop@example.com"
    assert rendered.recipients == (
        "alice@example.org",
        "bob@example.org",
        "carol@Example.org",
        "hidden@example.org",
    )
    assert shape(parsed) == (
        "multipart/mixed",
        [("multipart/alternative", ["text/plain", "text/html"]), "application/octet-stream"],
    )


def test_email_message_keeps_message_id_and_date_and_uses_sender_header() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com, b@example.com"
    msg["Sender"] = "robot@example.com"
    msg["To"] = "x@example.org"
    msg["Message-ID"] = "<kept.1@example.com>"
    msg["Date"] = "Fri, 17 May 2024 09:30:00 +0200"
    msg.set_content("hi")
    rendered = render(msg, domain="ignored.example")
    assert rendered.message_id == "kept.1@example.com"
    assert rendered.sender == "robot@example.com"
    parsed = parse(rendered)
    assert parsed["Date"] == "Fri, 17 May 2024 09:30:00 +0200"
    assert len(parsed.get_all("Message-ID", [])) == 1


def test_email_message_with_utf8_addresses_uses_smtputf8() -> None:
    msg = EmailMessage()
    msg["From"] = "Jörg <jörg@example.de>"
    msg["To"] = "用户@例子.广告"
    msg.set_content("hi")
    rendered = render(msg)
    assert rendered.sender == "jörg@example.de"
    assert rendered.recipients == ("用户@例子.广告",)
    assert "To: 用户@例子.广告\r\n".encode() in rendered.content
    assert_wire_format(rendered.content)


def test_compat32_message_input() -> None:
    msg = MIMEText("héllo", "plain", "utf-8")
    msg["From"] = "=?utf-8?q?J=C3=B6rg?= <j@example.de>"
    msg["To"] = '"Doe, John" <john@example.com>'
    msg["Resent-Bcc"] = "x@example.org"
    rendered = render(msg, domain="mail.example.de")
    assert rendered.message_id.endswith("@mail.example.de")
    assert rendered.recipients == ("john@example.com",)
    assert b"Resent-Bcc" not in rendered.content
    assert msg["Resent-Bcc"] == "x@example.org"
    assert msg["Message-ID"] is None
    assert_wire_format(rendered.content)
    assert text_of(parse(rendered)) == "héllo"


def test_resent_headers_choose_recipients() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "original@example.org"
    msg["Resent-Date"] = "Fri, 17 May 2024 09:30:00 +0200"
    msg["Resent-To"] = "new@example.org"
    msg["Resent-Bcc"] = "hidden@example.org"
    msg.set_content("hi")
    rendered = render(msg)
    assert rendered.recipients == ("new@example.org", "hidden@example.org")
    assert b"hidden" not in rendered.content


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Subject", "Hi\r\nBcc: victim@example.org"),
        ("Subject", "Hi\nX-Evil: 1"),
        ("X-Test", "nul\x00"),
        ("To", "ok@example.org\r\nBcc: victim@example.org"),
    ],
)
def test_email_message_header_injection_rejected(header: str, value: str) -> None:
    msg = MIMEText("hi")  # compat32 stores header values as given
    msg["From"] = "a@example.com"
    if header != "To":
        msg["To"] = "b@example.org"
    msg[header] = value
    with pytest.raises(InvalidMessageError, match=r"CR|LF|NUL"):
        render(msg)


def test_parsed_message_with_folded_headers_is_fine() -> None:
    raw = (
        b"From: a@example.com\r\nTo: b@example.org,\r\n c@example.org\r\n"
        b"Subject: folded\r\n  subject\r\n\r\nbody\r\n"
    )
    msg = BytesParser(policy=email.policy.compat32).parsebytes(raw)
    rendered = render(msg)
    assert rendered.recipients == ("b@example.org", "c@example.org")
    assert_wire_format(rendered.content)


def test_email_message_without_from_or_recipients_rejected() -> None:
    msg = EmailMessage()
    msg["To"] = "b@example.org"
    with pytest.raises(InvalidAddressError, match="no From"):
        render(msg)
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    with pytest.raises(InvalidMessageError, match="no recipients"):
        render(msg)


def test_email_message_with_bad_address_rejected() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "undisclosed-recipients:;, nobody"
    with pytest.raises(InvalidAddressError):
        render(msg)


def test_email_message_with_long_8bit_line_rejected() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.org"
    msg.set_content("é" * 1200, cte="8bit")
    with pytest.raises(InvalidMessageError, match="998"):
        render(msg)


# --------------------------------------------------------------------------- every line break

# Each is a line break for str.splitlines() (and so for the email package's
# folders), or NUL; named as the error names them.
LINE_BREAK_NAMES = {
    "\r": "CR",
    "\n": "LF",
    "\x00": "NUL",
    "\x0b": "VT",
    "\x0c": "FF",
    "\x1c": "FS",
    "\x1d": "GS",
    "\x1e": "RS",
    "\x85": "NEL",
    "\u2028": "LINE SEPARATOR",
    "\u2029": "PARAGRAPH SEPARATOR",
}


@pytest.mark.parametrize("char", list(LINE_BREAK_NAMES), ids=list(LINE_BREAK_NAMES.values()))
@pytest.mark.parametrize(
    "build",
    [
        lambda p: message(subject=f"Hello{p}Bcc: x@evil.example"),
        lambda p: message(sender=f"App{p}Bcc: x <a@example.com>"),
        lambda p: message(to=[f'"Alice{p}Bcc: x" <alice@example.org>']),
        lambda p: message(headers={"X-Test": f"value{p}Bcc: x@evil.example"}),
        lambda p: message(headers={"X-Test": f"Grüße{p}Bcc: x@evil.example"}),
        lambda p: Attachment(filename=f"a{p}Bcc: x.pdf", content=b""),
    ],
    ids=["subject", "display-name", "quoted-name", "header-value", "utf8-header", "filename"],
)
def test_every_kind_of_line_break_is_refused_in_message_headers(build: object, char: str) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        build(char)  # type: ignore[operator]
    assert LINE_BREAK_NAMES[char] in str(caught.value)
    assert "\n" not in str(caught.value)


def stdlib_with_subject(kind: str, subject: str) -> email.message.Message:
    head = "From: a@example.com\r\nTo: b@example.org\r\nSubject: "
    if kind == "parsed-str":
        return email.message_from_string(head + subject + "\r\n\r\nbody\r\n")
    if kind == "parsed-str-default":
        return email.message_from_string(
            head + subject + "\r\n\r\nbody\r\n", policy=email.policy.default
        )
    if kind == "parsed-bytes":
        return email.message_from_bytes((head + subject + "\r\n\r\nbody\r\n").encode())
    if kind == "parsed-bytes-default":
        return email.message_from_bytes(
            (head + subject + "\r\n\r\nbody\r\n").encode(), policy=email.policy.default
        )
    msg: email.message.Message = MIMEText("body") if kind == "mime" else email.message.Message()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.org"
    msg["Subject"] = Header(subject) if kind == "header-object" else subject
    return msg


STDLIB_KINDS = [
    "compat32",
    "mime",
    "header-object",
    "parsed-str",
    "parsed-str-default",
    "parsed-bytes",
    "parsed-bytes-default",
]


@pytest.mark.parametrize("char", list(LINE_BREAK_NAMES), ids=list(LINE_BREAK_NAMES.values()))
@pytest.mark.parametrize("kind", STDLIB_KINDS)
def test_a_line_break_in_a_stdlib_header_never_becomes_a_new_header(kind: str, char: str) -> None:
    msg = stdlib_with_subject(kind, f"Hello{char}Bcc: x@evil.example")
    # The parser itself ends the line at CR and LF: then Bcc is a header of the
    # file, and an envelope recipient. (8-bit bytes are checked as UTF-8.)
    parser_split = kind.startswith("parsed") and char in "\r\n"
    if not parser_split:
        with pytest.raises(InvalidMessageError, match=f"header Subject .*{LINE_BREAK_NAMES[char]}"):
            render(msg)
        return
    rendered = render(msg)
    names = [line.split(b":")[0] for line in header_block(rendered.content) if line[:1] != b" "]
    assert b"Bcc" not in names
    assert rendered.recipients == ("b@example.org", "x@evil.example")


def test_8bit_header_bytes_are_checked_as_utf8_and_refused_otherwise() -> None:
    head = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: "
    utf8 = email.message_from_bytes(head + "Grüße".encode() + b"\r\n\r\nbody\r\n")
    assert_wire_format(render(utf8).content)  # written back as it was (or encoded on 3.13+)
    # 0x85 is NEL in Latin-1: a receiver reading it so would see a line break.
    latin1 = email.message_from_bytes(head + b"Hello\x85Bcc: x@evil.example\r\n\r\nbody\r\n")
    with pytest.raises(InvalidMessageError, match=r"header Subject .* not UTF-8"):
        render(latin1)


def test_a_formfeed_in_a_parsed_eml_subject_is_refused() -> None:
    # The example from the security review: Python < 3.13 wrote "Bcc: ..." as a header.
    raw = (
        b"From: a@example.com\r\nTo: b@example.org\r\nSubject: Hello\x0cBcc: x@evil.example\r\n\r\n"
    )
    with pytest.raises(InvalidMessageError, match=r"header Subject .* FF"):
        render(email.message_from_bytes(raw + b"body\r\n", policy=email.policy.default))


def test_compat32_header_objects_are_rendered() -> None:
    msg = MIMEText("hi", "plain", "utf-8")
    msg["From"] = Header("Jörg <j@example.de>", "utf-8")
    msg["To"] = "b@example.org"
    msg["Subject"] = Header("Grüße aus Köln", "utf-8")
    msg["X-Plain"] = Header("plain ascii")
    rendered = render(msg)
    assert_wire_format(rendered.content)
    parsed = parse(rendered)
    assert parsed["Subject"] == "Grüße aus Köln"
    assert parsed["X-Plain"] == "plain ascii"
    assert [k.lower() for k in parsed] == [
        "content-type",
        "mime-version",
        "content-transfer-encoding",
        "from",
        "to",
        "subject",
        "x-plain",
        "message-id",
        "date",
    ]
    assert isinstance(msg["Subject"], Header)  # the caller's object is unchanged


class _InjectingHeader(str):
    """A header object (as a custom policy's header_factory could make) that folds badly."""

    name = "Subject"

    def fold(self, *, policy: object) -> str:
        return "Subject: hi\r\nBcc: x@evil.example\r\n"


def test_a_header_that_folds_into_two_header_lines_is_refused() -> None:
    # Python 3.13+ raises email.errors.HeaderWriteError here; older ones write it.
    msg = MIMEText("hi")
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.org"
    msg.set_raw("Subject", _InjectingHeader("hi"))
    with pytest.raises(InvalidMessageError, match="Subject") as caught:
        render(msg)
    assert "Bcc" in str(caught.value)


@pytest.mark.parametrize(
    ("raw_header", "named"),
    [
        (b"From: a@", "From"),
        (b"To: a@", "To"),
        (b'To: "', "To"),
        (b"To: a@[", "To"),
        (b"Message-ID: <", "Message-ID"),
        (b"Message-ID: <a@", "Message-ID"),
        (b"Message-ID: <two words@example.com>", "Message-ID"),
        (b"Message-ID: no-brackets@example.com", "Message-ID"),
        (b"From: =?utf-8?q?A=0ABcc:_x@evil.example?= <a@example.com>", "From"),
    ],
)
def test_malformed_stdlib_headers_give_a_typed_error_naming_the_header(
    raw_header: bytes, named: str
) -> None:
    lines = {"From": b"From: a@example.com", "To": b"To: b@example.org", named: raw_header}
    raw = b"\r\n".join(lines.values()) + b"\r\n\r\nbody\r\n"
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    with pytest.raises(InvalidMessageError) as caught:
        render(msg)
    # Which words depends on the Python version: some parse what others crash on.
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_overlong_stdlib_header_line_names_the_header() -> None:
    msg = MIMEText("hi")
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.org"
    msg["X-" + "n" * 1000] = "value"
    with pytest.raises(InvalidMessageError, match=r"header X-nnn.* 998"):
        render(msg)


def test_a_long_run_of_spaces_in_a_stdlib_subject_is_folded() -> None:
    subject = "a" + " " * 1500 + "b"
    for kind in ("compat32", "parsed-bytes-default"):
        rendered = render(stdlib_with_subject(kind, subject))
        assert_wire_format(rendered.content)


# --------------------------------------------------------------------------- 998 octets


@pytest.mark.parametrize("longest", [997, 998, 999, 2500])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_text_line_over_998_characters_makes_the_part_quoted_printable(
    longest: int, where: str
) -> None:
    short = "a short line\n" * 90  # over 998 characters in all, every line short
    text = {"first": "x" * longest + "\n" + short, "middle": short + "x" * longest + "\n" + short}
    text["last"] = short + "x" * longest
    rendered = render(message(text=text[where]))
    assert_wire_format(rendered.content)
    cte = b"7bit" if longest <= 998 else b"quoted-printable"
    assert b"Content-Transfer-Encoding: " + cte in rendered.content
    assert parse(rendered).get_content() == text[where].replace("\n", "\r\n") + (
        "\r\n" if where == "last" else ""
    )


@given(st.lists(st.integers(min_value=0, max_value=1200), max_size=6))
def test_lines_fit_is_the_longest_line_check(lengths: list[int]) -> None:
    text = "\n".join("x" * n for n in lengths)
    assert _lines_fit(text) is (max(map(len, text.split("\n"))) <= 998)


def test_a_subject_with_a_long_run_of_spaces_is_encoded_and_round_trips() -> None:
    subject = "a" + " " * 1500 + "b"
    rendered = render(message(subject=subject))
    assert_wire_format(rendered.content, header_limit=78)
    assert parse(rendered)["Subject"] == subject


def test_runs_of_spaces_fold_with_the_word_after_them() -> None:
    value = ("x" + " " * 60) * 30 + "y"
    rendered = render(message(subject=value, headers={"X-Runs": value}))
    assert_wire_format(rendered.content)
    assert b"=?" not in rendered.content  # literal, folded before each run
    unfolded = BytesParser(policy=email.policy.compat32).parsebytes(rendered.content)
    assert re.sub(r"\r\n", "", str(unfolded["X-Runs"])) == value
    assert re.sub(r"\r\n", "", str(unfolded["Subject"])) == value
    assert not any(line.strip() == b"" for line in header_block(rendered.content))


def test_an_extra_header_with_an_unfoldable_run_of_spaces_is_refused() -> None:
    with pytest.raises(InvalidMessageError, match="collapse the spaces"):
        message(headers={"X-Spaces": "a" + " " * 1500 + "b"})


def test_an_overlong_header_name_is_refused() -> None:
    with pytest.raises(InvalidMessageError, match=r"header name .* 950 characters"):
        message(headers={"X-" + "n" * 948: "Grüße"})
    # The longest name allowed still fits, with any value.
    name = "X-" + "n" * 918
    value = " ".join(["Grüße"] * 40)
    rendered = render(message(headers={name: value, "X-" + "m" * 900: "a" * 80}))
    assert_wire_format(rendered.content)
    assert parse(rendered)[name] == value


def test_an_overlong_message_id_or_content_id_is_refused() -> None:
    with pytest.raises(InvalidMessageError, match="message_id is 1000 characters"):
        message(message_id="a" * 988 + "@example.com")
    with pytest.raises(InvalidMessageError, match="content_id is 1000 characters"):
        Attachment(
            filename="a.png", content=b"", inline=True, content_id="a" * 988 + "@example.com"
        )
    rendered = render(message(message_id="a" * 972 + "@example.com"))
    assert_wire_format(rendered.content)


def test_a_long_content_type_is_folded_or_refused() -> None:
    params = "; ".join(f"p{i}=value{i}" for i in range(120))
    attachment = Attachment(filename="a.bin", content=b"x", content_type=f"application/x; {params}")
    rendered = render(message(attachments=[attachment]))
    assert_wire_format(rendered.content)
    (part,) = parse(rendered).iter_attachments()
    assert part.get_param("p119") == "value119"
    with pytest.raises(InvalidMessageError, match="content_type has"):
        Attachment(filename="a.bin", content=b"", content_type="application/x; p=" + "v" * 990)


# --------------------------------------------------------------------------- properties

# Every character a Python line splitter breaks at, and NUL: refused in every header.
LINE_BREAKS = "\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=300)
BODY_TEXT = st.text(
    st.one_of(st.characters(blacklist_categories=("Cc", "Cs")), st.just("\n")), max_size=400
)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@PROPERTY_SETTINGS
@given(subject=SAFE_TEXT, text=BODY_TEXT, html=st.none() | BODY_TEXT)
def test_subject_and_body_round_trip(subject: str, text: str, html: str | None) -> None:
    rendered = render(message(subject=subject, text=text, html=html))
    assert_wire_format(rendered.content)
    parsed = parse(rendered)
    assert parsed["Subject"] == subject
    plain = parsed if html is None else next(parsed.iter_parts())
    # A message body's final line break is not significant (the single-part
    # renderer ends the message with one).
    assert text_of(plain).rstrip("\n") == text.rstrip("\n")
    if html is not None:
        assert text_of(list(parsed.iter_parts())[1]).rstrip("\n") == html.rstrip("\n")


@PROPERTY_SETTINGS
@given(name=SAFE_TEXT)
def test_quoted_display_name_round_trip(name: str) -> None:
    rendered = render(message(sender=f"{quoted(name)} <a@example.com>"))
    assert_wire_format(rendered.content)
    assert rfc2047_mailbox(rendered, "From") == (name.strip(), "a@example.com")
    (address,) = parse(rendered)["From"].addresses
    assert address.addr_spec == "a@example.com"


def only_library_errors(build: object) -> Iterator[RenderedMessage]:
    try:
        rendered = render(build())  # type: ignore[operator]
    except ReliableSMTPError:
        return
    assert_wire_format(rendered.content)
    yield rendered


@PROPERTY_SETTINGS
@given(value=st.text(max_size=200))
def test_any_text_renders_or_raises_a_library_error(value: str) -> None:
    for build in (
        lambda: message(subject=value),
        lambda: message(sender=f"{value} <a@example.com>"),
        lambda: message(sender=f"{quoted(value)} <a@example.com>"),
        lambda: message(to=value),
        lambda: message(headers={"X-Value": value}),
        lambda: message(attachments=[Attachment(filename=value or "x", content=b"")]),
    ):
        for rendered in only_library_errors(build):
            parse(rendered)


@PROPERTY_SETTINGS
@given(
    value=st.text(
        st.characters(codec="utf-8", blacklist_characters=LINE_BREAKS), min_size=1, max_size=80
    )
)
def test_any_filename_round_trips(value: str) -> None:
    rendered = render(message(attachments=[Attachment(filename=value, content=b"x")]))
    assert_wire_format(rendered.content)
    (part,) = parse(rendered).iter_attachments()
    # get_filename() strips whitespace; the parameter itself must be exact.
    for header in ("content-disposition", "content-type"):
        param = "filename" if header == "content-disposition" else "name"
        raw = part.get_param(param, header=header)
        assert raw is not None
        assert collapse_rfc2231_value(raw) == value


def test_from_path_reads_a_pipe_at_once(tmp_path: Path) -> None:
    # A pipe (or /dev/stdin) can be read only once: its bytes are kept, not its path.
    read, write = os.pipe()
    os.write(write, b"piped bytes")
    os.close(write)
    try:
        attachment = Attachment.from_path(f"/dev/fd/{read}")
    finally:
        os.close(read)
    assert attachment.content == b"piped bytes"
    for _ in range(2):
        (part,) = parse(render(message(attachments=[attachment]))).iter_attachments()
        assert part.get_content() == b"piped bytes"
