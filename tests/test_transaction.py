"""The transaction interpreter alone: replies and failures in, report or error out, no socket.

Every phase (MAIL, RCPT, DATA, the final dot) meets every kind of answer (2xx, 4xx,
5xx, 421, a garbled reply, a lost link, a timeout), serial and pipelined. ``play``
drives :class:`Transaction` the way ``SMTPTransport._dialogue`` does and records
what would have been written, so the tests also pin what is written next.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import (
    AmbiguousDeliveryError,
    ConnectionFailedError,
    DeliveryError,
    PermanentError,
    ProtocolError,
    SMTPTimeoutError,
    TransientError,
)
from reliable_smtp._replies import Outcome, Phase, Reply, classify
from reliable_smtp._result import DeliveryReport
from reliable_smtp._transports._transaction import (
    GarbledReplyError,
    LinkLostError,
    Next,
    ReplyTimeoutError,
    Transaction,
    WireError,
    failure_error,
)

ANN, BOB, CAT = "ann@example.org", "bob@example.org", "cat@example.org"
ENVELOPE = Envelope.build("app@example.com", [ANN, BOB, CAT])

OK = Reply(250, "2.0.0", "OK")
GO_AHEAD = Reply(354, None, "go ahead")
LATER = Reply(451, "4.3.0", "temporary local problem")
NO = Reply(550, "5.1.1", "no such user")
CLOSING = Reply(421, "4.3.2", "closing")
QUEUED = Reply(250, "2.0.0", "queued")

Event = Reply | WireError


@dataclass(frozen=True, slots=True, kw_only=True)
class Played:
    written: list[str]
    outcome: DeliveryReport | DeliveryError
    close: bool

    @property
    def report(self) -> DeliveryReport:
        assert isinstance(self.outcome, DeliveryReport), self.outcome
        return self.outcome

    @property
    def error(self) -> DeliveryError:
        assert isinstance(self.outcome, DeliveryError), self.outcome
        return self.outcome

    def outcomes(self) -> dict[str, Outcome]:
        return {r: s.outcome for r, s in self.report.recipients.items()}


def play(events: list[Event], *, pipelined: bool, envelope: Envelope = ENVELOPE) -> Played:
    """Run one transaction; every event must be used, and the transaction must end."""
    transaction = Transaction(envelope, pipelined=pipelined, transport_name="test")
    pending = list(events)
    written: list[str] = []

    def read() -> Reply:
        event = pending.pop(0)
        if isinstance(event, WireError):
            raise event
        return event

    try:
        written.append("MAIL+RCPT+DATA" if pipelined else "MAIL")
        step = transaction.on_mail(read())
        for recipient in envelope.recipients:
            if step is not Next.GO_ON:
                break
            if not pipelined:
                written.append(f"RCPT {recipient}")
            step = transaction.on_rcpt(read())
        if step is Next.GO_ON:
            if not pipelined:
                written.append("DATA")
            step = transaction.on_data(read())
        if step is Next.END_EMPTY:
            written.append(".")
            step = transaction.on_empty_end(read())
        elif step is Next.SEND_BODY:
            assert transaction.accepted
            written.append("BODY " + ",".join(transaction.accepted))
            transaction.on_body_written()
            step = transaction.on_final(read())
    except WireError as failure:
        step = transaction.on_failure(failure)
    return ended(transaction, step, pending, written)


def ended(transaction: Transaction, step: Next, pending: list[Event], written: list[str]) -> Played:
    """The transaction is over, every event used: its report (or error) and the close flag."""
    assert step is Next.DONE
    assert transaction.done
    assert pending == [], f"events never read: {pending}"
    try:
        outcome: DeliveryReport | DeliveryError = transaction.result()
    except DeliveryError as error:
        outcome = error
    return Played(written=written, outcome=outcome, close=transaction.close)


def serial_writes(*tail: str) -> list[str]:
    return ["MAIL", *(f"RCPT {r}" for r in (ANN, BOB, CAT)), *tail]


BOTH = pytest.mark.parametrize("pipelined", [False, True], ids=["serial", "pipelined"])
FAILURES = {
    "garbled": GarbledReplyError("Malformed SMTP response line: HTTP/1.1 400"),
    "lost": LinkLostError("Connection lost"),
    "timeout": ReplyTimeoutError("Timed out waiting for server response"),
}


# == the whole transaction goes through ===================================================


@BOTH
def test_every_recipient_accepted_is_sent_with_the_final_reply(pipelined: bool) -> None:
    played = play([OK, OK, OK, OK, GO_AHEAD, QUEUED], pipelined=pipelined)
    assert played.outcomes() == dict.fromkeys((ANN, BOB, CAT), Outcome.SENT)
    assert played.report.final_reply == QUEUED
    assert played.close is False
    body = "BODY " + ",".join((ANN, BOB, CAT))
    assert played.written == (
        ["MAIL+RCPT+DATA", body] if pipelined else serial_writes("DATA", body)
    )


@BOTH
def test_any_2xx_accepts_mail_and_rcpt(pipelined: bool) -> None:
    odd = Reply(251, "2.1.5", "will forward")
    played = play([Reply(252, None, "ok"), odd, odd, odd, GO_AHEAD, QUEUED], pipelined=pipelined)
    assert set(played.outcomes().values()) == {Outcome.SENT}


# == MAIL =================================================================================


@pytest.mark.parametrize(
    ("answer", "error_class"),
    [(LATER, TransientError), (Reply(553, "5.7.1", "sender rejected"), PermanentError)],
)
def test_a_refused_mail_in_serial_mode_raises_and_nothing_more_is_written(
    answer: Reply, error_class: type[DeliveryError]
) -> None:
    played = play([answer], pipelined=False)
    assert type(played.error) is error_class
    assert (played.error.phase, played.error.reply) == (Phase.MAIL, answer)
    assert played.written == ["MAIL"]
    assert played.close is False  # the connection is fine: RSET and reuse it


@pytest.mark.parametrize("data", [Reply(554, "5.5.1", "no valid recipients"), GO_AHEAD])
def test_a_refused_mail_pipelined_reads_every_reply_then_raises(data: Reply) -> None:
    refused = Reply(553, "5.7.1", "sender rejected")
    no_sender = Reply(503, "5.5.1", "need MAIL first")
    dot_reply: list[Event] = [OK] if data is GO_AHEAD else []
    played = play([refused, no_sender, no_sender, no_sender, data, *dot_reply], pipelined=True)
    assert played.error.phase is Phase.MAIL
    assert played.error.reply == refused
    # A 354 despite the refusal: an empty message ends the DATA phase, nothing delivered.
    assert played.written == (["MAIL+RCPT+DATA", "."] if data is GO_AHEAD else ["MAIL+RCPT+DATA"])
    assert played.close is False


@BOTH
def test_421_at_mail_raises_and_closes(pipelined: bool) -> None:
    played = play([CLOSING], pipelined=pipelined)
    assert isinstance(played.error, TransientError)
    assert (played.error.phase, played.error.reply) == (Phase.MAIL, CLOSING)
    assert played.close is True
    assert played.written == ["MAIL+RCPT+DATA" if pipelined else "MAIL"]


@BOTH
def test_an_out_of_step_reply_to_mail_raises_a_protocol_error_and_closes(pipelined: bool) -> None:
    odd = Reply(354, None, "go ahead")
    events: list[Event] = [odd] if not pipelined else [odd, NO, NO, NO, NO]
    played = play(events, pipelined=pipelined)
    assert type(played.error) is ProtocolError
    assert played.error.phase is Phase.MAIL
    assert played.close is True


@BOTH
@pytest.mark.parametrize(
    ("failure", "error_class"),
    [("garbled", ProtocolError), ("lost", ConnectionFailedError), ("timeout", SMTPTimeoutError)],
)
def test_no_reply_to_mail_raises(
    pipelined: bool, failure: str, error_class: type[DeliveryError]
) -> None:
    played = play([FAILURES[failure]], pipelined=pipelined)
    assert type(played.error) is error_class
    assert played.error.phase is Phase.MAIL
    assert played.error.outcome is not Outcome.AMBIGUOUS
    assert played.error.__cause__ is FAILURES[failure]
    assert played.close is True


# == RCPT =================================================================================


@BOTH
@pytest.mark.parametrize("answer", [LATER, NO], ids=["4xx", "5xx"])
def test_a_refused_recipient_gets_its_reply_and_the_others_go_on(
    pipelined: bool, answer: Reply
) -> None:
    played = play([OK, OK, answer, OK, GO_AHEAD, QUEUED], pipelined=pipelined)
    bob = played.report.recipients[BOB]
    assert (bob.phase, bob.reply, bob.outcome) == (
        Phase.RCPT,
        answer,
        classify(answer, Phase.RCPT).outcome,
    )
    assert bob.outcome is (Outcome.TRANSIENT if answer is LATER else Outcome.PERMANENT)
    assert played.outcomes()[ANN] is played.outcomes()[CAT] is Outcome.SENT
    assert played.written[-1] == f"BODY {ANN},{CAT}"
    assert played.close is False


@BOTH
@pytest.mark.parametrize("at", [0, 1, 2])
def test_421_at_any_rcpt_gives_every_pending_recipient_the_421_and_closes(
    pipelined: bool, at: int
) -> None:
    rcpt_replies: list[Event] = [OK] * at + [CLOSING]
    refused_first = at == 2
    if refused_first:
        rcpt_replies = [NO, OK, CLOSING]
    played = play([OK, *rcpt_replies], pipelined=pipelined)
    statuses = played.report.recipients
    closed = [ANN, BOB, CAT][0 if not refused_first else 1 :]
    assert all(statuses[r].reply == CLOSING and statuses[r].phase is Phase.RCPT for r in closed)
    assert {statuses[r].outcome for r in closed} == {Outcome.TRANSIENT}
    if refused_first:
        assert statuses[ANN].reply == NO  # answered before the 421: keeps its own reply
    assert played.report.final_reply is None
    assert played.close is True
    assert not any(w.startswith(("DATA", "BODY")) for w in played.written)
    if not pipelined:
        assert played.written == ["MAIL", *(f"RCPT {r}" for r in [ANN, BOB, CAT][: at + 1])]


@BOTH
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_no_reply_at_rcpt_fails_every_recipient_not_yet_refused(
    pipelined: bool, failure: str
) -> None:
    played = play([OK, NO, OK, FAILURES[failure]], pipelined=pipelined)
    statuses = played.report.recipients
    assert statuses[ANN].reply == NO
    assert statuses[ANN].outcome is Outcome.PERMANENT
    expected = Outcome.PERMANENT if failure == "garbled" else Outcome.TRANSIENT
    for recipient in (BOB, CAT):  # BOB was accepted, CAT never answered: neither got it
        assert statuses[recipient].outcome is expected
        assert statuses[recipient].phase is Phase.RCPT
    assert played.close is True


def test_every_recipient_refused_in_serial_mode_sends_no_data() -> None:
    played = play([OK, NO, LATER, NO], pipelined=False)
    assert played.written == serial_writes()
    assert played.outcomes() == {
        ANN: Outcome.PERMANENT,
        BOB: Outcome.TRANSIENT,
        CAT: Outcome.PERMANENT,
    }
    assert played.close is False


@pytest.mark.parametrize(
    ("data", "written"),
    [(Reply(554, "5.5.1", "no valid recipients"), []), (GO_AHEAD, ["."])],
)
def test_every_recipient_refused_pipelined_reads_data_and_ends_an_empty_message(
    data: Reply, written: list[str]
) -> None:
    events: list[Event] = [OK, NO, NO, NO, data] + ([OK] if written else [])
    played = play(events, pipelined=True)
    assert played.written == ["MAIL+RCPT+DATA", *written]
    assert played.outcomes() == dict.fromkeys((ANN, BOB, CAT), Outcome.PERMANENT)
    assert all(s.reply == NO for s in played.report.recipients.values())
    assert played.close is False


@BOTH
def test_an_out_of_step_rcpt_reply_is_a_protocol_error_and_closes_at_the_end(
    pipelined: bool,
) -> None:
    odd = Reply(354, None, "go ahead")
    played = play([OK, odd, OK, OK, GO_AHEAD, QUEUED], pipelined=pipelined)
    assert played.outcomes() == {
        ANN: Outcome.PERMANENT,
        BOB: Outcome.SENT,
        CAT: Outcome.SENT,
    }
    assert played.close is True


# == DATA =================================================================================


@BOTH
@pytest.mark.parametrize(
    ("answer", "outcome", "close"),
    [
        (LATER, Outcome.TRANSIENT, False),
        (Reply(554, "5.5.1", "no valid recipients"), Outcome.PERMANENT, False),
        (CLOSING, Outcome.TRANSIENT, True),
        (OK, Outcome.PERMANENT, True),  # a 2xx to DATA: no body was sent, out of step
        (Reply(600, None, "what"), Outcome.PERMANENT, True),
    ],
    ids=["4xx", "5xx", "421", "2xx", "600"],
)
def test_a_refused_data_command_gives_the_accepted_recipients_its_reply(
    pipelined: bool, answer: Reply, outcome: Outcome, close: bool
) -> None:
    played = play([OK, NO, OK, OK, answer], pipelined=pipelined)
    statuses = played.report.recipients
    assert statuses[ANN].reply == NO
    assert statuses[ANN].phase is Phase.RCPT
    for recipient in (BOB, CAT):
        assert (statuses[recipient].phase, statuses[recipient].reply) == (Phase.DATA, answer)
        assert statuses[recipient].outcome is outcome
    assert played.report.final_reply is None
    assert played.close is close
    assert not any(w.startswith("BODY") for w in played.written)


@BOTH
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_no_reply_to_data_is_never_ambiguous(pipelined: bool, failure: str) -> None:
    played = play([OK, OK, OK, OK, FAILURES[failure]], pipelined=pipelined)
    expected = Outcome.PERMANENT if failure == "garbled" else Outcome.TRANSIENT
    assert played.outcomes() == dict.fromkeys((ANN, BOB, CAT), expected)
    assert {s.phase for s in played.report.recipients.values()} == {Phase.DATA}
    assert played.close is True


@BOTH
def test_a_link_lost_while_writing_the_body_is_not_ambiguous(pipelined: bool) -> None:
    transaction = Transaction(ENVELOPE, pipelined=pipelined, transport_name="test")
    assert transaction.on_mail(OK) is Next.GO_ON
    for _ in range(3):
        transaction.on_rcpt(OK)
    assert transaction.on_data(GO_AHEAD) is Next.SEND_BODY
    # The write raised: on_body_written was never called, the dot never left.
    assert transaction.on_failure(LinkLostError("Connection lost")) is Next.DONE
    report = transaction.result()
    assert {s.outcome for s in report.recipients.values()} == {Outcome.TRANSIENT}
    assert {s.phase for s in report.recipients.values()} == {Phase.DATA}


def test_a_guard_before_the_dot_ends_the_transaction_with_its_own_error() -> None:
    # What a veto before the final dot does: the transport hands the error over.
    transaction = Transaction(ENVELOPE, pipelined=False, transport_name="test")
    transaction.on_mail(OK)
    transaction.on_rcpt(OK)
    transaction.on_rcpt(NO)
    transaction.on_rcpt(OK)
    assert transaction.on_data(GO_AHEAD) is Next.SEND_BODY
    assert transaction.accepted == [ANN, CAT]
    veto = TransientError(
        "not sent: the outbox lost its lease", phase=Phase.DATA, transport_name="test"
    )
    assert transaction.on_error(veto) is Next.DONE
    assert transaction.close is True
    statuses = transaction.result().recipients
    assert statuses[BOB].reply == NO
    assert {statuses[r].outcome for r in (ANN, CAT)} == {Outcome.TRANSIENT}


# == the final dot ========================================================================


@pytest.mark.parametrize("dialogue", ["serial", "pipelined", "bdat"])
@pytest.mark.parametrize(
    ("answer", "outcome", "close"),
    [
        (LATER, Outcome.TRANSIENT, False),
        (Reply(554, "5.7.1", "rejected as spam"), Outcome.PERMANENT, False),
        (CLOSING, Outcome.TRANSIENT, True),
        (Reply(354, None, "go ahead"), Outcome.AMBIGUOUS, True),
        (Reply(600, None, "what"), Outcome.AMBIGUOUS, True),
    ],
    ids=["4xx", "5xx", "421", "3xx", "600"],
)
def test_the_final_reply_is_every_accepted_recipients_reply(
    dialogue: str, answer: Reply, outcome: Outcome, close: bool
) -> None:
    # With CHUNKING the final reply is the reply to BDAT LAST: no DATA, no 354.
    if dialogue == "bdat":
        played = play_chunked([OK, OK, NO, OK, answer])
    else:
        played = play([OK, OK, NO, OK, GO_AHEAD, answer], pipelined=dialogue == "pipelined")
    statuses = played.report.recipients
    assert statuses[BOB].reply == NO
    for recipient in (ANN, CAT):
        assert (statuses[recipient].phase, statuses[recipient].reply) == (Phase.DATA_END, answer)
        assert statuses[recipient].outcome is outcome
    assert played.report.final_reply == answer
    assert played.close is close


@BOTH
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_no_reply_to_the_final_dot_is_ambiguous(pipelined: bool, failure: str) -> None:
    played = play([OK, OK, NO, OK, GO_AHEAD, FAILURES[failure]], pipelined=pipelined)
    statuses = played.report.recipients
    assert statuses[BOB].outcome is Outcome.PERMANENT
    for recipient in (ANN, CAT):
        assert statuses[recipient].outcome is Outcome.AMBIGUOUS
        assert statuses[recipient].phase is Phase.DATA_END
    assert played.report.final_reply is None
    assert played.close is True


# == failure_error ========================================================================


@pytest.mark.parametrize(
    ("failure", "phase", "error_class", "summary"),
    [
        ("lost", Phase.RCPT, ConnectionFailedError, "connection problem during rcpt: Connection"),
        ("timeout", Phase.DATA, SMTPTimeoutError, "no reply from the server in time during data"),
        ("garbled", Phase.EHLO, ProtocolError, "the server sent a reply that is not SMTP"),
        ("garbled", Phase.DATA_END, AmbiguousDeliveryError, "answered the final dot"),
        ("lost", Phase.DATA_END, AmbiguousDeliveryError, "connection problem during data_end"),
        ("timeout", Phase.DATA_END, AmbiguousDeliveryError, "no reply from the server in time"),
    ],
)
def test_failure_error_names_the_phase_and_what_happened(
    failure: str, phase: Phase, error_class: type[DeliveryError], summary: str
) -> None:
    error = failure_error(FAILURES[failure], phase, transport_name="smtp://mx:25")
    assert type(error) is error_class
    assert (error.phase, error.transport_name) == (phase, "smtp://mx:25")
    assert summary in str(error)
    assert error.explanation
    if failure == "garbled":
        assert "HTTP/1.1 400" in str(error)


def test_failure_error_takes_the_transports_explanation() -> None:
    error = failure_error(LinkLostError("refused"), Phase.CONNECT, explanation="check the port")
    assert error.explanation == "check the port"
    assert error.outcome is Outcome.TRANSIENT


# == misuse ===============================================================================


def test_replies_out_of_order_are_a_bug_in_the_caller() -> None:
    transaction = Transaction(ENVELOPE, pipelined=False, transport_name="test")
    with pytest.raises(RuntimeError, match="not over"):
        transaction.result()
    with pytest.raises(RuntimeError, match="reply to rcpt came while the transaction is at mail"):
        transaction.on_rcpt(OK)
    transaction.on_mail(OK)
    with pytest.raises(RuntimeError, match="reply to data"):
        transaction.on_data(GO_AHEAD)
    with pytest.raises(RuntimeError, match="at rcpt"):
        transaction.on_body_written()
    transaction.on_rcpt(NO)
    transaction.on_rcpt(NO)
    assert transaction.on_rcpt(NO) is Next.DONE
    with pytest.raises(RuntimeError, match="over"):
        transaction.on_data(GO_AHEAD)


def test_the_body_is_written_only_after_send_body() -> None:
    transaction = Transaction(ENVELOPE, pipelined=True, transport_name="test")
    transaction.on_mail(OK)
    for _ in range(3):
        transaction.on_rcpt(NO)
    assert transaction.on_data(GO_AHEAD) is Next.END_EMPTY
    with pytest.raises(RuntimeError, match="only after SEND_BODY"):
        transaction.on_body_written()


# == CHUNKING: MAIL, RCPT..., BDAT <n> LAST and the message in one write ===================

BDAT_REFUSED = Reply(554, "5.5.1", "no valid recipients")
NEED_MAIL = Reply(503, "5.5.1", "MAIL transaction required")


def play_chunked(events: list[Event], *, envelope: Envelope = ENVELOPE) -> Played:
    """One CHUNKING transaction the way ``SMTPTransport._chunked_dialogue`` drives it."""
    transaction = Transaction(envelope, pipelined=True, chunking=True, transport_name="test")
    pending = list(events)

    def read() -> Reply:
        event = pending.pop(0)
        if isinstance(event, WireError):
            raise event
        return event

    transaction.on_content_written()
    try:
        step = transaction.on_mail(read())
        for _ in envelope.recipients:
            if step is not Next.GO_ON:
                break
            step = transaction.on_rcpt(read())
        if step is Next.GO_ON:
            step = transaction.on_final(read())
    except WireError as failure:
        step = transaction.on_failure(failure)
    return ended(transaction, step, pending, ["MAIL+RCPT+BDAT LAST+content"])


def test_chunked_every_recipient_accepted_gets_the_bdat_reply() -> None:
    played = play_chunked([OK, OK, OK, OK, QUEUED])
    assert played.outcomes() == dict.fromkeys((ANN, BOB, CAT), Outcome.SENT)
    assert played.report.final_reply == QUEUED
    assert {s.phase for s in played.report.recipients.values()} == {Phase.DATA_END}
    assert played.close is False


def test_chunked_a_refused_recipient_keeps_its_reply_the_others_get_the_bdat_reply() -> None:
    played = play_chunked([OK, OK, NO, LATER, QUEUED])
    assert played.outcomes() == {
        ANN: Outcome.SENT,
        BOB: Outcome.PERMANENT,
        CAT: Outcome.TRANSIENT,
    }
    assert played.report.recipients[BOB].reply == NO


@pytest.mark.parametrize("bdat", [NEED_MAIL, BDAT_REFUSED])
def test_chunked_a_refused_mail_reads_every_reply_then_raises_nothing_delivered(
    bdat: Reply,
) -> None:
    refused = Reply(550, "5.7.1", "sender rejected")
    played = play_chunked([refused, NEED_MAIL, NEED_MAIL, NEED_MAIL, bdat])
    assert isinstance(played.error, PermanentError)
    assert played.error.reply == refused
    assert played.error.phase is Phase.MAIL
    assert played.close is False  # in step: the connection is reset and reused


@pytest.mark.parametrize("bdat", [QUEUED, Reply(600, None, "what")], ids=["2xx", "600"])
def test_chunked_a_refused_mail_yet_accepted_rcpt_and_message_is_ambiguous_for_those(
    bdat: Reply,
) -> None:
    # Out of step: the message left with the envelope, and the server says it took it.
    played = play_chunked([Reply(550, "5.7.1", "sender rejected"), OK, NO, OK, bdat])
    assert played.outcomes() == {
        ANN: Outcome.AMBIGUOUS,
        BOB: Outcome.PERMANENT,
        CAT: Outcome.AMBIGUOUS,
    }
    assert "out of step" in played.report.recipients[ANN].explanation
    assert played.close is True


def test_chunked_a_refused_mail_yet_accepted_rcpt_and_a_refused_message_raises() -> None:
    played = play_chunked([Reply(550, "5.7.1", "sender rejected"), OK, NO, OK, BDAT_REFUSED])
    assert isinstance(played.error, PermanentError)
    assert played.error.phase is Phase.MAIL


def test_chunked_every_recipient_refused_keeps_their_refusals_nothing_delivered() -> None:
    played = play_chunked([OK, NO, LATER, NO, BDAT_REFUSED])
    assert played.outcomes() == {
        ANN: Outcome.PERMANENT,
        BOB: Outcome.TRANSIENT,
        CAT: Outcome.PERMANENT,
    }
    assert played.report.final_reply is None  # no message was taken: RSET, reuse
    assert played.close is False


@pytest.mark.parametrize("bdat", [QUEUED, GO_AHEAD], ids=["2xx", "3xx"])
def test_chunked_a_bdat_accepted_with_nobody_to_deliver_to_is_out_of_step(bdat: Reply) -> None:
    played = play_chunked([OK, NO, NO, NO, bdat])
    assert set(played.outcomes().values()) == {Outcome.PERMANENT}
    assert played.close is True


def test_chunked_421_at_mail_raises_nothing_delivered_and_closes() -> None:
    played = play_chunked([CLOSING])
    assert isinstance(played.error, TransientError)
    assert played.error.outcome is Outcome.TRANSIENT
    assert played.close is True


@pytest.mark.parametrize("at", [0, 1, 2])
def test_chunked_421_at_an_rcpt_gives_every_pending_recipient_the_421(at: int) -> None:
    replies = [OK] * at + [CLOSING]
    played = play_chunked([OK, *replies])
    assert set(played.outcomes().values()) == {Outcome.TRANSIENT}
    assert {played.report.recipients[r].reply for r in ENVELOPE.recipients} == {CLOSING}
    assert played.close is True


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize(
    ("replies", "refused"),
    [([], set()), ([OK], set()), ([OK, OK, NO], {BOB}), ([OK, OK, NO, OK], {BOB})],
    ids=["at-mail", "at-rcpt", "after-a-refused-rcpt", "at-bdat"],
)
def test_chunked_no_reply_after_the_write_is_ambiguous_for_everyone_not_refused(
    failure: str, replies: list[Reply], refused: set[str]
) -> None:
    # The content left with the envelope: whichever reply is missing, the server may
    # have every copy not refused; the refused recipient keeps its own reply.
    played = play_chunked([*replies, FAILURES[failure]])
    outcomes = played.outcomes()
    ambiguous = {r for r, o in outcomes.items() if o is Outcome.AMBIGUOUS}
    assert ambiguous == set(ENVELOPE.recipients) - refused
    for recipient in refused:
        assert played.report.recipients[recipient].reply == NO
    status = played.report.recipients[ANN]
    assert status.phase is Phase.DATA_END
    assert status.retryable is False
    assert "BDAT" in status.explanation
    assert "RELIABLE_SMTP_CHUNKING" in status.explanation
    assert played.close is True


def test_chunked_a_guard_before_the_write_raises_its_own_error() -> None:
    # A veto at the commit point comes before on_content_written: nothing was written.
    transaction = Transaction(ENVELOPE, pipelined=True, chunking=True, transport_name="test")
    veto = TransientError(
        "not sent: the outbox lost its lease", phase=Phase.DATA, transport_name="test"
    )
    assert transaction.on_error(veto) is Next.DONE
    assert transaction.close is True
    with pytest.raises(TransientError) as raised:
        transaction.result()
    assert raised.value is veto


def test_chunked_replies_before_the_write_or_a_dot_are_a_bug_in_the_caller() -> None:
    transaction = Transaction(ENVELOPE, pipelined=True, chunking=True, transport_name="test")
    with pytest.raises(RuntimeError, match="on_content_written"):
        transaction.on_mail(OK)
    transaction.on_content_written()
    with pytest.raises(RuntimeError, match="written once"):
        transaction.on_content_written()
    transaction.on_mail(OK)
    for _ in ENVELOPE.recipients:
        transaction.on_rcpt(OK)
    with pytest.raises(RuntimeError):
        transaction.on_data(GO_AHEAD)  # no DATA in a BDAT transaction
    with pytest.raises(RuntimeError):
        transaction.on_body_written()
    assert transaction.on_final(QUEUED) is Next.DONE


def test_content_written_is_for_chunking_only() -> None:
    transaction = Transaction(ENVELOPE, pipelined=True, transport_name="test")
    with pytest.raises(RuntimeError, match="chunking"):
        transaction.on_content_written()
