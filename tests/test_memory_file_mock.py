"""MemoryTransport, FileTransport, MockTransport, and what every transport owes its caller."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import (
    AuthOrConfigError,
    DeliveryError,
    PermanentError,
    ThrottledError,
    TransientError,
    TransportClosedError,
)
from reliable_smtp._replies import Outcome, Phase, Reply, classify
from reliable_smtp._result import DeliveryReport, RecipientStatus
from reliable_smtp._transports.base import Transport
from reliable_smtp._transports.file import FileTransport
from reliable_smtp._transports.memory import MemoryTransport
from reliable_smtp._transports.sendmail import SendmailTransport
from reliable_smtp.testing import MockTransport, SentMessage
from reliable_smtp.testing._mock import MockResponse

CONTENT = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
# c@example.net is a Bcc recipient: in the envelope, never in the content.
ENVELOPE = Envelope("bounce@example.com", ("b@example.org", "c@example.net"))

# -- MemoryTransport -----------------------------------------------------------------------


async def test_memory_keeps_the_exact_message_and_reports_all_sent() -> None:
    transport = MemoryTransport()
    report = await transport.deliver(ENVELOPE, CONTENT)

    assert transport.outbox == [SentMessage(envelope=ENVELOPE, content=CONTENT)]
    sent = transport.outbox[0]
    assert sent.content == CONTENT
    assert sent.sender == "bounce@example.com"
    assert sent.recipients == ("b@example.org", "c@example.net")
    assert list(report.recipients) == list(ENVELOPE.recipients)
    assert all(s.outcome is Outcome.SENT for s in report.recipients.values())
    assert report.transport_name == "memory"
    assert report.final_reply is not None
    assert report.final_reply.code == 250


async def test_memory_parses_the_message_lazily_with_the_default_policy() -> None:
    transport = MemoryTransport()
    content = (
        b"From: a@example.com\r\nTo: b@example.org\r\nSubject: =?utf-8?q?h=C3=A9?=\r\n\r\nbody\r\n"
    )
    await transport.deliver(ENVELOPE, content)
    sent = transport.outbox[0]

    assert sent.subject == "hé"  # decoded: policy.default
    assert sent.message["To"] == "b@example.org"
    assert sent.message.get_content() == "body\r\n"
    assert "c@example.net" not in str(sent.message)  # Bcc lives in the envelope only
    assert sent.message is sent.message  # parsed once


def test_sent_message_without_subject() -> None:
    sent = SentMessage(envelope=ENVELOPE, content=b"To: b@example.org\r\n\r\nbody\r\n")
    assert sent.subject is None


def test_sent_message_is_a_frozen_value() -> None:
    first = SentMessage(envelope=ENVELOPE, content=CONTENT)
    second = SentMessage(envelope=ENVELOPE, content=CONTENT)
    _ = first.message  # a cached parse does not change equality or hash
    assert first == second
    assert hash(first) == hash(second)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.content = b""  # type: ignore[misc]


async def test_memory_clear_and_instances_are_isolated() -> None:
    one, two = MemoryTransport(), MemoryTransport()
    await one.deliver(ENVELOPE, CONTENT)
    await one.deliver(ENVELOPE, CONTENT + b"again\r\n")

    assert len(one.outbox) == 2
    assert two.outbox == []
    assert "outbox" not in vars(MemoryTransport)  # never shared through the class
    one.clear()
    assert one.outbox == []


async def test_memory_outbox_stays_readable_after_close() -> None:
    transport = MemoryTransport()
    async with transport:
        await transport.deliver(ENVELOPE, CONTENT)
    assert len(transport.outbox) == 1


# -- FileTransport -------------------------------------------------------------------------

_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}\.eml$")


def _listing(directory: Path) -> list[str]:
    """Every file name in ``directory``, sorted (hidden temporaries included)."""
    return sorted(p.name for p in directory.iterdir())


async def test_file_writes_message_and_envelope_sidecar(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    report = await transport.deliver(ENVELOPE, CONTENT)

    [eml] = transport.paths
    assert _NAME.match(eml.name)
    assert eml.read_bytes() == CONTENT
    sidecar = eml.with_name(eml.name.removesuffix(".eml") + ".envelope.json")
    assert json.loads(sidecar.read_text(encoding="utf-8")) == {
        "sender": "bounce@example.com",
        "recipients": ["b@example.org", "c@example.net"],
    }
    assert b"c@example.net" not in eml.read_bytes()  # Bcc only in the sidecar
    assert _listing(tmp_path) == sorted([eml.name, sidecar.name])
    assert list(report.recipients) == list(ENVELOPE.recipients)
    assert all(s.accepted for s in report.recipients.values())
    assert report.transport_name == f"file:{tmp_path}"
    assert report.final_reply is not None
    assert eml.name in report.final_reply.text


async def test_file_is_private_to_its_owner(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    await transport.deliver(ENVELOPE, CONTENT)
    assert stat.S_IMODE(transport.paths[0].stat().st_mode) == 0o600


async def test_file_names_sort_by_time_never_collide_and_leave_no_temporaries(
    tmp_path: Path,
) -> None:
    transport = FileTransport(tmp_path)
    for n in range(5):
        await transport.deliver(ENVELOPE, CONTENT + f"{n}\r\n".encode())
    await asyncio.gather(*(transport.deliver(ENVELOPE, CONTENT) for _ in range(20)))

    names = [p.name for p in transport.paths]
    assert len(set(names)) == 25
    assert [p.read_bytes() for p in transport.paths[:5]] == [
        CONTENT + f"{n}\r\n".encode() for n in range(5)
    ]
    assert sorted(names[:5]) == names[:5]  # written in order, sorted in order
    files = _listing(tmp_path)
    assert not [f for f in files if f.startswith(".")]  # no temporary files left
    assert len([f for f in files if f.endswith(".eml")]) == 25
    assert len([f for f in files if f.endswith(".envelope.json")]) == 25


async def test_two_transports_on_one_directory_do_not_collide(tmp_path: Path) -> None:
    one, two = FileTransport(tmp_path), FileTransport(tmp_path)
    await asyncio.gather(*(t.deliver(ENVELOPE, CONTENT) for t in (one, two) * 10))
    assert len([f for f in _listing(tmp_path) if f.endswith(".eml")]) == 20


async def test_file_creates_the_directory_on_first_delivery_only(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "outbox"
    transport = FileTransport(target)
    assert not (tmp_path / "a").exists()  # no I/O in the constructor
    await transport.deliver(ENVELOPE, CONTENT)
    assert len(list(target.glob("*.eml"))) == 1


@pytest.mark.parametrize("where", ["itself", "a parent"])
async def test_file_path_that_is_not_a_directory(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "outbox"
    blocker.write_text("not a directory")
    target = blocker if where == "itself" else blocker / "inner"
    transport = FileTransport(target)

    with pytest.raises(AuthOrConfigError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)

    error = caught.value
    assert isinstance(error.__cause__, OSError)
    assert error.setting == "directory"
    assert error.phase is Phase.CONNECT
    assert str(target) in str(error)
    assert "not a directory" in str(error)
    assert "FileTransport(directory=...)" in str(error)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
async def test_file_unwritable_directory(tmp_path: Path) -> None:
    target = tmp_path / "locked"
    target.mkdir()
    target.chmod(0o500)
    try:
        with pytest.raises(AuthOrConfigError, match="not writable") as caught:
            await FileTransport(target).deliver(ENVELOPE, CONTENT)
        assert str(target) in str(caught.value)
    finally:
        target.chmod(0o700)


@pytest.mark.parametrize("failing_call", [1, 2])
async def test_file_write_failure_is_translated_and_cleaned_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    # A full disk on the sidecar (1st fsync) or on the message (2nd): nothing may
    # stay behind, not even the sidecar that was already in place.
    real_fsync = os.fsync
    calls = 0

    def fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == failing_call:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    transport = FileTransport(tmp_path)

    with pytest.raises(TransientError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)

    assert isinstance(caught.value.__cause__, OSError)
    assert "No space left" in str(caught.value)
    assert _listing(tmp_path) == []
    assert transport.paths == []


def test_file_empty_directory_is_refused() -> None:
    with pytest.raises(ValueError, match="directory"):
        FileTransport("")


# -- MockTransport --------------------------------------------------------------------------


def _mock(response: MockResponse) -> MockTransport:
    return MockTransport(lambda envelope, content: response)


async def test_mock_none_is_all_sent_and_calls_are_recorded() -> None:
    transport = _mock(None)
    report = await transport.deliver(ENVELOPE, CONTENT)
    await transport.deliver(ENVELOPE.only(["b@example.org"]), b"second")

    assert list(report.recipients) == list(ENVELOPE.recipients)
    assert all(s.outcome is Outcome.SENT for s in report.recipients.values())
    assert report.transport_name == "mock"
    assert transport.calls == [(ENVELOPE, CONTENT), (ENVELOPE.only(["b@example.org"]), b"second")]


async def test_mock_report_is_returned_as_is() -> None:
    canned = DeliveryReport.all_sent(ENVELOPE, transport_name="elsewhere")
    assert await _mock(canned).deliver(ENVELOPE, CONTENT) is canned


async def test_mock_reply_250_sends_to_everyone() -> None:
    reply = Reply(250, "2.0.0", "Ok: queued as 4F2B")
    report = await _mock(reply).deliver(ENVELOPE, CONTENT)
    assert report.final_reply == reply
    assert list(report.recipients) == list(ENVELOPE.recipients)
    for status in report.recipients.values():
        assert status.outcome is Outcome.SENT
        assert status.reply == reply
        assert status.phase is Phase.DATA_END
        assert status.transport_name == "mock"


@pytest.mark.parametrize(
    "reply",
    [Reply(451, "4.3.0", "Mail server temporarily rejected message"), Reply(554, "5.6.0", "bad")],
)
async def test_mock_failure_reply_is_classified_per_recipient(reply: Reply) -> None:
    report = await _mock(reply).deliver(ENVELOPE, CONTENT)
    verdict = classify(reply, Phase.DATA_END)
    assert report.final_reply == reply
    assert list(report.recipients) == list(ENVELOPE.recipients)
    for status in report.recipients.values():
        assert status.outcome is verdict.outcome
        assert status.retryable is verdict.retryable
        assert status.explanation == verdict.explanation
        assert status.reply == reply
        assert status.phase is Phase.DATA_END


async def test_mock_451_makes_every_recipient_transient() -> None:
    report = await _mock(Reply(451, "4.3.0", "try again")).deliver(ENVELOPE, CONTENT)
    assert list(report.recipients) == list(ENVELOPE.recipients)
    assert {s.outcome for s in report.recipients.values()} == {Outcome.TRANSIENT}
    assert all(s.retryable for s in report.recipients.values())


async def test_mock_mapping_gives_per_recipient_replies() -> None:
    refusal = Reply(550, "5.1.1", "<c@example.net>: Recipient address rejected")
    report = await _mock({"c@example.net": refusal}).deliver(ENVELOPE, CONTENT)

    accepted, refused = report.recipients["b@example.org"], report.recipients["c@example.net"]
    assert accepted.outcome is Outcome.SENT
    assert accepted.reply is not None
    assert accepted.reply.code == 250
    assert refused.outcome is Outcome.PERMANENT
    assert refused.reply == refusal
    assert refused.phase is Phase.RCPT
    assert report.final_reply is not None


async def test_mock_mapping_refusing_everyone_has_no_final_reply() -> None:
    busy = Reply(450, "4.2.1", "mailbox busy")
    report = await _mock(dict.fromkeys(ENVELOPE.recipients, busy)).deliver(ENVELOPE, CONTENT)
    assert report.final_reply is None
    assert not any(s.accepted for s in report.recipients.values())


@pytest.mark.parametrize(
    "response",
    [None, Reply(250, "2.0.0", "ok"), Reply(451, "4.3.0", "later"), {"b@example.org": None}],
    ids=["none", "reply-250", "reply-451", "bad-mapping"],
)
async def test_mock_async_handler_behaves_like_a_sync_one(response: object) -> None:
    async def handler(envelope: Envelope, content: bytes) -> MockResponse:
        await asyncio.sleep(0)
        return response  # type: ignore[return-value]

    async def outcome(transport: MockTransport) -> object:
        try:
            report = await transport.deliver(ENVELOPE, CONTENT)
        except DeliveryError as error:
            return (type(error), str(error))
        return report.recipients

    sync = MockTransport(lambda envelope, content: response)  # type: ignore[arg-type,return-value]
    assert await outcome(MockTransport(handler)) == await outcome(sync)


async def test_mock_delivery_error_propagates_unchanged() -> None:
    throttled = ThrottledError("slow down", reply=Reply(421, "4.7.0", "rate limited"))

    def handler(envelope: Envelope, content: bytes) -> None:
        raise throttled

    transport = MockTransport(handler)
    with pytest.raises(ThrottledError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)
    assert caught.value is throttled
    assert transport.calls == [(ENVELOPE, CONTENT)]  # recorded even when it raised


async def test_mock_foreign_exception_becomes_permanent_error() -> None:
    async def handler(envelope: Envelope, content: bytes) -> None:
        raise ValueError("the test's bug")

    with pytest.raises(PermanentError) as caught:
        await MockTransport(handler).deliver(ENVELOPE, CONTENT)

    assert isinstance(caught.value.__cause__, ValueError)
    assert "MockTransport handler raised ValueError: the test's bug" in str(caught.value)
    assert caught.value.transport_name == "mock"


async def test_mock_cancellation_is_not_wrapped() -> None:
    async def handler(envelope: Envelope, content: bytes) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await MockTransport(handler).deliver(ENVELOPE, CONTENT)


@pytest.mark.parametrize(
    ("response", "cause"),
    [
        (42, TypeError),
        ({"b@example.org": "250 ok"}, TypeError),
        ({"stranger@example.com": Reply(250)}, ValueError),
    ],
)
async def test_mock_unusable_response_is_a_permanent_error(
    response: object, cause: type[Exception]
) -> None:
    transport = MockTransport(lambda envelope, content: response)  # type: ignore[arg-type,return-value]
    with pytest.raises(PermanentError, match="unusable response") as caught:
        await transport.deliver(ENVELOPE, CONTENT)
    assert isinstance(caught.value.__cause__, cause)


@pytest.mark.parametrize(
    ("reply", "phase"),
    [
        (Reply(250, "2.1.5", "ok"), Phase.RCPT),
        (Reply(251, None, "will forward"), Phase.RCPT),
        (Reply(450, "4.2.1", "busy"), Phase.RCPT),
        (Reply(550, "5.1.1", "unknown"), Phase.RCPT),
        (Reply(452, "4.5.3", "too many recipients"), Phase.RCPT),
        (Reply(554, "5.7.1", "rejected"), Phase.DATA_END),
    ],
)
async def test_mock_statuses_are_the_library_statuses(reply: Reply, phase: Phase) -> None:
    # One rule turns a reply into a status: the mock's are RecipientStatus.from_reply's,
    # a 2xx SENT, anything else the verdict of the reply table.
    response: MockResponse = (
        reply if phase is Phase.DATA_END else {"b@example.org": reply, "c@example.net": reply}
    )
    report = await _mock(response).deliver(ENVELOPE, CONTENT)

    for recipient in ENVELOPE.recipients:
        status = report.recipients[recipient]
        assert status == RecipientStatus.from_reply(
            recipient,
            reply,
            phase=phase if reply.severity != 2 else Phase.DATA_END,
            transport_name="mock",
        )
        assert status.reply == reply
        if reply.severity == 2:
            assert status.outcome is Outcome.SENT
        else:
            verdict = classify(reply, phase)
            assert status.phase is phase
            assert status.outcome is verdict.outcome
            assert status.explanation == verdict.explanation
            assert status.retryable is verdict.retryable
            assert status.split is verdict.split
            assert status.delay_hint == verdict.delay_hint


# -- what every transport owes its caller --------------------------------------------------

TRANSPORTS: Mapping[str, Callable[[Path], Transport]] = {
    "memory": lambda tmp: MemoryTransport(),
    "file": lambda tmp: FileTransport(tmp / "out"),
    "mock": lambda tmp: MockTransport(lambda envelope, content: None),
    # A path that does not exist: a closed transport must refuse before running anything.
    "sendmail": lambda tmp: SendmailTransport(tmp / "no-sendmail"),
}


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> Transport:
    return TRANSPORTS[request.param](tmp_path)


async def test_use_after_close_is_refused(transport: Transport, tmp_path: Path) -> None:
    await transport.aclose()
    assert transport.closed
    with pytest.raises(TransportClosedError, match=re.escape(transport.name)):
        await transport.deliver(ENVELOPE, CONTENT)
    assert not (tmp_path / "out").exists()  # the file transport wrote nothing


async def test_close_twice_is_fine(transport: Transport) -> None:
    await transport.aclose()
    await transport.aclose()
    assert transport.closed


async def test_context_manager_closes(transport: Transport) -> None:
    async with transport as entered:
        assert entered is transport
        assert not transport.closed
    assert transport.closed


def test_name_is_specific(transport: Transport) -> None:
    assert transport.name != Transport.name
    assert transport.name in repr(transport)
