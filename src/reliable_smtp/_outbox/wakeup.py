"""Waking an idle worker when work arrives: :func:`watch_for_work`.

``Store.wait_for_work`` blocks (PostgreSQL ``LISTEN``; SQLite: an in-process
notification, else ``PRAGMA data_version`` polled every 50 ms), so it runs on a
thread of its own, in slices of :data:`WAKE_SLICE`. A lost wake-up only delays:
the worker claims at least every ``poll_interval`` seconds anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

__all__ = ["WAKE_SLICE", "watch_for_work"]

logger = logging.getLogger("reliable_smtp")

#: The longest one blocking ``wait_for_work`` call lasts (a stop waits at most this).
WAKE_SLICE = 0.5


async def watch_for_work(
    store: Any, wake: Callable[[], None], *, reconnect_min: float, reconnect_max: float
) -> None:
    """Call ``wake`` whenever the store says work arrived, until cancelled.

    The blocking waits run in short slices so a stop is never held up; a failure
    (the database went away) only means polling until it is back, retried after
    ``reconnect_min`` doubling up to ``reconnect_max`` seconds.
    """
    loop = asyncio.get_running_loop()
    watcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reliable-smtp-wakeup")
    delay = reconnect_min
    try:
        while True:
            try:
                woke = await loop.run_in_executor(watcher, store.wait_for_work, WAKE_SLICE)
            except Exception as exc:
                logger.info(
                    "outbox: waiting for work failed (%s); polling until it is back",
                    type(exc).__name__,
                    extra={"event": "outbox_wait_failed"},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2.0, reconnect_max)
                continue
            delay = reconnect_min
            if woke:
                wake()
    finally:
        # Wait for the blocked call to return (at most WAKE_SLICE): it uses a store
        # connection, which must not be closed under it (libpq is not thread-safe).
        await loop.run_in_executor(None, partial(watcher.shutdown, wait=True))
