"""CHUNKING (RFC 3030): MAIL, every RCPT and ``BDAT <n> LAST`` with the message in one write.

Against the raw asyncio server (tests/rawsmtp.py, which speaks BDAT the way Postfix
does) for every delivery rule, and against Postfix's own smtpd - a server nobody
here wrote - when it is installed and this process may start it (root).

The rules pinned here (see ``transports/_transaction.py``): the content leaves with
the envelope, so a link lost after that write is AMBIGUOUS for every recipient not
refused and never retried; a refused MAIL or every RCPT refused gives the server's
BDAT refusal and nothing is delivered; the BDAT reply is the final reply; a 421
before it means nothing was taken.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trustme

from rawsmtp import Answer, RawSMTPServer, Session, normal
from rawsmtp import raw_transport as transport
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import AmbiguousDeliveryError, PermanentError, TransientError
from reliable_smtp._mailer import AsyncMailer
from reliable_smtp._message import Attachment, Message
from reliable_smtp._replies import Outcome, Phase
from reliable_smtp._result import SendResult
from reliable_smtp._retry import RetryPolicy
from reliable_smtp._settings import MailerSettings
from reliable_smtp._transports._commit import guard_final_dot
from reliable_smtp._transports._wire import canonical
from reliable_smtp._transports.smtp import SMTPTransport

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import postfix_smtpd

ANN, BOB = "ann@example.org", "bob@example.org"
ENVELOPE = Envelope.build("app@example.com", [ANN, BOB])
#: A line starting with a dot: with DATA it is doubled on the wire, with BDAT never.
CONTENT = b"Message-ID: <c1@example.com>\r\nSubject: x\r\n\r\n.leading dot\r\nbody\r\n"

Decide = Callable[[Session, str, bytes], Answer]


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., object]]:
    servers: list[RawSMTPServer] = []

    async def start(decide: Decide = normal, *, chunking: bool = True) -> RawSMTPServer:
        server = await RawSMTPServer(
            decide, pipelining=lambda n: True, chunking=lambda n: chunking
        ).start()
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        await server.stop()


def verbs(server: RawSMTPServer, connection: int = 1) -> list[str]:
    return [verb for number, verb, _ in server.commands if number == connection]


def answering(**by_verb: bytes) -> Decide:
    def decide(session: Session, verb: str, argument: bytes) -> Answer:
        if verb in by_verb:
            return Answer(reply=by_verb[verb])
        return normal(session, verb, argument)

    return decide


# == one write, one round trip ===========================================================


async def test_envelope_and_message_go_in_one_write_before_any_reply(
    serve: Callable[..., object],
) -> None:
    # The server answers nothing until it has the whole message: a client that waited
    # for the MAIL or RCPT reply before sending the content would hang (and time out).
    kept: list[bytes] = []

    def withhold(session: Session, verb: str, argument: bytes) -> Answer:
        if verb in ("MAIL", "RCPT"):
            return replace(normal(session, verb, argument), hold=True)
        if verb == "DATA_END":
            kept.append(argument)
            return Answer(reply=b"250 2.0.0 queued\r\n")
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(withhold)  # type: ignore[misc]
    async with transport(server) as smtp:
        report = await smtp.deliver(ENVELOPE, CONTENT)
    assert {s.outcome for s in report.recipients.values()} == {Outcome.SENT}
    assert report.final_reply is not None
    assert report.final_reply.text == "queued"
    assert verbs(server)[1:] == ["MAIL", "RCPT", "RCPT", "BDAT", "QUIT"]
    bdat = next(argument for _, verb, argument in server.commands if verb == "BDAT")
    assert bdat == b"%d LAST" % len(CONTENT)
    assert kept == [CONTENT]  # exactly the bytes given: no dot-stuffing, no final dot
    assert server.deliveries == {("c1@example.com", ANN): 1, ("c1@example.com", BOB): 1}


async def test_an_outbox_send_keeps_data_so_its_dot_mark_follows_the_body(
    serve: Callable[..., object],
) -> None:
    # With a final-dot guard installed (the outbox worker's), the body must be on the
    # wire before the mark is committed and the dot after it: BDAT LAST would commit the
    # content with the envelope, before the mark. So an outbox send uses DATA.
    server: RawSMTPServer = await serve()  # type: ignore[misc]
    marked: list[tuple[str, ...]] = []

    async def guard(recipients: tuple[str, ...]) -> None:
        marked.append(recipients)

    async with transport(server) as smtp:
        with guard_final_dot(guard):
            report = await smtp.deliver(ENVELOPE, CONTENT)
        assert {s.outcome for s in report.recipients.values()} == {Outcome.SENT}
        plain = await smtp.deliver(ENVELOPE, CONTENT)  # no guard: BDAT again
        assert {s.outcome for s in plain.recipients.values()} == {Outcome.SENT}
    assert marked == [(ANN, BOB)]
    guarded = ["MAIL", "RCPT", "RCPT", "DATA"]
    unguarded = ["MAIL", "RCPT", "RCPT", "BDAT", "QUIT"]
    assert verbs(server)[1:] == [*guarded, *unguarded]


async def test_the_transcript_shows_the_bdat_command_and_only_the_size_of_the_message(
    serve: Callable[..., object], caplog: pytest.LogCaptureFixture
) -> None:
    server: RawSMTPServer = await serve()  # type: ignore[misc]
    with caplog.at_level(logging.DEBUG, logger="reliable_smtp.transcript"):
        async with transport(server) as smtp:
            await smtp.deliver(ENVELOPE, CONTENT)
    sent = [
        r.getMessage().split(" > ", 1)[1]
        for r in caplog.records
        if r.name == "reliable_smtp.transcript" and " > " in r.getMessage()
    ]
    assert sent[1:5] == [
        "MAIL FROM:<app@example.com>",
        f"RCPT TO:<{ANN}>",
        f"RCPT TO:<{BOB}>",
        f"BDAT {len(CONTENT)} LAST",
    ]
    assert sent[5] == f"<message: {len(CONTENT)} bytes>"
    assert not any("leading dot" in r.getMessage() for r in caplog.records)


async def test_the_content_is_sent_with_crlf_line_endings_only(
    serve: Callable[..., object],
) -> None:
    kept: list[bytes] = []

    def keep(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "DATA_END":
            kept.append(argument)
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(keep)  # type: ignore[misc]
    content = b"Subject: x\n\n.line\rtwo\r\nlast"
    async with transport(server) as smtp:
        await smtp.deliver(ENVELOPE, content)
    assert kept == [canonical(content)] == [b"Subject: x\r\n\r\n.line\r\ntwo\r\nlast\r\n"]


@pytest.mark.parametrize(
    ("offered", "chunking"),
    [(False, True), (True, False)],
    ids=["not-offered", "switched-off"],
)
async def test_without_chunking_the_message_goes_with_data(
    serve: Callable[..., object], offered: bool, chunking: bool
) -> None:
    server: RawSMTPServer = await serve(chunking=offered)  # type: ignore[misc]
    async with transport(server, chunking=chunking) as smtp:
        report = await smtp.deliver(ENVELOPE, CONTENT)
    assert {s.outcome for s in report.recipients.values()} == {Outcome.SENT}
    assert "BDAT" not in verbs(server)
    assert "DATA" in verbs(server)


async def test_without_pipelining_there_is_no_bdat_either() -> None:
    # RFC 3030 alone would allow BDAT after the RCPT replies; that saves nothing over
    # DATA, and the one-write group needs PIPELINING: so DATA, one command at a time.
    server = await RawSMTPServer(normal, chunking=lambda n: True).start()
    try:
        async with transport(server) as smtp:
            await smtp.deliver(ENVELOPE, CONTENT)
        assert verbs(server)[1:] == ["MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
    finally:
        await server.stop()


async def test_the_chunking_setting_reaches_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"transport": "smtp", "host": "127.0.0.1", "port": 25, "tls": "none"}
    on = MailerSettings(**base).build_transport()
    assert isinstance(on, SMTPTransport)
    assert on.chunking is True
    monkeypatch.setenv("RELIABLE_SMTP_CHUNKING", "false")
    off = MailerSettings(**base).build_transport()
    assert isinstance(off, SMTPTransport)
    assert off.chunking is False


# == the delivery rules ====================================================================


def message(n: int, *to: str) -> Message:
    return Message(
        sender="app@example.com",
        to=list(to or [ANN]),
        subject=f"n{n}",
        text="chunked",
        message_id=f"m{n}@example.com",
    )


@pytest.mark.parametrize(
    ("verb", "keep"),
    [("MAIL", False), ("RCPT", False), ("DATA_END", False), ("DATA_END", True)],
    ids=["at-mail", "at-rcpt", "at-bdat-not-kept", "at-bdat-kept"],
)
async def test_a_link_lost_after_the_write_is_ambiguous_and_never_retried(
    serve: Callable[..., object], verb: str, keep: bool
) -> None:
    def lose(session: Session, name: str, argument: bytes) -> Answer:
        if name == verb:
            return Answer(close=True, keep=keep)
        return normal(session, name, argument)

    server: RawSMTPServer = await serve(lose)  # type: ignore[misc]
    mailer = AsyncMailer(transport(server), retry=RetryPolicy(attempts=3), sleep=no_wait)
    async with mailer:
        with pytest.raises(AmbiguousDeliveryError) as raised:
            await mailer.send(message(1, ANN, BOB))
    assert raised.value.phase is Phase.DATA_END
    assert "RELIABLE_SMTP_CHUNKING" in raised.value.explanation
    assert raised.value.result is not None
    assert {s.outcome for s in raised.value.result.recipients.values()} == {Outcome.AMBIGUOUS}
    # Sent once, never again: not retried on this or another connection.
    assert server.opened == 1
    assert verbs(server).count("BDAT") == (0 if verb != "DATA_END" else 1)
    assert sum(server.deliveries.values()) == (2 if keep else 0)


async def test_a_link_lost_after_a_refused_recipient_spares_the_refused_one(
    serve: Callable[..., object],
) -> None:
    def refuse_ann_then_lose(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "RCPT" and ANN.encode() in argument:
            return Answer(reply=b"550 5.1.1 no such user\r\n")
        if verb == "RCPT":
            return Answer(close=True)
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(refuse_ann_then_lose)  # type: ignore[misc]
    async with transport(server) as smtp:
        report = await smtp.deliver(ENVELOPE, CONTENT)
    assert report.recipients[ANN].outcome is Outcome.PERMANENT
    assert report.recipients[ANN].reply is not None
    assert report.recipients[ANN].reply.code == 550
    assert report.recipients[BOB].outcome is Outcome.AMBIGUOUS


async def test_a_refused_sender_delivers_nothing_and_the_connection_goes_on(
    serve: Callable[..., object],
) -> None:
    def refuse_first_sender(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "MAIL" and session.transactions == 0 and b"bad@" in argument:
            return Answer(reply=b"553 5.7.1 sender rejected\r\n")
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(refuse_first_sender)  # type: ignore[misc]
    async with transport(server) as smtp:
        with pytest.raises(PermanentError) as raised:
            await smtp.deliver(Envelope.build("bad@example.com", [ANN]), CONTENT)
        assert raised.value.phase is Phase.MAIL
        assert raised.value.reply is not None
        assert raised.value.reply.code == 553
        report = await smtp.deliver(ENVELOPE, CONTENT)
    assert {s.outcome for s in report.recipients.values()} == {Outcome.SENT}
    # The RCPT and the BDAT of the refused transaction were refused too (503), read,
    # and the connection was reset and reused.
    assert verbs(server)[1:] == [
        *("MAIL", "RCPT", "BDAT", "RSET"),
        *("MAIL", "RCPT", "RCPT", "BDAT", "QUIT"),
    ]
    assert server.opened == 1
    assert server.deliveries == {("c1@example.com", ANN): 1, ("c1@example.com", BOB): 1}


async def test_every_recipient_refused_delivers_nothing_and_the_connection_goes_on(
    serve: Callable[..., object],
) -> None:
    server: RawSMTPServer = await serve(  # type: ignore[misc]
        answering(RCPT=b"550 5.1.1 no such user\r\n")
    )
    async with transport(server) as smtp:
        report = await smtp.deliver(ENVELOPE, CONTENT)
        assert {s.outcome for s in report.recipients.values()} == {Outcome.PERMANENT}
        assert {s.phase for s in report.recipients.values()} == {Phase.RCPT}
        assert report.final_reply is None
        await smtp.deliver(ENVELOPE, CONTENT)
    assert not server.deliveries
    assert verbs(server)[1:6] == ["MAIL", "RCPT", "RCPT", "BDAT", "RSET"]
    assert server.opened == 1


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        (b"451 4.3.0 try later\r\n", Outcome.TRANSIENT),
        (b"554 5.7.1 spam\r\n", Outcome.PERMANENT),
    ],
    ids=["4xx", "5xx"],
)
async def test_the_bdat_reply_is_the_final_reply(
    serve: Callable[..., object], reply: bytes, outcome: Outcome
) -> None:
    server: RawSMTPServer = await serve(answering(DATA_END=reply))  # type: ignore[misc]
    async with transport(server) as smtp:
        report = await smtp.deliver(ENVELOPE, CONTENT)
    assert {s.outcome for s in report.recipients.values()} == {outcome}
    assert {s.phase for s in report.recipients.values()} == {Phase.DATA_END}
    assert report.final_reply is not None
    assert report.final_reply.code == int(reply[:3])
    assert not server.deliveries
    assert verbs(server)[1:] == ["MAIL", "RCPT", "RCPT", "BDAT", "RSET", "QUIT"]


@pytest.mark.parametrize("verb", ["MAIL", "RCPT"])
async def test_a_421_before_the_bdat_reply_delivers_nothing_and_drops_the_connection(
    serve: Callable[..., object], verb: str
) -> None:
    def closing(session: Session, name: str, argument: bytes) -> Answer:
        if name == verb and session.number == 1:
            return Answer(reply=b"421 4.3.2 shutting down\r\n", close=True)
        return normal(session, name, argument)

    server: RawSMTPServer = await serve(closing)  # type: ignore[misc]
    async with transport(server) as smtp:
        if verb == "MAIL":
            with pytest.raises(TransientError) as raised:
                await smtp.deliver(ENVELOPE, CONTENT)
            assert raised.value.reply is not None
            assert raised.value.reply.code == 421
        else:
            report = await smtp.deliver(ENVELOPE, CONTENT)
            assert {s.outcome for s in report.recipients.values()} == {Outcome.TRANSIENT}
        again = await smtp.deliver(ENVELOPE, CONTENT)
    assert {s.outcome for s in again.recipients.values()} == {Outcome.SENT}
    assert server.opened == 2  # never reused after the 421
    assert server.deliveries == {("c1@example.com", ANN): 1, ("c1@example.com", BOB): 1}


async def test_a_garbled_bdat_reply_is_ambiguous(serve: Callable[..., object]) -> None:
    server: RawSMTPServer = await serve(  # type: ignore[misc]
        answering(DATA_END=b"HTTP/1.1 400 Bad Request\r\n")
    )
    async with transport(server) as smtp:
        report = await smtp.deliver(ENVELOPE, CONTENT)
    assert {s.outcome for s in report.recipients.values()} == {Outcome.AMBIGUOUS}
    assert "not SMTP" in report.recipients[ANN].explanation


async def test_a_reused_connection_found_closed_before_the_write_is_retried_fresh(
    serve: Callable[..., object],
) -> None:
    # The server closes after the first message; the client notices before the next
    # write (the write is refused), so nothing of the second message was sent and it
    # goes on a new connection - stale, not ambiguous.
    def one_message_per_connection(session: Session, verb: str, argument: bytes) -> Answer:
        if verb == "DATA_END":
            return Answer(reply=b"250 2.0.0 queued\r\n", close=True)
        return normal(session, verb, argument)

    server: RawSMTPServer = await serve(one_message_per_connection)  # type: ignore[misc]
    async with transport(server, check_after=3600.0) as smtp:
        await smtp.deliver(ENVELOPE, CONTENT)
        for _ in range(100):  # until the client has seen the close (no wall clock)
            if smtp._pool is None or not any(
                lease.connection.is_connected for lease in smtp._pool._idle
            ):
                break
            await asyncio.sleep(0.01)
        report = await smtp.deliver(ENVELOPE, CONTENT)
    assert {s.outcome for s in report.recipients.values()} == {Outcome.SENT}
    assert server.opened == 2
    assert sum(server.deliveries.values()) == 4


# == Postfix's own smtpd ===================================================================


@pytest.fixture(scope="module")
def postfix() -> Iterator[tuple[postfix_smtpd.Postfix, Path]]:
    """Postfix's smtpd with STARTTLS (a trustme certificate); yields it and the CA file."""
    if not postfix_smtpd.available():
        pytest.skip("needs Postfix (postfix, postconf) and root to start its master")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    # Not pytest's tmp_path: its root is private, and the postfix user reads these.
    with tempfile.TemporaryDirectory(prefix="reliable-smtp-tls-") as name:
        files = Path(name)
        files.chmod(0o755)
        cert, key, ca_file = files / "cert.pem", files / "key.pem", files / "ca.pem"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        ca.cert_pem.write_to_path(str(ca_file))
        with postfix_smtpd.postfix_smtpd(tls=(cert, key)) as running:
            yield running, ca_file


def postfix_client(
    postfix: tuple[postfix_smtpd.Postfix, Path], tls: str
) -> tuple[postfix_smtpd.Postfix, str, SMTPTransport]:
    """The server, its log so far, and a transport to it (``tls``: none or starttls)."""
    server, ca_file = postfix
    smtp = SMTPTransport(
        "127.0.0.1",
        server.port,
        tls=tls,
        ca_file=ca_file if tls == "starttls" else None,
        local_hostname="client.test",
        command_timeout=10,
    )
    return server, server.log(), smtp


@pytest.mark.parametrize("tls", ["none", "starttls"])
async def test_postfix_smtpd_takes_the_bdat_group_and_delivers_each_recipient(
    postfix: tuple[postfix_smtpd.Postfix, Path], tls: str
) -> None:
    server, before, smtp = postfix_client(postfix, tls)
    outcomes: list[SendResult] = []
    async with AsyncMailer(smtp) as mailer:
        for n in range(3):
            outcomes.append(
                await mailer.send(message(n, f"r{n}a@example.org", f"r{n}b@example.net"))
            )
    for outcome in outcomes:
        assert {s.outcome for s in outcome.recipients.values()} == {Outcome.SENT}
        for status in outcome.recipients.values():
            assert status.reply is not None
            assert "queued as" in status.reply.text
    # smtpd logs the session's command counts when the client has gone, which may be
    # after the deliveries: wait for both.
    log = server.wait_for_log(
        lambda text: (
            text[len(before) :].count("status=sent") >= 6 and "bdat=" in text[len(before) :]
        )
    )
    log = log[len(before) :]
    assert log.count("status=sent") == 6, log
    for n in range(3):
        assert f"to=<r{n}a@example.org>" in log
        assert f"to=<r{n}b@example.net>" in log
    # One connection, three BDAT transactions, no DATA at all.
    assert "mail=3 rcpt=6 bdat=3 quit=1" in log, log


@pytest.mark.parametrize("tls", ["none", "starttls"])
async def test_postfix_smtpd_takes_a_large_bdat_chunk_written_in_pieces(
    postfix: tuple[postfix_smtpd.Postfix, Path], tls: str
) -> None:
    # Over 256 KiB: the group's write carries the start of the chunk, the rest follows
    # as the socket takes it; smtpd must count exactly n octets for BDAT n LAST.
    server, before, smtp = postfix_client(postfix, tls)
    big = replace(
        message(7),
        text=".a leading dot, never doubled with BDAT\n",
        attachments=[Attachment(filename="big.bin", content=os.urandom(600_000))],
    )
    async with AsyncMailer(smtp) as mailer:
        outcome = await mailer.send(big)
    assert outcome.recipients[ANN].outcome is Outcome.SENT
    log = server.wait_for_log(lambda text: "bdat=1" in text[len(before) :])
    assert "mail=1 rcpt=1 bdat=1 quit=1" in log[len(before) :], log
