"""Arbitrary text in every header, address and display name, sent to a real server.

The property, for the Message and the stdlib-message paths alike: a send either
delivers a message whose every line is at most 998 octets and whose headers are
exactly the ones the caller asked for (no line break of any kind left in the
header block, so no parser can split one into two), or raises one of the
library's own errors - and when the message was refused as invalid, no MAIL,
RCPT or DATA reached the server.

The recipient policy is off (``recipient_policy=None``): the message model and
the envelope are the only defences under test. Also here: ``reliable-smtp send
--eml`` on files that used to inject a header or crash with a traceback.
"""

from __future__ import annotations

import email
import email.errors
import email.message
import email.policy
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from email.mime.text import MIMEText
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conftest import relay_transport
from reliable_smtp import (
    Attachment,
    InvalidMessageError,
    Mailer,
    Message,
    ReliableSMTPError,
)
from reliable_smtp._envelope import line_break_problem
from reliable_smtp._message import render
from reliable_smtp.testing import LocalSMTPServer

# Pieces that matter to header and command syntax, mixed into arbitrary text.
TRICKY = [
    *'\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\t <>@",;:\\()[]=?_é',
    "=?utf-8?q?",
    "\r\nBcc: x@evil.example",
    "\u2028Bcc: x@evil.example",
    " " * 40,
    " " * 1000,
]
TEXT = st.lists(st.text(max_size=10) | st.sampled_from(TRICKY), max_size=8).map("".join)
# Text the library accepts more often: printable, any script, spaces.
PRINTABLE = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=60)
# Either, sometimes long enough to pass 998 octets (a piece of text repeated).
SOME_TEXT = TEXT | PRINTABLE
ANY_TEXT = SOME_TEXT | st.tuples(SOME_TEXT, st.integers(2, 60)).map(lambda pair: pair[0] * pair[1])
HEADER_NAME = (
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)
    | st.integers(900, 1000).map(lambda n: "X-" + "n" * n)
    | TEXT
)


def some_fields_hostile(defaults: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    """``defaults`` with one to three fields replaced by arbitrary text.

    The other fields keep values that send, so that both outcomes (sent and
    refused) are common and each field's own rules are what decides.
    """
    strategies = {key: HEADER_NAME if key == "header_name" else ANY_TEXT for key in defaults}
    return (
        st.tuples(st.permutations(sorted(defaults)), st.integers(1, 3))
        .flatmap(lambda pick: st.fixed_dictionaries({k: strategies[k] for k in pick[0][: pick[1]]}))
        .map(lambda hostile: {**defaults, **hostile})
    )


PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LocalSMTPServer]:
    with LocalSMTPServer() as running:
        yield running


def header_names(content: bytes) -> list[str]:
    """The top-level header names on the wire, in order (continuation lines skipped)."""
    block = content.split(b"\r\n\r\n", 1)[0]
    return [
        line.split(b":", 1)[0].decode("utf-8", "surrogateescape")
        for line in block.split(b"\r\n")
        if line[:1] not in (b" ", b"\t")
    ]


def assert_safe_wire_format(content: bytes, expected_names: list[str]) -> None:
    assert max(map(len, content.split(b"\r\n"))) <= 998
    assert [n.lower() for n in header_names(content)] == [n.lower() for n in expected_names]
    # Unfolded, the header block holds no character any line splitter breaks at.
    block = content.split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
    unfolded = block.replace("\r\n ", " ").replace("\r\n\t", "\t")
    for line in unfolded.split("\r\n"):
        assert line_break_problem(line) is None, line


def send_and_check(
    server: LocalSMTPServer,
    build: Callable[[], Message | email.message.Message],
    expected_names: Callable[[Message | email.message.Message], list[str]],
) -> None:
    """Build, render and send; check the property whichever way it ends."""
    messages_before = len(server.messages)
    commands_before = len(server.commands)
    try:
        message = build()
    except InvalidMessageError as error:
        event(f"refused when built: {type(error).__name__}")
        return
    try:
        # What the mailer would send, checked here too: a server that refuses
        # an over-long line must not hide the renderer's fault.
        rendered = render(message)
    except InvalidMessageError:
        pass
    else:
        assert_safe_wire_format(rendered.content, expected_names(message))
    try:
        with Mailer(relay_transport(server), recipient_policy=None) as mailer:
            mailer.send(message)
    except InvalidMessageError as error:
        event(f"refused when sent: {type(error).__name__}")
        assert len(server.messages) == messages_before
        assert all(c[1] not in ("MAIL", "RCPT", "DATA") for c in server.commands[commands_before:])
        return
    except ReliableSMTPError as error:
        event(f"server refused: {type(error).__name__}")
        # A refusal by the server (a reply to MAIL/RCPT/DATA): it has nothing.
        assert len(server.messages) == messages_before
        return
    event("sent")
    [received] = server.messages[messages_before:]
    assert_safe_wire_format(received.content, expected_names(message))


# --------------------------------------------------------------------------- the Message path


def message_names(message: Message | email.message.Message) -> list[str]:
    assert isinstance(message, Message)
    names = ["From"]
    if message.reply_to:
        names.append("Reply-To")
    names += ["To", "Cc", "Subject", "Date", "Message-ID", *message.headers, "MIME-Version"]
    return [*names, "Content-Type"]


# What each field is when hypothesis leaves it alone: a message that sends.
MESSAGE_DEFAULTS = {
    "subject": "Your order has shipped",
    "display": "Example Shop",
    "quoted_display": "Shop, Example",
    "local": "alice",
    "to": "Bob <bob@example.org>",
    "reply_to": "help@example.com",
    "header_name": "X-Campaign",
    "header_value": "spring-sale",
    "filename": "invoice.pdf",
}
MESSAGE_FIELDS = some_fields_hostile(MESSAGE_DEFAULTS)


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(PROPERTY_SETTINGS, max_examples=150)
@given(values=MESSAGE_FIELDS)
# The review's cases: a 1509-octet Subject line, a 1010-octet custom header line.
@example(values={**MESSAGE_DEFAULTS, "subject": "a" + " " * 1500 + "b"})
@example(values={**MESSAGE_DEFAULTS, "header_name": "X-" + "n" * 990, "header_value": "é"})
@example(values={**MESSAGE_DEFAULTS, "subject": "Hello\u2028Bcc: x@evil.example"})
def test_message_path_sends_exactly_the_asked_headers_or_raises_before_the_wire(
    shared_server: LocalSMTPServer, values: dict[str, str]
) -> None:
    def build() -> Message:
        return Message(
            sender=f"{values['display']} <app@example.com>",
            to=[f"{values['local']}@example.org", values["to"]],
            cc=[f"{quoted(values['quoted_display'])} <carol@example.org>"],
            reply_to=[values["reply_to"]],
            subject=values["subject"],
            text="hello",
            headers={values["header_name"]: values["header_value"]},
            attachments=[Attachment(filename=values["filename"], content=b"data")],
        )

    send_and_check(shared_server, build, message_names)


# --------------------------------------------------------------------------- stdlib messages


def stdlib_names(message: Message | email.message.Message) -> list[str]:
    assert isinstance(message, email.message.Message)
    names = [k for k in message if k.lower() not in ("bcc", "resent-bcc")]
    present = {k.lower() for k in message}
    if "message-id" not in present:
        names.append("Message-ID")
    if "date" not in present:
        names.append("Date")
    return names


STDLIB_DEFAULTS = {
    "subject": "Your order has shipped",
    "display": "Example Shop",
    "local": "alice",
    "cc": "Carol <carol@example.org>",
    "header_name": "X-Campaign",
    "header_value": "spring-sale",
}
STDLIB_FIELDS = some_fields_hostile(STDLIB_DEFAULTS)


def fields(values: dict[str, str]) -> list[tuple[str, str]]:
    return [
        ("From", f"{values['display']} <app@example.com>"),
        ("To", f"{values['local']}@example.org"),
        ("Cc", values["cc"]),
        ("Subject", values["subject"]),
        (values["header_name"], values["header_value"]),
    ]


def build_stdlib(kind: str, items: list[tuple[str, str]]) -> email.message.Message:
    if kind in ("eml-bytes", "eml-str"):
        head = "".join(f"{k}: {v}\r\n" for k, v in items)
        if kind == "eml-bytes":
            raw = (head + "\r\nbody\r\n").encode("utf-8", "surrogatepass")
            return email.message_from_bytes(raw, policy=email.policy.default)
        return email.message_from_string(head + "\r\nbody\r\n")
    msg: email.message.Message
    if kind == "EmailMessage":
        msg = email.message.EmailMessage()
        msg.set_content("body")
    elif kind == "MIMEText":
        msg = MIMEText("body")
    else:
        msg = email.message.Message()
        msg.set_payload("body")
    for key, val in items:
        msg[key] = val
    return msg


@settings(PROPERTY_SETTINGS, max_examples=150)
@given(
    kind=st.sampled_from(["compat32", "MIMEText", "EmailMessage", "eml-bytes", "eml-str"]),
    values=STDLIB_FIELDS,
)
# The review's cases: a new Bcc line from U+2028 (compat32) and FF (.eml); IndexError.
@example(kind="compat32", values={**STDLIB_DEFAULTS, "subject": "Hello\u2028Bcc: x@evil.example"})
@example(kind="eml-bytes", values={**STDLIB_DEFAULTS, "subject": "Hello\x0cBcc: x@evil.example"})
@example(kind="eml-bytes", values={**STDLIB_DEFAULTS, "cc": "a@"})
def test_stdlib_path_sends_exactly_the_asked_headers_or_raises_before_the_wire(
    shared_server: LocalSMTPServer, kind: str, values: dict[str, str]
) -> None:
    items = fields(values)
    try:
        message = build_stdlib(kind, items)
    except (ValueError, TypeError, AttributeError, LookupError, email.errors.MessageError):
        # The email package failed while the caller built the EmailMessage
        # (it refuses line breaks itself, and its parser has bugs of its own,
        # e.g. an AttributeError for a display name of "."): this library never ran.
        assert kind == "EmailMessage"
        return
    send_and_check(shared_server, lambda: message, stdlib_names)


# --------------------------------------------------------------------------- the command line


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELIABLE_SMTP_")}
    env["RELIABLE_SMTP_LOCAL_HOSTNAME"] = "client.test"
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run(
        [sys.executable, "-m", "reliable_smtp", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("eml", "named"),
    [
        # Exited 0 and sent a Bcc header line.
        (
            b"From: a@example.com\r\nTo: b@example.org\r\nSubject: Hi\x0cBcc: x@evil.example\r\n",
            "FF",
        ),
        (
            b"From: a@example.com\r\nTo: b@example.org\r\nSubject: Hi\x1eBcc: x@evil.example\r\n",
            "RS",
        ),
        # Printed an IndexError traceback.
        (b"From: a@\r\nTo: b@example.org\r\nSubject: hi\r\n", "From"),
        (b"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: <\r\n", "header Message-ID"),
    ],
)
def test_send_eml_refuses_an_unsafe_or_malformed_file_with_one_line_and_exit_2(
    tmp_path: Path, eml: bytes, named: str
) -> None:
    (tmp_path / "m.eml").write_bytes(eml + b"\r\nbody\r\n")
    with LocalSMTPServer() as server:
        done = run_cli(
            tmp_path, "send", "--host", "127.0.0.1", "--port", str(server.port), "--tls", "none",
            "--eml", "m.eml",
        )  # fmt: skip
        assert server.connections == 0
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("reliable-smtp send: ")
    assert named in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "recipient",
    [
        # parseaddr() used to make this "b@example.orgNOTIFY=SUCCESS", a different address.
        "b@example.org NOTIFY=SUCCESS",
        "alice@example.org> NOTIFY=SUCCESS ORCPT=rfc822;x@evil.example",
        "b@example.org\u2028",
    ],
)
def test_send_eml_refuses_an_envelope_override_that_is_not_one_address(
    tmp_path: Path, recipient: str
) -> None:
    (tmp_path / "m.eml").write_bytes(b"From: a@example.com\r\nTo: b@example.org\r\n\r\nbody\r\n")
    with LocalSMTPServer() as server:
        done = run_cli(
            tmp_path, "send", "--host", "127.0.0.1", "--port", str(server.port), "--tls", "none",
            "--eml", "m.eml", "--to", recipient,
        )  # fmt: skip
        assert server.connections == 0
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("reliable-smtp send: --to/--cc/--bcc address ")
    assert done.stderr.count("\n") == 1
