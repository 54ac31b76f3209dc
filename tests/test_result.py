"""What happened to a message (reliable_smtp._result): statuses carry the verdict."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

import reliable_smtp
from reliable_smtp import SendResultOrError
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import ConnectionFailedError, PermanentError, ThrottledError
from reliable_smtp._replies import Outcome, Phase, Reply, Verdict, classify
from reliable_smtp._result import DeliveryReport, RecipientStatus, SendResult, missing_status

ENVELOPE = Envelope(sender="a@example.com", recipients=("b@example.org", "c@example.org"))


def test_a_status_from_a_reply_carries_the_replys_verdict_unchanged() -> None:
    reply = Reply(452, "4.5.3", "Too many recipients")
    status = RecipientStatus.from_reply("b@example.org", reply, phase=Phase.RCPT, server="memory")
    verdict = classify(reply, Phase.RCPT)
    assert status.verdict == verdict
    # The old field names read the verdict.
    assert (status.outcome, status.explanation, status.retryable, status.split) == (
        verdict.outcome,
        verdict.explanation,
        verdict.retryable,
        verdict.split,
    )
    assert status.delay_hint == verdict.delay_hint
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.verdict = Verdict(outcome=Outcome.SENT, explanation="")  # type: ignore[misc]


def test_the_shorthand_constructor_builds_the_verdict() -> None:
    status = RecipientStatus(
        recipient="b@example.org",
        outcome=Outcome.THROTTLED,
        phase=Phase.MAIL,
        explanation="slow down",
        retryable=True,
        delay_hint=12.0,
    )
    assert status.verdict == Verdict(
        outcome=Outcome.THROTTLED, explanation="slow down", retryable=True, delay_hint=12.0
    )
    with pytest.raises(TypeError, match="verdict"):
        RecipientStatus(recipient="b@example.org", phase=Phase.MAIL)


def test_replace_changes_the_status_and_its_verdict() -> None:
    status = RecipientStatus.from_reply(
        "b@example.org", Reply(451, "4.3.0", "try later"), phase=Phase.RCPT
    )
    again = dataclasses.replace(status, attempts=3, server="smtp://mx")
    assert (again.attempts, again.server, again.verdict) == (3, "smtp://mx", status.verdict)
    changed = dataclasses.replace(status, explanation="tried 3 times")
    assert changed.explanation == "tried 3 times"
    assert changed.verdict == dataclasses.replace(status.verdict, explanation="tried 3 times")


def test_a_status_from_an_error_keeps_the_errors_verdict() -> None:
    error = ConnectionFailedError("reset", phase=Phase.DATA, explanation="lost: retried")
    status = RecipientStatus.from_error("b@example.org", error, server="smtp://mx")
    assert status.verdict == error.verdict
    assert status.verdict.connection_lost  # what ConnectionFailedError stands for
    assert (status.phase, status.server) == (Phase.DATA, "smtp://mx")
    # An error without an explanation lends its summary.
    bare = RecipientStatus.from_error("b@example.org", ThrottledError("slow down"))
    assert bare.explanation == "slow down"
    assert bare.outcome is Outcome.THROTTLED


def test_a_missing_status_is_a_permanent_transport_bug() -> None:
    status = missing_status("b@example.org", "custom")
    assert (status.outcome, status.phase, status.server) == (
        Outcome.PERMANENT,
        Phase.DATA_END,
        "custom",
    )
    assert "transport bug" in status.explanation


def test_results_and_reports_survive_pickling() -> None:
    sent = RecipientStatus.from_reply(
        "b@example.org", Reply(250, "2.0.0", "OK"), phase=Phase.DATA_END, server="memory"
    )
    lost = RecipientStatus.from_error(
        "c@example.org", ConnectionFailedError("reset", phase=Phase.DATA), server="memory"
    )
    statuses = {"b@example.org": sent, "c@example.org": lost}
    report = DeliveryReport(recipients=statuses, server="memory", final_reply=sent.reply)
    result = SendResult(
        message_id="<m@example.com>",
        envelope=ENVELOPE,
        recipients=statuses,
        server="memory",
        extra={"k": "v"},
    )
    for value in (report, result):
        copy = pickle.loads(pickle.dumps(value))
        assert copy == value
        assert dict(copy.recipients) == statuses
        with pytest.raises(TypeError):
            copy.recipients["x"] = sent  # type: ignore[index]  # still read-only


def test_send_outcome_is_the_deprecated_name_of_send_result_or_error() -> None:
    with pytest.warns(DeprecationWarning, match="SendResultOrError"):
        assert reliable_smtp.SendOutcome is SendResultOrError
    assert PermanentError("x").outcome is Outcome.PERMANENT  # the enum keeps its name


def test_transport_name_is_what_server_used_to_be_called() -> None:
    # ``server`` held a transport's name ("memory", "recipient-policy"), not a server:
    # ``transport_name`` says so; ``server`` is still accepted and readable.
    old = RecipientStatus(
        recipient="b@example.org", outcome=Outcome.SENT, phase=Phase.DATA_END, server="memory"
    )
    new = RecipientStatus(
        recipient="b@example.org",
        outcome=Outcome.SENT,
        phase=Phase.DATA_END,
        transport_name="memory",
    )
    assert old == new
    assert (new.transport_name, new.server) == ("memory", "memory")
    assert dataclasses.replace(new, server="smtp://mx").transport_name == "smtp://mx"
    reply = Reply(250, "2.0.0", "OK")
    assert RecipientStatus.from_reply(
        "b@example.org", reply, phase=Phase.DATA_END, server="x"
    ) == RecipientStatus.from_reply(
        "b@example.org", reply, phase=Phase.DATA_END, transport_name="x"
    )
    report = DeliveryReport.all_sent(ENVELOPE, server="memory")
    assert report == DeliveryReport.all_sent(ENVELOPE, transport_name="memory")
    assert (report.transport_name, report.server) == ("memory", "memory")
    assert DeliveryReport(recipients=report.recipients, server="memory") == DeliveryReport(
        recipients=report.recipients, transport_name="memory"
    )
    result = SendResult(
        message_id="<m@example.com>", envelope=ENVELOPE, recipients={}, server="memory"
    )
    assert (result.transport_name, result.server) == ("memory", "memory")
    error = PermanentError("x", server="smtp://mx")
    assert (error.transport_name, error.server) == ("smtp://mx", "smtp://mx")
    assert error.replace(server="smtp://backup").transport_name == "smtp://backup"
    assert error.replace(transport_name="smtp://b").server == "smtp://b"
    assert "server smtp://mx" in str(error)


def test_recipient_rows_are_one_json_row_per_recipient_in_the_results_order() -> None:
    sent = RecipientStatus.from_reply(
        "b@example.org", Reply(250, "2.0.0", "OK"), phase=Phase.DATA_END, server="memory"
    )
    refused = RecipientStatus.from_reply(
        "c@example.org", Reply(550, "5.1.1", "no such user"), phase=Phase.RCPT, server="memory"
    )
    lost = RecipientStatus.from_error(
        "d@example.org", ConnectionFailedError("reset", phase=Phase.DATA), server="memory"
    )
    result = SendResult(
        message_id="m@example.com",
        envelope=ENVELOPE,
        recipients={"c@example.org": refused, "b@example.org": sent, "d@example.org": lost},
        server="memory",
    )
    rows = result.recipient_rows()
    assert rows == [
        {
            "recipient": "c@example.org",
            "outcome": "permanent",
            "code": 550,
            "enhanced_code": "5.1.1",
            "text": "no such user",
            "explanation": refused.explanation,
            "message_id": "m@example.com",
        },
        {
            "recipient": "b@example.org",
            "outcome": "sent",
            "code": 250,
            "enhanced_code": "2.0.0",
            "text": "OK",
            "explanation": sent.explanation,
            "message_id": "m@example.com",
        },
        {
            "recipient": "d@example.org",
            "outcome": lost.outcome.value,
            "code": None,  # no reply: the connection was lost
            "enhanced_code": None,
            "text": None,
            "explanation": lost.explanation or None,
            "message_id": "m@example.com",
        },
    ]
    assert refused.explanation
    assert json.loads(json.dumps(rows)) == rows
