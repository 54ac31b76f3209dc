"""The old ``server`` spelling of ``transport_name`` (issue #12: one name per concept).

Results and errors used to call the transport's name ``server`` (it is ``"memory"``,
``"recipient-policy"``, ``"smtp://mx.example.com:587"``: a transport, not a server).
``server=`` and ``.server`` still work for one release, with a ``DeprecationWarning``
that points at the caller; nothing inside the library uses them.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

_N = TypeVar("_N", bound="str | None")


def transport_name_given(
    where: str, server: str | None, transport_name: _N, *, stacklevel: int = 3
) -> _N | str:
    """The transport name a call was given, with ``server=`` (the old spelling) honoured.

    ``where`` names the call for the warning (``"RecipientStatus()"``,
    ``"DeliveryError.from_reply()"``). ``server=None`` means "not given": no warning,
    ``transport_name`` as is. Otherwise a ``DeprecationWarning`` ``stacklevel`` frames
    up (3: the caller of the function that calls this one), and ``TypeError`` when both
    spellings name different transports.
    """
    if server is None:
        return transport_name
    warnings.warn(
        f"{where}: server= is deprecated: use transport_name= (the transport's name)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    if transport_name and server and transport_name != server:
        raise TypeError(
            f"{where} got server={server!r} and transport_name={transport_name!r}: they are "
            "the same argument (server= is its deprecated spelling); pass transport_name= only"
        )
    return transport_name or server


def warn_server_attribute(owner: object, *, stacklevel: int = 3) -> None:
    """Warn that ``owner.server`` was read (the caller's frame, ``stacklevel`` up)."""
    warnings.warn(
        f"{type(owner).__name__}.server is deprecated: read .transport_name (the transport's name)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
