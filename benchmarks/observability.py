"""What observability costs: bulk-sending throughput with OpenTelemetryHooks on and off.

Run: .venv/bin/python benchmarks/observability.py [--n 2000] [--rounds 3] [--connections 2]
     [--latency-ms 20]

Starts the same fast local sink as ``throughput.py`` (Postfix's ``smtp-sink`` when
installed, else an aiosmtpd sink) and sends N small messages with the full stack
(``AsyncMailer.stream`` over a pool), each mode in a fresh process, best of
``--rounds`` (interleaved, so a noisy neighbour hurts every mode alike):

* ``off`` - no hooks (the baseline);
* ``api-absent`` - ``hooks=[OpenTelemetryHooks()]`` in a process where
  ``opentelemetry`` cannot be imported: the hook is skipped (should be ~0);
* ``api-no-sdk`` - the API installed, no SDK configured (the API's no-op tracer);
* ``sdk`` - the SDK with every span exported, synchronously, to an in-memory
  exporter and the metrics to an in-memory reader (collected once at the end): the
  worst realistic case (a ``BatchSpanProcessor`` moves export off the send path);
* ``sdk-sampled`` - the same, with one trace in ten sampled (``ParentBased(
  TraceIdRatioBased(0.1))``); the metrics are still complete.

``--latency-ms`` runs every mode a second time through a proxy that adds that round
trip (as ``throughput.py`` does): the cost that remains when the network, not the
CPU, is what limits a send.

Prints messages/s, client CPU microseconds per message, and each mode's cost against
``off``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# throughput.py (shared helpers) imports reliable_smtp, and with it opentelemetry if it is
# installed: the child imports it only after deciding whether opentelemetry may load.

HERE = Path(__file__).resolve()

MODES = ("off", "api-absent", "api-no-sdk", "sdk", "sdk-sampled")
WARM_UP = 100


async def run(mode: str, port: int, n: int, connections: int) -> dict[str, float]:
    if mode == "api-absent":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # import fails
    from throughput import reliable_messages

    from reliable_smtp import AsyncMailer, OpenTelemetryHooks, SendResult, SMTPTransport
    from reliable_smtp._otel import API_AVAILABLE

    if API_AVAILABLE is (mode == "api-absent"):
        raise SystemExit(f"{mode}: opentelemetry-api is {'' if API_AVAILABLE else 'not '}loaded")

    hooks: list[object] = []
    spans = reader = None
    if mode in ("api-absent", "api-no-sdk"):
        hooks = [OpenTelemetryHooks()]
    elif mode in ("sdk", "sdk-sampled"):
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        sampler = ParentBased(TraceIdRatioBased(0.1 if mode == "sdk-sampled" else 1.0))
        tracer_provider = TracerProvider(sampler=sampler)
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        meter_provider = MeterProvider(metric_readers=[reader])
        hooks = [OpenTelemetryHooks(tracer_provider=tracer_provider, meter_provider=meter_provider)]
    transport = SMTPTransport(
        "127.0.0.1",
        port,
        tls="none",
        max_connections=connections,
        max_messages_per_connection=1_000_000,
        local_hostname="bench.test",
    )
    sent = 0
    async with AsyncMailer(transport, hooks=hooks) as mailer:
        # Warm up (connections open, first-use imports and caches filled), then measure.
        await mailer.send_many(reliable_messages(WARM_UP), concurrency=connections * 2)
        if spans is not None:
            spans.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        async for outcome in mailer.stream(reliable_messages(n), concurrency=connections * 2):
            sent += isinstance(outcome, SendResult)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    exported = len(spans.get_finished_spans()) if spans is not None else 0
    if reader is not None:
        reader.get_metrics_data()
    return {
        "sent": sent,
        "rate": sent / wall,
        "cpu_us": cpu / max(sent, 1) * 1e6,
        "spans": exported,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(mode: str, port: int, n: int, connections: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, str(HERE), "--child", mode, str(port), str(n), str(connections)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, port, n, connections = args.child
        print(json.dumps(asyncio.run(run(mode, int(port), int(n), int(connections)))))
        return
    from throughput import latency_proxy, sink

    with sink() as (port, name):
        print(
            f"sink: {name}; {args.n} messages, {args.connections} connections, best of "
            f"{args.rounds}"
        )
        report("loopback", compare(port, args))
        if args.latency_ms:
            with latency_proxy(port, args.latency_ms) as delayed:
                report(f"{args.latency_ms:g} ms round trip", compare(delayed, args))


def compare(port: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for mode in MODES:
            figures = measure(mode, port, args.n, args.connections)
            if figures["sent"] != args.n:
                raise SystemExit(f"{mode}: only {figures['sent']} of {args.n} sent")
            if mode not in best or figures["rate"] > best[mode]["rate"]:
                best[mode] = figures
    return best


def report(title: str, best: dict[str, dict[str, float]]) -> None:
    base = best["off"]
    print(f"\n{title}")
    print(f"{'mode':<12} {'msg/s':>8} {'cpu us/msg':>11} {'spans':>6} {'throughput cost':>16}")
    for mode in MODES:
        figures = best[mode]
        cost = 1 - figures["rate"] / base["rate"]
        print(
            f"{mode:<12} {figures['rate']:>8.0f} {figures['cpu_us']:>11.0f} "
            f"{figures['spans']:>6.0f} {cost:>15.1%}"
        )


if __name__ == "__main__":
    main()
