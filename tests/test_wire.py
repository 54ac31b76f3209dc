"""_wire.py reaches below aiosmtplib's public API: these tests catch an upgrade breaking it."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys

import aiosmtplib
import pytest
from aiosmtplib.protocol import SMTPProtocol

from conftest import relay_transport, uvloop
from reliable_smtp._envelope import Envelope
from reliable_smtp._replies import Outcome
from reliable_smtp._transports._wire import dot_stuff
from reliable_smtp.testing import LocalSMTPServer


def test_aiosmtplib_still_has_what_wire_uses() -> None:
    assert aiosmtplib.__version__.split(".")[0] == "5"
    assert callable(SMTPProtocol.write)
    # An attached Exchange passes these on to aiosmtplib's protocol.
    for name in ("connection_lost", "pause_writing", "resume_writing"):
        assert callable(getattr(SMTPProtocol, name))
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
        transport_below = protocol.transport
        with Exchange(smtp) as wire:
            # The exchange is the transport's protocol meanwhile (set_protocol, which
            # uvloop honours), aiosmtplib's again afterwards.
            assert transport_below.get_protocol() is wire
            wire.write(b"NOOP\r\nNOOP\r\nNOOP\r\n")
            codes = [(await wire.read(timeout=5)).code for _ in range(3)]
            assert not wire.leftover
        assert codes == [250, 250, 250]
        assert transport_below.get_protocol() is protocol
        # aiosmtplib's own command path works again afterwards.
        assert (await smtp.noop()).code == 250
        await pool.release(lease, reusable=True)


async def test_each_loop_variant_runs_on_its_loop(request: pytest.FixtureRequest) -> None:
    # conftest.pytest_asyncio_loop_factories runs this module on asyncio and on uvloop;
    # a variant silently on the wrong loop would prove nothing.
    factory = request.node.callspec.params["_asyncio_loop_factory"]
    loop_module = type(asyncio.get_running_loop()).__module__
    assert loop_module.startswith("uvloop") == (factory is not asyncio.new_event_loop)


def test_ci_has_uvloop() -> None:
    # Without it the uvloop variants are not collected at all: CI must not lose them.
    if os.environ.get("CI") == "true" and sys.platform != "win32":
        assert uvloop is not None, "the dev extra installs uvloop"
