"""The sending half of the durable outbox: :class:`OutboxWorker`.

The worker owns the order of writes that makes a crash safe (docs/design.md,
"Durable outbox"):

1. ``claim`` - due entries become ``sending`` under a lease (a random token and
   an expiry), after expired leases were recovered;
2. ``mark_final_dot`` - right before the final dot of each SMTP transaction the
   recipients accepted in it are marked ``in_flight``, durably, fenced by the
   token (the transport calls the hook in :mod:`reliable_smtp._transports._commit`);
   a transport that cannot call the hook gets every recipient marked before
   ``deliver`` (a crash then gives a false "ambiguous", never a duplicate);
3. the dot and the reply;
4. ``settle`` - the per-recipient statuses of the send are applied (fenced by
   the token) and the lease is released.

A worker killed between 2 and 4 leaves marked recipients without a reply: when
the lease expires, recovery parks them as AMBIGUOUS; unmarked ones go back to
the queue. While it sends, a heartbeat renews the leases it holds.

One attempt per claim: the outbox schedule is the retry engine (minutes to
days); in-process only a "452 too many recipients" split is resent at once
(``attempt``: the send of one claim and its final-dot guard).

A database that goes away makes the worker back off and reconnect (it never
marks mail failed because the queue was unreachable). SIGTERM/SIGINT stop
claiming, let in-flight transactions finish and settle, and return.

Wake-up: ``Store.wait_for_work`` (PostgreSQL ``LISTEN`` on the store's channel;
SQLite: an in-process notification when the enqueue happens in this process,
else a cheap poll of ``PRAGMA data_version`` every 50 ms). A lost notification
only delays: the worker claims at least every ``poll_interval`` seconds anyway
(``wakeup``).

This module owns the run loop: claiming, the order of writes per claim, leases
and their heartbeat, settling, stopping. Marks and settles are written through
``group_commit``; the shared limits are taken part in through ``worker_limits``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from .._checks import check_count, check_seconds
from .._mailer import AsyncMailer, Mailer
from .._replies import Outcome
from .._result import RecipientStatus
from .attempt import ClaimSender
from .errors import LeaseLostError
from .facade import AsyncOutbox, Outbox
from .group_commit import GroupCommit
from .limits import OutboxLimits
from .model import Claim
from .store import Store
from .wakeup import watch_for_work
from .worker_limits import SharedLimits

__all__ = ["OutboxWorker", "WorkerStats"]

logger = logging.getLogger("reliable_smtp")

T = TypeVar("T")


@dataclass(slots=True, kw_only=True)
class WorkerStats:
    """What one run of the worker did (returned by :meth:`OutboxWorker.run_until_idle`)."""

    claimed: int = 0
    settled: int = 0
    lost: int = 0
    """Claims whose lease was lost before they were settled (another worker recovered them)."""
    recipients: dict[str, int] = field(default_factory=dict)
    """Recipient statuses applied, by outcome (``sent``, ``transient``...)."""
    database_errors: int = 0


class OutboxWorker:
    """Send what an outbox holds, on its schedule, crash-safely. See the module docstring.

    ::

        outbox = Outbox("sqlite:///var/lib/app/outbox.db")
        with Mailer.from_env() as mailer:
            OutboxWorker(outbox, mailer).run()          # until SIGTERM / SIGINT

    ``concurrency``: transactions in flight (default: the transport's
    ``max_connections``, else 4). ``batch``: entries claimed per query (default
    ``concurrency``). ``lease_seconds``: how long a claim stays valid without a
    heartbeat (renewed every third of it); a killed worker's entries return after
    it. ``poll_interval``: the longest an idle worker waits before looking again
    (wake-ups usually come sooner). ``stop_timeout``: how long a stop waits for
    in-flight transactions. ``limits``: the provider's caps shared by every
    worker of the outbox (:class:`~reliable_smtp.OutboxLimits`; the CLI reads
    ``RELIABLE_SMTP_OUTBOX_RATE_*`` and ``RELIABLE_SMTP_OUTBOX_MAX_CONNECTIONS``):
    each transaction reserves its place in the shared rate first, and the worker
    sends on at most as many connections as the shared slots it holds. ``clock``
    (epoch seconds) and ``sleep`` are injected for tests.
    """

    def __init__(
        self,
        outbox: Outbox | AsyncOutbox | Store,
        mailer: Mailer | AsyncMailer,
        *,
        concurrency: int | None = None,
        batch: int | None = None,
        lease_seconds: float = 60.0,
        poll_interval: float = 1.0,
        stop_timeout: float = 30.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        owner: str | None = None,
        limits: OutboxLimits | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._outbox = outbox
        self._store: Any = _store_of(outbox)
        if isinstance(mailer, Mailer):
            self._sync_mailer: Mailer | None = mailer
            self._mailer = mailer._async
        elif isinstance(mailer, AsyncMailer):
            self._sync_mailer = None
            self._mailer = mailer
        else:
            raise TypeError(f"mailer must be a Mailer or AsyncMailer, got {type(mailer).__name__}")
        transport = self._mailer.transport
        if concurrency is None:
            concurrency = int(getattr(transport, "max_connections", 4))
        self.concurrency = _whole("concurrency", concurrency)
        self.batch = _whole("batch", batch if batch is not None else self.concurrency)
        self.lease_seconds = check_seconds("lease_seconds", lease_seconds)
        self.poll_interval = check_seconds("poll_interval", poll_interval)
        self.stop_timeout = check_seconds("stop_timeout", stop_timeout)
        self.reconnect_min = check_seconds("reconnect_min", reconnect_min)
        self.reconnect_max = check_seconds("reconnect_max", reconnect_max)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._clock = clock or time.time
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self._db: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._held: dict[int, Claim] = {}
        # Group commit: marks (and settles) that arrive while one batch is being written
        # share the next commit - one fsync for many transactions, none waits longer.
        self._marks_batch: GroupCommit[tuple[Claim, tuple[str, ...]]] = GroupCommit(
            lambda items: self._db_call(self._store.mark_final_dot_many, items, now=self._clock())
        )
        self._settles_batch: GroupCommit[tuple[Claim, Mapping[str, RecipientStatus]]] = GroupCommit(
            lambda items: self._db_call(self._store.settle_many, items, now=self._clock())
        )
        self.limits = limits or OutboxLimits()
        self._shared = SharedLimits(
            self.limits,
            store=self._store,
            owner=self.owner,
            concurrency=self.concurrency,
            lease_seconds=self.lease_seconds,
            poll_interval=self.poll_interval,
            call=self._db_call,
            clock=self._clock,
            wait=self._sleep_unless_stopped,
            limit_connections=self._mailer.transport.limit_connections,
        )
        self._rates = self._shared.rates
        # A claim's transactions after its first (a 452 split resent, more recipients
        # than one transaction takes) each reserve their own place in the shared rate.
        self._sender = ClaimSender(
            self._mailer, self._marks_batch.submit, reserve_next=self._shared.reserve
        )
        self.stats = WorkerStats()

    # -- running ------------------------------------------------------------------------

    def run(self) -> WorkerStats:
        """Send until SIGTERM or SIGINT (or :meth:`stop`); blocking. Returns what it did.

        With a sync :class:`~reliable_smtp.Mailer` the worker runs on the mailer's own
        event loop, so its connections are the mailer's.
        """
        return self.serve(self.arun)

    def serve(
        self,
        main: Callable[[], Coroutine[Any, Any, T]],
        *,
        notice: Callable[[str], None] | None = None,
    ) -> T:
        """Run ``main()`` with SIGTERM/SIGINT stopping this worker: the first gracefully,
        the second at once (``reliable-smtp worker`` and the Django command run their
        ``arun()`` under it; ``notice`` tells the operator). On the sync mailer's own
        loop when the worker has one, else on a new event loop."""
        restore = self._install_signal_handlers(notice)
        try:
            if self._sync_mailer is not None:
                return self._sync_mailer._run(main)
            return asyncio.run(main())
        finally:
            restore()

    async def arun(self) -> WorkerStats:
        """Send until :meth:`stop` is called (or the task is cancelled)."""
        return await self._main(until_idle=False)

    async def run_until_idle(self) -> WorkerStats:
        """Send everything due now (and what becomes due meanwhile), then return."""
        return await self._main(until_idle=True)

    def stop(self) -> None:
        """Stop claiming; in-flight transactions finish and settle. Thread- and signal-safe."""
        self._stop_requested = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stopping.set)

    def notify(self) -> None:
        """Look for work now (an enqueue happened). Thread-safe; a lost call only delays."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # -- the loop -----------------------------------------------------------------------

    async def _main(self, *, until_idle: bool) -> WorkerStats:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reliable-smtp-outbox")
        self.stats = WorkerStats()
        in_flight: set[asyncio.Task[None]] = set()
        slot_freed = asyncio.Event()
        helpers = [asyncio.create_task(self._heartbeat(), name="outbox-heartbeat")]
        if not until_idle:  # run_until_idle returns when nothing is due: no need to wake it
            watch = watch_for_work(
                self._store,
                self.notify,
                reconnect_min=self.reconnect_min,
                reconnect_max=self.reconnect_max,
            )
            helpers.append(asyncio.create_task(watch, name="outbox-wakeup"))
        failures = 0
        # Claim in batches: wait until a good share of the slots is free (one claim
        # transaction for several entries), unless nothing at all is in flight.
        refill = max(1, min(self.batch, self.concurrency // 2))

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            slot_freed.set()

        try:
            while not self._stopping.is_set():
                await self._shared.acquire_slots()
                capacity = min(self.concurrency, self._shared.slots)
                free = capacity - len(in_flight)
                claims: list[Claim] = []
                asked = 0
                if free >= refill or (free > 0 and not in_flight):
                    asked = min(free, self.batch)
                    self._wake.clear()
                    try:
                        claims = await self._db_call(
                            self._store.claim,
                            self.owner,
                            limit=asked,
                            lease_seconds=self.lease_seconds,
                            now=self._clock(),
                        )
                    except Exception as exc:  # the queue is unreachable: back off, never crash
                        failures += 1
                        self.stats.database_errors += 1
                        await self._back_off(failures, exc)
                        continue
                    failures = 0
                    for claim in claims:
                        self._held[claim.entry_id] = claim
                        self.stats.claimed += 1
                        task = asyncio.create_task(self._process(claim))
                        in_flight.add(task)
                        task.add_done_callback(finished)
                    if len(claims) == asked and capacity - len(in_flight) >= refill:
                        continue  # a full batch and room for another: more may be due
                if until_idle and asked and not claims and not in_flight:
                    break
                slot_freed.clear()
                waits: list[asyncio.Future[Any]] = [
                    asyncio.ensure_future(self._stopping.wait()),
                    asyncio.ensure_future(slot_freed.wait()),
                ]
                if asked and len(claims) < asked:
                    # Nothing more is due: an enqueue (or the poll) is the next reason to look.
                    waits.append(asyncio.ensure_future(self._wake.wait()))
                    waits.append(asyncio.ensure_future(self._sleep(self.poll_interval)))
                elif capacity == 0:
                    # Every shared connection slot is held elsewhere: look again after a poll.
                    waits.append(asyncio.ensure_future(self._sleep(self.poll_interval)))
                await _first_of(waits)
            await self._finish(in_flight)
            await self._shared.release_slots()
        finally:
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await helper
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            db, self._db = self._db, None
            db.shutdown(wait=True)
            self._loop = None
        return self.stats

    async def _finish(self, in_flight: set[asyncio.Task[None]]) -> None:
        """Let in-flight transactions end and settle, for at most ``stop_timeout``."""
        if not in_flight:
            return
        logger.info(
            "outbox worker stopping: waiting for %d transaction(s) in flight",
            len(in_flight),
            extra={"event": "outbox_stopping", "in_flight": len(in_flight)},
        )
        _done, pending = await asyncio.wait(set(in_flight), timeout=self.stop_timeout)
        for task in pending:
            # Past the grace period: their leases expire and recovery decides (a marked
            # recipient becomes ambiguous, never sent twice).
            task.cancel()

    async def _back_off(self, failures: int, exc: BaseException) -> None:
        assert self._stopping is not None
        delay = self._reconnect_delay(failures) * (1.0 + 0.25 * self._rng.random())
        logger.warning(
            "outbox unreachable (%s); retrying in %.3g s",
            exc,
            delay,
            extra={"event": "outbox_unavailable", "delay": delay, "failures": failures},
        )
        await self._sleep_unless_stopped(delay)

    def _reconnect_delay(self, failures: int) -> float:
        """After ``failures`` failed calls in a row: ``reconnect_min``, doubled each time,
        at most ``reconnect_max``."""
        return min(self.reconnect_max, self.reconnect_min * 2.0 ** (failures - 1))

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        assert self._stopping is not None
        await _first_of(
            [
                asyncio.ensure_future(self._stopping.wait()),
                asyncio.ensure_future(self._sleep(seconds)),
            ]
        )

    # -- one claim ----------------------------------------------------------------------

    async def _process(self, claim: Claim) -> None:
        try:
            try:
                reserved_at = await self._shared.reserve()
            except Exception as exc:  # the queue is unreachable: give the claim back
                logger.warning(
                    "outbox entry %d: reserving its place in the shared rate failed (%s)",
                    claim.entry_id,
                    exc,
                    extra={"event": "outbox_unavailable", "entry_id": claim.entry_id},
                )
                with contextlib.suppress(Exception):  # else its lease expires
                    await self._db_call(self._store.release, claim, now=self._clock())
                return
            if self._stopping is not None and self._stopping.is_set():
                # Stopped while waiting for the shared rate: not in flight yet, so give
                # the entry back for the next worker instead of starting a transaction.
                await self._db_call(self._store.release, claim, now=self._clock())
                return
            statuses = await self._sender.send(claim)
            if statuses is not None:
                if any(s.outcome is Outcome.THROTTLED for s in statuses.values()):
                    await self._shared.throttled(reserved_at)
                await self._settle(claim, statuses)
        except LeaseLostError:
            self.stats.lost += 1
            logger.warning(
                "outbox entry %d: lease lost before it was settled; another worker has it",
                claim.entry_id,
                extra={"event": "outbox_lease_lost", "entry_id": claim.entry_id},
            )
        except Exception:
            logger.exception(
                "outbox entry %d: unexpected error while sending; the lease will expire",
                claim.entry_id,
                extra={"event": "outbox_worker_error", "entry_id": claim.entry_id},
            )
        finally:
            self._held.pop(claim.entry_id, None)

    async def _settle(self, claim: Claim, statuses: Mapping[str, RecipientStatus]) -> None:
        """Apply the statuses; keep trying while the database is away, until the lease is
        gone (then recovery decides, from the dot marks) or the worker is hard-stopped."""
        failures = 0
        while True:
            try:
                settled = await self._settles_batch.submit((claim, statuses))
                break
            except Exception as exc:
                failures += 1
                self.stats.database_errors += 1
                if self._clock() > claim.lease_expires_at + self.lease_seconds * 4:
                    logger.error(
                        "outbox entry %d: could not settle (%s); leaving it to recovery",
                        claim.entry_id,
                        exc,
                        extra={"event": "outbox_settle_abandoned", "entry_id": claim.entry_id},
                    )
                    return
                delay = self._reconnect_delay(failures)
                logger.warning(
                    "outbox entry %d: settle failed (%s); retrying in %.3g s",
                    claim.entry_id,
                    exc,
                    delay,
                    extra={"event": "outbox_unavailable", "entry_id": claim.entry_id},
                )
                await self._sleep(delay)
                await asyncio.sleep(0)  # an injected sleep may not yield
        if not settled:
            raise LeaseLostError(f"lease on outbox entry {claim.entry_id} was lost")
        self.stats.settled += 1
        for status in statuses.values():
            key = status.outcome.value
            self.stats.recipients[key] = self.stats.recipients.get(key, 0) + 1

    # -- leases -------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Renew the leases held, every third of ``lease_seconds``.

        Real time, not the injected ``sleep``: a lease is kept alive while real I/O
        (an SMTP transaction) runs, whatever a test does with its clock.
        """
        interval = self.lease_seconds / 3.0
        while True:
            await asyncio.sleep(interval)
            try:
                await self._shared.renew_slots()
            except Exception as exc:
                logger.warning(
                    "outbox: renewing connection slots failed (%s)",
                    exc,
                    extra={"event": "outbox_renew_failed"},
                )
            claims = list(self._held.values())
            if not claims:
                continue
            try:
                await self._db_call(
                    self._store.renew, claims, lease_seconds=self.lease_seconds, now=self._clock()
                )
            except Exception as exc:
                logger.warning(
                    "outbox: renewing %d lease(s) failed (%s)",
                    len(claims),
                    exc,
                    extra={"event": "outbox_renew_failed"},
                )

    async def _db_call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # One thread for every store call of this worker: a SQLite connection belongs
        # to one thread, and the calls are short transactions that queue well.
        assert self._db is not None
        assert self._loop is not None
        return await self._loop.run_in_executor(self._db, partial(function, *args, **kwargs))

    # -- signals ------------------------------------------------------------------------

    def _install_signal_handlers(
        self, notice: Callable[[str], None] | None = None
    ) -> Callable[[], None]:
        """SIGTERM and SIGINT stop the worker gracefully; the same signal again stops it now.

        A second signal puts the previous handlers back and raises the signal again, so the
        process ends as it would have without the worker (killed by SIGTERM, a
        KeyboardInterrupt for SIGINT). Nothing is lost: entries in flight keep their
        leases and are recovered like a crashed worker's - a final dot without its reply
        becomes AMBIGUOUS, anything before the dot goes again. ``notice`` (the CLI's)
        tells the operator what each signal did.
        """
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous: dict[int, Any] = {}
        stops = 0

        def handler(signum: int, frame: object) -> None:
            nonlocal stops
            stops += 1
            name = signal.Signals(signum).name
            if stops > 1:
                logger.warning(
                    "outbox worker: %s again, stopping now; in-flight entries are recovered "
                    "by the next worker",
                    name,
                    extra={"event": "outbox_signal", "signal": name, "forced": True},
                )
                if notice is not None:
                    notice(f"{name} again: stopping now (in-flight entries are recovered)")
                restore()
                signal.raise_signal(signum)
                return
            logger.info(
                "outbox worker: %s received, finishing in-flight transactions",
                name,
                extra={"event": "outbox_signal", "signal": name, "forced": False},
            )
            if notice is not None:
                notice(f"{name} received: finishing in-flight transactions ({name} again: now)")
            self.stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)

        def restore() -> None:
            for signum, old in previous.items():
                signal.signal(signum, old)

        return restore


def stderr_notice(program: str) -> Callable[[str], None]:
    """A ``notice`` for :meth:`OutboxWorker.serve` that tells the operator on stderr."""

    def notice(text: str) -> None:
        # From a signal handler: one unbuffered write, never a print() it may interrupt.
        with contextlib.suppress(OSError):
            os.write(2, f"{program}: {text}\n".encode())

    return notice


async def _first_of(waits: list[asyncio.Future[Any]]) -> None:
    """Wait until the first of ``waits`` is done; cancel the rest."""
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()


def _store_of(outbox: Any) -> Any:
    for name in ("store", "_store"):
        store = getattr(outbox, name, None)
        if store is not None:
            return store
    if all(hasattr(outbox, m) for m in ("claim", "settle", "mark_final_dot", "renew")):
        return outbox  # a Store itself
    raise TypeError(f"outbox must be an Outbox or AsyncOutbox, got {type(outbox).__name__}")


def _whole(name: str, value: int) -> int:
    # The one rule for counts (``_checks``), typed as the count it then is.
    checked = check_count(name, value)
    assert checked is not None
    return checked
