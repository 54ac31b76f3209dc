"""The value rules every setting and address is checked against: each in one place.

- durations (:func:`check_seconds`, :func:`seconds_problem`): a real number, finite,
  positive - or ``>= 0`` where zero means "none" (a retry wait, a cache TTL);
- counts (:func:`check_count`, :func:`count_problem`): a whole number, at least a minimum;
- rates (:func:`check_rate`, :func:`rate_problem`): messages per second, positive and
  finite, with a floor of one a day (a smaller rate is a unit mistake, not a wish);
- when two addresses are the same (:func:`address_key`).

The line-break rule for headers and SMTP paths is
:func:`reliable_smtp._envelope.line_break_problem`.

The ``check_*`` functions raise :class:`~reliable_smtp.ConfigurationError` naming the
setting (``owner`` says whose: ``"RetryPolicy."``); the ``*_problem`` functions return
the same wording for callers that raise their own error (the pydantic settings, which
name the ``RELIABLE_SMTP_*`` variable).
"""

from __future__ import annotations

import math

from ._errors import ConfigurationError

__all__ = [
    "address_key",
    "check_count",
    "check_rate",
    "check_seconds",
    "count_problem",
    "rate_problem",
    "seconds_problem",
]

#: Why every network wait has a bound (the default reason in duration errors).
BOUNDED = "every network wait is bounded"


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def seconds_problem(value: object, *, allow_zero: bool = False) -> str | None:
    """What is wrong with ``value`` as a duration, or ``None``.

    ``allow_zero``: zero means "no wait" (RetryPolicy's waits, a DNS cache TTL of 0 =
    no caching); elsewhere (timeouts, deadlines) zero would fail every operation.
    """
    if _is_number(value):
        assert isinstance(value, (int, float))
        if math.isfinite(value) and (value >= 0 if allow_zero else value > 0):
            return None
    if allow_zero:
        return "must be a finite number of seconds >= 0"
    return "must be a positive, finite number of seconds"


def check_seconds(
    name: str,
    value: object,
    *,
    allow_zero: bool = False,
    owner: str = "",
    why: str = BOUNDED,
) -> float:
    """``value`` as float seconds, or a :class:`ConfigurationError` naming ``name``."""
    problem = seconds_problem(value, allow_zero=allow_zero)
    if problem is not None:
        reason = f": {why}" if why else ""
        raise ConfigurationError(f"{owner}{name} {problem}, got {value!r}{reason}", setting=name)
    assert isinstance(value, (int, float))
    return float(value)


def count_problem(value: object, *, minimum: int = 1) -> str | None:
    """What is wrong with ``value`` as a count of at least ``minimum``, or ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return None
    return f"must be a whole number, at least {minimum}"


def check_count(
    name: str,
    value: object,
    *,
    minimum: int = 1,
    allow_none: bool = False,
    owner: str = "",
    why: str = "",
) -> int | None:
    """``value`` as a count, or a :class:`ConfigurationError` naming ``name``.

    ``allow_none``: ``None`` means "no limit" (validation's ``max_recipients``).
    """
    if value is None and allow_none:
        return None
    problem = count_problem(value, minimum=minimum)
    if problem is not None:
        none = " or None (no limit)" if allow_none else ""
        reason = f" ({why})" if why else ""
        raise ConfigurationError(
            f"{owner}{name} {problem}{none}{reason}, got {value!r}", setting=name
        )
    assert isinstance(value, int)
    return value


#: The slowest rate that can be meant: one message a day.
_SLOWEST_RATE = 1 / 86_400


#: Seconds in each unit a rate may be given in.
_RATE_UNITS = {"second": 1, "minute": 60, "day": 86_400}


def rate_problem(value: object, *, per: str = "second") -> str | None:
    """What is wrong with ``value`` as messages per ``per`` (second, minute or day), or ``None``.

    A rate differs from a duration by its floor: below one message a day it is a unit
    mistake (a per-minute or per-hour figure given per second), never what was meant.
    """
    if not _is_number(value):
        return f"must be messages per {per} (a number)"
    assert isinstance(value, (int, float))
    if not (value > 0 and math.isfinite(value)):
        return f"must be a positive, finite number of messages per {per}"
    if value / _RATE_UNITS[per] < _SLOWEST_RATE:
        return "is less than one message a day: that cannot be what you mean"
    return None


def check_rate(name: str, value: object, *, owner: str = "") -> float | None:
    """``value`` as messages per second (``None``: no limit), or a ConfigurationError."""
    if value is None:
        return None
    problem = rate_problem(value)
    if problem is not None:
        raise ConfigurationError(
            f"{owner}{name} {problem}, got {value!r} (rates are messages per second: use "
            "None for no limit, RateLimit.per_minute() for slow rates)",
            setting=name,
        )
    assert isinstance(value, (int, float))
    return float(value)


def address_key(address: str) -> str:
    """When two addresses are the same: the local part as is, the domain in lower case.

    The local part is case-sensitive in theory (RFC 5321 §2.4); the domain never is.
    """
    local, at, domain = address.rpartition("@")
    return f"{local}{at}{domain.lower()}" if at else address
