"""LocalSMTPServer.stop(): the listener, every client connection and the loop thread end.

stop() returns as soon as the server is down (no fixed wait), so these tests pin
what "down" means: nothing listens on the port, the thread is gone, and every
client connection - idle, mid-command, half-closed, TLS - sees the server close.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

from reliable_smtp.testing import LocalSMTPServer


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "reliable-smtp-local-server"]


def connect(server: LocalSMTPServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        line += chunk
    return line


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server still sends before it closes (b"" if it just closes)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, ssl.SSLEOFError):  # aborted: closed too
            return data
        if not chunk:
            return data
        data += chunk


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_stop_closes_the_listener_and_ends_the_thread() -> None:
    before = len(server_threads())
    server = LocalSMTPServer().start()
    port = server.port
    assert len(server_threads()) == before + 1

    server.stop()

    assert len(server_threads()) == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    server.stop()  # a second stop is harmless


def test_stop_closes_every_client_connection(sockets: list[socket.socket]) -> None:
    with LocalSMTPServer() as server:
        # 1st connection: the greeting hangs, and the client half-closes its side.
        server.script("GREETING", hang=True)
        half_closed = connect(server)
        sockets.append(half_closed)
        # 2nd: greeted, then idle.
        idle = connect(server)
        sockets.append(idle)
        assert read_line(idle).startswith(b"220 ")
        # 3rd: waiting for a reply to MAIL that never comes.
        server.script("MAIL", hang=True)
        hung = connect(server)
        sockets.append(hung)
        assert read_line(hung).startswith(b"220 ")
        hung.sendall(b"HELO client.test\r\n")
        assert read_line(hung).startswith(b"250 ")
        hung.sendall(b"MAIL FROM:<a@example.com>\r\n")
        half_closed.shutdown(socket.SHUT_WR)
        # Stop only once the server holds all three (MAIL is logged when it arrives).
        deadline = time.monotonic() + 5
        while not list(server.commands_named("MAIL")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [c[0] for c in server.commands_named("MAIL")] == [3]

        server.stop()

        assert read_to_end(half_closed) == b""
        assert read_to_end(idle) == b""
        assert read_to_end(hung) == b""  # no late reply to the hung MAIL either
        assert server.messages == []


def test_stop_closes_a_tls_connection_whose_client_never_reads(
    sockets: list[socket.socket],
) -> None:
    # The server's close_notify is never answered: stop() still ends the connection.
    before = len(server_threads())
    with LocalSMTPServer(tls="implicit") as server:
        raw = connect(server)
        sockets.append(raw)
        tls = server.client_ssl_context().wrap_socket(raw, server_hostname="localhost")
        sockets.append(tls)
        assert read_line(tls).startswith(b"220 ")

        server.stop()

    assert len(server_threads()) == before
    assert read_to_end(tls) == b""
