"""The reliable-smtp pytest plugin: fixtures for testing an application's mail.

Registered through the ``pytest11`` entry point, so installing reliable-smtp is
enough; nothing here runs unless a test asks for a fixture. It provides:

* ``smtp_outbox`` - an empty :class:`~reliable_smtp.testing.Outbox`;
* ``outbox_mailer`` - a :class:`~reliable_smtp.Mailer` over ``smtp_outbox``,
  retrying without waits, closed after the test;
* ``async_outbox_mailer`` - the same as an :class:`~reliable_smtp.AsyncMailer`
  (a plain fixture: it works with pytest-asyncio, anyio or any runner);
* ``smtp_server`` - a :class:`~reliable_smtp.testing.LocalSMTPServer` on 127.0.0.1,
  started for the test and stopped after it. Configure it with the marker
  ``@pytest.mark.smtp_server(tls="starttls", auth={"app": "secret"})`` (any of
  ``tls``, ``auth``, ``size_limit``, ``smtputf8``, ``hostname``) and script it in the
  test: ``smtp_server.script("RCPT", "451 4.7.1 try later")``. It needs the
  ``testing`` extra; without it the test fails with the install command, and the
  other fixtures still work.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .._mailer import AsyncMailer, Mailer
from .._retry import RetryPolicy
from ._outbox import Outbox

if TYPE_CHECKING:
    from ._server import LocalSMTPServer

__all__ = [
    "async_outbox_mailer",
    "outbox_mailer",
    "pytest_configure",
    "smtp_outbox",
    "smtp_server",
]

_SERVER_OPTIONS = frozenset({"tls", "auth", "size_limit", "smtputf8", "hostname"})
_INSTALL_HINT = (
    "the smtp_server fixture needs aiosmtpd and trustme: "
    "install them with `pip install 'reliable-smtp[testing]'`"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "smtp_server(tls='none', auth=None, size_limit=33554432, smtputf8=True, "
        "hostname='localhost'): configure the reliable-smtp smtp_server fixture",
    )


@pytest.fixture
def smtp_outbox() -> Outbox:
    """An empty outbox: a transport that keeps every message, with assertion helpers."""
    return Outbox()


@pytest.fixture
def outbox_mailer(smtp_outbox: Outbox) -> Iterator[Mailer]:
    """A sync mailer over ``smtp_outbox`` that retries without waiting; closed after the test."""
    mailer = Mailer(smtp_outbox, retry=RetryPolicy().without_waits())
    yield mailer
    mailer.close()


@pytest.fixture
def async_outbox_mailer(smtp_outbox: Outbox) -> Iterator[AsyncMailer]:
    """An async mailer over ``smtp_outbox`` that retries without waiting; closed after the test."""
    mailer = AsyncMailer(smtp_outbox, retry=RetryPolicy().without_waits())
    yield mailer
    _finish_now(mailer.aclose())


def _finish_now(closing: Coroutine[Any, Any, None]) -> None:
    # Closing a mailer over an Outbox never waits for anything, so the coroutine
    # finishes on its first step. Driving it here keeps this a plain fixture: no
    # event loop of ours to clash with the test runner's.
    try:
        closing.send(None)
    except StopIteration:
        return
    closing.close()  # pragma: no cover - an outbox never suspends while closing
    raise RuntimeError("closing the outbox mailer unexpectedly had to wait")


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest) -> Iterator[LocalSMTPServer]:
    """A real SMTP server on 127.0.0.1 for one test; configure it with the marker."""
    marker = request.node.get_closest_marker("smtp_server")
    options: dict[str, Any] = {}
    if marker is not None:
        if marker.args:
            pytest.fail(
                "@pytest.mark.smtp_server takes keyword arguments only, e.g. "
                "@pytest.mark.smtp_server(tls='starttls')",
                pytrace=False,
            )
        unknown = sorted(set(marker.kwargs) - _SERVER_OPTIONS)
        if unknown:
            pytest.fail(
                f"@pytest.mark.smtp_server got {', '.join(unknown)}; it takes "
                f"{', '.join(sorted(_SERVER_OPTIONS))}",
                pytrace=False,
            )
        options = dict(marker.kwargs)
    try:
        from ._server import LocalSMTPServer
    except ImportError as exc:
        missing: ImportError | None = exc
    else:
        missing = None
    if missing is not None:
        # Outside the except block, so the report is the hint alone, not a chain.
        pytest.fail(f"{_INSTALL_HINT} ({missing.__cause__ or missing})", pytrace=False)
    with LocalSMTPServer(**options) as server:
        yield server
