"""reliable_smtp.testing: the outbox, the scripted transport, the wait switches, the
conformance check, and the sample application that uses them."""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

import reliable_smtp.testing as testing
from conftest import PASSWORD, USERNAME, relay_transport, tls_transport
from reliable_smtp import (
    AmbiguousDeliveryError,
    AsyncMailer,
    Attachment,
    AuthOrConfigError,
    ConnectionFailedError,
    DeliveryError,
    DeliveryReport,
    Envelope,
    FileTransport,
    Mailer,
    MemoryTransport,
    Message,
    Outcome,
    PermanentError,
    Phase,
    RecipientStatus,
    Reply,
    RetryPolicy,
    SendmailTransport,
    SMTPTimeoutError,
    ThrottledError,
    TransientError,
    Transport,
    TransportClosedError,
)
from reliable_smtp.testing import (
    CONTRACT_RULES,
    FakeClock,
    LocalSMTPServer,
    MockTransport,
    Outbox,
    OutboxMessage,
    ScriptedTransport,
    ScriptError,
    ScriptStep,
    SentMessage,
    TransportContractError,
    accept,
    check_transport,
    check_transport_sync,
    disconnect,
    no_retry_waits,
    recorded_waits,
    reply,
    timeout,
)

ROOT = Path(__file__).resolve().parent.parent
ANN, BOB, CAT = "ann@example.org", "bob@example.org", "cat@example.net"
ENVELOPE = Envelope("app@example.com", (ANN, BOB, CAT))
CONTENT = b"From: app@example.com\r\nTo: ann@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def message(**fields: Any) -> Message:
    fields.setdefault("sender", "App <app@example.com>")
    fields.setdefault("to", [ANN])
    fields.setdefault("subject", "Welcome")
    fields.setdefault("text", "Hello Ann\nbye")
    return Message(**fields)


# == the module ==========================================================================


def test_all_is_sorted_public_and_documented() -> None:
    assert testing.__all__ == sorted(testing.__all__)
    for name in testing.__all__:
        obj = getattr(testing, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name} has no docstring"
    assert set(testing.__all__) <= set(dir(testing))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = testing.Nope


def test_importing_testing_does_not_need_the_testing_extra() -> None:
    # A fresh interpreter in which aiosmtpd and trustme cannot be imported.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["aiosmtpd"] = None
        sys.modules["trustme"] = None
        import reliable_smtp.testing as testing
        import reliable_smtp.testing.pytest_plugin
        assert "reliable_smtp.testing._server" not in sys.modules
        testing.Outbox(); testing.ScriptedTransport([testing.accept()]); testing.FakeClock()
        try:
            testing.LocalSMTPServer
        except ImportError as error:
            print(error)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'reliable-smtp[testing]'" in done.stdout


# == Outbox ==============================================================================


def test_outbox_behind_a_sync_mailer() -> None:
    outbox = Outbox()
    with Mailer(outbox) as mailer:
        result = mailer.send(message(bcc=["audit@example.net"]))
    assert len(outbox) == 1
    mail = outbox.one(to=ANN)
    assert isinstance(mail, OutboxMessage)
    assert isinstance(mail, SentMessage)
    assert mail.message_id == result.message_id
    assert mail.recipients == (ANN, "audit@example.net")
    assert mail.bcc == ("audit@example.net",)
    assert "audit@example.net" not in mail.content.decode()
    assert result.recipients[ANN].reply == Reply(250, "2.0.0", "kept in the outbox")
    assert result.transport_name == "outbox"


async def test_outbox_behind_an_async_mailer() -> None:
    outbox = Outbox()
    async with AsyncMailer(outbox) as mailer:
        await mailer.send_many([message(subject=f"n{i}") for i in range(3)])
    assert [m.subject for m in outbox] == ["n0", "n1", "n2"]
    assert outbox[-1].subject == "n2"
    assert [m.subject for m in outbox.messages] == ["n0", "n1", "n2"]
    with pytest.raises(TransportClosedError):
        await outbox.deliver(ENVELOPE, CONTENT)
    assert len(outbox) == 3  # still readable after close


async def test_find_filters() -> None:
    outbox = Outbox()
    async with AsyncMailer(outbox) as mailer:
        await mailer.send(message(to=["Ann <Ann@Example.org>"], subject="Welcome"))
        await mailer.send(
            message(
                to=[BOB],
                subject="Your receipt #42",
                text=None,
                html="<p>Total: 12 EUR</p>",
                envelope_sender="bounces@example.com",
            )
        )
        await mailer.send(message(to=[CAT], cc=[ANN], subject="Digest", text="a digest"))
    assert [m.subject for m in outbox.find()] == ["Welcome", "Your receipt #42", "Digest"]
    assert [m.subject for m in outbox.find(to="ann@EXAMPLE.org")] == ["Welcome", "Digest"]
    assert [m.subject for m in outbox.find(to="Ann <ann@example.org>")] == ["Welcome", "Digest"]
    assert outbox.find(subject="Welcome")[0].to == ("Ann@Example.org",)
    assert [m.subject for m in outbox.find(subject=re.compile(r"#\d+"))] == ["Your receipt #42"]
    assert outbox.find(subject="Your receipt") == []  # a string must be equal
    # sender: the From address or the envelope sender
    assert len(outbox.find(sender="app@example.com")) == 3
    assert [m.subject for m in outbox.find(sender="bounces@example.com")] == ["Your receipt #42"]
    assert [m.subject for m in outbox.find(contains="12 EUR")] == ["Your receipt #42"]
    assert [m.subject for m in outbox.find(contains=re.compile(r"^a dig"))] == ["Digest"]
    assert [m.subject for m in outbox.find(to=ANN, contains="digest")] == ["Digest"]
    assert outbox.find(to=ANN, subject="Your receipt #42") == []


def test_one_and_assert_sent_explain_what_is_there() -> None:
    outbox = Outbox()
    with pytest.raises(AssertionError, match=r"found 0\. The outbox is empty\."):
        outbox.one(to=ANN)
    outbox.assert_nothing_sent()
    with Mailer(outbox) as mailer:
        mailer.send(message(subject="Welcome"))
        mailer.send(message(to=[BOB, CAT], subject="Receipt"))

    with pytest.raises(AssertionError) as excinfo:
        outbox.one(to="zed@example.org", subject="Welcome")
    assert str(excinfo.value) == (
        "expected exactly 1 message matching to='zed@example.org', subject='Welcome', "
        "found 0. The outbox holds 2 messages:\n"
        "  [0] from app@example.com to ann@example.org: 'Welcome'\n"
        "  [1] from app@example.com to bob@example.org, cat@example.net: 'Receipt'"
    )
    with pytest.raises(AssertionError, match=r"exactly 1 message \(no filter\), found 2"):
        outbox.one()
    with pytest.raises(AssertionError, match=r"expected at least 1 message matching subject="):
        outbox.assert_sent(subject=re.compile("nope"))
    with pytest.raises(AssertionError, match=r"expected 2 message\(s\) matching to='bob"):
        outbox.assert_sent(to=BOB, count=2)
    assert [m.subject for m in outbox.assert_sent(to=CAT, count=1)] == ["Receipt"]
    assert len(outbox.assert_sent()) == 2
    with pytest.raises(
        AssertionError, match=r"expected no message to be sent\. The outbox holds 2"
    ):
        outbox.assert_nothing_sent()
    outbox.clear()
    assert len(outbox) == 0
    assert bool(outbox)  # an empty outbox is still a transport, never falsy
    outbox.assert_nothing_sent()


async def test_parsed_message_access() -> None:
    outbox = Outbox()
    logo = Attachment(filename="logo.png", content=b"\x89PNG...", inline=True, content_id="logo@x")
    pdf = Attachment(filename="invoice.pdf", content=b"%PDF-1.7 \x00\xff")
    async with AsyncMailer(outbox) as mailer:
        await mailer.send(
            message(
                to=["Ann <ann@example.org>", BOB],
                cc=[CAT],
                bcc=["audit@example.net"],
                text="Grüße\r\nline two",
                html='<p>Hi <img src="cid:logo@x"></p>',
                attachments=[logo, pdf],
                headers={"List-Unsubscribe": "<mailto:unsub@example.com>"},
            )
        )
    mail = outbox[0]
    assert mail.text == "Grüße\nline two"
    assert mail.html is not None
    assert mail.html.startswith("<p>Hi")
    assert mail.attachments == (
        testing.OutboxAttachment(
            filename="logo.png",
            content_type="image/png",
            content=b"\x89PNG...",
            inline=True,
            content_id="logo@x",
        ),
        testing.OutboxAttachment(
            filename="invoice.pdf", content_type="application/pdf", content=b"%PDF-1.7 \x00\xff"
        ),
    )
    assert mail.headers["list-unsubscribe"] == "<mailto:unsub@example.com>"
    assert "LIST-UNSUBSCRIBE" in mail.headers
    assert 3 not in mail.headers  # type: ignore[comparison-overlap]
    assert "Subject" in list(mail.headers)
    assert len(mail.headers) == len({k.lower() for k in mail.message})
    assert "List-Unsubscribe" in repr(mail.headers)
    assert mail.from_address == "app@example.com"
    assert mail.to == (ANN, BOB)
    assert mail.cc == (CAT,)
    assert mail.bcc == ("audit@example.net",)
    assert mail.describe().startswith("from app@example.com to ann@example.org, bob@example.org")


def test_parsed_access_on_bare_stdlib_content() -> None:
    # Content an application built itself, delivered without a mailer.
    plain = OutboxMessage(
        envelope=Envelope("", (ANN,)), content=b"To: ann@example.org\r\n\r\nhello\r\n"
    )
    assert plain.text == "hello\n"
    assert plain.html is None
    assert plain.attachments == ()
    assert plain.from_address is None
    assert plain.message_id is None
    assert plain.subject is None
    assert plain.describe() == "from <> to ann@example.org: ''"
    html_only = EmailMessage()
    html_only["To"] = ANN
    html_only.set_content("<b>x</b>", subtype="html")
    mail = OutboxMessage(envelope=Envelope("a@example.com", (ANN,)), content=bytes(html_only))
    assert mail.text is None
    assert mail.html == "<b>x</b>\n"


async def test_plain_sent_messages_in_the_list_are_read_as_outbox_messages() -> None:
    outbox = Outbox()
    outbox.outbox.append(SentMessage(envelope=ENVELOPE, content=CONTENT))
    assert isinstance(outbox[0], OutboxMessage)
    assert outbox.one(to=BOB).text == "hello\n"


# == ScriptedTransport ===================================================================


def test_step_constructors() -> None:
    assert accept() == ScriptStep(
        action="accept", phase=Phase.DATA_END, reply=Reply(250, "2.0.0", "OK")
    )
    assert reply(451, "4.7.1", "later") == ScriptStep(
        action="reply", phase=Phase.DATA_END, reply=Reply(451, "4.7.1", "later")
    )
    assert reply(550, recipient=BOB).phase is Phase.RCPT
    assert reply(421, phase=Phase.CONNECT).phase is Phase.CONNECT
    assert disconnect().phase is Phase.DATA
    assert disconnect(before_dot=False).phase is Phase.DATA_END
    assert disconnect(phase=Phase.DATA_END).phase is Phase.DATA_END
    assert timeout(phase=Phase.RCPT) == ScriptStep(action="timeout", phase=Phase.RCPT)
    assert timeout(before_dot=True, phase=Phase.MAIL).phase is Phase.MAIL
    assert str(reply(550, "5.1.1", "no", recipient=BOB)) == (
        "reply 550 5.1.1 no at rcpt to bob@example.org"
    )
    assert str(disconnect(before_dot=False)) == "disconnect at data_end"


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: accept(451), "needs a 2xx reply"),
        (lambda: reply(250, "2.0.0", "OK"), "is a success; use accept"),
        (lambda: reply(354, phase=Phase.DATA), "is a success"),
        (lambda: reply(550, recipient=BOB, phase=Phase.MAIL), "a reply to RCPT"),
        (lambda: reply(550, "5.1", "bad enhanced code"), "enhanced_code must look like"),
        (lambda: disconnect(before_dot=True, phase=Phase.DATA_END), "contradicts"),
        (lambda: timeout(before_dot=False, phase=Phase.RCPT), "contradicts"),
        (lambda: ScriptStep(action="explode", phase=Phase.RCPT), "unknown script action"),  # type: ignore[arg-type]
        (lambda: ScriptStep(action="reply", phase=Phase.RCPT), "needs a reply"),
        (
            lambda: ScriptStep(action="timeout", phase=Phase.RCPT, reply=Reply(421)),
            "has a reply",
        ),
        (
            lambda: ScriptStep(action="disconnect", phase=Phase.RCPT, recipient=BOB),
            "only a reply at RCPT",
        ),
        (
            lambda: ScriptStep(action="accept", phase=Phase.RCPT, reply=Reply(250)),
            "final dot",
        ),
        (
            lambda: ScriptStep(action="accept", phase=Phase.DATA_END, reply=Reply(550)),
            "needs a 2xx reply",
        ),
        (
            lambda: ScriptStep(action="reply", phase=Phase.MAIL, reply=Reply(250)),
            "250 at mail is a success",
        ),
        (lambda: ScriptedTransport(on_exhausted="ignore"), "on_exhausted"),  # type: ignore[arg-type]
        (lambda: ScriptedTransport([[reply(451), disconnect()]]), "at most one step"),
        (
            lambda: ScriptedTransport(
                [[reply(550, recipient=BOB), reply(551, recipient=BOB.upper())]]
            ),
            "scripted twice",
        ),
    ],
)
def test_nonsense_steps_are_refused(build: Callable[[], object], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        build()


@pytest.mark.parametrize("entry", [[], "accept", [accept(), "reply"], Reply(250)])
def test_script_entries_must_be_steps(entry: object) -> None:
    with pytest.raises(TypeError, match="step"):
        ScriptedTransport([entry])  # type: ignore[list-item]


def test_a_step_phase_must_be_a_phase() -> None:
    with pytest.raises(TypeError, match="phase must be a Phase, got 'rcpt'"):
        ScriptStep(action="reply", phase="rcpt", reply=Reply(550))  # type: ignore[arg-type]


# -- it reports what SMTPTransport reports against a real server with the same behaviour --


@dataclass(frozen=True)
class Scenario:
    steps: list[ScriptStep]
    server: list[tuple[str, dict[str, Any]]]
    """LocalSMTPServer.script() calls acting out the same behaviour."""
    expected: type[DeliveryError] | dict[str, Outcome]
    real_server: dict[str, Any] | None = None
    transport: dict[str, Any] | None = None


QUEUED = accept(250, "2.0.0", "OK: queued")  # what LocalSMTPServer says
SCENARIOS = {
    "accepted": Scenario([QUEUED], [], dict.fromkeys((ANN, BOB, CAT), Outcome.SENT)),
    "550-one-recipient": Scenario(
        [reply(550, "5.1.1", "no such user", recipient=BOB), QUEUED],
        [("RCPT", {"reply": "550 5.1.1 no such user", "recipient": BOB})],
        {ANN: Outcome.SENT, BOB: Outcome.PERMANENT, CAT: Outcome.SENT},
    ),
    "451-one-recipient": Scenario(
        [reply(451, "4.7.1", "greylisted, try again later", recipient=CAT), QUEUED],
        [("RCPT", {"reply": "451 4.7.1 greylisted, try again later", "recipient": CAT})],
        {ANN: Outcome.SENT, BOB: Outcome.SENT, CAT: Outcome.THROTTLED},
    ),
    "452-too-many-recipients": Scenario(
        [reply(452, "4.5.3", "too many recipients", recipient=CAT), QUEUED],
        [("RCPT", {"reply": "452 4.5.3 too many recipients", "recipient": CAT})],
        {ANN: Outcome.SENT, BOB: Outcome.SENT, CAT: Outcome.TRANSIENT},
    ),
    "421-at-rcpt-closes": Scenario(
        [reply(421, "4.7.0", "closing", recipient=BOB)],
        [("RCPT", {"reply": "421 4.7.0 closing", "recipient": BOB})],
        dict.fromkeys((ANN, BOB, CAT), Outcome.THROTTLED),
    ),
    # A step for the whole transaction at RCPT answers the first RCPT without a step of
    # its own; the 421 or the lost link there leaves later recipients unanswered, even
    # one scripted to be refused (a real server never gets to its RCPT).
    "421-for-every-rcpt-before-a-refusal": Scenario(
        [
            reply(421, "4.7.0", "closing", phase=Phase.RCPT),
            reply(550, "5.1.1", "no", recipient=CAT),
        ],
        [
            ("RCPT", {"reply": "550 5.1.1 no", "recipient": CAT}),
            ("RCPT", {"reply": "421 4.7.0 closing"}),
        ],
        dict.fromkeys((ANN, BOB, CAT), Outcome.THROTTLED),
    ),
    "drop-at-rcpt-before-a-refusal": Scenario(
        [reply(550, "5.1.1", "no", recipient=CAT), disconnect(phase=Phase.RCPT)],
        [("RCPT", {"reply": "550 5.1.1 no", "recipient": CAT}), ("RCPT", {"disconnect": True})],
        dict.fromkeys((ANN, BOB, CAT), Outcome.TRANSIENT),
    ),
    "550-every-rcpt": Scenario(
        [reply(550, "5.7.1", "relaying denied", phase=Phase.RCPT)],
        [("RCPT", {"reply": "550 5.7.1 relaying denied", "times": None})],
        dict.fromkeys((ANN, BOB, CAT), Outcome.AUTH_OR_CONFIG),
    ),
    "refusal-plus-final-reply": Scenario(
        [
            reply(550, "5.1.1", "no such user", recipient=ANN),
            reply(451, "4.3.0", "try again in 30 seconds"),
        ],
        [
            ("RCPT", {"reply": "550 5.1.1 no such user", "recipient": ANN}),
            ("DATA_END", {"reply": "451 4.3.0 try again in 30 seconds"}),
        ],
        {ANN: Outcome.PERMANENT, BOB: Outcome.THROTTLED, CAT: Outcome.THROTTLED},
    ),
    "everyone-refused-no-data": Scenario(
        [reply(550, "5.1.1", "no", recipient=r) for r in (ANN, BOB, CAT)] + [disconnect()],
        [("RCPT", {"reply": "550 5.1.1 no", "times": 3})],
        dict.fromkeys((ANN, BOB, CAT), Outcome.PERMANENT),
    ),
    "554-after-the-dot": Scenario(
        [reply(554, "5.7.1", "rejected as spam")],
        [("DATA_END", {"reply": "554 5.7.1 rejected as spam"})],
        dict.fromkeys((ANN, BOB, CAT), Outcome.PERMANENT),
    ),
    "data-command-refused": Scenario(
        [reply(554, "5.5.1", "no valid recipients", phase=Phase.DATA)],
        [("DATA", {"reply": "554 5.5.1 no valid recipients"})],
        dict.fromkeys((ANN, BOB, CAT), Outcome.PERMANENT),
    ),
    "421-greeting": Scenario(
        [reply(421, "4.3.2", "service not available", phase=Phase.CONNECT)],
        [("GREETING", {"reply": "421 4.3.2 service not available"})],
        TransientError,
    ),
    "sender-refused": Scenario(
        [reply(553, "5.7.1", "sender address rejected", phase=Phase.MAIL)],
        [("MAIL", {"reply": "553 5.7.1 sender address rejected"})],
        PermanentError,
    ),
    "throttled-at-mail": Scenario(
        [reply(451, "4.7.0", "rate limited, try again in 2 minutes", phase=Phase.MAIL)],
        [("MAIL", {"reply": "451 4.7.0 rate limited, try again in 2 minutes"})],
        ThrottledError,
    ),
    "auth-refused": Scenario(
        [reply(535, "5.7.8", "authentication failed", phase=Phase.AUTH)],
        [("AUTH", {"reply": "535 5.7.8 authentication failed"})],
        AuthOrConfigError,
        real_server={"tls": "starttls", "auth": {USERNAME: PASSWORD}},
    ),
    "drop-at-mail": Scenario(
        [disconnect(phase=Phase.MAIL)],
        [("MAIL", {"disconnect": True})],
        ConnectionFailedError,
    ),
    "drop-at-rcpt": Scenario(
        [reply(550, "5.1.1", "no such user", recipient=ANN), disconnect(phase=Phase.RCPT)],
        [
            ("RCPT", {"reply": "550 5.1.1 no such user", "recipient": ANN}),
            ("RCPT", {"disconnect": True}),
        ],
        {ANN: Outcome.PERMANENT, BOB: Outcome.TRANSIENT, CAT: Outcome.TRANSIENT},
    ),
    "drop-before-the-dot": Scenario(
        [disconnect()],
        [("DATA", {"disconnect": True})],
        dict.fromkeys((ANN, BOB, CAT), Outcome.TRANSIENT),
    ),
    "drop-after-the-dot": Scenario(
        [disconnect(before_dot=False)],
        [("DATA_END", {"disconnect": True})],
        dict.fromkeys((ANN, BOB, CAT), Outcome.AMBIGUOUS),
    ),
    "timeout-at-mail": Scenario(
        [timeout(phase=Phase.MAIL)],
        [("MAIL", {"hang": True})],
        SMTPTimeoutError,
        transport={"command_timeout": 0.2},
    ),
    "timeout-at-rcpt": Scenario(
        [timeout(phase=Phase.RCPT)],
        [("RCPT", {"hang": True})],
        dict.fromkeys((ANN, BOB, CAT), Outcome.TRANSIENT),
        transport={"command_timeout": 0.2},
    ),
    "timeout-after-the-dot": Scenario(
        [timeout(before_dot=False)],
        [("DATA_END", {"hang": True})],
        dict.fromkeys((ANN, BOB, CAT), Outcome.AMBIGUOUS),
        transport={"data_timeout": 0.2},
    ),
}


def _facts(outcome: DeliveryReport | DeliveryError) -> object:
    """Everything but the server's name and the free-text summary."""
    if isinstance(outcome, DeliveryError):
        return (
            type(outcome),
            outcome.phase,
            outcome.outcome,
            outcome.reply,
            outcome.recipient,
            outcome.explanation,
            outcome.retryable,
            outcome.delay_hint,
        )
    return (
        outcome.final_reply,
        [
            (r, s.outcome, s.phase, s.reply, s.explanation, s.retryable, s.split, s.delay_hint)
            for r, s in outcome.recipients.items()
        ],
    )


async def _outcome(transport: Transport) -> DeliveryReport | DeliveryError:
    try:
        return await transport.deliver(ENVELOPE, CONTENT)
    except DeliveryError as error:
        return error
    finally:
        await transport.aclose()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scripted_transport_reports_what_smtp_transport_reports(name: str) -> None:
    scenario = SCENARIOS[name]
    scripted = ScriptedTransport([scenario.steps])
    fake = await _outcome(scripted)

    with LocalSMTPServer(**(scenario.real_server or {})) as server:
        for command, options in scenario.server:
            server.script(command, **options)  # type: ignore[arg-type]
        options = dict(scenario.transport or {})
        if server.tls == "none":
            real = await _outcome(relay_transport(server, **options))
        else:
            real = await _outcome(tls_transport(server, **options))
        kept = [m.recipients for m in server.messages]

    assert _facts(fake) == _facts(real)
    if isinstance(scenario.expected, dict):
        assert isinstance(fake, DeliveryReport)
        assert {r: s.outcome for r, s in fake.recipients.items()} == scenario.expected
        assert all(s.transport_name == "scripted" for s in fake.recipients.values())
    else:
        assert type(fake) is scenario.expected
        assert fake.transport_name == "scripted"
    # What the "server" kept is what the real one kept (after the dot, even when lost).
    assert [m.recipients for m in scripted] == kept


async def test_every_delivery_is_recorded() -> None:
    transport = ScriptedTransport(
        [reply(451, "4.7.1", "later", recipient=BOB), disconnect(phase=Phase.CONNECT)]
    )
    first = await transport.deliver(ENVELOPE, CONTENT)
    with pytest.raises(ConnectionFailedError) as lost:
        await transport.deliver(ENVELOPE.only([BOB]), CONTENT)
    third = await transport.deliver(ENVELOPE.only([BOB]), CONTENT)  # the script ran out

    assert [c.envelope.recipients for c in transport.calls] == [(ANN, BOB, CAT), (BOB,), (BOB,)]
    assert [c.content for c in transport.calls] == [CONTENT] * 3
    assert [c.steps for c in transport.calls] == [
        (reply(451, "4.7.1", "later", recipient=BOB),),
        (disconnect(phase=Phase.CONNECT),),
        (),
    ]
    assert transport.calls[0].report is first
    assert transport.calls[1].error is lost.value
    assert transport.calls[2].report is third
    assert first.final_reply == Reply(250, "2.0.0", "OK")
    assert [m.recipients for m in transport] == [(ANN, CAT), (BOB,)]
    assert transport.remaining == ()
    transport.assert_script_done()


async def test_running_out_can_fail_loudly() -> None:
    transport = ScriptedTransport([accept()], on_exhausted="fail")
    await transport.deliver(ENVELOPE, CONTENT)
    with pytest.raises(ScriptError, match="came after the script ran out"):
        await transport.deliver(ENVELOPE, CONTENT)
    assert isinstance(transport.calls[1].error, ScriptError)
    assert not isinstance(transport.calls[1].error, DeliveryError)
    transport.add(reply(554, "5.7.1", "spam"), accept())
    assert len(transport.remaining) == 2
    with pytest.raises(AssertionError, match=r"2 script entries never played \(after 2"):
        transport.assert_script_done()
    report = await transport.deliver(ENVELOPE, CONTENT)
    assert {s.outcome for s in report.recipients.values()} == {Outcome.PERMANENT}
    with pytest.raises(
        AssertionError,
        match=r"1 script entry never played \(after 3 deliveries\): accept 250 2\.0\.0 OK at",
    ):
        transport.assert_script_done()


async def test_a_step_for_a_recipient_not_in_the_envelope_is_a_script_bug() -> None:
    transport = ScriptedTransport([reply(550, recipient="zed@example.org")])
    with pytest.raises(ScriptError, match="not in this delivery's envelope"):
        await transport.deliver(ENVELOPE, CONTENT)
    assert len(transport.calls) == 1


async def test_closed_scripted_transport() -> None:
    async with ScriptedTransport() as transport:
        pass
    with pytest.raises(TransportClosedError):
        await transport.deliver(ENVELOPE, CONTENT)


def test_with_a_mailer_only_pending_recipients_are_retried() -> None:
    transport = ScriptedTransport(
        [
            [
                reply(451, "4.7.1", "later", recipient=BOB),
                reply(550, "5.1.1", "gone", recipient=CAT),
            ],
            accept(),
        ]
    )
    with Mailer(transport) as mailer, no_retry_waits(mailer), pytest.raises(PermanentError) as err:
        mailer.send(message(to=[ANN, BOB, CAT]))
    result = err.value.result
    assert result is not None
    assert result.accepted == (ANN, BOB)
    assert [c.envelope.recipients for c in transport.calls] == [(ANN, BOB, CAT), (BOB,)]
    assert [m.recipients for m in transport] == [(ANN,), (BOB,)]  # nobody twice


async def test_ambiguous_loss_is_resent_only_when_the_policy_says_so() -> None:
    transport = ScriptedTransport([disconnect(before_dot=False)])
    async with AsyncMailer(transport) as mailer:
        with pytest.raises(AmbiguousDeliveryError):
            await mailer.send(message())
    assert len(transport) == 1  # the server may well have it

    transport = ScriptedTransport([disconnect(before_dot=False)])
    async with AsyncMailer(transport, retry=RetryPolicy(retry_ambiguous=True)) as mailer:
        with no_retry_waits(mailer):
            await mailer.send(message())
    assert len(transport.find(to=ANN)) == 2  # the duplicate retry_ambiguous risks
    assert transport[0].message_id == transport[1].message_id


# == no_retry_waits / recorded_waits =====================================================


def _flaky(times: int = 2) -> ScriptedTransport:
    return ScriptedTransport([reply(451, "4.3.0", "busy")] * times)


def test_no_retry_waits_on_a_sync_mailer() -> None:
    policy = RetryPolicy(attempts=3, initial_wait=5.0)
    transport = _flaky()
    with Mailer(transport, retry=policy) as mailer:
        with recorded_waits(mailer) as clock:
            mailer.send(message())
        assert clock.sleeps[0] >= 5.0  # the real policy waits

        transport.add(*_flaky().remaining)
        with no_retry_waits(mailer) as quick, recorded_waits(mailer) as clock:
            assert mailer.retry is quick
            assert quick == policy.without_waits()
            result = mailer.send(message())
        assert clock.sleeps == [0.0, 0.0]
        assert len(result.attempts) == 3
        assert mailer.retry is policy  # restored


async def test_no_retry_waits_on_an_async_mailer_is_restored_after_an_error() -> None:
    policy = RetryPolicy(attempts=2)
    mailer = AsyncMailer(_flaky(), retry=policy)
    with no_retry_waits(mailer), recorded_waits(mailer) as clock:
        with pytest.raises(TransientError):
            await mailer.send(message())
        assert clock.sleeps == [0.0]
    assert mailer.retry is policy
    assert mailer._sleep is asyncio.sleep


def test_no_retry_waits_leaves_a_policy_set_inside_the_block_alone() -> None:
    mailer = AsyncMailer(Outbox())
    chosen = RetryPolicy.never()
    with no_retry_waits(mailer):
        mailer.retry = chosen
    assert mailer.retry is chosen


def test_no_retry_waits_nests() -> None:
    policy = RetryPolicy()
    mailer = AsyncMailer(Outbox(), retry=policy)
    with no_retry_waits(mailer) as outer:
        with no_retry_waits(mailer) as inner:
            assert mailer.retry is inner
        assert mailer.retry is outer
    assert mailer.retry is policy


def test_no_retry_waits_on_a_policy_and_on_nonsense() -> None:
    policy = RetryPolicy(attempts=7)
    with no_retry_waits(policy) as quick:
        assert quick == policy.without_waits()
        assert quick.attempts == 7
    with pytest.raises(TypeError, match="expected a Mailer, an AsyncMailer or a RetryPolicy"):
        no_retry_waits(Outbox())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got str"), recorded_waits("mailer"):  # type: ignore[arg-type]
        pass


async def test_recorded_waits_keeps_the_deadline_honest() -> None:
    clock = FakeClock(start=100.0)
    policy = RetryPolicy(attempts=10, deadline=10.0, initial_wait=4.0, jitter=0.0)
    mailer = AsyncMailer(_flaky(10), retry=policy)
    with recorded_waits(mailer, clock) as same:
        assert same is clock
        with pytest.raises(TransientError):
            await mailer.send(message())
    assert clock.sleeps == [4.0]  # the next wait (8 s) would end past the deadline
    assert clock.now == 104.0
    assert repr(clock) == "FakeClock(now=104.0, sleeps=[4.0])"


# == check_transport =====================================================================


@pytest.fixture
def fake_sendmail(tmp_path: Path) -> Path:
    path = tmp_path / "sendmail"
    path.write_text("#!/bin/sh\ncat > /dev/null\nexit 0\n")
    path.chmod(0o755)
    return path


async def test_our_transports_keep_the_contract(
    tmp_path: Path, fake_sendmail: Path, server: LocalSMTPServer, tls_server: LocalSMTPServer
) -> None:
    await check_transport(MemoryTransport)
    await check_transport(Outbox)
    await check_transport(ScriptedTransport)
    await check_transport(lambda: MockTransport(lambda envelope, content: None))
    await check_transport(lambda: FileTransport(tmp_path / "outbox"))
    await check_transport(lambda: SendmailTransport(fake_sendmail))
    await check_transport(lambda: relay_transport(server))
    await check_transport(lambda: tls_transport(tls_server))
    assert len(server.messages) == 2  # an ordinary message and an unusual one


async def test_a_transport_scripted_to_fail_passes_with_expect_report_false() -> None:
    with pytest.raises(TransportContractError, match="expect_report=False") as broken:
        await check_transport(lambda: ScriptedTransport([disconnect(phase=Phase.MAIL)] * 2))
    assert broken.value.rule == "deliver-returns-report"
    await check_transport(
        lambda: ScriptedTransport([disconnect(phase=Phase.MAIL)] * 2), expect_report=False
    )


async def test_factories_may_be_async_or_context_managers(server: LocalSMTPServer) -> None:
    async def make() -> Transport:
        return relay_transport(server)

    @asynccontextmanager
    async def managed() -> AsyncIterator[Transport]:
        transport = Outbox()
        yield transport
        assert transport.closed

    await check_transport(make)
    await check_transport(managed)


def test_check_transport_sync() -> None:
    check_transport_sync(Outbox)
    with pytest.raises(TransportContractError, match="'factory'"):
        check_transport_sync(lambda: "not a transport")  # type: ignore[arg-type,return-value]


async def test_check_transport_sync_under_a_running_loop() -> None:
    check_transport_sync(ScriptedTransport)  # its own loop, in its own thread


# -- broken transports, one rule each ----------------------------------------------------


class Good(Transport):
    """A correct transport to break one rule at a time."""

    name = "good"

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        return DeliveryReport.all_sent(envelope, transport_name=self.name)


class ForgetsARecipient(Good):
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        return DeliveryReport.all_sent(envelope.only(envelope.recipients[:-1]))


class ExtraRecipient(Good):
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        wider = Envelope(envelope.sender, (*envelope.recipients, "x@example.org"))
        return DeliveryReport.all_sent(wider)


class WrongOrder(Good):
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        backwards = Envelope(envelope.sender, tuple(reversed(envelope.recipients)))
        return DeliveryReport.all_sent(backwards)


class MislabelledStatus(Good):
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        report = DeliveryReport.all_sent(envelope)
        first = envelope.recipients[0]
        statuses = dict(report.recipients)
        statuses[first] = RecipientStatus(
            recipient="someone@else.org", outcome=Outcome.SENT, phase=Phase.DATA_END
        )
        return DeliveryReport(recipients=statuses)


class NoPhase(Good):
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        return DeliveryReport(
            recipients={
                r: RecipientStatus(recipient=r, outcome=Outcome.SENT, phase=None)  # type: ignore[arg-type]
                for r in envelope.recipients
            }
        )


class NotAStatus(Good):
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        return DeliveryReport(recipients=dict.fromkeys(envelope.recipients, "sent"))  # type: ignore[arg-type]


class ReturnsADict(Good):
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        return dict.fromkeys(envelope.recipients, "sent")  # type: ignore[return-value]


class LeaksOSError(Good):
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        raise ConnectionResetError(104, "Connection reset by peer")


class ChokesOnUTF8(Good):
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        envelope.sender.encode("ascii")
        for recipient in envelope.recipients:
            recipient.encode("ascii")
        return DeliveryReport.all_sent(envelope)


class RaisesBeforeAwaiting(Good):
    def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:  # type: ignore[override]
        raise KeyError("boom")


class Blocking(Good):
    def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:  # type: ignore[override]
        return DeliveryReport.all_sent(envelope)


class Hangs(Good):
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class IgnoresClose(Good):
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        return DeliveryReport.all_sent(envelope)


class ForgetsSuperAclose(Good):
    async def aclose(self) -> None:
        pass


class CrashesOnSecondClose(Good):
    async def aclose(self) -> None:
        if self.closed:
            raise RuntimeError("already closed")
        await super().aclose()


class WrongErrorAfterClose(Good):
    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        if self.closed:
            raise RuntimeError("closed")
        return DeliveryReport.all_sent(envelope)


class EntersAsSomethingElse(Good):
    async def __aenter__(self) -> Transport:
        return Outbox()


class ExitDoesNotClose(Good):
    async def __aexit__(self, *exc_info: object) -> None:
        pass


class ExitRaises(Good):
    async def __aexit__(self, *exc_info: object) -> None:
        raise OSError("cannot close")


class EmptyName(Good):
    name = " "


class PasswordInName(Good):
    name = "smtp://app:hunter22@smtp.example.com:587"


class PasswordAttributeInRepr(Good):
    def __init__(self) -> None:
        self._password = "Zebra-Secret-9"

    def __repr__(self) -> str:
        return f"<PasswordAttributeInRepr {self._password}>"


class SecretStrInRepr(Good):
    def __init__(self) -> None:
        from pydantic import SecretStr

        self.api_token = SecretStr("tok-Zebra-1234")
        self.note = "harmless"

    def __repr__(self) -> str:
        return f"<SecretStrInRepr {self.api_token.get_secret_value()}>"


class ReprCrashes(Good):
    def __repr__(self) -> str:
        raise ValueError("no repr for you")


class ReprCrashesAfterClose(Good):
    def __repr__(self) -> str:
        if self.closed:
            raise ValueError("closed")
        return "<ok>"


BROKEN: list[tuple[Callable[[], Any], str, str]] = [
    (ForgetsARecipient, "one-status-per-recipient", "no status for ['third@example.com']"),
    (ExtraRecipient, "one-status-per-recipient", "statuses for ['x@example.org']"),
    (WrongOrder, "one-status-per-recipient", "not the envelope's"),
    (MislabelledStatus, "one-status-per-recipient", "is for 'someone@else.org'"),
    (NoPhase, "one-status-per-recipient", "phase None"),
    (NotAStatus, "one-status-per-recipient", "not a RecipientStatus"),
    (ReturnsADict, "deliver-returns-report", "deliver() returned {"),
    (LeaksOSError, "no-foreign-exceptions", "builtins.ConnectionResetError"),
    (ChokesOnUTF8, "no-foreign-exceptions", "UnicodeEncodeError"),
    (RaisesBeforeAwaiting, "no-foreign-exceptions", "KeyError('boom')"),
    (Blocking, "deliver-is-async", "declare it `async def`"),
    (IgnoresClose, "closed-refuses-deliver", "returned DeliveryReport("),
    (ForgetsSuperAclose, "closed-refuses-deliver", "call super().aclose()"),
    (CrashesOnSecondClose, "aclose-twice", "the second aclose() raised RuntimeError"),
    (WrongErrorAfterClose, "closed-refuses-deliver", "raised RuntimeError('closed')"),
    (EntersAsSomethingElse, "async-with-closes", "not the transport itself"),
    (ExitDoesNotClose, "async-with-closes", "closed is False after `async with`"),
    (ExitRaises, "async-with-closes", "OSError('cannot close')"),
    (EmptyName, "name", "name is ' '"),
    (lambda: type("Unnamed", (Good,), {"name": None})(), "name", "name is None"),
    (PasswordInName, "name", "looks like it holds a secret ('://app:hunter22@')"),
    (PasswordAttributeInRepr, "repr", "shows the value of a credential attribute"),
    (SecretStrInRepr, "repr", "shows the value of a credential attribute"),
    (ReprCrashes, "repr", "repr() raised ValueError"),
    (ReprCrashesAfterClose, "repr", "repr() raised ValueError('closed')"),
    (lambda: 42, "factory", "returned 42, not a Transport"),
]


@pytest.mark.parametrize(
    ("factory", "rule", "detail"), BROKEN, ids=[rule + ":" + d[:25] for _, rule, d in BROKEN]
)
async def test_check_transport_names_the_broken_rule(
    factory: Callable[[], Any], rule: str, detail: str
) -> None:
    with pytest.raises(TransportContractError) as broken:
        await check_transport(factory)
    assert broken.value.rule == rule
    assert isinstance(broken.value, AssertionError)
    message = str(broken.value)
    assert f"rule {rule!r} ({CONTRACT_RULES[rule]})" in message
    assert detail in message


async def test_check_transport_gives_up_on_a_hanging_deliver() -> None:
    with pytest.raises(TransportContractError, match=r"did not return within 0.05 s") as broken:
        await check_transport(Hangs, timeout=0.05)
    assert broken.value.rule == "deliver-finishes"


async def test_a_context_manager_factory_must_yield_a_transport() -> None:
    @asynccontextmanager
    async def managed() -> AsyncIterator[object]:
        yield "nope"

    with pytest.raises(TransportContractError, match="the factory's context gave 'nope'"):
        await check_transport(managed)  # type: ignore[arg-type]


# == the sample application ==============================================================


def test_the_sample_application_tests_pass() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "examples/sample_app/tests",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b\d+ passed\b", done.stdout), done.stdout
    assert "failed" not in done.stdout
    assert "skipped" not in done.stdout
