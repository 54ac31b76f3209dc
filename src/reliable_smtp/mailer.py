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

The code is in the private package ``reliable_smtp._mailer``, one module per
concept: the async mailer with its send path and retry loop (``async_mailer``),
which error a failed send raises (``failure``), sending many messages (``bulk``),
the blocking facade (``sync``) and the names they share (``values``). This module
is their public face; it keeps every name it has always had, for the library's
other modules and the tests.
"""

from __future__ import annotations

# Implementation names are re-exported (``name as name``) for the library's other modules
# and the tests, which import them from here.
from ._mailer.async_mailer import AsyncMailer as AsyncMailer
from ._mailer.async_mailer import _attempt_record as _attempt_record
from ._mailer.async_mailer import _chunks as _chunks
from ._mailer.async_mailer import _configured as _configured
from ._mailer.async_mailer import _HookFunction as _HookFunction
from ._mailer.async_mailer import _log_event as _log_event
from ._mailer.async_mailer import _PendingRecipients as _PendingRecipients
from ._mailer.async_mailer import logger as logger
from ._mailer.bulk import Completed as Completed
from ._mailer.bulk import T as T
from ._mailer.bulk import _aiter as _aiter
from ._mailer.bulk import _cancel_and_wait as _cancel_and_wait
from ._mailer.bulk import _check_concurrency as _check_concurrency
from ._mailer.failure import FAILURE_PRECEDENCE as FAILURE_PRECEDENCE
from ._mailer.failure import _failure_summary as _failure_summary
from ._mailer.failure import _final_error as _final_error
from ._mailer.failure import _unexpected as _unexpected
from ._mailer.sync import Mailer as Mailer
from ._mailer.sync import _PortalThread as _PortalThread
from ._mailer.values import DEFAULT as DEFAULT
from ._mailer.values import AnyMessage as AnyMessage
from ._mailer.values import SendOutcome as SendOutcome
from ._mailer.values import SendResultOrError as SendResultOrError
from ._mailer.values import _Default as _Default

__all__ = ["AsyncMailer", "Completed", "Mailer", "SendOutcome", "SendResultOrError"]
