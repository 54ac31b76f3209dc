"""Replies that are not SMTP: a clear, classified protocol error - never a crash or a hang.

aiosmtpd always answers correctly, so these tests use a tiny raw server (real
sockets on 127.0.0.1) that answers each command from a script, garbage included.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import DeliveryError, ProtocolError, SMTPTimeoutError
from reliable_smtp._replies import Outcome, Phase
from reliable_smtp._transports.smtp import SMTPTransport

ENVELOPE = Envelope.build("a@example.com", ["b@example.org"])
CONTENT = b"Subject: x\r\n\r\nbody\r\n"

NORMAL = {
    "GREETING": b"220 raw.test ESMTP\r\n",
    "EHLO": b"250-raw.test\r\n250 8BITMIME\r\n",
    "MAIL": b"250 2.1.0 Ok\r\n",
    "RCPT": b"250 2.1.5 Ok\r\n",
    "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "DATA_END": b"250 2.0.0 Ok: queued\r\n",
    "RSET": b"250 2.0.0 Ok\r\n",
    "QUIT": b"221 2.0.0 Bye\r\n",
}

CLOSE = b"<close>"
HANG = b"<hang>"


async def _raw_server(script: dict[str, bytes]) -> tuple[asyncio.base_events.Server, int]:
    replies = {**NORMAL, **script}

    async def answer(writer: asyncio.StreamWriter, key: str) -> bool:
        reply = replies[key]
        if reply.endswith(CLOSE):
            writer.write(reply[: -len(CLOSE)])
            await writer.drain()
            writer.close()
            return False
        if reply.endswith(HANG):
            writer.write(reply[: -len(HANG)])
            await writer.drain()
            await asyncio.sleep(3600)
        writer.write(reply)
        await writer.drain()
        return True

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not await answer(writer, "GREETING"):
                return
            while line := await reader.readline():
                verb = line.split(b" ", 1)[0].strip().upper().decode()
                if verb == "DATA":
                    if not await answer(writer, "DATA"):
                        return
                    while await reader.readline() not in (b".\r\n", b""):
                        pass
                    verb = "DATA_END"
                if not await answer(writer, verb if verb in replies else "RSET"):
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[dict[str, bytes]], object]]:
    servers: list[asyncio.base_events.Server] = []

    async def start(script: dict[str, bytes]) -> int:
        server, port = await _raw_server(script)
        servers.append(server)
        return port

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


def transport(port: int) -> SMTPTransport:
    return SMTPTransport(
        "127.0.0.1", port, tls="none", connect_timeout=2, command_timeout=0.5, data_timeout=0.5
    )


@pytest.mark.parametrize(
    ("command", "reply", "phase"),
    [
        ("GREETING", b"hello, I am not SMTP\r\n", Phase.CONNECT),
        ("EHLO", b"garbage without a code\r\n", Phase.EHLO),
        ("MAIL", b"OK fine\r\n", Phase.MAIL),
    ],
)
async def test_reply_without_a_code_is_a_protocol_error(
    raw_server: Callable[[dict[str, bytes]], object], command: str, reply: bytes, phase: Phase
) -> None:
    port = await raw_server({command: reply})  # type: ignore[misc]
    with pytest.raises(ProtocolError) as caught:
        await transport(port).deliver(ENVELOPE, CONTENT)
    assert caught.value.phase is phase
    assert caught.value.outcome is Outcome.PERMANENT
    assert "not SMTP" in str(caught.value) or "not speaking SMTP" in str(caught.value)


@pytest.mark.parametrize("code", [b"600", b"999", b"199"])
async def test_code_outside_2xx_5xx_is_a_protocol_error(
    raw_server: Callable[[dict[str, bytes]], object], code: bytes
) -> None:
    port = await raw_server({"MAIL": code + b" what is this\r\n"})  # type: ignore[misc]
    with pytest.raises(DeliveryError) as caught:
        await transport(port).deliver(ENVELOPE, CONTENT)
    assert caught.value.outcome is Outcome.PERMANENT
    assert caught.value.code == int(code)


async def test_rcpt_reply_outside_range_is_a_permanent_recipient_status(
    raw_server: Callable[[dict[str, bytes]], object],
) -> None:
    port = await raw_server({"RCPT": b"700 strange\r\n"})  # type: ignore[misc]
    async with transport(port) as smtp:
        report = await smtp.deliver(ENVELOPE, CONTENT)
    status = report.recipients["b@example.org"]
    assert status.outcome is Outcome.PERMANENT
    assert status.reply is not None
    assert status.reply.code == 700


async def test_truncated_multiline_reply_then_close_is_not_a_hang(
    raw_server: Callable[[dict[str, bytes]], object],
) -> None:
    port = await raw_server({"EHLO": b"250-raw.test\r\n250-PIPE" + CLOSE})  # type: ignore[misc]
    with pytest.raises(DeliveryError) as caught:
        await asyncio.wait_for(transport(port).deliver(ENVELOPE, CONTENT), timeout=10)
    assert caught.value.phase is Phase.EHLO
    assert caught.value.retryable  # a lost link before the dot: nothing was sent


async def test_truncated_multiline_reply_that_never_ends_times_out(
    raw_server: Callable[[dict[str, bytes]], object],
) -> None:
    port = await raw_server({"MAIL": b"250-first line of many\r\n" + HANG})  # type: ignore[misc]
    with pytest.raises(SMTPTimeoutError) as caught:
        await asyncio.wait_for(transport(port).deliver(ENVELOPE, CONTENT), timeout=10)
    assert caught.value.phase is Phase.MAIL


async def test_garbage_after_the_dot_is_ambiguous(
    raw_server: Callable[[dict[str, bytes]], object],
) -> None:
    port = await raw_server({"DATA_END": b"queued maybe?\r\n"})  # type: ignore[misc]
    async with transport(port) as smtp:
        report = await smtp.deliver(ENVELOPE, CONTENT)
    status = report.recipients["b@example.org"]
    # The server got the whole message and answered nonsense: it may have kept it.
    assert status.outcome is Outcome.AMBIGUOUS
    assert status.phase is Phase.DATA_END
