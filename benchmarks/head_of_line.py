"""Head-of-line blocking in bulk sends: ordered ``stream()`` against ``as_completed()``.

Run: .venv/bin/python benchmarks/head_of_line.py [--n 2000] [--slow-fraction 0.01]
     [--delay 0.5] [--concurrency 8] [--rounds 2]

It starts an aiosmtpd sink in a subprocess that answers the final dot of every
message at once, except for the messages to ``slow...@example.org``: those it
answers ``--delay`` seconds late (a greylisting or overloaded server, a slow
content filter). The same N messages - one in every ``1 / --slow-fraction`` slow,
spread evenly - are then sent with ``--concurrency`` sends in flight over as many
pooled connections, once through ``AsyncMailer.stream()`` (results in input order)
and once through ``AsyncMailer.as_completed()`` (results as sends end), alternating
for ``--rounds`` rounds in the same run. It prints the wall time of each, the mean
wait between a send's end and its result reaching the caller, and the ratio.
Nothing is asserted.

Why they differ: ``stream()`` holds at most ``4 * concurrency`` messages, so a slow
message at the head of that window stops new sends once the window is full, and
the whole pool waits for it; ``as_completed()`` keeps every other connection busy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from throughput import free_port, wait_for_port  # shared with throughput.py

HERE = Path(__file__).resolve()
SENDER = "app@example.com"


def slow_sink(port: int, delay: float) -> None:
    """The sink process: 250 after the dot, ``delay`` seconds late for slow recipients."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            if any(rcpt.startswith("slow") for rcpt in envelope.rcpt_tos):
                await asyncio.sleep(delay)
            return "250 2.0.0 Ok: queued"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


def messages(n: int, every: int) -> Iterator[Any]:
    from reliable_smtp import Message

    for i in range(n):
        local = f"slow{i}" if i % every == every // 2 else f"user{i}"
        yield Message(sender=SENDER, to=[f"{local}@example.org"], subject="bulk", text="hello")


async def run(mode: str, port: int, n: int, every: int, concurrency: int) -> dict[str, float]:
    from reliable_smtp import (
        AsyncMailer,
        Message,
        RetryPolicy,
        SendFinished,
        SendResult,
        SMTPTransport,
    )

    transport = SMTPTransport(
        "127.0.0.1",
        port,
        tls="none",
        max_connections=concurrency,
        local_hostname="bench.test",
    )
    ended: dict[int, float] = {}  # id(message) -> when its send ended
    waits: list[float] = []
    sent = 0
    async with AsyncMailer(transport, retry=RetryPolicy.never()) as mailer:

        @mailer.on_result
        def on_result(event: SendFinished) -> None:
            ended[id(event.message)] = time.perf_counter()

        # Warm the pool so both modes start with open connections.
        warm = [Message(sender=SENDER, to=["warm@example.org"]) for _ in range(concurrency)]
        await mailer.send_many(warm, concurrency=concurrency)
        ended.clear()
        started = time.perf_counter()
        if mode == "ordered":
            source = list(messages(n, every))
            index = 0
            async for outcome in mailer.stream(source, concurrency=concurrency):
                waits.append(time.perf_counter() - ended.pop(id(source[index])))
                sent += isinstance(outcome, SendResult)
                index += 1
        else:
            async for done in mailer.as_completed(messages(n, every), concurrency=concurrency):
                waits.append(time.perf_counter() - ended.pop(id(done.message)))
                sent += done.ok
        wall = time.perf_counter() - started
    return {"wall": wall, "mean_wait_ms": 1000 * sum(waits) / len(waits), "sent": sent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="messages per run")
    parser.add_argument("--slow-fraction", type=float, default=0.01, help="share of slow ones")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds a slow reply is late")
    parser.add_argument("--concurrency", type=int, default=8, help="sends and connections")
    parser.add_argument("--rounds", type=int, default=2, help="ordered/unordered pairs")
    parser.add_argument("--sink", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        slow_sink(int(args.sink[0]), float(args.sink[1]))
        return

    every = max(1, round(1 / args.slow_fraction))
    slow = len(range(every // 2, args.n, every))
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, str(HERE), "--sink", str(port), str(args.delay)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        print(
            f"{args.n} messages, {slow} of them answered {args.delay:g} s late, "
            f"concurrency {args.concurrency} over {args.concurrency} connections; "
            f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
        )
        print(f"{'round':>5}  {'mode':<28} {'wall s':>8} {'msg/s':>8} {'mean wait ms':>13} sent")
        walls: dict[str, list[float]] = {"ordered": [], "as_completed": []}
        for round_number in range(1, args.rounds + 1):
            for mode in walls:
                figures = asyncio.run(run(mode, port, args.n, every, args.concurrency))
                walls[mode].append(figures["wall"])
                label = "stream() (input order)" if mode == "ordered" else "as_completed()"
                print(
                    f"{round_number:>5}  {label:<28} {figures['wall']:>8.2f} "
                    f"{args.n / figures['wall']:>8.0f} {figures['mean_wait_ms']:>13.1f} "
                    f"{int(figures['sent'])}"
                )
        best = {mode: min(values) for mode, values in walls.items()}
        print(
            f"best wall time: stream() {best['ordered']:.2f} s, as_completed() "
            f"{best['as_completed']:.2f} s: {best['ordered'] / best['as_completed']:.2f}x faster"
        )
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)


if __name__ == "__main__":
    main()
