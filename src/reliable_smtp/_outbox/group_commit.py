"""Group commit: :class:`GroupCommit`, many writes that arrive together, one commit.

The worker's final-dot marks and settles go through one each, so N concurrent
SMTP transactions cost one database commit (one fsync) per step instead of N.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

Item = TypeVar("Item")


class GroupCommit(Generic[Item]):
    """Calls that arrive while a batch is being written join the next one.

    The first call goes at once (no added latency when idle); under load, every
    transaction that reached its dot (or its reply) while the database was busy
    shares the next commit. Each item gets its own result (``bool``); a failure of
    the batch (the database went away) is every item's exception.
    """

    def __init__(self, write: Callable[[list[Item]], Awaitable[list[bool]]]) -> None:
        self._write = write
        self._waiting: list[tuple[Item, asyncio.Future[bool]]] = []
        self._writing = False
        self._drainer: asyncio.Future[None] | None = None

    async def submit(self, item: Item) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if not self._writing:
            self._writing = True
            self._drainer = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await self._write([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._writing = False
