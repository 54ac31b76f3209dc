"""The rules of one mail transaction: which replies, or which failure where, give which result.

This module owns :class:`Transaction`, the interpreter of MAIL, RCPT..., DATA and
the final dot, and the failures a transaction can meet instead of a reply
(:class:`LinkLostError`, :class:`ReplyTimeoutError`, :class:`GarbledReplyError`,
turned into errors by :func:`failure_error`). It is pure: no I/O, no clock. Both
transports that speak SMTP feed it - :class:`~reliable_smtp.SMTPTransport` with
the replies as they come off the wire, :class:`~reliable_smtp.testing.ScriptedTransport`
with its scripted steps - so the two report the same thing for the same server
behaviour.

The caller owns the writing. Each ``on_*`` method takes the reply to one command
and returns :class:`Next`, what the caller does now:

* ``GO_ON`` - the next reply is due: the next RCPT's, else DATA's (in serial mode,
  write that command first; pipelined, it is already on the wire);
* ``SEND_BODY`` - DATA was answered 354 and :attr:`Transaction.accepted` are to get
  the message: write the body and the final dot, call ``on_body_written``, then read
  the final reply (``on_final``). Anything that must veto the dot runs here;
* ``END_EMPTY`` - 354 came although nobody is to get the message (pipelined): write
  a lone dot so the server leaves the DATA state, read its reply (``on_empty_end``);
* ``DONE`` - nothing more to write: drop the connection if :attr:`Transaction.close`
  says so, then :meth:`Transaction.result` gives the report or raises the error.

With CHUNKING (RFC 3030) the caller writes MAIL, every RCPT and ``BDAT <n> LAST``
with the whole message in ONE write, then calls ``on_content_written`` and reads
the replies in order: ``on_mail``, ``on_rcpt``... and ``on_final`` for the BDAT
reply, which is the final reply (like the reply to the final dot). The message is
committed by that one write, before any RCPT reply is known, so the rules change:

* a lost link, a timeout or a garbled reply anywhere after the write is AMBIGUOUS
  for every recipient not already refused (the server may have taken MAIL, the
  RCPTs and the content and lost only its replies): never retried automatically;
* a refused MAIL, or every RCPT refused, makes the server refuse the BDAT (503,
  554) and nothing is delivered: the MAIL refusal is raised, or every recipient
  keeps its own RCPT refusal, once the BDAT reply is read (a server out of step
  that refused MAIL yet accepted an RCPT and the message leaves those recipients
  ambiguous);
* a 421 to MAIL or to an RCPT means the server closed without taking the content:
  nothing delivered (raised at MAIL; from RCPT on, every recipient not yet refused
  gets the 421), as in the DATA dialogue;
* a BDAT reply that is neither 2xx, 4xx nor 5xx is out of step; for the accepted
  recipients it counts as a reply to the final dot does (ambiguous).

A reply counts by its first digit (RFC 5321 §4.2.1): any 2xx accepts MAIL and
RCPT. A reply that is neither the expected success nor a 4xx/5xx refusal (a 3xx, a
code outside 2xx-5xx, a 2xx to DATA) means the server is out of step: it is
classified (a protocol error before the final dot, ambiguous after it) and the
connection is dropped, never reused. A 421 anywhere closes the connection. A
failure before any RCPT raises; from RCPT on, every recipient gets a status.
"""

from __future__ import annotations

from dataclasses import replace
from enum import Enum

from .._envelope import Envelope
from .._errors import AmbiguousDeliveryError, DeliveryError, ProtocolError, error_for
from .._replies import Phase, Reply, classify, classify_connection_loss
from .._result import DeliveryReport, RecipientStatus

__all__ = [
    "GarbledReplyError",
    "LinkLostError",
    "Next",
    "ReplyTimeoutError",
    "Transaction",
    "WireError",
    "failure_error",
]


class WireError(Exception):
    """Where a reply was due there is none to interpret. ``detail`` says what came instead."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class LinkLostError(WireError):
    """The connection closed (EOF, reset), or was already gone when written to."""


class ReplyTimeoutError(WireError):
    """No complete reply came within the timeout."""


class GarbledReplyError(WireError):
    """The server sent bytes that are not an SMTP reply (or a reply whose lines disagree)."""


def _chunked_explanation(failure: WireError) -> str:
    """What happened, and why it is ambiguous, after the CHUNKING group was written."""
    if isinstance(failure, GarbledReplyError):
        what = f"the server answered with something that is not SMTP ({failure.detail})"
    elif isinstance(failure, ReplyTimeoutError):
        what = "no reply came in time (data_timeout, RELIABLE_SMTP_DATA_TIMEOUT)"
    else:
        what = f"the connection was lost ({failure.detail})"
    return (
        f"{what} after MAIL, RCPT and the whole message went to the server in one write "
        "(CHUNKING, BDAT ... LAST): the server may have accepted it; not resent "
        "automatically, to avoid a duplicate (chunking=False, RELIABLE_SMTP_CHUNKING=false, "
        "holds the message back until RCPT and DATA are answered)"
    )


def failure_error(
    failure: WireError,
    phase: Phase,
    *,
    transport_name: str | None = None,
    explanation: str | None = None,
    chunked: bool = False,
) -> DeliveryError:
    """The error for ``failure`` at ``phase``; after the final dot (DATA_END) it is ambiguous.

    ``explanation`` replaces the default advice (the transport knows more about a
    failed connect than this module does). ``chunked``: the message already went
    with BDAT, so the failure is ambiguous wherever it happened; it is pinned to
    DATA_END and says so.
    """
    if chunked:
        phase = Phase.DATA_END
        explanation = explanation or _chunked_explanation(failure)
    where = f"during {phase.value}"
    if isinstance(failure, GarbledReplyError):
        if phase is Phase.DATA_END:
            # The server has the whole message and answered nonsense: it may have kept it.
            return AmbiguousDeliveryError(
                f"the server answered {'after the BDAT chunk' if chunked else 'the final dot'} "
                f"with something that is not SMTP: {failure.detail}",
                phase=phase,
                transport_name=transport_name,
                explanation=explanation
                or "the server may or may not have accepted the message; "
                "not resent automatically, to avoid a duplicate",
            )
        return ProtocolError(
            f"the server sent a reply that is not SMTP {where}: {failure.detail}",
            phase=phase,
            transport_name=transport_name,
            explanation=explanation
            or "the server or something in between (proxy, TLS port) is not "
            "speaking SMTP; check host, port and TLS mode",
        )
    timed_out = isinstance(failure, ReplyTimeoutError)
    verdict = classify_connection_loss(phase, timed_out=timed_out)
    if explanation is not None:
        verdict = replace(verdict, explanation=explanation)
    if timed_out:
        return error_for(
            verdict,
            f"no reply from the server in time {'after the BDAT chunk' if chunked else where}",
            phase=phase,
            transport_name=transport_name,
            timed_out=True,
        )
    return error_for(
        verdict,
        f"connection problem {'after the BDAT chunk was sent' if chunked else where}: "
        f"{failure.detail}",
        phase=phase,
        transport_name=transport_name,
        connection_lost=True,
    )


class Next(Enum):
    """What the caller does after handing a reply to the :class:`Transaction`."""

    GO_ON = "go on"
    SEND_BODY = "send the body"
    END_EMPTY = "end an empty message"
    DONE = "done"


def _out_of_step(reply: Reply) -> bool:
    """Neither success nor refusal where one of them was due (3xx, 600...)."""
    return reply.severity not in (2, 4, 5)


class Transaction:
    """One mail transaction's state, fed reply by reply (see the module docstring).

    ``pipelined`` changes one rule: a refused MAIL does not end the transaction,
    because the RCPT and DATA replies are already on their way and must be read
    (RFC 2920 §3.1); the refusal is raised once they are. ``chunking`` (which
    implies pipelined) is the BDAT dialogue: no DATA, the reply after the last
    RCPT's is the final one, and everything after ``on_content_written`` that is
    not a reply is ambiguous.
    """

    def __init__(
        self, envelope: Envelope, *, pipelined: bool, transport_name: str, chunking: bool = False
    ) -> None:
        self.envelope = envelope
        self.pipelined = pipelined or chunking
        self.chunking = chunking
        self.committed = False
        """The message content is on the wire: a failure now may mean the server has it."""
        self.transport_name = transport_name
        self.phase = Phase.MAIL
        """Where the transaction is: the phase a failure now would be pinned to."""
        self.accepted: list[str] = []
        """Recipients whose RCPT was accepted, in envelope order."""
        self.close = False
        """The connection is in an unknown state: drop it, never RSET or reuse it."""
        self.final_reply: Reply | None = None
        self._statuses: dict[str, RecipientStatus] = {}
        self._answered = 0  # RCPT replies taken
        self._out_of_step = False
        self._mail_refusal: DeliveryError | None = None  # pipelined: raised after DATA
        self._error: DeliveryError | None = None
        self._done = False
        self._body_due = False

    # -- the replies -----------------------------------------------------------------

    def on_mail(self, reply: Reply) -> Next:
        self._expect(Phase.MAIL)
        if self.chunking and not self.committed:
            raise RuntimeError("with chunking, replies are read after on_content_written")
        if reply.severity == 2:
            return self._rcpt_phase()
        if reply.code == 421:
            summary = "the server closed the connection" if self.pipelined else None
            return self._fail(self._refusal(reply, summary), close=True)
        self._out_of_step = _out_of_step(reply)
        if not self.pipelined:
            return self._fail(self._refusal(reply), close=self._out_of_step)
        # RCPT and DATA were written with MAIL: their replies come anyway and are read.
        self._mail_refusal = self._refusal(reply)
        return self._rcpt_phase()

    def on_rcpt(self, reply: Reply) -> Next:
        """The reply to the next recipient's RCPT, in envelope order."""
        self._expect(Phase.RCPT)
        recipients = self.envelope.recipients
        recipient = recipients[self._answered]
        self._answered += 1
        if reply.severity == 2:
            self.accepted.append(recipient)
        else:
            self._out_of_step = self._out_of_step or _out_of_step(reply)
            self._status(recipient, reply)
            if reply.code == 421:
                # The server is closing: later recipients were never answered and the
                # accepted ones never got DATA. All of them are simply pending.
                for other in [*recipients[self._answered :], *self.accepted]:
                    self._status(other, reply)
                return self._finish(close=True)
        if self._answered < len(recipients):
            return Next.GO_ON
        return self._data_phase()

    def on_data(self, reply: Reply) -> Next:
        self._expect(Phase.DATA)
        if self._mail_refusal is not None:
            # Pipelined: MAIL failed, so RCPT and DATA failed with it. If the server
            # nevertheless said 354, an empty message ends the DATA phase (RFC 2920).
            if reply.code == 354:
                return Next.END_EMPTY
            return self._fail(self._mail_refusal, close=self._out_of_step)
        if reply.code != 354:
            for recipient in self.accepted:
                self._status(recipient, reply)
            return self._finish(
                close=reply.code == 421 or self._out_of_step or reply.severity not in (4, 5)
            )
        if not self.accepted:
            # Pipelined DATA was accepted although every RCPT failed: an empty message
            # makes the server leave the DATA state; it must not deliver it.
            return Next.END_EMPTY
        self._body_due = True
        return Next.SEND_BODY

    def on_empty_end(self, reply: Reply) -> Next:
        """The reply to the lone dot after ``END_EMPTY``: nobody gets anything, whatever it says."""
        self._expect(Phase.DATA)
        if self._mail_refusal is not None:
            return self._fail(self._mail_refusal, close=self._out_of_step)
        return self._finish(close=self._out_of_step)

    def on_body_written(self) -> None:
        """The body and the final dot are on the socket: from now on a loss is ambiguous."""
        self._expect(Phase.DATA)
        if not self._body_due:
            raise RuntimeError("the body is written only after SEND_BODY")
        self.phase = Phase.DATA_END

    def on_content_written(self) -> None:
        """CHUNKING: MAIL, RCPT... and ``BDAT <n> LAST`` with the message are on the socket.

        Called once, before any reply is read; from now on no failure is safe to retry.
        """
        self._expect(Phase.MAIL)
        if not self.chunking:
            raise RuntimeError("the content goes with the envelope only with chunking")
        if self.committed:
            raise RuntimeError("the BDAT group is written once")
        self.committed = True

    def on_final(self, reply: Reply) -> Next:
        """The reply to the final dot, or (CHUNKING) to ``BDAT <n> LAST``."""
        self._expect(Phase.DATA_END)
        if self.chunking and (self._mail_refusal is not None or not self.accepted):
            # MAIL or every RCPT was refused, so the BDAT was refused with them (503,
            # 554) and nothing was delivered: the refusals already read stand. A 2xx
            # here would be a server out of step (it has nobody to deliver to).
            out_of_step = self._out_of_step or reply.severity not in (4, 5)
            close = out_of_step or reply.code == 421
            if self._mail_refusal is None:
                return self._finish(close=close)
            if self.accepted and reply.severity not in (4, 5):
                # Refused MAIL, yet an RCPT and the message accepted: a server this far
                # out of step may have delivered it to those recipients.
                return self._out_of_step_delivery(reply)
            return self._fail(self._mail_refusal, close=close)
        for recipient in self.accepted:
            self._status(recipient, reply)
        self.final_reply = reply
        return self._finish(
            close=reply.code == 421 or self._out_of_step or reply.severity not in (2, 4, 5)
        )

    # -- no reply ----------------------------------------------------------------------

    def on_failure(self, failure: WireError) -> Next:
        """The link failed where a reply was due (or while writing) at :attr:`phase`."""
        error = failure_error(
            failure, self.phase, transport_name=self.transport_name, chunked=self.committed
        )
        error.__cause__ = failure
        return self.on_error(error)

    def on_error(self, error: DeliveryError) -> Next:
        """The transaction cannot go on at :attr:`phase` because of ``error``.

        At MAIL the error is raised; from RCPT on - or once the CHUNKING group is
        written, whatever reply was due - every recipient not yet refused shares it.
        The connection is dropped either way.
        """
        self._expect(self.phase)
        if self.phase is Phase.MAIL and not self.committed:
            return self._fail(error, close=True)
        for recipient in self.envelope.recipients:
            if recipient not in self._statuses or recipient in self.accepted:
                self._statuses[recipient] = RecipientStatus.from_error(
                    recipient, error, transport_name=self.transport_name
                )
        return self._finish(close=True)

    # -- the result ----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    def result(self) -> DeliveryReport:
        """The report, with a status for every recipient; raises the error of a failed MAIL."""
        if not self._done:
            raise RuntimeError(f"the transaction is not over: it is at {self.phase.value}")
        if self._error is not None:
            raise self._error
        return DeliveryReport.in_envelope_order(
            self.envelope,
            self._statuses,
            transport_name=self.transport_name,
            final_reply=self.final_reply,
        )

    # -- helpers -----------------------------------------------------------------------

    def _expect(self, phase: Phase) -> None:
        if self._done:
            raise RuntimeError("the transaction is over; no more replies are due")
        if self.phase is not phase:
            raise RuntimeError(
                f"a reply to {phase.value} came while the transaction is at {self.phase.value}"
            )

    def _rcpt_phase(self) -> Next:
        self.phase = Phase.RCPT
        if not self.envelope.recipients:
            return self._data_phase()
        return Next.GO_ON

    def _data_phase(self) -> Next:
        if self.chunking:
            self.phase = Phase.DATA_END  # the BDAT reply is the final reply
            return Next.GO_ON
        self.phase = Phase.DATA
        if not self.pipelined and not self.accepted:
            return self._finish(close=self._out_of_step)  # no DATA without a recipient
        return Next.GO_ON

    def _refusal(self, reply: Reply, summary: str | None = None) -> DeliveryError:
        return error_for(
            classify(reply, Phase.MAIL),
            summary or "the server refused the sender",
            reply=reply,
            phase=Phase.MAIL,
            transport_name=self.transport_name,
        )

    def _status(self, recipient: str, reply: Reply) -> None:
        self._statuses[recipient] = RecipientStatus.from_verdict(
            recipient,
            classify(reply, self.phase),
            phase=self.phase,
            reply=reply,
            transport_name=self.transport_name,
        )

    def _out_of_step_delivery(self, reply: Reply) -> Next:
        assert self._mail_refusal is not None
        mail = self._mail_refusal.reply
        error = AmbiguousDeliveryError(
            f"the server refused the sender ({mail.code if mail else '?'}) but accepted "
            f"recipients and then answered the BDAT chunk with {reply.code}",
            reply=reply,
            phase=Phase.DATA_END,
            transport_name=self.transport_name,
            explanation="the server is out of step and may have delivered the message to "
            "the recipients it accepted; not resent automatically, to avoid a duplicate",
        )
        return self.on_error(error)

    def _fail(self, error: DeliveryError, *, close: bool) -> Next:
        self._error = error
        return self._finish(close=close)

    def _finish(self, *, close: bool) -> Next:
        self._done = True
        self.close = self.close or close
        return Next.DONE
