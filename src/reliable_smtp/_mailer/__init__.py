"""The facade applications use: :class:`AsyncMailer` and its synchronous twin :class:`Mailer`.

A send goes: render the message once -> derive the envelope (Bcc included,
deduplicated) -> try the transport -> keep every recipient's status -> retry
only the recipients still pending, as the :class:`~reliable_smtp.RetryPolicy`
allows -> return a :class:`~reliable_smtp.SendResult`, or raise the last
classified :class:`~reliable_smtp.DeliveryError` carrying that result.

Time (``clock``, ``sleep``) and randomness (``rng``) are injected so tests never
wait for real backoff.

:class:`Mailer` runs the same async core on one private event-loop thread (an
anyio blocking portal): started on first use, shared by every calling thread,
re-created in a child process after ``fork``, stopped by ``close()``. It never
calls ``asyncio.run()`` per send, so connections stay warm between sends.

One module per concept:

* ``async_mailer`` - :class:`~reliable_smtp.AsyncMailer`: one send (render, envelope,
  recipient policy, one transaction per chunk of recipients), the retry loop over the
  recipients still pending, each attempt's record and log line;
* ``failure`` - which error a failed send raises (``FAILURE_PRECEDENCE``), its
  headline, and the ambiguous error a foreign exception becomes;
* ``bulk`` - many messages at once: in input order (``stream``) or as each ends
  (``as_completed``, :class:`~reliable_smtp.Completed`), with a bounded window;
* ``sync`` - :class:`~reliable_smtp.Mailer`, the async core on a private loop thread;
* ``values`` - the names they share (the message types, ``SendResultOrError``, ``DEFAULT``).

The public names are exported by :mod:`reliable_smtp`.
"""

from __future__ import annotations

from .async_mailer import AsyncMailer
from .bulk import Completed
from .sync import Mailer
from .values import SendOutcome, SendResultOrError

__all__ = ["AsyncMailer", "Completed", "Mailer", "SendOutcome", "SendResultOrError"]
