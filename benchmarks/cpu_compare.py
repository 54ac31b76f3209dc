"""Client CPU per message of the full stack, for several source trees in one run.

Run: .venv/bin/python benchmarks/cpu_compare.py [--n 2000] [--rounds 5] [--connections 1 8]
     [--tree NAME=SRC ...] [--loop asyncio uvloop] [--recipients 1] [--profile FILE]

Compares versions of reliable-smtp on the same machine in the same minutes: each
``--tree`` is a ``src`` directory (a ``git worktree add /tmp/base <commit>`` of an
older commit, or this checkout's own ``src``, the default), put first on
``PYTHONPATH`` of a fresh client process. Every round runs every tree at every
connection count, one after the other, so a busy neighbour on a shared machine
slows them all alike; the table gives the medians over the rounds. The client is
``throughput.py``'s reliable-smtp variant with PIPELINING (``Message`` -> render
-> recipient policy -> envelope -> retry loop -> pool) against Postfix's
``smtp-sink``, written against the public API only, so that trees from before the
module privatization run too. ``--profile FILE`` instead runs the current tree
once under cProfile (``--connections``' first count) and writes the stats to FILE.
``--loop asyncio uvloop`` runs every tree on each event loop (uvloop: the
``reliable-smtp[uvloop]`` extra), the loops interleaved like the trees.
``--recipients K`` gives every message K ``To`` addresses (one transaction, K RCPTs).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render import HTML, SENDER, SUBJECT, TEXT
from throughput import sink

HERE = Path(__file__).resolve()
SRC = HERE.parent.parent / "src"


def bench_transport(port: int, connections: int) -> Any:
    """The measured client's transport: PIPELINING, ``connections`` kept for the whole run
    (also ``instructions.py``'s)."""
    from reliable_smtp import SMTPTransport

    return SMTPTransport(
        "127.0.0.1",
        port,
        tls="none",
        max_connections=connections,
        pipelining=True,
        max_messages_per_connection=1_000_000,
        local_hostname="bench.test",
    )


async def send_all(port: int, n: int, connections: int, recipients: int = 1) -> int:
    from reliable_smtp import AsyncMailer, Message, SendResult

    transport = bench_transport(port, connections)
    messages = (
        Message(
            sender=SENDER,
            to=[f"user{i}-{k}@example.org" for k in range(recipients)],
            subject=SUBJECT,
            text=TEXT,
            html=HTML,
        )
        for i in range(n)
    )
    sent = 0
    async with AsyncMailer(transport) as mailer:
        async for outcome in mailer.stream(messages, concurrency=connections * 2):
            sent += isinstance(outcome, SendResult)
    return sent


def client(
    port: int, n: int, connections: int, profile: str | None, loop: str, recipients: int
) -> None:
    """One measured run, in this process; prints its figures as JSON."""
    import cProfile

    import reliable_smtp

    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    wall, cpu = time.perf_counter(), time.process_time()
    if loop == "uvloop":
        import uvloop

        sent = uvloop.run(send_all(port, n, connections, recipients))
    else:
        sent = asyncio.run(send_all(port, n, connections, recipients))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    figures = {"sent": sent, "msg_s": n / wall, "cpu_us": cpu / n * 1e6}
    print(json.dumps({**figures, "library": reliable_smtp.__file__}))


def run_client(
    src: str,
    port: int,
    n: int,
    connections: int,
    profile: str = "",
    loop: str = "asyncio",
    recipients: int = 1,
) -> dict[str, float]:
    command = [sys.executable, str(HERE), "--client", str(port), "--n", str(n)]
    command += ["--connections", str(connections), "--profile", profile, "--loop", loop]
    command += ["--recipients", str(recipients)]
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the client for {src} failed:\n{done.stderr}")
    figures = dict(json.loads(done.stdout))
    if not str(figures.pop("library")).startswith(str(Path(src).resolve())):
        raise RuntimeError(f"{src} is not the reliable_smtp the client imported")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="messages per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--tree", action="append", metavar="NAME=SRC", help=f"a src directory (default {SRC})"
    )
    parser.add_argument(
        "--loop", nargs="+", choices=["asyncio", "uvloop"], default=["asyncio"], help="event loops"
    )
    parser.add_argument("--recipients", type=int, default=1, help="To addresses per message")
    parser.add_argument("--profile", default="", help="cProfile the current tree into FILE")
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(
            args.client,
            args.n,
            args.connections[0],
            args.profile or None,
            args.loop[0],
            args.recipients,
        )
        return

    sources = [t.split("=", 1) for t in args.tree or [f"this={SRC}"]]
    # One variant per tree and loop: (name, src, loop); "+uv" marks uvloop.
    trees = [
        (name if loop == "asyncio" else f"{name}+uv", src, loop)
        for name, src in sources
        for loop in args.loop
    ]
    with sink() as (port, sink_name):
        print(f"sink: {sink_name}; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        if args.profile:
            figures = run_client(
                str(SRC),
                port,
                args.n,
                args.connections[0],
                args.profile,
                args.loop[0],
                args.recipients,
            )
            print(f"{figures['cpu_us']:.0f} µs CPU/msg under cProfile; stats in {args.profile}")
            return
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        for round_number in range(1, args.rounds + 1):
            for connections in args.connections:
                for name, src, loop in trees:
                    figures = run_client(
                        src, port, args.n, connections, loop=loop, recipients=args.recipients
                    )
                    runs.setdefault((name, connections), []).append(figures)
                    print(
                        f"round {round_number} {name:>8} {connections} conn: "
                        f"{figures['msg_s']:6.0f} msg/s {figures['cpu_us']:6.0f} µs CPU/msg "
                        f"({figures['sent']:.0f} sent)",
                        flush=True,
                    )
    print(
        f"\nmedians of {args.rounds} interleaved rounds, {args.n} messages each, "
        f"{args.recipients} recipient(s) per message"
    )
    print(f"{'tree':>8}{'connections':>13}{'msg/s':>9}{'CPU µs/msg':>12}")
    for connections in args.connections:
        for name, _, _ in trees:
            done = runs[(name, connections)]
            rate = statistics.median(f["msg_s"] for f in done)
            cpu = statistics.median(f["cpu_us"] for f in done)
            print(f"{name:>8}{connections:>13}{rate:>9.0f}{cpu:>12.0f}")


if __name__ == "__main__":
    main()
