"""The public kit for writing a transport: Transport.ensure_open/forget_connections (and their
deprecated private spellings), RecipientStatus.from_reply, DeliveryError.from_reply/from_verdict/
from_connection_loss, and the HTTP-API transport of examples/http_api_transport.py built on it."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from reliable_smtp import (
    AmbiguousDeliveryError,
    AuthOrConfigError,
    ConnectionFailedError,
    DeliveryError,
    DeliveryReport,
    Envelope,
    Mailer,
    Message,
    Outcome,
    PermanentError,
    Phase,
    ProtocolError,
    RecipientStatus,
    Reply,
    RetryPolicy,
    SMTPTimeoutError,
    ThrottledError,
    TransientError,
    Transport,
    TransportClosedError,
    Verdict,
    classify,
)

ENVELOPE = Envelope("app@example.com", ("ann@example.org", "bob@example.org"))


class _Sink(Transport):
    """Accepts everything; counts the fork hook."""

    name = "sink"

    def __init__(self) -> None:
        self.forgotten = 0

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        return DeliveryReport.all_sent(envelope, transport_name=self.name)


class _NewStyle(_Sink):
    def forget_connections(self) -> None:
        self.forgotten += 1
        super().forget_connections()


class _OldStyle(_Sink):
    """Written against the private hook before it had a public name."""

    def _after_fork(self) -> None:
        self.forgotten += 1
        super()._after_fork()


# -- ensure_open --------------------------------------------------------------------------------


async def test_ensure_open_refuses_a_closed_transport_and_names_it() -> None:
    transport = _Sink()
    transport.ensure_open()  # open: nothing happens
    await transport.aclose()
    with pytest.raises(TransportClosedError, match="sink transport is closed"):
        transport.ensure_open()
    with pytest.raises(TransportClosedError):
        await transport.deliver(ENVELOPE, b"")


async def test_check_open_is_a_deprecated_alias_of_ensure_open() -> None:
    transport = _Sink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transport.ensure_open()  # the public name never warns
    await transport.aclose()
    with (
        pytest.warns(DeprecationWarning, match=r"_check_open\(\).*use ensure_open\(\)"),
        pytest.raises(TransportClosedError),
    ):
        transport._check_open()


# -- forget_connections -------------------------------------------------------------------------


def test_forget_connections_is_a_no_op_by_default_and_never_warns() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _Sink().forget_connections()
        transport = _NewStyle()
        transport.forget_connections()
    assert transport.forgotten == 1


def test_an_override_of_the_old_after_fork_hook_is_still_called_with_a_warning() -> None:
    transport = _OldStyle()
    with pytest.warns(DeprecationWarning, match=r"_after_fork\(\).*forget_connections\(\)"):
        transport.forget_connections()
    assert transport.forgotten == 1  # once: super()._after_fork() does not call it again


@pytest.mark.parametrize("cls", [_Sink, _NewStyle, _OldStyle])
def test_calling_the_old_after_fork_name_reaches_the_hook_once(cls: type[_Sink]) -> None:
    transport = cls()
    with pytest.warns(DeprecationWarning, match="forget_connections"):
        transport._after_fork()
    assert transport.forgotten == (0 if cls is _Sink else 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("cls", [_NewStyle, _OldStyle])
def test_the_mailer_calls_forget_connections_in_a_forked_child(cls: type[_Sink]) -> None:
    transport = cls()
    mailer = Mailer(transport, retry=RetryPolicy.never())
    mailer.send(Message(sender="app@example.com", to=["parent@example.org"]))
    assert transport.forgotten == 0  # the parent never forgets its own connections
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ok = mailer.send(Message(sender="app@example.com", to=["child@example.org"])).ok
                mailer.close()
            code = 0 if ok and transport.forgotten >= 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert transport.forgotten == 0
    mailer.close()


# -- statuses and errors from replies ---------------------------------------------------------

REPLIES = [
    (Reply(250, "2.1.5", "ok"), Phase.RCPT, Outcome.SENT),
    (Reply(250, "2.0.0", "queued as 123"), Phase.DATA_END, Outcome.SENT),
    (Reply(550, "5.1.1", "no such user"), Phase.RCPT, Outcome.PERMANENT),
    (Reply(451, "4.7.1", "greylisted, try again in 300 seconds"), Phase.RCPT, Outcome.THROTTLED),
    (Reply(450, "4.2.0", "mailbox busy"), Phase.RCPT, Outcome.TRANSIENT),
    (Reply(535, "5.7.8", "authentication failed"), Phase.AUTH, Outcome.AUTH_OR_CONFIG),
]


@pytest.mark.parametrize(("reply", "phase", "outcome"), REPLIES, ids=str)
def test_status_from_reply_is_the_reply_tables_verdict(
    reply: Reply, phase: Phase, outcome: Outcome
) -> None:
    status = RecipientStatus.from_reply("ann@example.org", reply, phase=phase, transport_name="api")
    verdict = classify(reply, phase)
    assert verdict.outcome is outcome
    assert status == RecipientStatus.from_verdict(
        "ann@example.org", verdict, phase=phase, reply=reply, transport_name="api"
    )
    assert (status.outcome, status.phase, status.reply, status.transport_name) == (
        outcome,
        phase,
        reply,
        "api",
    )
    assert status.explanation == verdict.explanation
    assert status.accepted is (outcome is Outcome.SENT)


def test_status_from_reply_keeps_the_servers_delay_hint() -> None:
    reply = Reply(421, "4.7.0", "Try again in 30 seconds")
    status = RecipientStatus.from_reply("ann@example.org", reply, phase=Phase.RCPT)
    assert status.outcome is Outcome.THROTTLED
    assert status.retryable
    assert status.delay_hint == 30.0


@pytest.mark.parametrize(
    ("reply", "phase", "cls"),
    [
        (Reply(535, "5.7.8", "bad credentials"), Phase.AUTH, AuthOrConfigError),
        (Reply(421, "4.7.0", "Try again in 30 seconds"), Phase.MAIL, ThrottledError),
        (Reply(451, "4.3.0", "local error"), Phase.MAIL, TransientError),
        (Reply(552, "5.3.4", "message too big"), Phase.DATA_END, PermanentError),
        (Reply(500, "5.5.1", "command unrecognized"), Phase.MAIL, ProtocolError),
    ],
    ids=str,
)
def test_error_from_reply_has_the_class_the_table_selects_and_the_smtp_facts(
    reply: Reply, phase: Phase, cls: type[DeliveryError]
) -> None:
    error = DeliveryError.from_reply(
        reply, "the API refused", phase=phase, recipient="ann@example.org", transport_name="api"
    )
    assert type(error) is cls
    verdict = classify(reply, phase)
    assert error.outcome is verdict.outcome
    assert (error.code, error.enhanced_code, error.text) == (
        reply.code,
        reply.enhanced_code,
        reply.text,
    )
    assert (error.phase, error.recipient, error.transport_name) == (phase, "ann@example.org", "api")
    assert error.explanation == verdict.explanation
    assert error.retryable is verdict.retryable
    assert error.delay_hint == verdict.delay_hint
    assert str(reply) in str(error)


def test_a_2xx_reply_or_a_sent_verdict_is_no_error() -> None:
    with pytest.raises(ValueError, match="not an error"):
        DeliveryError.from_reply(Reply(250, "2.0.0", "ok"), "fine", phase=Phase.DATA_END)
    with pytest.raises(ValueError, match="not an error"):
        DeliveryError.from_verdict(
            Verdict(outcome=Outcome.SENT, explanation="ok"), "fine", phase=Phase.DATA_END
        )


@pytest.mark.parametrize(
    ("outcome", "cls"),
    [
        (Outcome.THROTTLED, ThrottledError),
        (Outcome.AUTH_OR_CONFIG, AuthOrConfigError),
        (Outcome.AMBIGUOUS, AmbiguousDeliveryError),
        (Outcome.PERMANENT, PermanentError),
        (Outcome.TRANSIENT, TransientError),
    ],
)
def test_error_from_verdict_follows_the_outcome_and_keeps_the_hint(
    outcome: Outcome, cls: type[DeliveryError]
) -> None:
    verdict = Verdict(outcome=outcome, explanation="rate limited", retryable=True, delay_hint=7.0)
    error = DeliveryError.from_verdict(verdict, "HTTP 429", phase=Phase.MAIL, transport_name="api")
    assert type(error) is cls
    assert (error.outcome, error.explanation, error.retryable, error.delay_hint) == (
        outcome,
        "rate limited",
        True,
        7.0,
    )
    assert (error.reply, error.phase, error.transport_name) == (None, Phase.MAIL, "api")


@pytest.mark.parametrize(
    ("phase", "timed_out", "cls", "outcome"),
    [
        (Phase.CONNECT, False, ConnectionFailedError, Outcome.TRANSIENT),
        (Phase.DATA, False, ConnectionFailedError, Outcome.TRANSIENT),
        (Phase.DATA, True, SMTPTimeoutError, Outcome.TRANSIENT),
        (Phase.DATA_END, False, AmbiguousDeliveryError, Outcome.AMBIGUOUS),
        (Phase.DATA_END, True, AmbiguousDeliveryError, Outcome.AMBIGUOUS),
    ],
)
def test_error_from_connection_loss_is_ambiguous_only_once_the_message_was_handed_over(
    phase: Phase, timed_out: bool, cls: type[DeliveryError], outcome: Outcome
) -> None:
    error = DeliveryError.from_connection_loss(
        "reset by peer", phase=phase, timed_out=timed_out, transport_name="api"
    )
    assert type(error) is cls
    assert error.outcome is outcome
    assert error.retryable is (outcome is Outcome.TRANSIENT)
    assert error.phase is phase
    if outcome is Outcome.AMBIGUOUS:
        # Code that retries every ConnectionError must not send the message twice.
        assert not isinstance(error, ConnectionError)
        assert "may have accepted it" in error.explanation


# -- the example's HTTP-API transport, on the edges the script does not show ---------------------


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    path = Path(__file__).resolve().parent.parent / "examples" / "http_api_transport.py"
    spec = importlib.util.spec_from_file_location("http_api_transport", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


class _Scripted(BaseHTTPRequestHandler):
    """Answers every POST with the server's ``answer``: (status, headers, body)."""

    server: _API

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, headers, body = self.server.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _API(ThreadingHTTPServer):
    answer: tuple[int, dict[str, str], bytes] = (202, {}, b"")


@pytest.fixture
def api() -> Iterator[_API]:
    server = _API(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _url(server: _API) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize(
    ("status", "headers", "cls", "outcome", "hint"),
    [
        (503, {"Retry-After": "7"}, ThrottledError, Outcome.THROTTLED, 7.0),
        (429, {}, ThrottledError, Outcome.THROTTLED, None),
        (503, {}, TransientError, Outcome.TRANSIENT, None),
        (403, {}, AuthOrConfigError, Outcome.AUTH_OR_CONFIG, None),
        (400, {}, PermanentError, Outcome.PERMANENT, None),
    ],
)
async def test_example_maps_refused_requests_to_the_error_tree(
    example: ModuleType,
    api: _API,
    status: int,
    headers: dict[str, str],
    cls: type[DeliveryError],
    outcome: Outcome,
    hint: float | None,
) -> None:
    api.answer = (status, headers, b'{"errors": [{"message": "no"}]}')
    async with example.HTTPAPITransport(_url(api), "key-1234", timeout=10) as transport:
        with pytest.raises(cls) as raised:
            await transport.deliver(ENVELOPE, b"Subject: x\r\n\r\nx\r\n")
    assert raised.value.outcome is outcome
    assert raised.value.delay_hint == hint
    assert f"HTTP {status}" in str(raised.value)
    assert "key-1234" not in str(raised.value)


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"results": [{"email": "ann@example.org", "status": "queued"}]}'],
    ids=["unreadable", "bob-missing"],
)
async def test_example_never_counts_an_unaccounted_recipient_as_sent(
    example: ModuleType, api: _API, body: bytes
) -> None:
    api.answer = (202, {}, body)
    async with example.HTTPAPITransport(_url(api), "key-1234", timeout=10) as transport:
        report = await transport.deliver(ENVELOPE, b"Subject: x\r\n\r\nx\r\n")
    assert report.recipients["bob@example.org"].outcome is Outcome.AMBIGUOUS
    expected = Outcome.AMBIGUOUS if body == b"not json" else Outcome.SENT
    assert report.recipients["ann@example.org"].outcome is expected


async def test_example_cannot_connect_is_a_retried_connection_failure(
    example: ModuleType,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with example.HTTPAPITransport(f"http://127.0.0.1:{port}", "k", timeout=10) as t:
        with pytest.raises(ConnectionFailedError) as raised:
            await t.deliver(ENVELOPE, b"Subject: x\r\n\r\nx\r\n")
    assert raised.value.phase is Phase.CONNECT
    assert raised.value.retryable
    assert isinstance(raised.value.__cause__, OSError)
