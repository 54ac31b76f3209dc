"""The outbox's shared limits: one cap for every worker of an outbox.

This module owns :class:`OutboxLimits` (the setting: messages per second,
minute and day, and concurrent connections, over *all* workers - providers
count per account, not per process) and the arithmetic the stores apply under
a row lock, as pure functions (nothing here reads a clock or touches a
database):

* :func:`reserve_slot` - GCRA (the generic cell rate algorithm). A limiter is
  one number, its *theoretical arrival time* ``tat``: when the limiter would be
  empty again if every reservation so far went at exactly the rate. A
  reservation at ``now`` moves it to ``max(tat, now) + interval`` and may start
  once that is at most ``burst * interval`` ahead of the clock, so its wait is
  ``max(0, new_tat - burst * interval - now)``. After a quiet period ``burst``
  reservations start at once, then one every ``interval``: over any span ``T``
  at most ``T / interval + burst`` start.
* :func:`shared_rate` / :func:`lowered_shared_rate` - the THROTTLED feedback of
  :mod:`reliable_smtp._ratelimit`, kept in the limiter's row so that one
  worker's throttle slows them all: the rate in force halves
  (:func:`~reliable_smtp._ratelimit.throttled_rate`) and doubles back every
  cool-down (:func:`~reliable_smtp._ratelimit.recovered_rate`) until it is at
  the configured cap again. One lowering per episode: a reply to a message
  reserved before the last lowering does not lower the rate again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .._checks import count_problem, rate_problem
from .._errors import ConfigurationError
from .._ratelimit import recovered_rate, throttled_rate

__all__ = [
    "LIMIT_VARIABLES",
    "OutboxLimits",
    "Reservation",
    "lowered_shared_rate",
    "reserve_slot",
    "shared_rate",
]

#: The RELIABLE_SMTP_* variables :meth:`OutboxLimits.from_env` reads, by field.
LIMIT_VARIABLES = {
    "per_second": "RELIABLE_SMTP_OUTBOX_RATE_PER_SECOND",
    "per_minute": "RELIABLE_SMTP_OUTBOX_RATE_PER_MINUTE",
    "per_day": "RELIABLE_SMTP_OUTBOX_RATE_PER_DAY",
    "max_connections": "RELIABLE_SMTP_OUTBOX_MAX_CONNECTIONS",
    "burst": "RELIABLE_SMTP_OUTBOX_BURST",
}

_WINDOWS = {"per_second": 1.0, "per_minute": 60.0, "per_day": 86_400.0}


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxLimits:
    """The provider's caps, shared by every worker of one outbox (``None``: no cap).

    ``OutboxLimits(per_second=14)`` - Amazon SES's default 14 messages/s across
    all workers; ``OutboxLimits(per_minute=30, max_connections=3)`` - Microsoft
    365. Rates are spread evenly (a per-minute cap of 30 sends one message every
    2 s); ``burst`` messages of the per-second cap may go back to back after a
    quiet period. ``max_connections`` caps the SMTP connections open at once over
    all workers (a worker sends on at most as many as the slots it holds; a dead
    worker's slots come back after ``lease_seconds``). ``cooldown`` is the
    THROTTLED recovery step (:mod:`reliable_smtp._ratelimit`).
    """

    per_second: float | None = None
    per_minute: float | None = None
    per_day: float | None = None
    max_connections: int | None = None
    burst: int = 1
    cooldown: float = 10.0

    def __post_init__(self) -> None:
        for name, per in (("per_second", "second"), ("per_minute", "minute"), ("per_day", "day")):
            value = getattr(self, name)
            problem = None if value is None else rate_problem(value, per=per)
            if problem is not None:
                raise ConfigurationError(
                    f"OutboxLimits({name}=...): {problem}; set {LIMIT_VARIABLES[name]} "
                    "to a positive number, or leave it unset for no cap",
                    setting=LIMIT_VARIABLES[name],
                )
        for name in ("max_connections", "burst"):
            value = getattr(self, name)
            problem = None if value is None else count_problem(value)
            if problem is not None:
                variable = LIMIT_VARIABLES.get(name)
                raise ConfigurationError(
                    f"OutboxLimits({name}=...): {problem}"
                    + (f" (the variable {variable})" if variable else ""),
                    setting=variable or name,
                )
        if self.cooldown <= 0:
            raise ConfigurationError(
                f"OutboxLimits(cooldown=...) must be > 0 seconds, got {self.cooldown!r}",
                setting="cooldown",
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OutboxLimits:
        """The limits the ``RELIABLE_SMTP_OUTBOX_*`` variables set (unset: no cap)."""
        environ = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for name, variable in LIMIT_VARIABLES.items():
            text = environ.get(variable, "").strip()
            if not text:
                continue
            try:
                whole = name in ("max_connections", "burst")
                values[name] = int(text) if whole else float(text)
            except ValueError:
                raise ConfigurationError(
                    f"{variable}={text!r} is not a number", setting=variable
                ) from None
        return cls(**values)  # type: ignore[arg-type]

    @property
    def rates(self) -> dict[str, float]:
        """The configured caps in messages per second, by limiter name."""
        return {
            f"rate/{name}": getattr(self, name) / window
            for name, window in _WINDOWS.items()
            if getattr(self, name) is not None
        }

    def burst_of(self, limiter: str) -> int:
        """Back-to-back messages a limiter allows (only the per-second cap bursts)."""
        return self.burst if limiter == "rate/per_second" else 1

    @property
    def limited(self) -> bool:
        return bool(self.rates) or self.max_connections is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """One GCRA step: the limiter's new theoretical arrival time and the wait."""

    tat: float
    wait: float


def reserve_slot(tat: float, *, now: float, interval: float, burst: int = 1) -> Reservation:
    """Reserve one message on a limiter whose theoretical arrival time is ``tat``.

    See the module docstring. ``interval`` is seconds per message (``1 / rate``).
    """
    # In differences from `now`: epoch seconds round at about 2e-7 s, and a message
    # the limiter has room for must wait exactly 0, not a rounding error.
    ahead = max(tat - now, 0.0)
    return Reservation(tat=now + ahead + interval, wait=max(0.0, ahead - (burst - 1) * interval))


def shared_rate(
    configured: float,
    lowered: float | None,
    lowered_at: float | None,
    *,
    now: float,
    cooldown: float,
) -> float:
    """The rate in force: ``configured``, or a lowered rate recovering towards it."""
    if lowered is None or lowered_at is None:
        return configured
    recovered = recovered_rate(lowered, elapsed=max(0.0, now - lowered_at), cooldown=cooldown)
    return min(configured, recovered)


def lowered_shared_rate(
    configured: float,
    lowered: float | None,
    lowered_at: float | None,
    *,
    reserved_at: float,
    now: float,
    cooldown: float,
) -> tuple[float, float] | None:
    """After a THROTTLED reply to a message reserved at ``reserved_at``: the new
    ``(lowered, lowered_at)``, or ``None`` to leave the row alone (the message was
    reserved before the last lowering: its reply says nothing about the lowered rate)."""
    if lowered_at is not None and reserved_at <= lowered_at:
        return None
    current = shared_rate(configured, lowered, lowered_at, now=now, cooldown=cooldown)
    return throttled_rate(current, None), now
