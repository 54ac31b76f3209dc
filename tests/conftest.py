"""Shared fixtures: real SMTP servers on 127.0.0.1, a fake clock, and a net for OS calls."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest

from reliable_smtp._transports.smtp import SMTPTransport
from reliable_smtp.testing import FakeClock, LocalSMTPServer

try:  # not built for Windows
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

#: A distinctive password: tests assert it never shows up in errors or reprs.
PASSWORD = "pw-Zebra-7431-secret"
USERNAME = "app"


@pytest.fixture(params=[False, True], ids=["serial", "pipelined"])
def server(request: pytest.FixtureRequest) -> Iterator[LocalSMTPServer]:
    """A plain SMTP server without TLS or AUTH (a trusted local relay).

    Every test using it runs twice: once one command at a time, once with the
    server advertising PIPELINING, so MAIL/RCPT/DATA go in one write (RFC 2920);
    a test marked ``@serial_only`` runs once.
    """
    with LocalSMTPServer(pipelining=request.param) as running:
        yield running


#: For tests where PIPELINING cannot change anything - they never reach MAIL (argument
#: checks, failures before the transaction) or are about something else than the wire:
#: they run once, against the serial server.
serial_only = pytest.mark.parametrize("server", [False], ids=["serial"], indirect=True)


#: The suites whose async tests run on uvloop too (the loop uvicorn runs FastAPI apps on):
#: the delivery semantics in every mode, STARTTLS and SMTPS sessions, large content under
#: flow control, faults, the outbox's final-dot commit.
#: uvloop caches a protocol's methods when the protocol is set, so code that patched
#: them on the instance went unseen there (``_wire`` once did: every send hung).
ON_UVLOOP_TOO = frozenset(
    {
        "test_chunking.py",
        "test_delivery.py",
        "test_fault_injection.py",
        "test_garbled_replies.py",
        "test_large_content.py",
        "test_outbox_worker_final_dot.py",
        "test_pipelining_across_messages.py",
        "test_session.py",
        "test_smtp_transport.py",
        "test_wire.py",
    }
)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """The event loops an async test runs on: asyncio's, and uvloop for ON_UVLOOP_TOO."""
    loops: dict[str, Any] = {"asyncio": asyncio.new_event_loop}
    if uvloop is not None and item.path.name in ON_UVLOOP_TOO:
        loops["uvloop"] = uvloop.new_event_loop
    return loops


@pytest.fixture
def tls_server() -> Iterator[LocalSMTPServer]:
    """A submission server: STARTTLS required, AUTH required."""
    with LocalSMTPServer(tls="starttls", auth={USERNAME: PASSWORD}) as running:
        yield running


@pytest.fixture
def smtps_server() -> Iterator[LocalSMTPServer]:
    """An SMTPS server: implicit TLS, AUTH required."""
    with LocalSMTPServer(tls="implicit", auth={USERNAME: PASSWORD}) as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def relay_transport(server: LocalSMTPServer, **options: Any) -> SMTPTransport:
    """An SMTPTransport to ``server`` without TLS (the server is a local relay)."""
    options.setdefault("local_hostname", "client.test")
    return SMTPTransport("127.0.0.1", server.port, tls="none", **options)


def tls_transport(server: LocalSMTPServer, **options: Any) -> SMTPTransport:
    """An SMTPTransport to a TLS ``server`` that trusts its test CA and logs in."""
    options.setdefault("local_hostname", "client.test")
    options.setdefault("username", USERNAME)
    options.setdefault("password", PASSWORD)
    tls = "implicit" if server.tls == "implicit" else "starttls"
    return SMTPTransport(
        "127.0.0.1", server.port, tls=tls, ssl_context=server.client_ssl_context(), **options
    )


# -- what code does to the operating system -----------------------------------------------

#: Builtins whose module talks to the operating system (files, processes, sockets).
_OS_MODULES = frozenset({"posix", "nt", "_io", "io", "_socket", "_posixsubprocess", "select"})
#: Of those, the ones that only compute (a path's str, a constant).
_PURE = frozenset({"fspath", "fsencode", "fsdecode", "WEXITSTATUS", "WIFEXITED", "strerror"})
_watching: dict[int, list[str]] = {}  # thread id -> the calls recorded in it


def _audit(event: str, _args: tuple[object, ...]) -> None:
    calls = _watching.get(threading.get_ident())
    if calls is not None:
        calls.append(event)


sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only inside recorded_io()


@contextmanager
def recorded_io() -> Iterator[list[str]]:
    """Every operating-system call this thread makes inside the block, by name.

    Two nets, because neither sees everything: CPython's audit events (``open``,
    ``subprocess.Popen``, ``socket.connect``, ``os.listdir`` ...) and a profile
    function that sees each call of an OS builtin from Python code (``posix.stat``,
    ``posix.access``: existence checks raise no audit event).
    """
    calls: list[str] = []

    def profile(_frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call":
            module = getattr(arg, "__module__", None) or ""
            name = getattr(arg, "__name__", "")
            if module in _OS_MODULES and name not in _PURE:
                calls.append(f"{module}.{name}")

    previous = sys.getprofile()
    sys.setprofile(profile)
    _watching[threading.get_ident()] = calls
    try:
        yield calls
    finally:
        del _watching[threading.get_ident()]
        sys.setprofile(previous)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for "connection refused" tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- server=: the deprecated spelling of transport_name= (issue #12) -----------------------

#: The warning every call given ``server=`` raises (reliable_smtp._deprecations).
OLD_SERVER_ARGUMENT = r"server= is deprecated: use transport_name= \(the transport's name\)"


def built_both_ways(build: Callable[..., Any], where: str) -> tuple[Any, Any]:
    """``build(server="smtp://mx")`` and ``build(transport_name="smtp://mx")``.

    The first must warn exactly once, naming ``where``, at the line that passed
    ``server=`` (the builder's own file: the warning's stacklevel); the second must not
    warn at all. The caller compares what the two built.
    """
    with pytest.warns(DeprecationWarning, match=OLD_SERVER_ARGUMENT) as caught:
        old = build(server="smtp://mx")
    assert len(caught) == 1
    assert str(caught[0].message).startswith(f"{where}: ")
    assert caught[0].filename == build.__code__.co_filename
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = build(transport_name="smtp://mx")
    return old, new


def assert_two_names_refused(build: Callable[..., Any]) -> None:
    """``server=`` and a different ``transport_name=``: a TypeError; the same name spelt
    both ways is one name (it only warns)."""
    with (
        pytest.warns(DeprecationWarning, match=OLD_SERVER_ARGUMENT),
        pytest.raises(TypeError, match="server='a' and transport_name='b'"),
    ):
        build(server="a", transport_name="b")
    with pytest.warns(DeprecationWarning, match=OLD_SERVER_ARGUMENT):
        same = build(server="a", transport_name="a")
    assert same.transport_name == "a"
