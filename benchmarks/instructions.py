"""Instructions per message of the full stack and of its pieces, counted by callgrind.

Run: .venv/bin/python benchmarks/instructions.py [--connections 8 1] [--tree NAME=SRC ...]
     [--no-stages]

CPU time on a shared 2-CPU machine wanders by +-20% from one run to the next;
instruction counts do not (~0.1% on a quiet machine), so they decide whether a change
to the hot path pays. Each probe runs in a fresh ``valgrind --tool=callgrind`` process
with ``PYTHONPATH`` set to one ``--tree`` (a ``src`` directory, as in
``cpu_compare.py``): it does its warm-up, calls ``os.getppid()``, does the counted part,
and calls ``os.getppid()`` again; ``--dump-before=os_getppid`` cuts the count there,
so imports, warm-up and shutdown are left out. The probes:

* ``full``: ``stream()`` of 500 ``Message`` objects (after 100 warm-up ones) through
  ``AsyncMailer`` and ``SMTPTransport`` with PIPELINING against Postfix's ``smtp-sink``,
  ``concurrency`` twice the connections - the ``cpu_compare.py`` client;
* ``transport``: ``SMTPTransport.deliver`` alone, prebuilt envelopes and contents, as
  many sends at once as the ``full`` probe has;
* the stages (``--no-stages`` skips them), each 500 times after 50 warm-up calls:
  ``Message(...)``, ``render()``, ``Envelope.build``, ``RecipientPolicy().acheck`` (the
  event loop's ``run_until_complete`` included: see the ``noop`` row), the mailer's
  retry loop over ``MemoryTransport`` (private: ``AsyncMailer._deliver``), and
  ``run_until_complete`` of a coroutine that does nothing.

Counts against smtp-sink depend a little on how replies batch, so a busy machine moves
the two SMTP rows by a few percent; the stages are exact. Needs valgrind
(``apt-get install valgrind``) and smtp-sink (``apt-get install postfix``). Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_compare import bench_transport
from render import HTML, SENDER, SUBJECT, TEXT
from throughput import sink

HERE = Path(__file__).resolve()
SRC = HERE.parent.parent / "src"
WARM_UP, COUNTED = 100, 500
STAGES = ("Message()", "render()", "Envelope.build", "policy.acheck", "_deliver(memory)", "noop")


def messages(start: int, stop: int) -> list[object]:
    from reliable_smtp import Message

    return [
        Message(sender=SENDER, to=[f"user{i}@example.org"], subject=SUBJECT, text=TEXT, html=HTML)
        for i in range(start, stop)
    ]


async def probe_full(port: int, connections: int) -> None:
    from reliable_smtp import AsyncMailer

    transport = bench_transport(port, connections)
    async with AsyncMailer(transport) as mailer:
        for start, stop in ((0, WARM_UP), (WARM_UP, WARM_UP + COUNTED)):
            if start:
                os.getppid()
            # Built as the stream pulls them, as cpu_compare.py's client does: counted.
            batch = (messages(i, i + 1)[0] for i in range(start, stop))
            async for _ in mailer.stream(batch, concurrency=2 * connections):  # type: ignore[arg-type]
                pass
        os.getppid()


async def probe_transport(port: int, connections: int) -> None:
    from reliable_smtp import Envelope, render

    transport = bench_transport(port, connections)
    rendered = [render(m) for m in messages(0, WARM_UP + COUNTED)]  # type: ignore[arg-type]
    envelopes = [Envelope.build(r.sender, r.recipients) for r in rendered]

    async def sender(queue: list[int]) -> None:
        while queue:
            i = queue.pop()
            await transport.deliver(envelopes[i], rendered[i].content)

    for start, stop in ((0, WARM_UP), (WARM_UP, WARM_UP + COUNTED)):
        queue = list(range(stop - 1, start - 1, -1))
        if start:
            os.getppid()
        await asyncio.gather(*(sender(queue) for _ in range(2 * connections)))
    os.getppid()
    await transport.aclose()


def probe_stages() -> None:
    from reliable_smtp import (
        AsyncMailer,
        Envelope,
        MemoryTransport,
        Message,
        RecipientPolicy,
        render,
    )

    count = 50 + COUNTED
    built = messages(0, count)
    rendered = [render(m) for m in built]  # type: ignore[arg-type]
    envelopes = [Envelope.build(r.sender, r.recipients) for r in rendered]
    policy = RecipientPolicy()
    mailer = AsyncMailer(MemoryTransport())
    loop = asyncio.new_event_loop()

    async def nothing() -> None:
        pass

    def deliver(i: int) -> object:
        return loop.run_until_complete(
            mailer._deliver(
                envelopes[i],
                rendered[i].content,
                rendered[i].message_id,
                refused={},
                chunk_size=100,
            )
        )

    steps: dict[str, Callable[[int], object]] = {
        "Message()": lambda i: Message(
            sender=SENDER, to=[f"user{i}@example.org"], subject=SUBJECT, text=TEXT, html=HTML
        ),
        "render()": lambda i: render(built[i]),  # type: ignore[arg-type]
        "Envelope.build": lambda i: Envelope.build(rendered[i].sender, rendered[i].recipients),
        "policy.acheck": lambda i: loop.run_until_complete(
            policy.acheck(envelopes[i].sender, envelopes[i].recipients)
        ),
        "_deliver(memory)": deliver,
        "noop": lambda i: loop.run_until_complete(nothing()),
    }
    for name in STAGES:
        step = steps[name]
        for i in range(50):
            step(i)
        os.getppid()
        for i in range(50, count):
            step(i)
        os.getppid()
        mailer.transport.clear()  # type: ignore[attr-defined]


def counted(src: str, probe: list[str]) -> list[float]:
    """Run ``probe`` under callgrind with ``src`` first on the path: instructions per
    message of each counted part (the dumps between two os.getppid() calls)."""
    with tempfile.TemporaryDirectory() as directory:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--dump-before=os_getppid",
            f"--callgrind-out-file={directory}/out",
            sys.executable,
            str(HERE),
            "--probe",
            *probe,
        ]
        env = {**os.environ, "PYTHONPATH": src}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the probe {probe} failed for {src}:\n{done.stderr[-2000:]}")
        parts = sorted(Path(directory).glob("out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        totals = []
        for part in parts:
            for line in part.read_text().splitlines():
                if line.startswith("totals:"):
                    totals.append(int(line.split()[1]))
        # Dumps alternate: before the first cut, a counted part, between parts, ...
        return [total / COUNTED for total in totals[1::2]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 1])
    parser.add_argument("--tree", action="append", metavar="NAME=SRC")
    parser.add_argument("--no-stages", action="store_true")
    parser.add_argument("--probe", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        kind, *rest = args.probe
        if kind == "stages":
            probe_stages()
        else:
            port, connections = int(rest[0]), int(rest[1])
            run = probe_full if kind == "full" else probe_transport
            asyncio.run(run(port, connections))
        return

    trees = [t.split("=", 1) for t in args.tree or [f"this={SRC}"]]
    print(f"Python {sys.version.split()[0]}; instructions per message (callgrind)")
    with sink() as (port, sink_name):
        print(f"sink: {sink_name}\n")
        print(f"{'tree':>10}  {'probe':<28}{'instructions':>14}")
        for name, src in trees:
            for connections in args.connections:
                for kind in ("full", "transport"):
                    (figure,) = counted(src, [kind, str(port), str(connections)])
                    label = f"{kind}, {connections} conn"
                    print(f"{name:>10}  {label:<28}{figure / 1e3:>12.1f}k", flush=True)
            if not args.no_stages:
                for stage, figure in zip(STAGES, counted(src, ["stages"]), strict=True):
                    print(f"{name:>10}  {stage:<28}{figure / 1e3:>12.1f}k", flush=True)


if __name__ == "__main__":
    main()
