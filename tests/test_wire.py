"""_wire.py reaches below aiosmtplib's public API: these tests catch an upgrade breaking it."""

from __future__ import annotations

import inspect

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

from conftest import relay_transport
from reliable_smtp._envelope import Envelope
from reliable_smtp._replies import Outcome
from reliable_smtp._transports._wire import dot_stuff
from reliable_smtp.testing import LocalSMTPServer


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


async def test_exchange_reads_several_replies_from_one_segment_and_restores_the_protocol(
    server: LocalSMTPServer,
) -> None:
    # Pipelining's hard case: replies that arrive together must all be read, in order
    # (aiosmtplib's own reader would keep only the first).
    from reliable_smtp._transports._wire import Exchange

    transport = relay_transport(server)
    async with transport:
        await transport.deliver(Envelope.build("a@example.com", ["b@example.org"]), b"x\r\n")
        pool = transport._connection_pool()
        lease = await pool.acquire()
        smtp = lease.connection
        protocol = smtp.protocol
        before = {
            name: getattr(protocol, name)
            for name in ("data_received", "eof_received", "connection_lost")
        }
        with Exchange(smtp) as wire:
            wire.write(b"NOOP\r\nNOOP\r\nNOOP\r\n")
            codes = [(await wire.read(timeout=5)).code for _ in range(3)]
            assert not wire.leftover
        assert codes == [250, 250, 250]
        for name, method in before.items():
            assert getattr(protocol, name) == method
        # aiosmtplib's own command path works again afterwards.
        assert (await smtp.noop()).code == 250
        await pool.release(lease, reusable=True)
