"""The one place that reaches below aiosmtplib's public command API.

aiosmtplib is used for everything about a connection - connect, TLS, EHLO,
AUTH, RSET, NOOP, QUIT - but not for the mail transaction itself, for two
reasons it cannot serve (see the reference, section B.1 and C.2):

* its ``data()`` raises the same exception for a refused DATA command and for a
  link lost after the final dot, yet those mean opposite things (nothing was
  delivered / the server may have the message);
* it never pipelines, and its protocol drops a reply that arrives while an
  earlier one is still waiting to be picked up, so PIPELINING (RFC 2920) cannot
  be layered on top of it.

So for the length of one transaction :class:`Exchange` owns the connection's
incoming bytes: it is the transport's protocol (``set_protocol``; aiosmtplib's
protocol is put back afterwards, and hears of a lost link and of flow control
meanwhile), writes commands to the transport itself - message content in views,
with flow control, never copied whole (:meth:`Exchange.write_body`) - and parses
replies from its own buffer - any number of them, in order, each with its own
timeout. Replies come back as the library's
:class:`~reliable_smtp._replies.Reply`; a reply that is not there comes back as
the transaction's own failures (:class:`~._transaction.LinkLostError`,
:class:`~._transaction.ReplyTimeoutError`, :class:`~._transaction.GarbledReplyError`), which the
:class:`~._transaction.Transaction` interprets. aiosmtplib's exceptions are never
raised from here.

Written against aiosmtplib 5.1.3 (``SMTP.protocol``, ``SMTPProtocol.transport``,
its ``connection_lost``, ``pause_writing`` and ``resume_writing``,
which an attached exchange passes on). ``pyproject.toml`` pins ``aiosmtplib<6`` and
``tests/test_wire.py`` fails if an upgrade changes what this relies on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from types import TracebackType
from typing import Any

from aiosmtplib import SMTP

from .._replies import Reply
from .._wire_form import wire_form
from ._alarm import Alarm
from ._transaction import GarbledReplyError, LinkLostError, ReplyTimeoutError, WireError

__all__ = [
    "BODY_PIECE",
    "FINAL_DOT",
    "Exchange",
    "bdat_group",
    "canonical",
    "dot_stuff",
    "dot_stuffed",
    "transcript",
    "transcript_line",
]

#: The SMTP dialogue, line by line, at DEBUG. AUTH arguments are never logged, and a
#: server's reply to AUTH reaches it already redacted (``send_credentials`` in smtp.py,
#: the one way the library logs in, removes every wire form of the secret first).
transcript = logging.getLogger("reliable_smtp.transcript")


def transcript_line(
    transport_name: str, direction: str, text: str, *, elapsed: float | None = None
) -> None:
    """Log one line of the dialogue (``direction``: ``">"`` client, ``"<"`` server)."""
    if transcript.isEnabledFor(logging.DEBUG):
        timing = f" ({elapsed * 1000:.1f} ms)" if elapsed is not None else ""
        transcript.debug(
            "%s %s %s%s",
            transport_name,
            direction,
            text,
            timing,
            extra={"server": transport_name, "direction": direction, "elapsed": elapsed},
        )


# RFC 5321 §4.5.3.1.5 allows 512-octet reply lines; servers exceed it, aiosmtplib
# accepts up to 8 KiB a line and 32 KiB a reply. So do we.
MAX_LINE = 8192
MAX_REPLY = 4 * MAX_LINE

_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)

#: The end of the message (RFC 5321 §4.1.1.4), the last chunk ``dot_stuffed`` returns.
FINAL_DOT = b".\r\n"
#: Message content goes to the transport in views of at most this many bytes, and
#: the next one only once the socket has taken all but this much: on Python 3.11 a
#: write the socket cannot take at once is copied into the transport's buffer, so one
#: write of a 35 MB message would hold it twice (three times, with the slice taken).
BODY_PIECE = 256 * 1024


def canonical(content: bytes) -> bytes:
    """``content`` with CRLF line endings only, ending in CRLF: the bytes the server keeps."""
    if wire_form(content) is not None:
        return content  # the renderer's own output, CRLF only: nothing to check
    return _canonical(content)


def _canonical(content: bytes) -> bytes:
    body = content
    # Most content is already canonical; byte counts are far cheaper than a regex.
    crlf = body.count(b"\r\n")
    if body.count(b"\n") != crlf or body.count(b"\r") != crlf:
        body = _LINE_ENDINGS.sub(b"\r\n", body)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body


def dot_stuffed(content: bytes) -> tuple[bytes, bytes]:
    """What DATA sends: ``content`` CRLF-normalised with leading dots doubled (RFC 5321
    §4.5.2), and the final dot - as two chunks, to be written one after the other.

    Nothing is copied when ``content`` is already canonical without a line that starts
    with a dot (every rendered attachment, most messages): the body chunk is ``content``.
    Nothing is even read when the renderer vouches for that (:mod:`.._wire_form`).
    """
    form = wire_form(content)
    if form is None:
        body = _canonical(content)
        dotted = body.startswith(b".") or b"\n." in body
    else:
        body, dotted = content, not form.dot_free
    if dotted:
        body = _LEADING_DOT.sub(b"..", body)
    return body, FINAL_DOT


def dot_stuff(content: bytes) -> bytes:
    """:func:`dot_stuffed` in one piece (a copy of the whole message; for tests and tools)."""
    return b"".join(dot_stuffed(content))


def bdat_group(envelope_commands: bytes, content: bytes) -> tuple[bytes, bytes]:
    """The CHUNKING group: MAIL and RCPT commands, ``BDAT <n> LAST``, and the chunk.

    RFC 3030: the chunk is exactly ``n`` octets, sent as they are - no dot-stuffing,
    no final dot. Returns the command part and the chunk (written together).
    """
    chunk = canonical(content)
    return envelope_commands + b"BDAT %d LAST\r\n" % len(chunk), chunk


class Exchange(asyncio.Protocol):
    """Write commands and read replies on an aiosmtplib connection, pipelined or not.

    Use as a context manager around one transaction::

        with Exchange(smtp) as wire:
            wire.write(b"MAIL FROM:<a@x>\\r\\nRCPT TO:<b@y>\\r\\nDATA\\r\\n")
            mail, rcpt, data = [await wire.read(timeout=60) for _ in range(3)]
    """

    def __init__(self, smtp: SMTP, *, transport_name: str = "") -> None:
        protocol = smtp.protocol
        if protocol is None or not smtp.is_connected:
            raise LinkLostError("Server not connected")
        self._smtp = smtp
        self._protocol: Any = protocol
        self._buffer = bytearray()
        self._lost: WireError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._server = transport_name
        self._written_at = time.monotonic()
        self._transport: asyncio.BaseTransport | None = None
        self._alarm = Alarm(self._time_out)
        # Made in a send on the loop it serves; looked up once (on 3.11 every
        # get_running_loop() is a getpid() system call).
        self._loop = asyncio.get_running_loop()

    # -- ownership of the incoming bytes -------------------------------------------------

    def __enter__(self) -> Exchange:
        return self.attach()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    def attach(self) -> Exchange:
        """Take the connection's incoming bytes over (until :meth:`detach`).

        The exchange becomes the transport's protocol (``set_protocol``, the public
        asyncio call, which uvloop honours too: it caches the protocol's methods, so
        replacing ``data_received`` on aiosmtplib's protocol instance would go unseen).
        Across transactions (:mod:`._handoff`) one exchange stays attached from one
        message's final dot to the end of the chain, so no reply is lost in between.
        """
        transport = self._protocol.transport
        if transport is None:
            raise LinkLostError("Server not connected")
        self._transport = transport
        transport.set_protocol(self)
        return self

    def detach(self) -> None:
        """Give the incoming bytes back to aiosmtplib (RSET, NOOP, QUIT go through it)."""
        self._alarm.close()
        transport = self._transport
        if transport is not None:
            self._transport = None
            transport.set_protocol(self._protocol)

    # -- the protocol callbacks while attached (asyncio.Protocol) ----------------------

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        self._wake()

    def eof_received(self) -> bool:
        self._lost = self._lost or LinkLostError("Unexpected EOF received")
        self._wake()
        return False  # let the transport close, as aiosmtplib does

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is None:
            self._lost = LinkLostError("Connection lost")
            if exc is not None:
                self._lost.__cause__ = exc
        self._wake()
        self._protocol.connection_lost(exc)  # aiosmtplib forgets the connection

    def pause_writing(self) -> None:
        self._protocol.pause_writing()  # aiosmtplib's flow control stays in step

    def resume_writing(self) -> None:
        # The socket took what was buffered: write_body() goes on (aiosmtplib's
        # flow control still sees it).
        self._protocol.resume_writing()
        self._wake()

    @property
    def leftover(self) -> bool:
        """True when unread bytes remain: the dialogue is out of step; drop the connection."""
        return bool(self._buffer)

    def close_connection(self) -> None:
        """Drop the connection without QUIT (after a 421, or when out of step)."""
        self._smtp.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- writing and reading -------------------------------------------------------------

    def write(self, data: bytes, *, body: bool = False) -> None:
        """Queue ``data`` on the socket. Raises if the connection is already gone.

        ``body`` marks message content, which the transcript summarises by size.
        """
        transport = self._protocol.transport
        if self._lost is not None or transport is None or transport.is_closing():
            raise LinkLostError("Connection lost")
        transport.write(data)
        self._written_at = time.monotonic()
        if transcript.isEnabledFor(logging.DEBUG):
            if body:
                transcript_line(self._server, ">", f"<message: {len(data)} bytes, then .>")
            else:
                for line in data.decode("utf-8", "replace").splitlines():
                    transcript_line(self._server, ">", line)

    def write_group(self, commands: bytes, chunk: bytes) -> memoryview:
        """Queue ``commands`` and the start of the message ``chunk`` in one write (CHUNKING).

        Returns the rest of the chunk, empty unless it is longer than
        :data:`BODY_PIECE`: :meth:`write_rest` sends it. Raises
        :class:`LinkLostError` - with nothing written - if the connection is already
        gone; otherwise the commands and the start of the chunk are on their way.
        """
        transport = self._protocol.transport
        if self._lost is not None or transport is None or transport.is_closing():
            raise LinkLostError("Connection lost")
        view = memoryview(chunk)
        # One call, so commands and chunk leave in as few segments as the socket allows.
        # Only the first piece: on Python 3.10/3.11 writelines() joins what it is given,
        # a copy of the whole message.
        transport.writelines((commands, view[:BODY_PIECE]))
        self._written_at = time.monotonic()
        if transcript.isEnabledFor(logging.DEBUG):
            for line in commands.decode("utf-8", "replace").splitlines():
                transcript_line(self._server, ">", line)
            transcript_line(self._server, ">", f"<message: {len(chunk)} bytes>")
        return view[BODY_PIECE:]

    def write_end(self, content: bytes, commands: bytes) -> None:
        """Queue the last ``content`` of a message, its final dot and the next message's
        ``commands`` in one write (pipelining across messages, :mod:`._handoff`).

        One write, so they reach the server together and it answers them together.
        Raises :class:`LinkLostError` - with nothing written - if the connection is
        already gone.
        """
        transport = self._protocol.transport
        if self._lost is not None or transport is None or transport.is_closing():
            raise LinkLostError("Connection lost")
        transport.writelines((content, FINAL_DOT, commands))
        self._written_at = time.monotonic()
        if transcript.isEnabledFor(logging.DEBUG):
            end = f"<message: {len(content)} bytes, then .>" if content else "."
            transcript_line(self._server, ">", end)
            for line in commands.decode("utf-8", "replace").splitlines():
                transcript_line(self._server, ">", line)

    async def write_body(self, *chunks: bytes, timeout: float) -> None:
        """Queue message content (``chunks``, in order) on the socket without copying it.

        Written in views of :data:`BODY_PIECE` bytes, each once the socket has taken
        the ones before (but :data:`BODY_PIECE` bytes), so the transport never holds a
        large message a second time. A message that fits goes out in one write, as
        before. Raises :class:`LinkLostError` if the connection is or goes away and
        :class:`ReplyTimeoutError` if the socket takes nothing for ``timeout`` seconds
        - either way the rest of the content was never written.
        """
        size = await self._write_pieces(chunks, timeout)
        if transcript.isEnabledFor(logging.DEBUG):
            dot = len(chunks) > 1 and chunks[-1] == FINAL_DOT
            then, end = (", then .", len(FINAL_DOT)) if dot else ("", 0)
            transcript_line(self._server, ">", f"<message: {size - end} bytes{then}>")

    async def write_rest(self, rest: memoryview, *, timeout: float) -> None:
        """What :meth:`write_group` left of its chunk, as :meth:`write_body` writes content.

        Nothing to do (and no wait) when the chunk fitted in the group's write.
        """
        await self._write_pieces((rest,), timeout)

    async def _write_pieces(self, chunks: tuple[bytes | memoryview, ...], timeout: float) -> int:
        transport = self._protocol.transport
        loop = self._loop
        size = 0
        for chunk in chunks:
            view = memoryview(chunk)
            for start in range(0, len(view), BODY_PIECE):
                # Wait *before* each piece, never after: once the last piece (the final
                # dot) is queued it may reach the server even if this send gives up, so
                # nothing may fail after it - the wait for the final reply decides then
                # (a timeout there is ambiguous, as it must be).
                while transport is not None and transport.get_write_buffer_size() > BODY_PIECE:
                    if self._lost is not None:
                        raise self._lost
                    await self._woken(loop, loop.time() + timeout)
                if self._lost is not None or transport is None or transport.is_closing():
                    raise LinkLostError("Connection lost")
                transport.write(view[start : start + BODY_PIECE])
                self._written_at = time.monotonic()
            size += len(view)
        return size

    async def _woken(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Wait until bytes arrive, the socket drains or the link goes; until ``deadline``
        (``loop.time()``) at most."""
        # A bare future and the exchange's one alarm, not asyncio.wait_for() (a task per
        # reply) nor a timer per wait (most end long before their deadline).
        waiter = self._waiter = loop.create_future()
        self._alarm.set(loop, deadline)
        try:
            await waiter
        finally:
            self._alarm.clear()
            self._waiter = None

    def _time_out(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ReplyTimeoutError("Timed out waiting for server response"))

    async def read(self, *, timeout: float) -> Reply:
        """The next reply, waiting at most ``timeout`` seconds for it.

        Instead of a reply: :class:`LinkLostError`, :class:`ReplyTimeoutError` or
        :class:`GarbledReplyError`.
        """
        loop = self._loop
        deadline = loop.time() + timeout
        while True:
            reply = self._parse()
            if reply is not None:
                if transcript.isEnabledFor(logging.DEBUG):
                    transcript_line(
                        self._server,
                        "<",
                        str(reply),
                        elapsed=time.monotonic() - self._written_at,
                    )
                return reply
            if self._lost is not None:
                raise self._lost
            if deadline <= loop.time():
                raise ReplyTimeoutError("Timed out waiting for server response")
            await self._woken(loop, deadline)

    def _parse(self) -> Reply | None:
        """Take one complete (possibly multi-line) reply off the buffer, if there is one."""
        buffer = self._buffer
        end = buffer.find(b"\n")
        if 0 <= end < _KNOWN_LINE and buffer[3:4] == b" ":
            # One line, the common case: a server repeats its replies to MAIL, RCPT and
            # DATA word for word, so most are known already.
            line = bytes(buffer[: end + 1])
            reply = _known.get(line)
            if reply is None:
                reply = _single_line(line)
                if len(_known) >= _KNOWN_REPLIES:
                    _known.clear()  # unique texts (queue ids) must not pile up
                _known[line] = reply
            del buffer[: end + 1]
            return reply
        return self._parse_lines()

    def _parse_lines(self) -> Reply | None:
        buffer = self._buffer
        offset = 0
        code = -1
        lines: list[bytes] = []
        while True:
            end = buffer.find(b"\n", offset)
            if end == -1:
                if len(buffer) - offset > MAX_LINE or len(buffer) > MAX_REPLY:
                    raise GarbledReplyError("Response too long")
                return None
            line = bytes(buffer[offset : end + 1])
            offset = end + 1
            if len(line) > MAX_LINE:
                raise GarbledReplyError("Response too long")
            _check_line(line)
            if lines and int(line[:3]) != code:
                # RFC 5321 §4.2.1: every line of a reply has the same code. A reply that
                # says 250 and 550 says nothing: never pick one of them.
                raise GarbledReplyError(
                    f"Malformed SMTP reply: a {code} line followed by a {line[:3].decode()} line"
                )
            code = int(line[:3])
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                del buffer[:offset]
                text = b"\n".join(lines).decode("utf-8", "surrogateescape")
                return Reply.from_server(code, text)


#: Single-line replies remembered, by their bytes: immutable, so shared by every
#: connection (a few hundred short lines at most).
_known: dict[bytes, Reply] = {}
_KNOWN_REPLIES = 256
#: Longer lines are parsed each time (and never remembered).
_KNOWN_LINE = 200


def _check_line(line: bytes) -> None:
    if not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        raise GarbledReplyError(f"Malformed SMTP response line: {text}")


def _single_line(line: bytes) -> Reply:
    """The reply of one complete line that has a space after its code."""
    _check_line(line)
    text = line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape")
    return Reply.from_server(int(line[:3]), text)
