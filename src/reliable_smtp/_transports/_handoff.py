"""Pipelining across transactions: a final reply owed on a connection lent to the next send.

RFC 2920 §3.1 lets the message content start a group, so the final dot of message N
may travel with MAIL, RCPT and DATA of message N+1. This module owns
:class:`OwedFinalReply`, the debt N leaves on the connection when it hands it over
(:meth:`~.pool.ConnectionPool.hand_over`) after writing its dot, instead of holding the
connection for the round trip its final reply takes:

* N+1 writes its MAIL, RCPT and DATA first, then reads N's reply (with N's
  ``data_timeout``) and feeds it to N's own :class:`~._transaction.Transaction`
  (:meth:`OwedFinalReply.settle`) - so the reply is matched to N's dot, and interpreted
  by the same rules as if N had read it - and only then reads its own replies. The
  replies come in the order the commands went, so nothing of N+1 is read before N's
  reply; N's result is fixed before N+1's first reply is looked at.
* A link lost (a timeout, a garbled reply) where N's reply was due is N's AMBIGUOUS
  (the dot was written); N+1 has no body on the wire then - it writes it only after its
  own 354, read after N's reply - so it was never sent and starts over on a fresh
  connection, as for any connection found dead at MAIL.
* N waits in :meth:`OwedFinalReply.wait`. Cancelled there, it leaves: the successor
  still reads the reply into N's transaction, so the stream stays in step.
* A successor that cannot pay the debt - cancelled while reading it, or gone before it
  took the connection over - gives it back (:meth:`OwedFinalReply.give_back`): N reads
  its own reply, as it would have without the hand-over, and owns the connection again
  (dropping it afterwards when the successor had already written commands on it). If
  N is gone too, the successor drops the connection: nobody will read the reply.

The bytes the server sends stay in one :class:`~._wire.Exchange` from N's write to the
end of the chain: the successor reads on N's exchange instead of opening its own, so a
reply that arrived before the hand-over is not lost.
"""

from __future__ import annotations

import asyncio

from .._replies import Phase
from ._transaction import Transaction, WireError
from ._translate import translate_error
from ._wire import Exchange

__all__ = ["OwedFinalReply"]


class OwedFinalReply:
    """Transaction N's final reply, owed to it on a connection now held by the next send."""

    def __init__(self, transaction: Transaction, wire: Exchange, *, timeout: float) -> None:
        self.transaction = transaction
        """N's transaction: its dot is written, its final reply not yet read."""
        self.wire = wire
        """The connection's exchange, still reading for the chain of transactions."""
        self.timeout = timeout
        """N's ``data_timeout``: the reply is waited for as long as N would have."""
        self.dirty = False
        """Given back after the successor wrote commands: drop the connection after the reply."""
        # True: settled by the successor; False: given back, N reads the reply itself.
        self._ending: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    # -- the successor's side ------------------------------------------------------------

    async def settle(self) -> bool:
        """Read N's reply and give it to N's transaction; whether the connection goes on.

        False when the reply did not come (N is then ambiguous) or was one after which
        N's transaction drops the connection (421, out of step): the successor must not
        use it then. Cancelled while reading, the caller gives the debt back.
        """
        transaction = self.transaction
        try:
            transaction.on_final(await self.wire.read(timeout=self.timeout))
        except WireError as failure:
            transaction.on_failure(failure)
        except Exception as exc:
            # Nothing else is expected from the wire; classified like a lost link.
            transaction.on_error(translate_error(exc, Phase.DATA_END, server=transaction.server))
        if not self._ending.done():
            self._ending.set_result(True)
        return not transaction.close

    def give_back(self, *, dirty: bool = False) -> bool:
        """The successor will not read the reply: True if N takes the connection back.

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
        """N: until the debt is settled (True) or given back (False: read the reply now).

        Cancelled, N leaves the reply to its successor - unless it was given back at
        that moment (:attr:`given_back`): then N holds the connection again, unread.
        """
        return await self._ending
