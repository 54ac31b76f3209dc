"""What happened to a message (reliable_smtp._result): statuses carry the verdict."""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
from collections.abc import Callable

import pytest

import reliable_smtp
from conftest import OLD_SERVER_ARGUMENT, assert_two_names_refused, built_both_ways
from reliable_smtp import SendResultOrError
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import ConnectionFailedError, PermanentError, ThrottledError
from reliable_smtp._replies import Outcome, Phase, Reply, Verdict, classify
from reliable_smtp._result import DeliveryReport, RecipientStatus, SendResult, missing_status

ENVELOPE = Envelope(sender="a@example.com", recipients=("b@example.org", "c@example.org"))


def test_a_status_from_a_reply_carries_the_replys_verdict_unchanged() -> None:
    reply = Reply(452, "4.5.3", "Too many recipients")
    status = RecipientStatus.from_reply(
        "b@example.org", reply, phase=Phase.RCPT, transport_name="memory"
    )
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
    again = dataclasses.replace(status, attempts=3, transport_name="smtp://mx")
    assert (again.attempts, again.transport_name, again.verdict) == (3, "smtp://mx", status.verdict)
    changed = dataclasses.replace(status, explanation="tried 3 times")
    assert changed.explanation == "tried 3 times"
    assert changed.verdict == dataclasses.replace(status.verdict, explanation="tried 3 times")


def test_a_status_from_an_error_keeps_the_errors_verdict() -> None:
    error = ConnectionFailedError("reset", phase=Phase.DATA, explanation="lost: retried")
    status = RecipientStatus.from_error("b@example.org", error, transport_name="smtp://mx")
    assert status.verdict == error.verdict
    assert status.verdict.connection_lost  # what ConnectionFailedError stands for
    assert (status.phase, status.transport_name) == (Phase.DATA, "smtp://mx")
    # An error without an explanation lends its summary.
    bare = RecipientStatus.from_error("b@example.org", ThrottledError("slow down"))
    assert bare.explanation == "slow down"
    assert bare.outcome is Outcome.THROTTLED


def test_a_missing_status_is_a_permanent_transport_bug() -> None:
    status = missing_status("b@example.org", "custom")
    assert (status.outcome, status.phase, status.transport_name) == (
        Outcome.PERMANENT,
        Phase.DATA_END,
        "custom",
    )
    assert "transport bug" in status.explanation


def test_results_and_reports_survive_pickling() -> None:
    sent = RecipientStatus.from_reply(
        "b@example.org", Reply(250, "2.0.0", "OK"), phase=Phase.DATA_END, transport_name="memory"
    )
    lost = RecipientStatus.from_error(
        "c@example.org", ConnectionFailedError("reset", phase=Phase.DATA), transport_name="memory"
    )
    statuses = {"b@example.org": sent, "c@example.org": lost}
    report = DeliveryReport(recipients=statuses, transport_name="memory", final_reply=sent.reply)
    result = SendResult(
        message_id="<m@example.com>",
        envelope=ENVELOPE,
        recipients=statuses,
        transport_name="memory",
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


# -- transport_name, and server: its deprecated spelling (issue #12) ------------------------
# ``server`` held a transport's name ("memory", "recipient-policy"), not a server:
# ``transport_name`` says so. ``server=`` and ``.server`` still work for one release, with
# a DeprecationWarning that points at the caller.

OK = Reply(250, "2.0.0", "OK")


def _statuses() -> dict[str, RecipientStatus]:
    return {
        r: RecipientStatus.from_reply(r, OK, phase=Phase.DATA_END, transport_name="memory")
        for r in ENVELOPE.recipients
    }


#: Every public way to build a result that takes the transport's name, with ``**name``
#: being ``server=...`` or ``transport_name=...``.
RESULT_BUILDERS: dict[str, Callable[..., object]] = {
    "RecipientStatus()": lambda **name: RecipientStatus(
        recipient="b@example.org", outcome=Outcome.SENT, phase=Phase.DATA_END, **name
    ),
    "RecipientStatus.from_reply()": lambda **name: RecipientStatus.from_reply(
        "b@example.org", OK, phase=Phase.DATA_END, **name
    ),
    "RecipientStatus.from_verdict()": lambda **name: RecipientStatus.from_verdict(
        "b@example.org", classify(OK, Phase.DATA_END), phase=Phase.DATA_END, reply=OK, **name
    ),
    "RecipientStatus.from_error()": lambda **name: RecipientStatus.from_error(
        "b@example.org", ConnectionFailedError("reset", phase=Phase.DATA), **name
    ),
    "DeliveryReport()": lambda **name: DeliveryReport(recipients=_statuses(), **name),
    "DeliveryReport.all_sent()": lambda **name: DeliveryReport.all_sent(ENVELOPE, **name),
    "DeliveryReport.in_envelope_order()": lambda **name: DeliveryReport.in_envelope_order(
        ENVELOPE, _statuses(), **name
    ),
    "SendResult()": lambda **name: SendResult(
        message_id="<m@example.com>", envelope=ENVELOPE, recipients=_statuses(), **name
    ),
}


@pytest.mark.parametrize("where", list(RESULT_BUILDERS))
def test_server_argument_warns_at_the_caller_and_still_names_the_transport(where: str) -> None:
    old, new = built_both_ways(RESULT_BUILDERS[where], where)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # comparing them reads no deprecated name either
        assert old == new
        assert new.transport_name == "smtp://mx"


@pytest.mark.parametrize("where", list(RESULT_BUILDERS))
def test_server_and_a_different_transport_name_are_refused(where: str) -> None:
    assert_two_names_refused(RESULT_BUILDERS[where])


def test_replacing_a_status_with_server_is_a_conflict_with_its_transport_name() -> None:
    # dataclasses.replace() passes every field, transport_name included: server= on top of
    # it names the transport twice, so only transport_name= changes a status's transport.
    status = RecipientStatus.from_reply(
        "b@example.org", OK, phase=Phase.DATA_END, transport_name="memory"
    )
    with (
        pytest.warns(DeprecationWarning, match=OLD_SERVER_ARGUMENT),
        pytest.raises(TypeError, match="pass transport_name= only"),
    ):
        dataclasses.replace(status, server="smtp://mx")  # type: ignore[call-arg]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        moved = dataclasses.replace(status, transport_name="smtp://mx")
    assert moved.transport_name == "smtp://mx"


@pytest.mark.parametrize(
    "where", ["RecipientStatus()", "DeliveryReport.all_sent()", "SendResult()"]
)
def test_reading_server_warns_at_the_caller_and_gives_the_transport_name(where: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = RESULT_BUILDERS[where](transport_name="memory")
    with pytest.warns(DeprecationWarning, match=r"\.server is deprecated: read \.transport_name"):
        read = value.server  # type: ignore[attr-defined]
    assert read == "memory"


def test_the_server_attribute_warning_names_the_class_and_the_callers_line() -> None:
    status = RecipientStatus.from_reply(
        "b@example.org", OK, phase=Phase.DATA_END, transport_name="memory"
    )
    with pytest.warns(DeprecationWarning, match="server") as caught:
        assert status.server == "memory"
    assert str(caught[0].message).startswith("RecipientStatus.server is deprecated")
    assert caught[0].filename == __file__


def test_transport_name_and_pickling_never_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        built = [build(transport_name="memory") for build in RESULT_BUILDERS.values()]
        for value in built:
            copy = pickle.loads(pickle.dumps(value))
            assert copy == value
            assert copy.transport_name == "memory"  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning, match=OLD_SERVER_ARGUMENT):
        old = SendResult(
            message_id="<m@example.com>",
            envelope=ENVELOPE,
            recipients=_statuses(),
            server="memory",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # built with server=, but pickled as transport_name
        assert pickle.loads(pickle.dumps(old)).transport_name == "memory"


def test_recipient_rows_are_one_json_row_per_recipient_in_the_results_order() -> None:
    sent = RecipientStatus.from_reply(
        "b@example.org", Reply(250, "2.0.0", "OK"), phase=Phase.DATA_END, transport_name="memory"
    )
    refused = RecipientStatus.from_reply(
        "c@example.org",
        Reply(550, "5.1.1", "no such user"),
        phase=Phase.RCPT,
        transport_name="memory",
    )
    lost = RecipientStatus.from_error(
        "d@example.org", ConnectionFailedError("reset", phase=Phase.DATA), transport_name="memory"
    )
    result = SendResult(
        message_id="m@example.com",
        envelope=ENVELOPE,
        recipients={"c@example.org": refused, "b@example.org": sent, "d@example.org": lost},
        transport_name="memory",
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
