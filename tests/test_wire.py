"""_wire.py reaches below aiosmtplib's public API: these tests catch an upgrade breaking it."""

from __future__ import annotations

import inspect

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

from conftest import relay_transport
from reliable_smtp.envelope import Envelope
from reliable_smtp.replies import Outcome
from reliable_smtp.testing import LocalSMTPServer
from reliable_smtp.transports._wire import dot_stuff


def test_aiosmtplib_still_has_what_wire_uses() -> None:
    assert aiosmtplib.__version__.split(".")[0] == "5"
    assert callable(SMTPProtocol.write)
    parameters = inspect.signature(SMTPProtocol.read_response).parameters
    assert "timeout" in parameters
    assert "protocol" in inspect.signature(aiosmtplib.SMTP.__init__).parameters or hasattr(
        aiosmtplib.SMTP(), "protocol"
    )


def test_dot_stuffing() -> None:
    assert dot_stuff(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert dot_stuff(b".first") == b"..first\r\n.\r\n"
    assert dot_stuff(b"x\n.\ny") == b"x\r\n..\r\ny\r\n.\r\n"
    assert dot_stuff(b"bare\rcr") == b"bare\r\ncr\r\n.\r\n"
    assert dot_stuff(b"") == b"\r\n.\r\n"


async def test_body_and_final_reply_are_read_separately(server: LocalSMTPServer) -> None:
    # A refusal of DATA itself (nothing sent) and a loss after the dot (maybe sent) must
    # come out differently: that is the whole point of _wire.
    envelope = Envelope.build("a@example.com", ["b@example.org"])
    server.script("DATA", "451 4.3.0 try later")
    server.script("DATA_END", disconnect=True)
    async with relay_transport(server) as transport:
        before = await transport.deliver(envelope, b"Subject: x\r\n\r\nbody\r\n")
        after = await transport.deliver(envelope, b"Subject: x\r\n\r\nbody\r\n")
    assert before.recipients["b@example.org"].outcome is Outcome.TRANSIENT
    assert after.recipients["b@example.org"].outcome is Outcome.AMBIGUOUS
