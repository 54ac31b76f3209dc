"""A fake clock for tests: backoff without waiting."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it.

    Pass ``clock=fake`` and ``sleep=fake.sleep`` to a mailer: retries then take no
    real time, ``fake.sleeps`` records every wait the retry policy asked for, and
    deadlines still work because the clock advances by each wait.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now!r}, sleeps={self.sleeps!r})"

    def advance(self, seconds: float) -> None:
        """Move time forward without a sleep (e.g. to simulate a slow server)."""
        self.now += seconds
