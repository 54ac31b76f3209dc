"""Deprecated home of :class:`~reliable_smtp.testing.MockTransport`.

The mock transport is a test helper and lives in :mod:`reliable_smtp.testing`;
importing it from here still works for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__: list[str] = []

_MOVED = frozenset({"MockHandler", "MockResponse", "MockTransport"})


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"reliable_smtp.transports.mock.{name} moved to reliable_smtp.testing.{name}; "
            "import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        from ..testing import mock

        return getattr(mock, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
