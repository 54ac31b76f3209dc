"""Shared fixtures: real SMTP servers on 127.0.0.1 and a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from reliable_smtp.testing import FakeClock, LocalSMTPServer
from reliable_smtp.transports.smtp import SMTPTransport

#: A distinctive password: tests assert it never shows up in errors or reprs.
PASSWORD = "pw-Zebra-7431-secret"
USERNAME = "app"


@pytest.fixture(params=[False, True], ids=["serial", "pipelined"])
def server(request: pytest.FixtureRequest) -> Iterator[LocalSMTPServer]:
    """A plain SMTP server without TLS or AUTH (a trusted local relay).

    Every test using it runs twice: once one command at a time, once with the
    server advertising PIPELINING, so MAIL/RCPT/DATA go in one write (RFC 2920).
    """
    with LocalSMTPServer(pipelining=request.param) as running:
        yield running


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
