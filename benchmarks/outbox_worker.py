"""End-to-end outbox worker throughput, against AsyncMailer.stream on the same sink.

Run: .venv/bin/python benchmarks/outbox_worker.py [--n 5000] [--connections 16]
     [--postgres postgresql://postgres@127.0.0.1:5432/test] [--memory 100000]

It starts Postfix's ``smtp-sink`` (``apt-get install postfix``; else an aiosmtpd
sink; the same one benchmarks/throughput.py uses) and, in the same run, sends N
small messages (~2.4 KB, one recipient):

* directly: ``AsyncMailer.stream`` over ``--connections`` connections;
* through the outbox: ``enqueue_many`` into a fresh SQLite file, then ONE
  ``OutboxWorker`` (in-process, the same connections) until the queue is empty -
  every message claimed, dot-marked and settled durably (synchronous=FULL).
  The ratio worker/direct is the price of crash safety (target >= 0.6);
* with ``--postgres ADMIN_URL``: 1, 2 and 4 ``reliable-smtp worker`` processes on
  one fresh PostgreSQL database (created and dropped), start-up included;
* with ``--memory N``: N entries through one SQLite worker, RSS printed along the
  way (it should stay flat).

Nothing is asserted; the figures go in the report with this command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render import HTML, SENDER, SUBJECT, TEXT  # the shared benchmark message
from throughput import rss_mb, sink  # the sink (smtp-sink or aiosmtpd) and RSS


def messages(n: int, offset: int = 0) -> list[object]:
    from reliable_smtp import Message

    return [
        Message(sender=SENDER, to=[f"user{i}@example.org"], subject=SUBJECT, text=TEXT, html=HTML)
        for i in range(offset, offset + n)
    ]


def transport(port: int, connections: int) -> object:
    from reliable_smtp import SMTPTransport

    return SMTPTransport(
        "127.0.0.1",
        port,
        tls="none",
        max_connections=connections,
        max_messages_per_connection=1_000_000,
        local_hostname="bench.test",
    )


async def direct(port: int, n: int, connections: int) -> float:
    from reliable_smtp import AsyncMailer, SendResult

    batch = messages(n)
    started = time.perf_counter()
    sent = 0
    async with AsyncMailer(transport(port, connections)) as mailer:  # type: ignore[arg-type]
        async for outcome in mailer.stream(batch, concurrency=connections):
            sent += isinstance(outcome, SendResult)
    elapsed = time.perf_counter() - started
    assert sent == n, f"only {sent} of {n} sent"
    return n / elapsed


async def through_worker(
    url: str, port: int, n: int, connections: int, *, memory: bool = False
) -> tuple[float, float]:
    from reliable_smtp import AsyncMailer, Outbox, OutboxWorker

    with Outbox(url) as outbox:
        started = time.perf_counter()
        for start in range(0, n, 5000):
            outbox.enqueue_many(messages(min(5000, n - start), start))
        enqueue_rate = n / (time.perf_counter() - started)
        async with AsyncMailer(transport(port, connections)) as mailer:  # type: ignore[arg-type]
            worker = OutboxWorker(outbox, mailer, concurrency=connections)
            started = time.perf_counter()
            running = asyncio.create_task(worker.run_until_idle())
            if memory:
                step = max(1, n // 10)
                mark = step
                while not running.done():
                    await asyncio.sleep(0.2)
                    if worker.stats.settled >= mark:
                        print(
                            f"  {worker.stats.settled:>7} settled   RSS {rss_mb():6.1f} MB   "
                            f"{worker.stats.settled / (time.perf_counter() - started):7.0f} msg/s",
                            flush=True,
                        )
                        mark += step
            stats = await running
            elapsed = time.perf_counter() - started
        assert stats.recipients.get("sent") == n, stats
    return n / elapsed, enqueue_rate


def postgres_workers(admin_url: str, port: int, n: int, workers: int, connections: int) -> float:
    import psycopg

    from reliable_smtp import EntryState, Outbox

    name = f"reliable_smtp_bench_{secrets.token_hex(4)}"
    base = admin_url.rpartition("/")[0]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{base}/{name}"
        with Outbox(url) as outbox:
            for start in range(0, n, 5000):
                outbox.enqueue_many(messages(min(5000, n - start), start))
            env = {k: v for k, v in os.environ.items() if not k.startswith("RELIABLE_SMTP_")}
            env["RELIABLE_SMTP_MAX_CONNECTIONS"] = str(connections)
            command = [
                sys.executable,
                "-m",
                "reliable_smtp",
                "worker",
                "--outbox",
                url,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--tls",
                "none",
                "--env-file",
                "none",
                "--until-idle",
            ]
            started = time.perf_counter()
            running = [
                subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
                for _ in range(workers)
            ]
            for process in running:
                process.wait(timeout=600)
            elapsed = time.perf_counter() - started
            assert outbox.stats().counts[EntryState.SENT] == n, outbox.stats()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="also PostgreSQL, 1/2/4 workers")
    parser.add_argument("--memory", type=int, metavar="N", help="RSS over N entries instead")
    args = parser.parse_args()
    with sink() as (port, name), tempfile.TemporaryDirectory() as tmp:
        print(f"sink: {name}; {args.n} messages; {args.connections} connections")
        if args.memory:
            url = f"sqlite:///{tmp}/memory.db"
            rate, _ = asyncio.run(
                through_worker(url, port, args.memory, args.connections, memory=True)
            )
            print(f"{args.memory} entries through one SQLite worker: {rate:.0f} msg/s")
            return
        baseline = asyncio.run(direct(port, args.n, args.connections))
        print(f"AsyncMailer.stream (direct)        {baseline:8.0f} msg/s")
        rate, enqueue_rate = asyncio.run(
            through_worker(f"sqlite:///{tmp}/outbox.db", port, args.n, args.connections)
        )
        print(f"enqueue_many into SQLite           {enqueue_rate:8.0f} msg/s")
        print(
            f"one SQLite worker                  {rate:8.0f} msg/s   {rate / baseline:.2f}x direct"
        )
        if args.postgres:
            for workers in (1, 2, 4):
                rate = postgres_workers(args.postgres, port, args.n, workers, args.connections)
                print(
                    f"PostgreSQL, {workers} worker process(es)  {rate:8.0f} msg/s   "
                    f"{rate / baseline:.2f}x direct (start-up included)"
                )


if __name__ == "__main__":
    main()
