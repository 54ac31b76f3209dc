"""Large messages without copies: base64 in blocks, the DATA body in chunks, flow control.

The renderer's block-wise base64 and the chunked dot-stuffing are checked against
the straightforward code they replace; the chunked write against real servers on
127.0.0.1: a large message arrives intact (with and without lines to dot-stuff,
over plain and STARTTLS), and a server that stops reading mid-body leaves the
message undelivered - the final dot was never written - instead of ambiguous.

``Attachment.from_path`` files are read block by block while the message is built
(the same bytes as the file's content given whole, never the file held whole), and
the renderer's vouch for its own output (``_wire_form``) gives the same wire bytes,
DATA and BDAT, as checking a copy of it in full.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.message
import email.policy
import errno
import io
import os
import re
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import relay_transport, tls_transport
from rawsmtp import Answer, RawSMTPServer, Session, normal
from reliable_smtp import Attachment, InvalidMessageError, Message, render
from reliable_smtp._envelope import Envelope
from reliable_smtp._message import assembly
from reliable_smtp._message.assembly import _BLOCK, _base64_size, base64_lines
from reliable_smtp._replies import Outcome, Phase
from reliable_smtp._transports._wire import (
    BODY_PIECE,
    FINAL_DOT,
    bdat_group,
    canonical,
    dot_stuff,
    dot_stuffed,
)
from reliable_smtp._transports.smtp import SMTPTransport
from reliable_smtp._wire_form import _Entry, _forget, wire_form
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
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second size reserves the buffer up front (and cuts off what it did not use).
    monkeypatch.setattr(assembly, "_RESERVE_FROM", 4 * _BLOCK)
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


# -- from_path: the file read in blocks while the message is built --------------------------


@pytest.fixture
def fixed_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Boundaries and generated IDs stop being random: two renders can be compared."""
    monkeypatch.setattr(assembly.secrets, "token_hex", lambda n: "0" * (2 * n))


def attachment_message(attachment: Attachment, text: str = "see attached\n") -> Message:
    return Message(
        sender="app@example.com",
        to="ann@example.org",
        text=text,
        attachments=[attachment],
        message_id="m@example.com",
        date=datetime(2026, 1, 2, tzinfo=timezone.utc),
    )


@pytest.mark.usefixtures("fixed_boundaries")
@pytest.mark.parametrize("size", [0, 1, 57, _BLOCK - 1, _BLOCK, _BLOCK + 1, 3 * _BLOCK + 100])
def test_from_path_renders_the_bytes_attachment_s_message(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    from_file = render(attachment_message(Attachment.from_path(path))).content
    assert (
        from_file
        == render(attachment_message(Attachment(filename="data.bin", content=data))).content
    )


@pytest.mark.usefixtures("fixed_boundaries")
def test_short_reads_still_give_whole_base64_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file that hands out at most 1000 bytes a read (a pipe, a network file system):
    # the blocks are filled up anyway, so every line but the last is 76 characters.
    data = os.urandom(3 * _BLOCK + 5)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    reads: list[int] = []

    class Trickle(io.FileIO):
        def readinto(self, buffer: Any) -> int:
            got = super().readinto(memoryview(buffer)[:1000])
            reads.append(got)
            return got

    monkeypatch.setattr(
        assembly, "open", lambda path, mode, buffering: Trickle(path), raising=False
    )
    from_file = render(attachment_message(Attachment.from_path(path))).content
    assert len(reads) > len(data) // 1000
    assert (
        from_file
        == render(attachment_message(Attachment(filename="data.bin", content=data))).content
    )


def test_from_path_never_holds_the_whole_file(tmp_path: Path) -> None:
    # Traced Python allocations while rendering: the message being built (its buffer
    # grows by an eighth at a time) and one block at a time - not the file's bytes too.
    data = os.urandom(3 * 2**20)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    message = attachment_message(Attachment.from_path(path))
    del data
    tracemalloc.start()
    try:
        content = render(message).content
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(content) > 4 * 2**20
    assert peak < len(content) * 1.3  # reading the file whole: 1.9x
    [part] = email.message_from_bytes(content, policy=email.policy.SMTP).iter_attachments()  # type: ignore[attr-defined]
    assert part.get_content() == path.read_bytes()


def test_the_file_is_read_at_every_render(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n")
    message = attachment_message(Attachment.from_path(path))
    first = render(message)
    path.write_bytes(b"a,b\n3,4\n")
    second = render(message)
    # What was rendered is what a send (and every retry of it) delivers: bytes.
    assert base64.b64encode(b"a,b\n1,2\n") in first.content
    assert base64.b64encode(b"a,b\n3,4\n") in second.content


def test_a_file_gone_before_the_render_is_an_invalid_message(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n")
    attachment = Attachment.from_path(path)
    path.unlink()
    with pytest.raises(InvalidMessageError, match=r"attachment 'report.csv': cannot read") as info:
        render(attachment_message(attachment))
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        _ = attachment.content


def test_a_file_that_fails_mid_read_is_an_invalid_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3 * _BLOCK))

    class Failing(io.FileIO):
        def readinto(self, buffer: Any) -> int:
            if self.tell() >= _BLOCK:
                raise OSError(errno.EIO, "Input/output error")
            return super().readinto(buffer)

    monkeypatch.setattr(
        assembly, "open", lambda path, mode, buffering: Failing(path), raising=False
    )
    with pytest.raises(InvalidMessageError, match="Input/output error"):
        render(attachment_message(Attachment.from_path(path)))


# -- the renderer's vouch: its own output is not checked again ------------------------------


def message_strategy() -> st.SearchStrategy[Message]:
    line_text = st.lists(
        st.sampled_from(["a", ".", "..", "\n", "\r", "\r\n", "\n.", " ", "é", "=_", "x" * 90]),
        max_size=40,
    ).map("".join)
    attachments = st.lists(
        st.builds(
            Attachment,
            filename=st.sampled_from(["a.bin", ".hidden", "logo.png"]),
            content=st.binary(max_size=300),
            inline=st.booleans(),
        ),
        max_size=2,
    )
    return st.builds(
        Message,
        sender=st.just("app@example.com"),
        to=st.just("ann@example.org"),
        subject=st.sampled_from(["", "hi", ".dot", "é"]),
        text=st.none() | line_text,
        html=st.none() | line_text,
        attachments=attachments,
        headers=st.sampled_from([{}, {".X-Dot": "v"}, {"X-Plain": ". v"}]),
    )


@given(message_strategy())
def test_vouched_and_checked_content_give_the_same_wire_bytes(message: Message) -> None:
    rendered = render(message)
    content = rendered.content
    copy = bytes(memoryview(content))  # equal bytes the renderer never vouched for
    form = wire_form(content)
    assert form is not None
    assert wire_form(copy) is None
    assert b"".join(dot_stuffed(content)) == b"".join(dot_stuffed(copy)) == old_dot_stuff(content)
    assert canonical(content) is content
    assert canonical(copy) == content  # the vouch is true: nothing to normalise
    assert form.dot_free == (dot_stuffed(copy)[0] is copy)  # ... and so is its dot_free
    assert bdat_group(b"", content) == bdat_group(b"", copy)


def test_the_vouch_lives_as_long_as_the_rendered_message() -> None:
    message = attachment_message(Attachment(filename="a.bin", content=b"tiny"))
    rendered = render(message)
    content = rendered.content
    assert wire_form(content) is not None
    del rendered
    assert wire_form(content) is None  # checked again from now on, never trusted stale


def test_a_dead_vouch_never_removes_a_newer_one_under_the_same_id() -> None:
    # A content's id can be reused once it is gone: the old entry's clean-up must leave
    # the new content's vouch alone.
    older = render(attachment_message(Attachment(filename="a.bin", content=b"old")))
    newer = render(attachment_message(Attachment(filename="a.bin", content=b"new")))
    key = id(newer.content)
    assert older._wire_form is not None
    stale = _Entry(older._wire_form, _forget)
    stale.key = key
    _forget(stale)
    assert wire_form(newer.content) is newer._wire_form


def test_stdlib_messages_are_not_vouched_for() -> None:
    stdlib = email.message.EmailMessage()
    stdlib["From"], stdlib["To"] = "app@example.com", "ann@example.org"
    stdlib.set_content(".a dot\n" * 10_000)
    stdlib.add_attachment(os.urandom(64 * 1024), maintype="application", subtype="x")
    rendered = render(stdlib)
    assert wire_form(rendered.content) is None


@pytest.mark.parametrize("chunking", [False, True], ids=["DATA", "BDAT"])
@pytest.mark.parametrize(
    "text",
    ["plain text\n", ".a leading dot\nbare LF\n..two dots\r\n.\n"],
    ids=["dot-free", "dots"],
)
async def test_vouched_and_checked_sends_put_the_same_bytes_on_the_wire(
    chunking: bool, text: str
) -> None:
    # A 400 KB attachment: more than one BODY_PIECE, so BDAT writes a rest too.
    wire: list[bytes] = []

    def keep(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "DATA_END":
            wire.append(argument)  # as received: still dot-stuffed with DATA
        return normal(session, verb, argument)

    server = await RawSMTPServer(
        keep, pipelining=lambda n: True, chunking=lambda n: chunking
    ).start()
    rendered = render(
        attachment_message(Attachment(filename="a.bin", content=os.urandom(300_000)), text)
    )
    content = rendered.content
    assert wire_form(content) is not None
    try:
        async with SMTPTransport(
            "127.0.0.1", server.port, tls="none", local_hostname="client.test"
        ) as transport:
            for each in (content, bytes(memoryview(content))):
                report = await transport.deliver(ENVELOPE, each)
                assert report.recipients["ann@example.org"].accepted
    finally:
        await server.stop()
    verbs = [verb for _, verb, _ in server.commands]
    assert verbs.count("BDAT" if chunking else "DATA") == 2
    expected = content if chunking else old_dot_stuff(content)[: -len(FINAL_DOT)]
    assert wire == [expected, expected]
