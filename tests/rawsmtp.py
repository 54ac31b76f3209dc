"""A raw asyncio SMTP server for fault injection (not the library's LocalSMTPServer).

Every answer comes from a ``decide(session, verb, argument)`` function, so a test
can misbehave at any command: delay a reply, answer nonsense, close silently. The
server keeps the facts the delivery-semantics tests assert on:

* ``deliveries[(message_id, recipient)]`` - how many times the server *kept* a
  message for a recipient (decided when the final dot arrives, before any reply,
  which may then be delayed, garbled or never sent);
* ``open`` - connections open right now (a leak shows as ``open > 0`` after the
  client's ``aclose()``); ``opened`` - how many were accepted;
* ``commands`` - every command received, with its connection's number;
* ``across`` - final dots that arrived with the next command right behind them, in the
  same read: the client wrote the next transaction before the dot's reply (pipelining
  across messages, RFC 2920 §3.1).

A connection for which ``chunking(number)`` is true also offers CHUNKING (RFC 3030):
``BDAT <n> [LAST]`` chunks are read exactly, refused with 503 without an accepted
MAIL and 554 without an accepted RCPT (as Postfix does), and the reply to the LAST
chunk is decided as ``DATA_END`` - the same faults as for the final dot.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from reliable_smtp._transports.smtp import SMTPTransport

__all__ = ["Answer", "RawSMTPServer", "Session", "raw_transport", "wait_until"]

_MESSAGE_ID = re.compile(rb"^message-id:\s*(\S+)", re.IGNORECASE | re.MULTILINE)
_PATH = re.compile(rb"<([^>]*)>")


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """What the server does with one command."""

    reply: bytes | None = None
    """The bytes to send (CRLF included); ``None``: no reply."""
    delay: float = 0.0
    """Seconds to wait before replying (or closing)."""
    close: bool = False
    """Close the connection after the (optional) reply."""
    keep: bool | None = None
    """For the final dot: whether the server keeps the message (default: a 2xx reply)."""
    hold: bool = False
    """Count the reply (as a real server does) but send it only with the next one not
    held: a client waiting for it before writing more would wait forever."""


@dataclass(slots=True)
class Session:
    """One client connection, as the deciding function sees it."""

    number: int
    pipelining: bool = False
    chunking: bool = False
    transactions: int = 0
    """Final dots received on this connection so far (before the current one)."""
    in_transaction: bool = False
    """A MAIL was accepted and the transaction has not ended."""
    accepted: list[str] = field(default_factory=list)
    """Recipients given a 2xx in the current transaction."""
    message_id: str = ""
    """Of the message whose final dot is being answered."""
    held: bytearray = field(default_factory=bytearray)
    """Replies held back (``Answer.hold``), sent before the next reply."""


Decide = Callable[[Session, str, bytes], Answer]

OK = {
    "MAIL": b"250 2.1.0 Ok\r\n",
    "RCPT": b"250 2.1.5 Ok\r\n",
    "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "DATA_END": b"250 2.0.0 Ok: queued\r\n",
    "RSET": b"250 2.0.0 Ok\r\n",
    "NOOP": b"250 2.0.0 Ok\r\n",
    "QUIT": b"221 2.0.0 Bye\r\n",
}


def normal(session: Session, verb: str, argument: bytes) -> Answer:
    """The well-behaved answer to ``verb``."""
    if verb == "GREETING":
        return Answer(reply=b"220 raw.test ESMTP\r\n")
    if verb == "EHLO":
        extensions = b"250-PIPELINING\r\n" if session.pipelining else b""
        if session.chunking:
            extensions += b"250-CHUNKING\r\n"
        return Answer(reply=b"250-raw.test\r\n" + extensions + b"250 8BITMIME\r\n")
    if verb == "QUIT":
        return Answer(reply=OK["QUIT"], close=True)
    return Answer(reply=OK.get(verb, b"502 5.5.2 Error: command not recognized\r\n"))


class RawSMTPServer:
    """Start with ``await server.start()``; stop with ``await server.stop()``."""

    def __init__(
        self,
        decide: Decide = normal,
        *,
        pipelining: Callable[[int], bool] = lambda n: False,
        chunking: Callable[[int], bool] = lambda n: False,
    ) -> None:
        self.decide = decide
        self.pipelining = pipelining
        self.chunking = chunking
        self.deliveries: Counter[tuple[str, str]] = Counter()
        self.open = 0
        self.opened = 0
        self.commands: list[tuple[int, str, bytes]] = []
        """(connection number, verb, argument) of every command received."""
        self.across = 0
        """Final dots followed at once by the next command (already in the read buffer)."""
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    async def start(self) -> RawSMTPServer:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self.opened += 1
        self.open += 1
        session = Session(
            self.opened,
            pipelining=self.pipelining(self.opened),
            chunking=self.chunking(self.opened),
        )
        try:
            await self._converse(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            self.open -= 1
            self._sessions.discard(task)

    async def _answer(
        self,
        session: Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        answer: Answer,
    ) -> bool:
        """Carry out ``answer``; False when the connection is to end."""
        if answer.hold and answer.reply:
            session.held += answer.reply
            return not answer.close
        if answer.delay:
            # A delayed reply still notices the client hanging up, as a real server's
            # socket would: the session (and ``open``) ends then, not after the delay.
            loop = asyncio.get_running_loop()
            until = loop.time() + answer.delay
            while loop.time() < until:
                if reader.at_eof():
                    return False
                await asyncio.sleep(min(0.01, until - loop.time()))
        if answer.reply:
            writer.write(bytes(session.held) + answer.reply)
            session.held.clear()
            await writer.drain()
        return not answer.close

    async def _converse(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not await self._answer(session, reader, writer, self.decide(session, "GREETING", b"")):
            return
        chunks = bytearray()  # BDAT chunks of the current transaction
        while line := await reader.readline():
            verb, _, argument = line.rstrip(b"\r\n").partition(b" ")
            name = verb.upper().decode("ascii", "replace")
            self.commands.append((session.number, name, argument))
            if name == "MAIL":
                session.accepted = []
                session.in_transaction = False
                chunks = bytearray()
            if name == "BDAT" and session.chunking:
                size, _, last = argument.partition(b" ")
                try:
                    chunk = await reader.readexactly(int(size))
                except asyncio.IncompleteReadError:
                    return  # lost inside the chunk: nothing kept
                chunks += chunk
                if not session.in_transaction:
                    answer = Answer(reply=b"503 5.5.1 Error: MAIL transaction required\r\n")
                elif not session.accepted:
                    answer = Answer(reply=b"554 5.5.1 Error: no valid recipients\r\n")
                elif last.upper() != b"LAST":
                    answer = Answer(reply=b"250 2.0.0 %d bytes received\r\n" % len(chunk))
                else:
                    answer = self._message_end(session, bytes(chunks))
                if not session.in_transaction or not session.accepted or last:
                    session.in_transaction = False
                    chunks = bytearray()
                if not await self._answer(session, reader, writer, answer):
                    return
                continue
            if name in ("RCPT", "DATA") and not session.in_transaction:
                # As a real server does: no RCPT or DATA without an accepted MAIL.
                answer = Answer(reply=b"503 5.5.1 Error: need MAIL command\r\n")
            elif name == "DATA" and not session.accepted:
                answer = Answer(reply=b"554 5.5.1 Error: no valid recipients\r\n")
            else:
                answer = self.decide(session, name, argument)
            if name == "MAIL" and answer.reply and answer.reply[:1] == b"2":
                session.in_transaction = True
            if name in ("RSET", "DATA_END"):
                session.in_transaction = False
            if name == "RCPT" and answer.reply and answer.reply[:1] == b"2":
                match = _PATH.search(argument)
                session.accepted.append(match.group(1).decode() if match else "")
            if name == "DATA" and answer.reply and answer.reply[:3] == b"354":
                if not await self._answer(session, reader, writer, answer):
                    return
                body = bytearray()
                while (chunk := await reader.readline()) != b".\r\n":
                    if not chunk:
                        return  # lost before the final dot: nothing kept
                    body += chunk
                # StreamReader has no public "bytes waiting"; its buffer is what we read.
                self.across += bool(reader._buffer)  # type: ignore[attr-defined]
                answer = self._message_end(session, bytes(body))
            if not await self._answer(session, reader, writer, answer):
                return

    def _message_end(self, session: Session, body: bytes) -> Answer:
        """The whole message is in (final dot, BDAT LAST): decide, keep it or not."""
        match = _MESSAGE_ID.search(body)
        session.message_id = match.group(1).strip(b"<>").decode() if match else ""
        answer = self.decide(session, "DATA_END", body)
        session.transactions += 1
        session.in_transaction = False
        keep = answer.keep
        if keep is None:
            keep = bool(answer.reply) and answer.reply[:1] == b"2"
        if keep:
            for recipient in session.accepted:
                self.deliveries[(session.message_id, recipient)] += 1
        return answer


async def wait_until(condition: Callable[[], bool], *, timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (the server sees a close
    only when its session task next runs)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def raw_transport(server: RawSMTPServer, **options: object) -> SMTPTransport:
    """An SMTPTransport to ``server`` (plain, 2 s timeouts unless ``options`` say otherwise)."""
    settings: dict[str, object] = {
        "tls": "none",
        "local_hostname": "client.test",
        "connect_timeout": 2.0,
        "command_timeout": 2.0,
        "data_timeout": 2.0,
        **options,
    }
    return SMTPTransport("127.0.0.1", server.port, **settings)  # type: ignore[arg-type]
