"""Pipelining across transactions: a final reply owed on a connection lent to the next send.

RFC 2920 §3.1 lets the message content start a group, so the final dot of message N
may travel with MAIL, RCPT and DATA of message N+1. This module owns
:class:`OwedFinalReply`, the debt N leaves on the connection when it hands it over
(:meth:`~.pool.ConnectionPool.hand_over`) once its body is written, instead of holding
the connection for the round trip its final reply takes:

* N+1 writes N's final dot and its own MAIL, RCPT and DATA in one write (one segment,
  which the server answers at once), then reads N's reply (with N's ``data_timeout``)
  and feeds it to N's own :class:`~._transaction.Transaction`
  (:meth:`OwedFinalReply.settle`) - so the reply is matched to N's dot, and interpreted
  by the same rules as if N had read it - and only then reads its own replies. The
  replies come in the order the commands went, so nothing of N+1 is read before N's
  reply; N's result is fixed before N+1's first reply is looked at. The hand-over
  happens only when a send is already waiting for the connection: the dot then waits
  for nothing but that send's next step on the event loop.
* A link lost (a timeout, a garbled reply) where N's reply was due is N's AMBIGUOUS
  (the dot was written); N+1 has no body on the wire then - it writes it only after its
  own 354, read after N's reply - so it was never sent and starts over on a fresh
  connection, as for any connection found dead at MAIL.
* N waits in :meth:`OwedFinalReply.wait`. Cancelled there, it leaves: once its dot is
  written the successor still reads the reply into N's transaction, so the stream
  stays in step; before that, the successor drops the connection without the dot
  (N's message is not sent, as when a send is cancelled before its dot today).
* A successor that cannot pay the debt - cancelled while reading it, or gone before it
  took the connection over - gives it back (:meth:`OwedFinalReply.give_back`): N reads
  its own reply (writing its dot first if it has not gone), as it would have without the
  hand-over, and owns the connection again
  (dropping it afterwards when the successor had already written commands on it). If
  N is gone too, the successor drops the connection: nobody will read the reply.

The bytes the server sends stay in one :class:`~._wire.Exchange` from N's write to the
end of the chain: the successor reads on N's exchange instead of opening its own, so a
reply that arrived before the hand-over is not lost.
"""

from __future__ import annotations

import asyncio

from ._transaction import Transaction, WireError
from ._translate import translate_error
from ._wire import Exchange

__all__ = ["OwedFinalReply"]


class OwedFinalReply:
    """Transaction N's final dot and reply, owed to it on a connection now held by N+1."""

    def __init__(
        self, transaction: Transaction, wire: Exchange, *, timeout: float, content: bytes = b""
    ) -> None:
        self.transaction = transaction
        """N's transaction: its body is due (all but ``content`` written), then its dot."""
        self.content = content
        """The end of N's (dot-stuffed) body not yet written: it goes with the dot."""
        self.wire = wire
        """The connection's exchange, still reading for the chain of transactions."""
        self.timeout = timeout
        """N's ``data_timeout``: the reply is waited for as long as N would have."""
        self.dot_written = False
        """N's final dot is on the wire (written by the successor, with its own group)."""
        self.dirty = False
        """Given back after the successor wrote commands: drop the connection after the reply."""
        # True: settled by the successor; False: given back, N goes on itself. Cancelled:
        # N is gone.
        self._ending: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    # -- the successor's side ------------------------------------------------------------

    async def settle(self, group: bytes = b"") -> bool:
        """Write the rest of N's body, its final dot and then ``group`` in one write, read
        N's reply, give it to N's transaction; whether the connection goes on (``group``
        was written then).

        One write, so the dot and the next commands reach the server in one segment and
        it answers them together: a dot alone gets its reply alone, and the server's
        next reply then waits for our delayed ACK (Nagle's algorithm on its side).

        False - nothing of ``group`` is to be trusted on the wire; drop the connection -
        when N is gone before its dot was written (cancelled: its message must not
        go now), when the link was lost (N is then not sent, or ambiguous once its dot
        went), or after a reply that makes N's transaction drop the connection (421,
        out of step). Cancelled while reading, the caller gives the debt back.
        """
        transaction = self.transaction
        if self._ending.cancelled():
            return False  # N was cancelled before its dot: the body without it is void
        try:
            self.wire.write_end(self.content, group)
            self.dot_written = True
            transaction.on_body_written()
            transaction.on_final(await self.wire.read(timeout=self.timeout))
        except WireError as failure:
            transaction.on_failure(failure)
        except Exception as exc:
            # Nothing else is expected from the wire; classified like a lost link.
            transaction.on_error(
                translate_error(exc, transaction.phase, transport_name=transaction.transport_name)
            )
        if not self._ending.done():
            self._ending.set_result(True)
        return not transaction.close

    def give_back(self, *, dirty: bool = False) -> bool:
        """The successor will not settle: True if N takes the connection back.

        ``dirty``: the successor already wrote commands. False when N is gone
        (cancelled): the successor keeps the connection and must drop it.
        """
        if self._ending.done():
            return False
        self.dirty = dirty
        self._ending.set_result(False)
        return True

    # -- N's side ------------------------------------------------------------------------

    @property
    def given_back(self) -> bool:
        """The connection is N's again (its successor gave the debt back)."""
        ending = self._ending
        return ending.done() and not ending.cancelled() and ending.result() is False

    async def wait(self) -> bool:
        """N: until the debt is settled (True) or given back (False: N writes its dot, if
        :attr:`dot_written` is still false, and reads its reply itself).

        Cancelled, N leaves: its successor reads the reply if the dot went, or drops the
        connection if not - unless the debt came back at that moment
        (:attr:`given_back`): then N holds the connection again.
        """
        return await self._ending
