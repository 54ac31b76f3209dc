"""Logging: a redacted protocol transcript at DEBUG, one structured event per send, retry
and give-up - and never a password, in any form, anywhere."""

from __future__ import annotations

import base64
import logging

import pytest

from conftest import USERNAME, tls_transport
from reliable_smtp import AuthOrConfigError, Mailer, Message, RetryPolicy
from reliable_smtp.testing import FakeClock, LocalSMTPServer

SECRET = "Distinctive-Pa55word-Q7"


def secret_forms() -> list[str]:
    plain = base64.b64encode(f"\0{USERNAME}\0{SECRET}".encode()).decode()
    login = base64.b64encode(SECRET.encode()).decode()
    return [SECRET, plain, login]


def all_text(records: list[logging.LogRecord]) -> str:
    return "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in records)


def test_transcript_and_events_never_show_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with LocalSMTPServer(tls="starttls", auth={USERNAME: SECRET}) as server:
        server.script("RCPT", "451 4.3.0 try again", recipient="b@example.org")
        clock = FakeClock()
        with Mailer(
            tls_transport(server, password=SECRET), clock=clock, sleep=clock.sleep
        ) as mailer:
            result = mailer.send(
                Message(
                    sender="a@example.com",
                    to=["b@example.org"],
                    subject="hi",
                    text="secret-free body",
                )
            )
    assert result.ok
    text = all_text(caplog.records)
    for form in secret_forms():
        assert form not in text
    lines = [r.getMessage() for r in caplog.records if r.name == "reliable_smtp.transcript"]
    assert any("AUTH PLAIN <credentials redacted>" in line for line in lines)
    assert any("> MAIL FROM:<a@example.com>" in line for line in lines)
    assert any("< 451 4.3.0 try again" in line for line in lines)
    assert any("<message:" in line and "bytes" in line for line in lines)
    assert any(" ms)" in line for line in lines)  # replies carry timings
    events = [r for r in caplog.records if getattr(r, "event", None)]
    assert [e.event for e in events] == ["send", "retry", "send"]  # type: ignore[attr-defined]
    retry = events[1]
    assert retry.message_id == result.message_id  # type: ignore[attr-defined]
    assert retry.code == 451  # type: ignore[attr-defined]
    assert retry.enhanced_code == "4.3.0"  # type: ignore[attr-defined]
    assert retry.phase == "rcpt"  # type: ignore[attr-defined]
    assert retry.recipient == "b@example.org"  # type: ignore[attr-defined]
    assert retry.attempt == 1  # type: ignore[attr-defined]
    assert retry.delay == clock.sleeps[0]  # type: ignore[attr-defined]


def test_failed_login_is_logged_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with (
        LocalSMTPServer(tls="starttls", auth={USERNAME: "the-right-one"}) as server,
        Mailer(tls_transport(server, password=SECRET), retry=RetryPolicy.never()) as mailer,
        pytest.raises(AuthOrConfigError) as caught,
    ):
        mailer.send(Message(sender="a@example.com", to=["b@example.org"]))
    text = all_text(caplog.records) + str(caught.value) + repr(caught.value)
    for form in secret_forms():
        assert form not in text
    give_up = [r for r in caplog.records if getattr(r, "event", None) == "give_up"]
    assert len(give_up) == 1
    assert give_up[0].levelno == logging.WARNING
    assert give_up[0].code == 535  # type: ignore[attr-defined]
