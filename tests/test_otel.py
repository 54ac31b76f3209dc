"""OpenTelemetryHooks against a real LocalSMTPServer: the exact spans, attributes and metric
points of a clean send, a retried one, a partial rejection, an ambiguous one, a throttled
one; nothing personal or secret in any of them; the outbox's trace context and metrics;
the pool's connections."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conftest import PASSWORD, USERNAME, relay_transport, serial_only, tls_transport
from reliable_smtp import (
    AmbiguousDeliveryError,
    AsyncMailer,
    AsyncOutbox,
    FailoverTransport,
    Message,
    OpenTelemetryHooks,
    Outbox,
    PermanentError,
    RateLimit,
    RetryPolicy,
    ThrottledError,
)
from reliable_smtp._otel import TRACE_CONTEXT_KEY, observe_outbox, use_trace_context
from reliable_smtp.testing import FakeClock, LocalSMTPServer

ALICE, BOB, SENDER = "alice@example.org", "bob@example.org", "app@example.com"
SUBJECT, BODY = "Your code Kumquat", "secret-body-Quince-2291"


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def hooks(self, **options: Any) -> OpenTelemetryHooks:
        return OpenTelemetryHooks(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options
        )

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(
        self, *, connections: bool = False
    ) -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
        """Every metric point: (name, attributes) -> value (a sum) or (count, sum).

        ``reliable_smtp.connections`` (the pool's state, asserted on its own) only
        with ``connections``."""
        data = self.reader.get_metrics_data()
        found: dict[tuple[str, frozenset[tuple[str, Any]]], Any] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "reliable_smtp.connections" and not connections:
                        continue
                    for point in metric.data.data_points:
                        key = (metric.name, frozenset(dict(point.attributes or {}).items()))
                        if hasattr(point, "bucket_counts"):
                            found[key] = (point.count, point.sum)
                        else:
                            found[key] = point.value
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(spans, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def message(*to: str) -> Message:
    return Message(sender=SENDER, to=list(to), subject=SUBJECT, text=BODY)


def labels(**attributes: Any) -> frozenset[tuple[str, Any]]:
    return frozenset({k.replace("__", "."): v for k, v in attributes.items()}.items())


#: The metric attributes every point of a send to the test server has.
WHERE = {"reliable_smtp__transport": "smtp+plain", "server__address": "127.0.0.1"}


def send_points(
    outcome: str, *, recipients: dict[str, int], attempts: dict[str, int], duration: Any = 0.0
) -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
    """The metric points of one send to the test server (``duration``: the histogram's sum)."""

    def by(name: str) -> frozenset[tuple[str, Any]]:
        return labels(**WHERE, reliable_smtp__outcome=name)

    return {
        ("reliable_smtp.sends", by(outcome)): 1,
        **{("reliable_smtp.recipients", by(name)): n for name, n in recipients.items()},
        **{("reliable_smtp.attempts", by(name)): n for name, n in attempts.items()},
        ("reliable_smtp.send.duration", by(outcome)): (1, duration),
    }


def send_attributes(server: LocalSMTPServer, message_id: str, recipients: int) -> dict[str, Any]:
    return {
        "reliable_smtp.transport": "smtp+plain",
        "server.address": "127.0.0.1",
        "server.port": server.port,
        "network.transport": "tcp",
        "network.protocol.name": "smtp",
        "reliable_smtp.recipients.count": recipients,
        "reliable_smtp.message_id": message_id,
    }


def mailer(server: LocalSMTPServer, telemetry: Telemetry, clock: FakeClock) -> AsyncMailer:
    return AsyncMailer(
        relay_transport(server),
        hooks=[telemetry.hooks()],
        clock=clock,
        sleep=clock.sleep,
        retry=RetryPolicy(),
    )


def the_send(telemetry: Telemetry) -> ReadableSpan:
    """The one span a send makes: CLIENT, a root here (no request around it)."""
    (send,) = telemetry.finished()
    assert send.name == "reliable_smtp.send"
    assert send.kind is SpanKind.CLIENT
    assert send.parent is None
    return send


#: Stands for a measured duration (real time: the connect) in an expected event.
MEASURED = object()


def events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for event in span.events:
        attributes = dict(event.attributes or {})
        if event.name == "connect":
            assert isinstance(attributes["seconds"], float)
            attributes["seconds"] = MEASURED
        found.append((event.name, attributes))
    return found


CONNECT = ("connect", {"seconds": MEASURED})


def attempt_event(
    number: int, recipients: int, duration: float = 0.0, **attributes: Any
) -> tuple[str, dict[str, Any]]:
    return (
        "reliable_smtp.attempt",
        {
            "reliable_smtp.attempt": number,
            "reliable_smtp.attempt.duration": duration,  # the mailer's (fake) clock
            "reliable_smtp.recipients.count": recipients,
            **{f"reliable_smtp.{k}": v for k, v in attributes.items() if k != "error_type"},
            **({"error.type": attributes["error_type"]} if "error_type" in attributes else {}),
        },
    )


def sent_attempt(number: int, recipients: int, duration: float = 0.0) -> tuple[str, dict[str, Any]]:
    return attempt_event(
        number,
        recipients,
        duration,
        outcome="sent",
        **{"recipients.accepted": recipients, "recipients.pending": 0},
        phase="data_end",
        **{"reply.code": 250, "reply.enhanced_code": "2.0.0"},
    )


def refused(number: int, outcome: str, phase: str, code: int, enhanced: str) -> Any:
    return (
        "reliable_smtp.recipient",
        {
            "reliable_smtp.attempt": number,
            "reliable_smtp.outcome": outcome,
            "reliable_smtp.phase": phase,
            "reliable_smtp.reply.code": code,
            "reliable_smtp.reply.enhanced_code": enhanced,
        },
    )


@serial_only
async def test_a_clean_send(
    server: LocalSMTPServer, telemetry: Telemetry, clock: FakeClock
) -> None:
    async with mailer(server, telemetry, clock) as sending:
        result = await sending.send(message(ALICE, BOB))
    send = the_send(telemetry)
    assert dict(send.attributes or {}) == {
        **send_attributes(server, result.message_id, 2),
        "reliable_smtp.outcome": "sent",
        "reliable_smtp.attempts": 1,
        "reliable_smtp.recipients.accepted": 2,
        "reliable_smtp.recipients.rejected": 0,
    }
    assert send.status.status_code is StatusCode.UNSET
    assert events(send) == [CONNECT, sent_attempt(1, 2)]
    # The mailer's clock (a fake here) did not move: the duration's sum is 0.
    assert telemetry.points() == send_points("sent", recipients={"sent": 2}, attempts={"sent": 1})


@serial_only
async def test_transient_then_sent(
    server: LocalSMTPServer, telemetry: Telemetry, clock: FakeClock
) -> None:
    server.script("RCPT", "451 4.3.0 mailbox busy <bob@example.org>", recipient=BOB)
    async with mailer(server, telemetry, clock) as sending:
        result = await sending.send(message(ALICE, BOB))
    send = the_send(telemetry)
    assert events(send) == [
        CONNECT,
        attempt_event(
            1,
            2,
            outcome="transient",
            **{"recipients.accepted": 1, "recipients.pending": 1},
            phase="rcpt",
            **{"reply.code": 451, "reply.enhanced_code": "4.3.0"},
            error_type="transient",
        ),
        refused(1, "transient", "rcpt", 451, "4.3.0"),
        sent_attempt(2, 1),  # the pooled connection: no new connect
    ]
    assert send.status.status_code is StatusCode.UNSET
    assert dict(send.attributes or {}) == {
        **send_attributes(server, result.message_id, 2),
        "reliable_smtp.outcome": "sent",
        "reliable_smtp.attempts": 2,
        "reliable_smtp.recipients.accepted": 2,
        "reliable_smtp.recipients.rejected": 0,
    }
    waited = sum(clock.sleeps)
    assert waited > 0
    assert telemetry.points() == send_points(
        "sent",
        recipients={"sent": 2},
        attempts={"transient": 1, "sent": 1},
        duration=pytest.approx(waited),
    )


@serial_only
async def test_a_partial_rejection(
    server: LocalSMTPServer, telemetry: Telemetry, clock: FakeClock
) -> None:
    server.script("RCPT", "550 5.1.1 <bob@example.org>: no such user", recipient=BOB)
    async with mailer(server, telemetry, clock) as sending:
        with pytest.raises(PermanentError) as raised:
            await sending.send(message(ALICE, BOB))
    send = the_send(telemetry)
    assert events(send) == [
        CONNECT,
        attempt_event(
            1,
            2,
            outcome="permanent",
            **{"recipients.accepted": 1, "recipients.pending": 0},
            phase="rcpt",
            **{"reply.code": 550, "reply.enhanced_code": "5.1.1"},
            error_type="permanent",
        ),
        refused(1, "permanent", "rcpt", 550, "5.1.1"),
    ]
    assert dict(send.attributes or {}) == {
        **send_attributes(server, raised.value.result.message_id, 2),  # type: ignore[union-attr]
        "reliable_smtp.outcome": "permanent",
        "reliable_smtp.attempts": 1,
        "reliable_smtp.recipients.accepted": 1,
        "reliable_smtp.recipients.rejected": 1,
        "error.type": "reliable_smtp.PermanentError",
        "reliable_smtp.reply.code": 550,
        "reliable_smtp.reply.enhanced_code": "5.1.1",
    }
    assert send.status.status_code is StatusCode.ERROR
    assert send.status.description == "permanent 550 5.1.1 at rcpt"
    assert telemetry.points() == send_points(
        "permanent", recipients={"sent": 1, "permanent": 1}, attempts={"permanent": 1}
    )


@serial_only
async def test_an_ambiguous_delivery(
    server: LocalSMTPServer, telemetry: Telemetry, clock: FakeClock
) -> None:
    server.script("DATA_END", disconnect=True)  # the server has it; the reply never comes
    async with mailer(server, telemetry, clock) as sending:
        with pytest.raises(AmbiguousDeliveryError) as raised:
            await sending.send(message(ALICE))
    assert server.deliveries_to(ALICE) == 1
    send = the_send(telemetry)
    assert events(send) == [
        CONNECT,
        attempt_event(
            1,
            1,
            outcome="ambiguous",
            # never resent: the server may have it
            **{"recipients.accepted": 0, "recipients.pending": 0},
            phase="data_end",
            error_type="ambiguous",
        ),
        (
            "reliable_smtp.recipient",
            {
                "reliable_smtp.attempt": 1,
                "reliable_smtp.outcome": "ambiguous",
                "reliable_smtp.phase": "data_end",
            },
        ),
    ]
    assert send.status.status_code is StatusCode.ERROR
    assert send.status.description == "ambiguous at data_end"
    assert dict(send.attributes or {}) == {
        **send_attributes(server, raised.value.result.message_id, 1),  # type: ignore[union-attr]
        "reliable_smtp.outcome": "ambiguous",
        "reliable_smtp.attempts": 1,
        "reliable_smtp.recipients.accepted": 0,
        "reliable_smtp.recipients.rejected": 1,
        "error.type": "reliable_smtp.AmbiguousDeliveryError",
    }
    assert telemetry.points() == send_points(
        "ambiguous", recipients={"ambiguous": 1}, attempts={"ambiguous": 1}
    )


@serial_only
async def test_throttled_replies_are_counted(
    server: LocalSMTPServer, telemetry: Telemetry, clock: FakeClock
) -> None:
    server.script("RCPT", "450 4.7.1 rate limited, slow down", times=None)
    async with AsyncMailer(
        relay_transport(server),
        hooks=[telemetry.hooks()],
        clock=clock,
        sleep=clock.sleep,
        retry=RetryPolicy(attempts=2),
    ) as sending:
        with pytest.raises(ThrottledError):
            await sending.send(message(ALICE))
    assert telemetry.points() == {
        **send_points(
            "throttled",
            recipients={"throttled": 1},
            attempts={"throttled": 2},
            duration=pytest.approx(sum(clock.sleeps)),
        ),
        ("reliable_smtp.throttled", labels(**WHERE, reliable_smtp__reply__code=450)): 2,
    }


@serial_only
async def test_a_wait_for_the_rate_limiter_is_an_event_and_a_histogram_point(
    server: LocalSMTPServer, telemetry: Telemetry, clock: FakeClock
) -> None:
    transport = relay_transport(
        server, rate_limit=RateLimit(per_connection=0.5), clock=clock, sleep=clock.sleep
    )
    async with AsyncMailer(transport, hooks=[telemetry.hooks()], clock=clock) as sending:
        await sending.send(message(ALICE))
        await sending.send(message(BOB))  # 2 s after the first, on the same connection
    assert clock.sleeps == [2.0]
    _, second = telemetry.finished()
    # The wait is part of the attempt (on the mailer's clock, shared with the transport).
    assert events(second) == [("rate_limit_wait", {"seconds": 2.0}), sent_attempt(1, 1, 2.0)]
    points = telemetry.points()
    assert points[("reliable_smtp.rate_limit.wait", labels(**WHERE))] == (1, 2.0)


def connection_points(telemetry: Telemetry, server: LocalSMTPServer) -> dict[str, Any]:
    """``reliable_smtp.connections`` by state, for the test server's pool."""
    pool = {
        "reliable_smtp.transport": "smtp+plain",
        "server.address": "127.0.0.1",
        "server.port": server.port,
    }
    found = {}
    for (name, attributes), value in telemetry.points(connections=True).items():
        if name == "reliable_smtp.connections":
            labelled = dict(attributes)
            state = labelled.pop("reliable_smtp.connection.state")
            assert labelled == pool
            found[state] = value
    return found


@serial_only
async def test_connections_open_and_in_use(server: LocalSMTPServer, telemetry: Telemetry) -> None:
    during: list[dict[str, Any]] = []
    # On the server's thread, before it answers the final dot: the SDK collects from
    # its own thread too, while the loop is sending.
    server.on_message = lambda received: during.append(connection_points(telemetry, server))
    transport = relay_transport(server, max_connections=2)
    async with AsyncMailer(transport, hooks=[telemetry.hooks()]) as sending:
        assert connection_points(telemetry, server) == {}  # no send seen yet: not observed
        await sending.send(message(ALICE))
        assert transport.connections.idle == 1
        after_one = connection_points(telemetry, server)
        await asyncio.gather(sending.send(message(ALICE)), sending.send(message(BOB)))
        after_two = connection_points(telemetry, server)
    assert during[0] == {"idle": 0, "used": 1}
    assert after_one == {"idle": 1, "used": 0}  # kept open for the next message
    assert after_two == {"idle": 2, "used": 0}  # two at once needed a second connection
    assert connection_points(telemetry, server) == {"idle": 0, "used": 0}  # closed with it
    assert (transport.connections.open, transport.connections.in_use) == (0, 0)


def connections_by_server(telemetry: Telemetry) -> dict[tuple[int, str], Any]:
    return {
        (dict(attributes)["server.port"], dict(attributes)["reliable_smtp.connection.state"]): n
        for (name, attributes), n in telemetry.points(connections=True).items()
        if name == "reliable_smtp.connections"
    }


@serial_only
async def test_connections_of_failover_members_and_of_two_pools_to_one_server(
    server: LocalSMTPServer, telemetry: Telemetry
) -> None:
    hooks = telemetry.hooks()
    with LocalSMTPServer() as backup:
        failover = FailoverTransport([relay_transport(server), relay_transport(backup)])
        other = relay_transport(server)  # a second pool to the same server
        async with (
            AsyncMailer(failover, hooks=[hooks]) as first,
            AsyncMailer(other, hooks=[hooks]) as second,
        ):
            await first.send(message(ALICE))  # through the primary member
            await second.send(message(BOB))
            assert connections_by_server(telemetry) == {
                (server.port, "idle"): 2,  # one per pool, summed: one series per server
                (server.port, "used"): 0,
                (backup.port, "idle"): 0,  # seen through the failover, not used yet
                (backup.port, "used"): 0,
            }


async def test_an_invalid_message_is_counted_without_a_span(telemetry: Telemetry) -> None:
    from email.message import EmailMessage

    from reliable_smtp import InvalidMessageError, MemoryTransport

    bad = EmailMessage()
    bad["To"] = ALICE
    async with AsyncMailer(MemoryTransport(), hooks=[telemetry.hooks()]) as sending:
        with pytest.raises(InvalidMessageError):
            await sending.send(bad)
    assert telemetry.finished() == []
    assert telemetry.points() == {
        ("reliable_smtp.sends", labels(reliable_smtp__outcome="invalid")): 1
    }


# -- nothing personal, nothing secret ------------------------------------------------------


def everything_exported(telemetry: Telemetry) -> list[str]:
    """Every name, attribute key and value, event and status text the exporters got."""
    exported: list[str] = []
    for span in telemetry.finished():
        exported.append(span.name)
        exported.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        exported.append(span.status.description or "")
        for event in span.events:
            exported.append(event.name)
            exported.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
    for (name, attributes), value in telemetry.points(connections=True).items():
        exported.append(name)
        exported.extend(f"{k}={v}" for k, v in attributes)
        exported.append(str(value))
    return exported


FORBIDDEN = (ALICE, BOB, SENDER, "alice", "bob", "Kumquat", "Quince", PASSWORD, USERNAME)


def assert_clean(exported: list[str], forbidden: tuple[str, ...] = FORBIDDEN) -> None:
    assert exported  # there was something to look at
    for text in exported:
        for word in forbidden:
            assert word.lower() not in text.lower(), f"{word!r} exported in {text!r}"


@serial_only
async def test_no_address_content_or_secret_is_ever_exported(
    server: LocalSMTPServer, tls_server: LocalSMTPServer, telemetry: Telemetry, clock: FakeClock
) -> None:
    # Replies that echo the addresses and the login, on every path: refused, retried,
    # ambiguous, sent over TLS with AUTH.
    server.script("RCPT", "550 5.1.1 <bob@example.org>: no such user", recipient=BOB)
    server.script("RCPT", "451 4.3.0 alice@example.org busy", recipient=ALICE)
    tls_server.script("DATA_END", "554 5.7.1 app pw-Zebra-7431-secret rejected for bob")
    async with mailer(server, telemetry, clock) as sending:
        with pytest.raises(PermanentError):
            await sending.send(message(ALICE, BOB))
        server.script("DATA_END", disconnect=True)
        with pytest.raises(AmbiguousDeliveryError):
            await sending.send(message(ALICE))
    async with AsyncMailer(tls_transport(tls_server), hooks=[telemetry.hooks()]) as sending:
        with pytest.raises(PermanentError):
            await sending.send(message(ALICE, BOB))
        await sending.send(message(BOB))
    exported = everything_exported(telemetry)
    assert_clean(exported)
    assert any(text.startswith("auth") for text in exported)  # the TLS session was seen
    # The Message-ID is on the send span (not a mailbox: random@sender-domain).
    assert any(text.startswith("reliable_smtp.message_id=") for text in exported)


@serial_only
async def test_addresses_are_hashed_only_when_asked_for(
    server: LocalSMTPServer, telemetry: Telemetry
) -> None:
    import hashlib
    import hmac

    server.script("RCPT", "550 5.1.1 no such user", recipient=BOB)
    key = b"our-own-secret-key"
    async with AsyncMailer(
        relay_transport(server),
        hooks=[telemetry.hooks(address_hash_key=key, record_message_id=False)],
    ) as sending:
        with pytest.raises(PermanentError):
            await sending.send(message(ALICE, BOB))
    (send,) = telemetry.finished()
    (refusal,) = [e for e in send.events if e.name == "reliable_smtp.recipient"]
    expected = hmac.new(key, BOB.encode(), hashlib.sha256).hexdigest()[:16]
    assert (refusal.attributes or {})["reliable_smtp.recipient.hash"] == expected
    assert "reliable_smtp.message_id" not in (send.attributes or {})
    exported = everything_exported(telemetry)
    assert_clean(exported, (*FORBIDDEN, key.decode(), "@"))


# -- the outbox ----------------------------------------------------------------------------


async def test_outbox_metrics_read_its_stats(tmp_path: Path, telemetry: Telemetry) -> None:
    now = [1_000_000.0]
    with Outbox(f"sqlite:///{tmp_path / 'outbox.db'}", clock=lambda: now[0]) as outbox:
        instruments = observe_outbox(outbox, meter_provider=telemetry.meter_provider)
        assert len(instruments) == 3
        outbox.enqueue(message(ALICE))
        now[0] += 30.0
        outbox.enqueue_many([message(BOB), message(ALICE, BOB)])
        points = telemetry.points()
    assert (
        points[("reliable_smtp.outbox.entries", labels(reliable_smtp__outbox__state="queued"))] == 3
    )
    assert (
        points[("reliable_smtp.outbox.entries", labels(reliable_smtp__outbox__state="sent"))] == 0
    )
    assert points[("reliable_smtp.outbox.oldest_due.age", frozenset())] == 30.0
    assert points[("reliable_smtp.outbox.enqueued", frozenset())] == 3


#: The worker's side, in another process: the real OutboxWorker takes the entry and sends
#: it (it attaches the entry's trace context itself); print the spans it exported.
WORKER = textwrap.dedent(
    """
    import json, sys
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from reliable_smtp import AsyncMailer, OpenTelemetryHooks, Outbox, OutboxWorker
    from reliable_smtp import SMTPTransport
    import asyncio

    url, port = sys.argv[1], int(sys.argv[2])
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))

    async def main():
        transport = SMTPTransport("127.0.0.1", port, tls="none")
        with Outbox(url) as outbox:
            async with AsyncMailer(
                transport, hooks=[OpenTelemetryHooks(tracer_provider=provider)]
            ) as mailer:
                stats = await OutboxWorker(outbox, mailer).run_until_idle()
        assert stats.settled == 1, stats

    asyncio.run(main())
    print(json.dumps([
        {"name": s.name, "trace_id": s.context.trace_id,
         "parent": s.parent.span_id if s.parent else None,
         "remote_parent": s.parent.is_remote if s.parent else None}
        for s in spans.get_finished_spans()
    ]))
    """
)


@serial_only
def test_the_trace_context_goes_with_the_entry_to_another_process(
    tmp_path: Path, server: LocalSMTPServer, telemetry: Telemetry
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    tracer = telemetry.tracer_provider.get_tracer("the-app")
    with Outbox(url) as outbox, tracer.start_as_current_span("POST /password-reset") as request:
        entry = outbox.enqueue(message(ALICE), metadata={"user": 7})
    carried = entry.metadata[TRACE_CONTEXT_KEY]
    assert isinstance(carried, dict)
    trace_id = request.get_span_context().trace_id
    assert carried["traceparent"].split("-")[1] == f"{trace_id:032x}"
    assert entry.metadata["user"] == 7
    worker = subprocess.run(
        [sys.executable, "-c", WORKER, url, str(server.port)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "src")},
        check=False,
    )
    assert worker.returncode == 0, worker.stderr
    (send,) = json.loads(worker.stdout)
    assert send["name"] == "reliable_smtp.send"
    assert send["trace_id"] == trace_id  # one trace: the request and the mail it caused
    assert send["parent"] == request.get_span_context().span_id
    assert send["remote_parent"] is True  # the parent came from the entry, not this process
    assert server.deliveries_to(ALICE) == 1


async def test_the_async_outbox_stores_the_callers_trace_context(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("the-app")
    async with AsyncOutbox(f"sqlite:///{tmp_path / 'outbox.db'}") as outbox:
        with tracer.start_as_current_span("POST /signup") as request:
            entry = await outbox.enqueue(message(ALICE))  # written on the outbox's thread
    carried = entry.metadata[TRACE_CONTEXT_KEY]
    assert isinstance(carried, dict)
    assert carried["traceparent"].split("-")[1:3] == [
        f"{request.get_span_context().trace_id:032x}",
        f"{request.get_span_context().span_id:016x}",
    ]


def test_without_a_current_span_nothing_is_stored(tmp_path: Path) -> None:
    with Outbox(f"sqlite:///{tmp_path / 'outbox.db'}") as outbox:
        entry = outbox.enqueue(message(ALICE))
    assert TRACE_CONTEXT_KEY not in entry.metadata
    with use_trace_context(entry.metadata):  # no context: the body just runs
        pass


#: A process where ``import opentelemetry`` fails, as without the ``otel`` extra.
WITHOUT_API = textwrap.dedent(
    """
    import asyncio, logging, sys
    sys.modules["opentelemetry"] = None  # every import of it now raises ImportError
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
    from reliable_smtp import (AsyncMailer, MemoryTransport, Message, OpenTelemetryHooks,
                               Outbox, inject_trace_context)

    hooks = OpenTelemetryHooks()
    async def main():
        async with AsyncMailer(MemoryTransport(), hooks=[hooks]) as mailer:
            print("hooks registered:", bool(mailer.hooks))
            result = await mailer.send(Message(sender="a@example.com", to=["b@example.org"],
                                               subject="s", text="t"))
            print("sent:", result.ok)
    asyncio.run(main())
    with Outbox(sys.argv[1]) as outbox:
        entry = outbox.enqueue(Message(sender="a@example.com", to=["b@example.org"], text="t"))
    print("metadata:", dict(entry.metadata), "carrier:", inject_trace_context())
    """
)


def test_without_the_api_the_hook_is_a_logged_no_op(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_API, f"sqlite:///{tmp_path / 'outbox.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "OpenTelemetryHooks does nothing: opentelemetry-api is not installed" in done.stdout
    assert "pip install 'reliable-smtp[otel]'" in done.stdout
    assert "hooks registered: False" in done.stdout  # skipped: nothing called per send
    assert "sent: True" in done.stdout
    assert "metadata: {} carrier: {}" in done.stdout
