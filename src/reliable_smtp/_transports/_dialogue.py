"""The I/O of one mail transaction on a leased connection.

:func:`data_dialogue` writes MAIL, RCPT..., DATA and the body - one command at a time,
or pipelined (RFC 2920) in one write, and then perhaps handing the connection to a
send that waits for it, which writes this message's final dot with its own commands
(:mod:`._handoff`); :func:`chunked_dialogue` writes MAIL, RCPT... and ``BDAT <n>
LAST`` with the message (RFC 3030). What each reply means is
:class:`~._transaction.Transaction`'s to decide; the bytes go through
:class:`~._wire.Exchange`. :class:`~.smtp.SMTPTransport` leases the connection, opens
the exchange, picks the dialogue and resets or drops the connection afterwards.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import aiosmtplib

from .._envelope import Envelope
from .._errors import DeliveryError
from .._replies import Phase
from .._result import DeliveryReport
from ._commit import FinalDotForbiddenError, before_final_dot, final_dot_guarded
from ._handoff import OwedFinalReply
from ._transaction import LinkLostError, Next, Transaction, WireError
from ._translate import translate_error
from ._wire import BODY_PIECE, FINAL_DOT, Exchange, bdat_group, dot_stuffed
from .pool import ConnectionPool, Lease

__all__ = [
    "DialogueSettings",
    "Hold",
    "StaleConnectionError",
    "chunked_dialogue",
    "data_dialogue",
    "end_exchange",
    "settle",
]


class DialogueSettings(Protocol):
    """What a dialogue reads of its transport (:class:`~.smtp.SMTPTransport`)."""

    @property
    def name(self) -> str: ...
    @property
    def command_timeout(self) -> float: ...
    @property
    def data_timeout(self) -> float: ...


@dataclass(slots=True)
class Hold:
    """One send's hold on its leased connection, which may pass to the next send after
    the final dot (and come back)."""

    lease: Lease[aiosmtplib.SMTP]
    pool: ConnectionPool[aiosmtplib.SMTP]
    mine: bool = True
    """This send holds the connection: it releases it (and may close or reset it)."""
    counted: bool = False
    """The message was counted on the connection (``messages``) before a hand-over."""
    may_hand_over: bool = False
    """This transaction may lend the connection on after its final dot."""
    company: bool = False
    """Other sends were in progress on the transport when this transaction began."""

    def take_owed(self) -> OwedFinalReply | None:
        """The final reply the connection owes the previous send, now this send's to read."""
        owed, self.lease.owed = self.lease.owed, None
        assert owed is None or isinstance(owed, OwedFinalReply)  # only this module hands over
        return owed


class StaleConnectionError(Exception):
    """The connection turned out to be closed at MAIL, before anything was sent."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def settle(hold: Hold, owed: OwedFinalReply, group: bytes = b"") -> None:
    """Write the previous send's final dot with ``group``, then read the reply it is
    ``owed`` (:meth:`OwedFinalReply.settle`).

    Raises :class:`StaleConnectionError` - nothing of this message went, so it
    starts over on a fresh connection - when the connection cannot go on (lost, out
    of step, a 421, the previous send gone before its dot). Interrupted (cancelled)
    while reading, it gives the reply back to the previous send if that one still
    waits (which then drops the connection if ``group`` went with the dot).
    """
    try:
        usable = await owed.settle(group)
    except BaseException:
        if owed.give_back(dirty=bool(group)):
            hold.mine = False
        raise
    if not usable:
        end_exchange(hold.lease.connection, owed.wire, drop=True)
        raise StaleConnectionError(
            LinkLostError("the connection ended with the previous message's final reply")
        )


def end_exchange(smtp: aiosmtplib.SMTP, wire: Exchange, *, drop: bool = False) -> None:
    """Give the incoming bytes back to aiosmtplib; drop the connection if out of step."""
    drop = drop or wire.leftover
    wire.detach()
    if drop:
        smtp.close()


async def data_dialogue(
    transport: DialogueSettings,
    hold: Hold,
    wire: Exchange,
    envelope: Envelope,
    content: bytes,
    mail: bytes,
    rcpts: list[bytes],
    pipelined: bool,
    owed: OwedFinalReply | None = None,
) -> DeliveryReport:
    """MAIL, RCPT..., DATA, body: pipelined (RFC 2920) in one write, or one at a time.

    The I/O of the transaction; what each reply (or failure) means is decided by
    :class:`~._transaction.Transaction`, which checks every reply individually
    either way (RFC 2920 §3.1) and says what to write next. ``owed``: the previous
    message's final reply, still due on this connection; it is read after our
    group is written and before our first reply (:mod:`._handoff`).
    """
    transaction = Transaction(envelope, pipelined=pipelined, transport_name=transport.name)
    timeout = transport.command_timeout
    try:
        try:
            group = mail + b"".join(rcpts) + b"DATA\r\n" if pipelined else mail
            if owed is None:
                wire.write(group)
            else:
                # The previous message's dot, then our group, in one write; its
                # reply comes first.
                await settle(hold, owed, group)
            step = transaction.on_mail(await wire.read(timeout=timeout))
        except LinkLostError as lost:
            # Closed before MAIL was answered: a stale connection, nothing was sent.
            raise StaleConnectionError(lost) from lost
        for rcpt in rcpts:
            if step is not Next.GO_ON:
                break
            if not pipelined:
                wire.write(rcpt)
            step = transaction.on_rcpt(await wire.read(timeout=timeout))
        if step is Next.GO_ON:
            if not pipelined:
                wire.write(b"DATA\r\n")
            step = transaction.on_data(await wire.read(timeout=timeout))
        if step is Next.END_EMPTY:
            wire.write(b".\r\n")
            step = transaction.on_empty_end(await wire.read(timeout=timeout))
        elif step is Next.SEND_BODY:
            # The one place the message is handed over, to transaction.accepted.
            body, final_dot = dot_stuffed(content)
            if not final_dot_guarded():
                if not await _hand_over(transport, hold, wire, transaction, body):
                    await wire.write_body(body, final_dot, timeout=transport.data_timeout)
                    transaction.on_body_written()
                    transaction.on_final(await wire.read(timeout=transport.data_timeout))
            else:
                # An outbox send: the body goes first, then the guard records the dot
                # mark, then the dot goes alone. So the mark is the last thing before
                # the commit, and a recipient left marked by a crash (AMBIGUOUS) always
                # had the whole body on the wire. A veto drops the link before the dot:
                # the server discards the message (phase DATA, never ambiguous).
                await wire.write_body(body, timeout=transport.data_timeout)
                try:
                    await before_final_dot(tuple(transaction.accepted))
                except FinalDotForbiddenError as forbidden:
                    transaction.on_error(
                        forbidden.error(
                            transport_name=transport.name, what="the final dot was never written"
                        )
                    )
                else:
                    wire.write(FINAL_DOT)
                    transaction.on_body_written()
                    transaction.on_final(await wire.read(timeout=transport.data_timeout))
    except WireError as failure:
        transaction.on_failure(failure)
    except (DeliveryError, StaleConnectionError):
        raise
    except Exception as exc:
        # Nothing else is expected from the wire; classified like a lost link.
        transaction.on_error(translate_error(exc, transaction.phase, transport_name=transport.name))
    if transaction.close and hold.mine:
        wire.close_connection()
    return transaction.result()


#: Loop turns a send in company waits at its body for a send to take the connection.
_TURNS_FOR_A_TAKER = 2


async def _hand_over(
    transport: DialogueSettings, hold: Hold, wire: Exchange, transaction: Transaction, body: bytes
) -> bool:
    """At our body: if a send waits for this connection, write the body and lend the
    connection on; that send writes our final dot with its own commands and reads
    our final reply into ``transaction`` (:mod:`._handoff`).

    False when nobody waits (or this send may not hand over): the caller writes
    body and dot and reads the reply as always. True once the reply is in
    ``transaction`` - read by the next send, or by us (after writing the dot, if it
    has not gone) when nobody took the connection or it came back to us (then
    dropped afterwards if the other send's commands are on it too).
    """
    if not hold.may_hand_over:
        return False
    if not hold.pool.waiting:
        if not hold.company:
            return False  # a send on its own: nobody will come for the connection
        # In company (a bulk send), give the loop two turns before ending the chain: the
        # previous message's send, its reply read by us, ends in the first and frees its
        # place in the caller's window; the next message's send takes it and reaches the
        # pool in the second. This dot then goes with its commands: a system call less
        # per message (8 connections, stream(concurrency=16): 1.68 -> 1.02 sendto per
        # message). Nothing of this message is written yet: cancelled here, it simply
        # was not sent.
        for _ in range(_TURNS_FOR_A_TAKER):
            await asyncio.sleep(0)
            if hold.pool.waiting:
                break
        else:
            return False
    if len(body) > BODY_PIECE:
        # A large body goes now, with flow control; only the dot waits for the next
        # send. A small one goes with the dot, in the next send's one write.
        await wire.write_body(body, timeout=transport.data_timeout)
        body = b""
    lease = hold.lease
    owed = OwedFinalReply(transaction, wire, timeout=transport.data_timeout, content=body)
    lease.messages += 1  # this message counts on the connection before it moves on
    if hold.pool.hand_over(lease, owed):
        hold.mine = False
        hold.counted = True
        try:
            settled = await owed.wait()
        except asyncio.CancelledError:
            # Cancelled: the next send reads our reply if our dot went (the stream
            # stays in step), or drops the connection without it - unless the
            # connection came back to us just now: then we drop it.
            if owed.given_back:
                hold.mine = True
            raise
        if settled:
            return True
        hold.mine = True
    else:
        lease.messages -= 1  # the waiter left meanwhile: an ordinary end
    if not owed.dot_written:
        await wire.write_body(owed.content, FINAL_DOT, timeout=transport.data_timeout)
        transaction.on_body_written()
    transaction.on_final(await wire.read(timeout=transport.data_timeout))
    if owed.dirty:
        transaction.close = True  # the other send's commands follow our reply
    return True


async def chunked_dialogue(
    transport: DialogueSettings,
    wire: Exchange,
    envelope: Envelope,
    content: bytes,
    mail: bytes,
    rcpts: list[bytes],
) -> DeliveryReport:
    """MAIL, RCPT..., ``BDAT <n> LAST`` and the message in one write (of a large message
    its first :data:`~._wire.BODY_PIECE`, the rest as the socket takes it); then the replies.

    One round trip per message even on a cold connection (RFC 3030 with RFC
    2920). The write is the commit point: before it nothing was sent (a dead
    connection is stale and the message goes on a fresh one); after it every
    failure is ambiguous for the recipients not refused (see
    :mod:`._transaction`). Every reply after the write waits up to
    ``data_timeout``: giving up on any of them is as costly as on the final one.
    """
    transaction = Transaction(
        envelope, pipelined=True, chunking=True, transport_name=transport.name
    )
    commands, chunk = bdat_group(mail + b"".join(rcpts), content)
    # The commit point: the envelope and the whole message in one write. Outbox sends
    # (a final-dot guard installed) never come here - they keep DATA, whose dot mark
    # falls after the body and before the dot (see _transaction()).
    try:
        rest = wire.write_group(commands, chunk)
    except LinkLostError as lost:
        raise StaleConnectionError(lost) from lost
    transaction.on_content_written()
    timeout = transport.data_timeout
    try:
        # A large message's rest, with flow control: failing now is failing after
        # the commit point, as waiting for the replies is.
        await wire.write_rest(rest, timeout=timeout)
        step = transaction.on_mail(await wire.read(timeout=timeout))
        for _ in rcpts:
            if step is not Next.GO_ON:
                break
            step = transaction.on_rcpt(await wire.read(timeout=timeout))
        if step is Next.GO_ON:
            step = transaction.on_final(await wire.read(timeout=timeout))
    except WireError as failure:
        transaction.on_failure(failure)
    except DeliveryError:
        raise
    except Exception as exc:
        # Nothing else is expected from the wire; classified like a lost link.
        transaction.on_error(translate_error(exc, Phase.DATA_END, transport_name=transport.name))
    if transaction.close:
        wire.close_connection()
    return transaction.result()
