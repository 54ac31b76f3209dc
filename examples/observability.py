"""Observability: OpenTelemetry spans and metrics for every send, printed to the console.

Configures the OpenTelemetry SDK as an application would (console exporters), then
sends three messages through ``OpenTelemetryHooks`` to a local server scripted to
refuse one recipient for good and to throttle another once: a clean send, a retried
one, a rejected one. Each send is one ``reliable_smtp.send`` span with a child
``reliable_smtp.attempt`` span per attempt; the metrics (sends, recipients,
attempts by outcome, send duration) are printed at the end. A plain hook,
``on_result``, prints one line per message. Needs ``pip install
'reliable-smtp[otel]' opentelemetry-sdk``.

    python examples/observability.py
"""

from __future__ import annotations

import asyncio

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from reliable_smtp import (
    AsyncMailer,
    Message,
    OpenTelemetryHooks,
    RetryPolicy,
    SendFinished,
    SMTPTransport,
)
from reliable_smtp.testing import LocalSMTPServer


def configure_opentelemetry() -> MeterProvider:
    """What the application does once at start-up (here: everything to the console)."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    # A long interval: the metrics are printed once, by the shutdown at the end.
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000)
    meter_provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)
    return meter_provider


def print_result(event: SendFinished) -> None:
    """A plain hook: one line per message, as soon as its send ends."""
    if event.result is None:
        print(f"result: {event.message_id}: {type(event.error).__name__}")
        return
    outcomes = ", ".join(f"{s.outcome.value}" for s in event.result.recipients.values())
    print(f"result: {len(event.result.attempts)} attempt(s); recipients: {outcomes}")


async def main() -> None:
    meter_provider = configure_opentelemetry()
    with LocalSMTPServer() as server:
        server.script("RCPT", "550 5.1.1 no such user", recipient="gone@example.org")
        server.script("RCPT", "451 4.3.0 try again later", recipient="busy@example.org")
        transport = SMTPTransport("127.0.0.1", server.port, tls="none")
        mailer = AsyncMailer(
            transport,
            hooks=[OpenTelemetryHooks()],  # opt in: spans and metrics for this mailer
            retry=RetryPolicy().without_waits(),  # an example: no backoff wait
        )
        mailer.on_result(print_result)
        async with mailer:
            messages = [
                Message(sender="app@example.com", to=[to], subject="Hello", text="Hi.")
                for to in ("ann@example.org", "busy@example.org", "gone@example.org")
            ]
            await mailer.send_many(messages, concurrency=1)
        print(f"server received: {len(server.messages)} messages")
    meter_provider.shutdown()  # prints the metrics


if __name__ == "__main__":
    asyncio.run(main())
