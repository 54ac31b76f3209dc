"""A real SMTP server on 127.0.0.1 for tests, examples and development.

:class:`LocalSMTPServer` runs aiosmtpd in a thread of its own (its own event
loop), so a synchronous :class:`~reliable_smtp.Mailer` and an async test can
both talk to it over a real socket. It binds a free port, can speak STARTTLS or
implicit TLS with a throw-away certificate authority (trustme), can require
AUTH, records every message it accepts, and can be scripted to misbehave at
any point of the dialogue: a chosen reply, a dropped connection, or a hang until
the client gives up.

Needs the ``testing`` extra: ``pip install 'reliable-smtp[testing]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

from .._transports._session import session_url
from ._smtpd import (
    _ALL_AUTH,
    AuthResult,
    Command,
    Fault,
    LoginPassword,
    ReceivedMessage,
    _Handler,
    _ScriptedSMTP,
    trustme,
)

__all__ = ["Fault", "LocalSMTPServer", "ReceivedMessage", "ServerTLS"]

ServerTLS = Literal["none", "starttls", "implicit"]

logger = logging.getLogger("reliable_smtp.testing")

#: How long stop() lets cancelled handlers and TLS closes finish before aborting
#: what is left: only a client that never reads (so never answers close_notify)
#: ever makes it wait this long.
_SHUTDOWN_GRACE = 0.5


class LocalSMTPServer:
    """A real SMTP server on 127.0.0.1, in a thread of its own.

    ::

        with LocalSMTPServer(tls="starttls", auth={"app": "secret"}) as server:
            transport = SMTPTransport("127.0.0.1", server.port, tls="starttls",
                                      ssl_context=server.client_ssl_context(),
                                      username="app", password="secret")
            ...
            server.messages[0].recipients

    ``tls``: ``"none"``, ``"starttls"`` (STARTTLS offered and required before
    MAIL) or ``"implicit"`` (TLS from the first byte, like port 465).
    ``auth``: username -> password; when given, AUTH PLAIN/LOGIN is required.
    ``size_limit``: advertised SIZE (0 = none). ``smtputf8``: advertise SMTPUTF8.
    ``pipelining``: advertise PIPELINING (RFC 2920). ``oauth_tokens``: username ->
    valid access token for AUTH XOAUTH2 (a wrong token gets the error challenge,
    then 535). ``auth_mechanisms``: offer only these (``"PLAIN"``, ``"LOGIN"``,
    ``"XOAUTH2"``). Without ``auth`` or ``oauth_tokens`` AUTH is not advertised, and
    answered with 502. ``on_message`` is called with each :class:`ReceivedMessage`
    as soon as it is recorded, on the server's thread and before the client gets its
    reply (so it has run when ``send()`` returns): keep it quick. An exception in it
    is logged, and the message is still accepted.
    """

    def __init__(
        self,
        *,
        tls: ServerTLS = "none",
        auth: Mapping[str, str] | None = None,
        size_limit: int = 33_554_432,
        smtputf8: bool = True,
        pipelining: bool = False,
        oauth_tokens: Mapping[str, str] | None = None,
        auth_mechanisms: Iterable[str] | None = None,
        hostname: str = "localhost",
        host: str = "127.0.0.1",
        port: int = 0,
        on_message: Callable[[ReceivedMessage], object] | None = None,
    ) -> None:
        if tls not in ("none", "starttls", "implicit"):
            raise ValueError(f"tls must be 'none', 'starttls' or 'implicit', not {tls!r}")
        self.tls: ServerTLS = tls
        self._credentials = dict(auth or {})
        self._oauth_tokens = dict(oauth_tokens or {})
        offered = {m.upper() for m in auth_mechanisms} if auth_mechanisms is not None else None
        if offered is not None and not offered <= set(_ALL_AUTH):
            raise ValueError(f"auth_mechanisms must be among {', '.join(_ALL_AUTH)}")
        self._auth_excluded = tuple(
            m
            for m in _ALL_AUTH
            if not self.requires_auth or (offered is not None and m not in offered)
        )
        self._tokens_seen: list[str] = []
        self.pipelining = pipelining
        self._size_limit = size_limit
        self._smtputf8 = smtputf8
        self.hostname = hostname
        self.host = host
        self._requested_port = port
        self.port = 0
        self._handler = _Handler(self)
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self.on_message = on_message
        """Called with each message received (see the class docstring); may be reassigned."""
        self._commands: list[tuple[int, str, str]] = []
        self._faults: list[Fault] = []
        self._connections = 0
        self._open: set[_ScriptedSMTP] = set()
        self._auth_attempts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._released = asyncio.Event()
        self._all_closed: asyncio.Event | None = None
        self._shutting_down: asyncio.Task[None] | None = None
        self._ca = trustme.CA()
        self._server_cert = self._ca.issue_cert(hostname, "127.0.0.1", "localhost")
        self._tmp = tempfile.TemporaryDirectory(prefix="reliable-smtp-server-")
        #: The PEM file of the CA that signed this server's certificate (for
        #: ``ca_file=`` / ``RELIABLE_SMTP_CA_FILE``); removed when the server stops.
        self.ca_file = Path(self._tmp.name) / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))

    # -- what the tests read -------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Messages received so far (a copy)."""
        with self._lock:
            return list(self._messages)

    @property
    def commands(self) -> list[tuple[int, str, str]]:
        """Every command seen, as ``(connection, COMMAND, argument)``; AUTH without credentials."""
        with self._lock:
            return list(self._commands)

    @property
    def connections(self) -> int:
        """How many connections were opened to the server."""
        with self._lock:
            return self._connections

    @property
    def oauth_tokens_seen(self) -> list[str]:
        """Every XOAUTH2 access token presented, in order (tests check refreshes)."""
        with self._lock:
            return list(self._tokens_seen)

    @property
    def requires_auth(self) -> bool:
        """Whether AUTH is offered and required (credentials or OAuth tokens were given)."""
        return bool(self._credentials or self._oauth_tokens)

    @property
    def auth_attempts(self) -> int:
        with self._lock:
            return self._auth_attempts

    def deliveries_to(self, recipient: str) -> int:
        """How many copies ``recipient`` received (to check "never twice")."""
        return sum(recipient in m.recipients for m in self.messages)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's throw-away CA (verification stays on)."""
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context

    # -- scripting -----------------------------------------------------------------------

    def script(
        self,
        command: Command,
        reply: str | None = None,
        *,
        disconnect: bool = False,
        hang: bool = False,
        recipient: str | None = None,
        times: int | None = 1,
    ) -> Fault:
        """Make the server misbehave at ``command``.

        Exactly one of ``reply`` (a full reply line such as ``"451 4.7.1 Try later"``;
        a 421 also closes the connection; for ``AUTH``, ``{argument}`` in it is replaced
        by everything the client sent during the exchange - its initial response and
        every answer to a challenge, base64 as on the wire - after the mechanism ran:
        a server that echoes secrets), ``disconnect`` (close without replying) or
        ``hang`` (never reply; released when the server stops). ``recipient`` limits
        an RCPT fault to one address. ``times``: how often it fires (``None``: always).
        Faults fire in the order they were scripted.
        """
        if sum((reply is not None, disconnect, hang)) != 1:
            raise ValueError("give exactly one of reply=, disconnect=True or hang=True")
        fault = Fault(
            command, reply=reply, disconnect=disconnect, hang=hang, recipient=recipient, times=times
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def drop_connections(self) -> None:
        """Close every open client connection without a word, as an idle timeout or a
        restart would. Waits until they are closed."""
        loop = self._loop
        if loop is None:
            return
        done = threading.Event()

        def close_all() -> None:
            for protocol in list(self._open):
                protocol._close_now()
            done.set()

        loop.call_soon_threadsafe(close_all)
        done.wait(timeout=5)

    def clear(self) -> None:
        """Forget received messages, commands and faults."""
        with self._lock:
            self._messages.clear()
            self._commands.clear()
            self._faults.clear()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LocalSMTPServer:
        if self._thread is not None:
            return self
        # aiosmtpd logs a deprecation notice on every successful AUTH and a warning
        # for AUTH over implicit TLS; neither helps anyone reading test output.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, errors), name="reliable-smtp-local-server", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("the local SMTP server did not start within 10 s")
        if errors:
            raise RuntimeError(f"the local SMTP server could not start: {errors[0]}") from errors[0]
        return self

    def stop(self) -> None:
        """Stop the server; it returns once nothing listens on the port, every client
        connection is closed and the server's thread has ended."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(self._stop_in_loop)
        # The thread ends as soon as every connection is closed and the loop has
        # stopped (see _shut_down): no fixed wait.
        thread.join(timeout=10)
        self._thread = None
        self._loop = None
        self._tmp.cleanup()

    def __enter__(self) -> LocalSMTPServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``scheme://host:port`` of this server (the transport's ``name``)."""
        return session_url(self.tls, self.host, self.port)

    @property
    def settings_url(self) -> str:
        """A ``RELIABLE_SMTP_URL`` for this server that also trusts its throw-away CA.

        With TLS it carries ``?ca_file=`` (:attr:`ca_file`), so
        ``Mailer.from_env(url=server.settings_url)`` verifies the server's certificate
        without further settings. Credentials are not in it: pass ``username=`` and
        ``password=`` (or set ``RELIABLE_SMTP_USERNAME`` / ``_PASSWORD``).
        """
        if self.tls == "none":
            return self.url
        return f"{self.url}?ca_file={quote(str(self.ca_file), safe='/')}"

    # -- internals (server thread) -------------------------------------------------------

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._released = asyncio.Event()
            self._server = loop.run_until_complete(self._serve())
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            errors.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _server_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_cert.configure_cert(context)
        return context

    async def _serve(self) -> asyncio.base_events.Server:
        tls_context = self._server_ssl_context() if self.tls != "none" else None
        loop = asyncio.get_running_loop()

        def factory() -> _ScriptedSMTP:
            with self._lock:
                self._connections += 1
                number = self._connections
            with warnings.catch_warnings():
                # "Requiring AUTH while not requiring TLS": with implicit TLS it is encrypted.
                warnings.simplefilter("ignore", UserWarning)
                return self._new_protocol(number, tls_context, loop)

        return await loop.create_server(
            factory,
            self.host,
            self._requested_port,
            ssl=tls_context if self.tls == "implicit" else None,
        )

    def _new_protocol(
        self, number: int, tls_context: ssl.SSLContext | None, loop: asyncio.AbstractEventLoop
    ) -> _ScriptedSMTP:
        return _ScriptedSMTP(
            self,
            number,
            hostname=self.hostname,
            data_size_limit=self._size_limit or None,
            enable_SMTPUTF8=self._smtputf8,
            tls_context=tls_context if self.tls == "starttls" else None,
            require_starttls=self.tls == "starttls",
            authenticator=self._authenticate if self._credentials or self._oauth_tokens else None,
            auth_required=bool(self._credentials or self._oauth_tokens),
            # Without credentials nobody can log in: do not advertise AUTH at all (a
            # client that tries anyway gets 502, not a misleading "535 bad password").
            auth_exclude_mechanism=self._auth_excluded,
            # With implicit TLS the whole connection is encrypted, but aiosmtpd
            # only knows about STARTTLS: tell it not to wait for one.
            auth_require_tls=self.tls == "starttls",
            loop=loop,
        )

    def _stop_in_loop(self) -> None:
        # Kept on self: the loop holds only a weak reference to a task.
        self._shutting_down = asyncio.get_running_loop().create_task(self._shut_down())

    async def _shut_down(self) -> None:
        """Stop listening, end every connection and task, then stop the loop.

        Like aiosmtpd's ``Controller.stop`` (cancel every task, stop the loop, close
        the listener), but it also waits until each client connection has actually
        closed, so nothing is left half-open when the thread ends, and it takes no
        longer than that: ``stop()`` returns as soon as the server is down.
        """
        loop = asyncio.get_running_loop()
        try:
            await self._end_everything(loop)
        finally:
            loop.stop()

    async def _end_everything(self, loop: asyncio.AbstractEventLoop) -> None:
        self._released.set()  # hung faults stop waiting
        if self._server is not None:
            self._server.close()  # the listening socket closes now: no new connections
        this = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks(loop) if task is not this]
        for task in tasks:
            task.cancel()  # aiosmtpd's handler closes its connection when cancelled
        if tasks:
            await asyncio.wait(tasks, timeout=_SHUTDOWN_GRACE)
        # Connections no task holds (one the client half-closed, say) are closed
        # here. A TCP connection is gone one loop iteration after close(); a TLS one
        # once the client has answered close_notify. A client that never answers (a
        # blocking socket nobody reads) gets the connection aborted.
        for protocol in list(self._open):
            if protocol.transport is not None:
                protocol.transport.close()
        if self._open:
            self._all_closed = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), _SHUTDOWN_GRACE)
        for protocol in list(self._open):
            if isinstance(protocol.transport, asyncio.WriteTransport):
                protocol.transport.abort()
        for _ in range(10):  # abort() reports connection_lost within an iteration or two
            if not self._open:
                break
            await asyncio.sleep(0)
        if self._server is not None:
            await self._server.wait_closed()

    def _forget(self, protocol: _ScriptedSMTP) -> None:
        self._open.discard(protocol)
        if not self._open and self._all_closed is not None:
            self._all_closed.set()

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        with self._lock:
            self._auth_attempts += 1
        if isinstance(auth_data, LoginPassword):
            username = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            if self._credentials.get(username) == password:
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def _take_fault(self, command: str, arg: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(command, arg):
                    fault.fired += 1
                    return fault
        return None

    def _log_command(self, connection: int, command: str, arg: str | None) -> None:
        with self._lock:
            self._commands.append((connection, command, arg or ""))

    def _record(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._messages.append(message)
        callback = self.on_message
        if callback is not None:
            try:
                callback(message)
            except Exception:
                # The callback is the observer's: the message stays accepted and recorded.
                logger.exception("LocalSMTPServer on_message callback %r raised", callback)

    def commands_named(self, name: str) -> Iterator[tuple[int, str, str]]:
        """The logged commands called ``name`` (``"RSET"``, ``"MAIL"``...)."""
        return (c for c in self.commands if c[1] == name)
