"""A counting SMTP sink for the outbox worker's crash tests (raw asyncio, in a thread).

It counts deliveries per (Message-ID, recipient) at the final dot - the instant a
real server takes responsibility - and records every Message-ID it saw in a DATA
body, even one that never ended. It can delay the reply to the final dot, and
tell the test when a delayed reply is pending, so a kill lands between the dot
and its reply.

:func:`start_worker` starts the real ``reliable-smtp worker`` against it, as the
crash and limit tests do.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

_MESSAGE_ID = re.compile(rb"^message-id:\s*<?([^>\r\n]+)>?", re.IGNORECASE)


class CountingSink:
    """``with CountingSink(seed=1, delay_share=0.05) as sink: ... sink.port``.

    ``delay_share`` of final dots get their reply after ``delay`` seconds;
    ``on_delayed_dot`` (if set) is called, from the server thread, when such a dot
    arrives (before the delay). ``refuse`` (if set) is called with the recipient
    at RCPT and returns a reply line to refuse it, or ``None``.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        delay_share: float = 0.0,
        delay: float = 0.3,
        pipelining: bool = True,
    ) -> None:
        self._rng = random.Random(seed)
        self.delay_share = delay_share
        self.delay = delay
        self.pipelining = pipelining
        self.on_delayed_dot: Callable[[], None] | None = None
        self.refuse: Callable[[str], str | None] | None = None
        self.refuse_data: Callable[[], str | None] | None = None
        self.port = 0
        self._lock = threading.Lock()
        self._deliveries: Counter[tuple[str, str]] = Counter()
        self._seen: set[str] = set()
        self._answered_data: set[str] = set()
        self.most_connections = 0
        """The most SMTP sessions open at once."""
        self.arrivals: list[float] = []
        """``time.monotonic()`` of every final dot, in order (the rate the server saw)."""
        self.delayed_dots = 0
        self.replies_pending = 0
        """Delayed replies to a final dot not yet written (a kill now lands between them)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    # -- what the test reads ---------------------------------------------------------

    @property
    def deliveries(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter(self._deliveries)

    @property
    def seen_in_data(self) -> set[str]:
        """Message-IDs of every DATA body begun, even one cut off before its dot."""
        with self._lock:
            return set(self._seen)

    @property
    def answered_data(self) -> set[str]:
        """Recipients of every transaction whose DATA got its 354 (the body may follow)."""
        with self._lock:
            return set(self._answered_data)

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> CountingSink:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def start() -> None:
                self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()

            loop.run_until_complete(start())
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="counting-sink", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the counting sink did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is None:
            return

        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            loop.stop()

        asyncio.run_coroutine_threadsafe(stop(), loop)
        assert self._thread is not None
        self._thread.join(10)

    # -- the SMTP session ------------------------------------------------------------

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        with self._lock:
            self.most_connections = max(self.most_connections, len(self._connections))
        try:
            writer.write(b"220 sink ESMTP\r\n")
            recipients: list[str] = []
            while True:
                line = await reader.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    extensions = [b"250-sink", b"250-8BITMIME"]
                    if self.pipelining:
                        extensions.append(b"250-PIPELINING")
                    writer.write(b"\r\n".join([*extensions, b"250 SMTPUTF8"]) + b"\r\n")
                elif verb == b"MAIL":
                    recipients = []
                    writer.write(b"250 2.1.0 ok\r\n")
                elif verb == b"RCPT":
                    address = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
                    refusal = self.refuse(address) if self.refuse else None
                    if refusal:
                        writer.write(refusal.encode() + b"\r\n")
                    else:
                        recipients.append(address)
                        writer.write(b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    refusal = self.refuse_data() if self.refuse_data else None
                    if refusal or not recipients:
                        writer.write((refusal or "554 5.5.1 no recipients").encode() + b"\r\n")
                        continue
                    with self._lock:
                        self._answered_data.update(recipients)
                    writer.write(b"354 go ahead\r\n")
                    if not await self._data(reader, writer, recipients):
                        return
                elif verb in (b"RSET", b"NOOP"):
                    writer.write(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"502 5.5.2 unknown command\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _data(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, recipients: list[str]
    ) -> bool:
        await writer.drain()
        message_id: str | None = None
        in_headers = True
        while True:
            line = await reader.readline()
            if not line:
                return False  # the client went away before the dot: nothing delivered
            if line == b".\r\n":
                break
            if in_headers:
                if line in (b"\r\n", b"\n"):
                    in_headers = False
                elif message_id is None:
                    match = _MESSAGE_ID.match(line)
                    if match:
                        message_id = match.group(1).decode().strip()
                        with self._lock:
                            self._seen.add(message_id)
        with self._lock:
            self.arrivals.append(time.monotonic())
            for recipient in recipients:
                self._deliveries[(message_id or "?", recipient)] += 1
            delayed = self._rng.random() < self.delay_share
            if delayed:
                self.delayed_dots += 1
                self.replies_pending += 1
        if delayed:
            try:
                if self.on_delayed_dot is not None:
                    self.on_delayed_dot()
                await asyncio.sleep(self.delay)
            finally:
                with self._lock:
                    self.replies_pending -= 1
        writer.write(b"250 2.0.0 queued\r\n")
        return True


def worker_command(url: str, port: int, *extra: str) -> list[str]:
    """``reliable-smtp worker`` for ``url``, sending to a plain sink on 127.0.0.1:``port``."""
    return [
        sys.executable, "-m", "reliable_smtp", "worker", "--outbox", url,
        "--host", "127.0.0.1", "--port", str(port), "--tls", "none", "--env-file", "none",
        *extra,
    ]  # fmt: skip


def worker_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``RELIABLE_SMTP_*``, plus ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RELIABLE_SMTP_")}
    environ.update(env or {})
    return environ


def start_worker(
    url: str, port: int, cwd: Path, *extra: str, lease: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A worker process with 4 connections, a short lease and a 50 ms poll (stderr piped)."""
    return subprocess.Popen(
        worker_command(url, port, "--lease", lease, "--poll", "0.05", *extra),
        cwd=cwd,
        env=worker_environment({**(env or {}), "RELIABLE_SMTP_MAX_CONNECTIONS": "4"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
