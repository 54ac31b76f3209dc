"""An SMTP connection's life in the pool, for :class:`~.smtp.SMTPTransport`.

This module owns what the :class:`~.pool.ConnectionPool` is told to do with an
aiosmtplib client - check one that sat idle (NOOP must answer 250), close one
politely (QUIT, or just the socket when that fails), drop one at once (no I/O, safe
while being cancelled) - and what waiting for a connection can end in, in the
library's terms (:func:`lease`: the transport closed meanwhile, or no connection
free within ``pool_timeout``). Opening a connection is :mod:`._session`.
"""

from __future__ import annotations

import asyncio

import aiosmtplib

from .._errors import PoolExhaustedError, TransportClosedError
from .._replies import Phase
from .pool import ConnectionPool, Lease, PoolClosedError, PoolTimeoutError


async def lease(
    pool: ConnectionPool[aiosmtplib.SMTP], *, fresh: bool, transport_name: str
) -> Lease[aiosmtplib.SMTP]:
    """A connection from ``pool`` (a newly opened one when ``fresh``) for one message."""
    try:
        return await pool.acquire(fresh=fresh)
    except PoolClosedError as exc:
        raise TransportClosedError(
            f"{transport_name}: the transport was closed while this message waited for a "
            "connection; nothing was sent"
        ) from exc
    except PoolTimeoutError as exc:
        raise PoolExhaustedError(
            f"no free connection: {exc}",
            phase=Phase.CONNECT,
            transport_name=transport_name,
            explanation="every pooled connection stayed busy; raise max_connections or "
            "pool_timeout, or send less at once (concurrency)",
            retryable=True,
        ) from exc


async def answers_noop(smtp: aiosmtplib.SMTP, *, timeout: float) -> bool:
    """Health check for a connection that sat idle: NOOP must answer 250."""
    try:
        response = await smtp.execute_command(b"NOOP", timeout=timeout)
    except Exception:
        return False
    return response.code == 250


def drop(smtp: aiosmtplib.SMTP) -> None:
    """Close the socket now, without QUIT (no I/O: safe while being cancelled)."""
    smtp.close()


async def quit_or_close(smtp: aiosmtplib.SMTP, *, timeout: float) -> None:
    """QUIT (waiting at most 5 s for its reply), or just close the socket if that fails."""
    if not smtp.is_connected:
        smtp.close()
        return
    try:
        await smtp.quit(timeout=min(timeout, 5.0))
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
        smtp.close()


def reusable(smtp: aiosmtplib.SMTP) -> bool:
    """Whether the connection may go back to the pool (it is still connected)."""
    return smtp.is_connected
