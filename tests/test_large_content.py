"""Large messages without copies: base64 in blocks, the DATA body in chunks, flow control.

The renderer's block-wise base64 and the chunked dot-stuffing are checked against
the straightforward code they replace; the chunked write against real servers on
127.0.0.1: a large message arrives intact (with and without lines to dot-stuff,
over plain and STARTTLS), and a server that stops reading mid-body leaves the
message undelivered - the final dot was never written - instead of ambiguous.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import relay_transport, tls_transport
from reliable_smtp import Attachment, Message, render
from reliable_smtp._envelope import Envelope
from reliable_smtp._message.mime import _BLOCK, _base64_size, base64_lines
from reliable_smtp._replies import Outcome, Phase
from reliable_smtp._transports._wire import BODY_PIECE, FINAL_DOT, dot_stuff, dot_stuffed
from reliable_smtp._transports.smtp import SMTPTransport
from reliable_smtp.testing import LocalSMTPServer

ENVELOPE = Envelope.build("app@example.com", ["ann@example.org"])

_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def old_dot_stuff(content: bytes) -> bytes:
    """dot_stuff as it was before it returned chunks: the reference."""
    body = _LINE_ENDINGS.sub(b"\r\n", content)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return _LEADING_DOT.sub(b"..", body) + b".\r\n"


def old_base64(content: bytes) -> bytes:
    """The attachment body as it was rendered before: encodebytes with CRLF."""
    return base64.encodebytes(content).rstrip(b"\n").replace(b"\n", b"\r\n")


# -- base64 in blocks --------------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_base64_lines_match_encodebytes(content: bytes) -> None:
    assert b"".join(base64_lines(content)) == old_base64(content)


@pytest.mark.parametrize(
    "size", [0, 1, 56, 57, 58, _BLOCK - 1, _BLOCK, _BLOCK + 1, 3 * _BLOCK + 100]
)
def test_base64_lines_match_encodebytes_across_blocks(size: int) -> None:
    content = os.urandom(size)
    assert b"".join(base64_lines(content)) == old_base64(content)


@pytest.mark.parametrize("size", [2 * _BLOCK + 12345, 5 * _BLOCK + 1])
def test_a_large_attachment_renders_to_76_character_crlf_lines_and_decodes_back(
    size: int,
) -> None:
    # The second size reserves the buffer up front (and cuts off what it did not use).
    data = os.urandom(size)
    message = Message(
        sender="app@example.com",
        to="ann@example.org",
        text="see attached\n.a line with a dot\n",
        attachments=[Attachment(filename="big.bin", content=data)],
    )
    content = render(message).content
    lines = content.split(b"\r\n")
    assert lines[-1] == b""  # ends in CRLF
    joined = b"".join(lines)
    assert b"\n" not in joined
    assert b"\r" not in joined
    assert max(map(len, lines)) <= 76
    parsed = email.message_from_bytes(content, policy=email.policy.SMTP)
    [attachment] = parsed.iter_attachments()  # type: ignore[attr-defined]
    assert attachment.get_content() == data
    assert content.endswith(b"--\r\n")  # the closing delimiter, nothing reserved after it


@pytest.mark.parametrize("size", [0, 1, 2, 3, 56, 57, 58, 114, _BLOCK + 5])
def test_the_reserved_size_is_the_size_of_the_base64_lines(size: int) -> None:
    assert _base64_size(size) == len(b"".join(base64_lines(os.urandom(size))))


# -- dot-stuffing in chunks ----------------------------------------------------------------

# Bytes rich in what dot-stuffing and line endings are about.
wire_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b"\x00"]), max_size=60).map(
        b"".join
    ),
)


@given(wire_bytes)
def test_dot_stuffed_chunks_are_the_old_dot_stuff(content: bytes) -> None:
    body, final_dot = dot_stuffed(content)
    assert final_dot == FINAL_DOT
    assert body + final_dot == old_dot_stuff(content) == dot_stuff(content)


def test_canonical_content_without_leading_dots_is_not_copied() -> None:
    content = b"Subject: x\r\n\r\n" + b"a line\r\n" * 100_000
    body, _ = dot_stuffed(content)
    assert body is content


# -- the chunked write against real servers --------------------------------------------------


def big_content(size: int, *, dots: bool) -> bytes:
    line = b".starts with a dot, doubled on the wire" if dots else b"A" * 76
    lines = [line + b" %d" % i for i in range(size // (len(line) + 8))]
    return b"Subject: big\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"


@pytest.mark.parametrize("dots", [False, True], ids=["plain", "dots"])
async def test_a_message_of_many_pieces_arrives_intact(server: LocalSMTPServer, dots: bool) -> None:
    content = big_content(6 * BODY_PIECE + 1000, dots=dots)
    async with relay_transport(server) as transport:
        report = await transport.deliver(ENVELOPE, content)
    assert report.recipients["ann@example.org"].accepted
    assert server.messages[0].content == content


async def test_a_message_of_many_pieces_arrives_intact_over_starttls(
    tls_server: LocalSMTPServer,
) -> None:
    content = big_content(4 * BODY_PIECE + 10, dots=True)
    async with tls_transport(tls_server) as transport:
        report = await transport.deliver(ENVELOPE, content)
    assert report.recipients["ann@example.org"].accepted
    assert tls_server.messages[0].content == content


async def test_a_server_that_stops_reading_mid_body_never_gets_the_dot() -> None:
    # 354, then the server reads nothing more: the body cannot all be written, so the
    # final dot never is. Nothing was delivered (phase DATA, not ambiguous); before the
    # body went out in pieces, the whole message sat in the transport's buffer, the dot
    # counted as written, and the send came back AMBIGUOUS.
    got_data = asyncio.Event()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 stall.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-stall.test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                writer.transport.pause_reading()  # type: ignore[attr-defined]
                got_data.set()
                await asyncio.Event().wait()  # until the test closes the server
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # Far more than loopback socket buffers hold, so the socket must stop taking it.
    content = big_content(64 * 2**20, dots=False)
    transport = SMTPTransport(
        "127.0.0.1", port, tls="none", local_hostname="client.test", data_timeout=1.0
    )
    try:
        async with transport:
            report = await transport.deliver(ENVELOPE, content)
    finally:
        server.close()
        await server.wait_closed()
    assert got_data.is_set()
    status = report.recipients["ann@example.org"]
    assert status.outcome is not Outcome.AMBIGUOUS
    assert not status.accepted
    assert status.phase is Phase.DATA
    assert status.verdict.timed_out
