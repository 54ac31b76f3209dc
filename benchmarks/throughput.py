"""Bulk sending throughput: reliable-smtp against raw aiosmtplib and stdlib smtplib.

Run: .venv/bin/python benchmarks/throughput.py [--n 2000] [--latency-ms 20 50] [--memory 100000]
     [--server smtp-sink|postfix]

In one run it starts a fast local sink - Postfix's ``smtp-sink`` when installed
(``apt-get install postfix``; as root it runs with ``-u nobody``), else an
aiosmtpd sink in a subprocess - and sends the same N small messages (~2.4 KB, one
recipient, built from message objects each time) with each client, every client
in a fresh process so that CPU time and peak RSS are its own:

* reliable-smtp, full stack (Message -> render -> envelope -> retry loop ->
  pool), 1 and 8 connections: no PIPELINING; PIPELINING within each message
  (``pipeline_across_messages=False``); PIPELINING across messages (the next
  message's MAIL, RCPT and DATA right after the previous one's final dot, before
  its reply); and CHUNKING (MAIL, RCPT and ``BDAT <n> LAST`` with the message in
  one write). Each sends through ``stream()`` with four sends per connection in
  flight, so one is always waiting for the connection when a message ends (with
  two, the next send is often still being rendered at that moment);
* raw aiosmtplib: one connection, ``send_message(EmailMessage)`` per message;
* stdlib smtplib: one connection, ``send_message(EmailMessage)`` per message.

It prints messages/s, client CPU microseconds per message and peak RSS, with
ratios against raw aiosmtplib measured in the same run. ``--latency-ms`` adds a
pass per round trip given through a proxy on 127.0.0.1 that delays every chunk
by half the round trip in each direction, so the effect of pipelining, CHUNKING
and the pool shows (one connection, each against the non-pipelined rate).

``smtp-sink`` offers PIPELINING but not CHUNKING, so there the CHUNKING variant
falls back to DATA. ``--server postfix`` measures against Postfix's own smtpd
instead (``benchmarks/postfix_smtpd.py``: a private configuration in a temporary
directory, 127.0.0.1, a free port, every message to the ``discard`` transport;
needs root), which offers CHUNKING: the proof against a server nobody here
wrote. Its mail log is checked afterwards for ``bdat=`` and ``status=sent``.
``--memory N`` streams N messages through ``AsyncMailer.stream`` and prints RSS
along the way (it should stay flat). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render import HTML, SENDER, SUBJECT, TEXT  # the shared benchmark message

HERE = Path(__file__).resolve()
RECIPIENT = "alice@example.org"

# -- clients (each runs in its own process) ---------------------------------------------


def reliable_messages(n: int) -> Iterator[object]:
    from reliable_smtp import Message

    for i in range(n):
        yield Message(
            sender=SENDER, to=[f"user{i}@example.org"], subject=SUBJECT, text=TEXT, html=HTML
        )


def stdlib_message(i: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = f"user{i}@example.org"
    message["Subject"] = SUBJECT
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="example.com")
    message.set_content(TEXT)
    message.add_alternative(HTML, subtype="html")
    return message


async def run_reliable(
    port: int,
    n: int,
    connections: int,
    pipelining: bool,
    chunking: bool = False,
    across_messages: bool = False,
) -> int:
    from reliable_smtp import AsyncMailer, SendResult, SMTPTransport

    transport = SMTPTransport(
        "127.0.0.1",
        port,
        tls="none",
        max_connections=connections,
        pipelining=pipelining,
        pipeline_across_messages=across_messages,
        chunking=chunking,
        max_messages_per_connection=1_000_000,
        local_hostname="bench.test",
    )
    sent = 0
    async with AsyncMailer(transport) as mailer:
        async for outcome in mailer.stream(reliable_messages(n), concurrency=connections * 4):
            sent += isinstance(outcome, SendResult)
    return sent


async def run_aiosmtplib(port: int, n: int) -> int:
    import aiosmtplib

    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench.test"
    )
    await smtp.connect()
    sent = 0
    for i in range(n):
        errors, _ = await smtp.send_message(stdlib_message(i))
        sent += not errors
    await smtp.quit()
    return sent


def run_smtplib(port: int, n: int) -> int:
    import smtplib

    sent = 0
    with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test") as smtp:
        for i in range(n):
            sent += not smtp.send_message(stdlib_message(i))
    return sent


CHUNKED = "reliable-smtp 1 conn, CHUNKING"
ACROSS = "reliable-smtp 1 conn, across messages"
PIPELINED = "reliable-smtp 1 conn, pipelining"
SERIAL = "reliable-smtp 1 conn, no pipelining"

VARIANTS: dict[str, Callable[[int, int], object]] = {
    CHUNKED: lambda p, n: run_reliable(p, n, 1, True, chunking=True),
    ACROSS: lambda p, n: run_reliable(p, n, 1, True, across_messages=True),
    PIPELINED: lambda p, n: run_reliable(p, n, 1, True),
    SERIAL: lambda p, n: run_reliable(p, n, 1, False),
    "reliable-smtp 8 conn, CHUNKING": lambda p, n: run_reliable(p, n, 8, True, chunking=True),
    "reliable-smtp 8 conn, across messages": lambda p, n: run_reliable(
        p, n, 8, True, across_messages=True
    ),
    "reliable-smtp 8 conn, pipelining": lambda p, n: run_reliable(p, n, 8, True),
    "reliable-smtp 8 conn, no pipelining": lambda p, n: run_reliable(p, n, 8, False),
    "aiosmtplib send_message": run_aiosmtplib,
    "smtplib send_message": run_smtplib,
}
BASELINE = "aiosmtplib send_message"
#: Through the latency proxy only these run (the others take minutes at 50 ms).
LATENCY_VARIANTS = (
    CHUNKED,
    ACROSS,
    PIPELINED,
    SERIAL,
    "reliable-smtp 8 conn, across messages",
    BASELINE,
)


def measure(variant: str, port: int, n: int) -> dict[str, float]:
    run = VARIANTS[variant]
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = run(port, n)
    sent = asyncio.run(outcome) if asyncio.iscoroutine(outcome) else outcome  # type: ignore[arg-type]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "sent": float(sent),  # type: ignore[arg-type]
        "messages_per_s": n / wall,
        "cpu_us_per_message": cpu / n * 1e6,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def memory_run(port: int, n: int) -> None:
    from reliable_smtp import AsyncMailer, SendResult, SMTPTransport

    transport = SMTPTransport(
        "127.0.0.1",
        port,
        tls="none",
        max_connections=8,
        max_messages_per_connection=1_000_000,
        local_hostname="bench.test",
    )
    sent = 0
    started = time.perf_counter()
    async with AsyncMailer(transport) as mailer:
        async for outcome in mailer.stream(reliable_messages(n), concurrency=16):
            sent += isinstance(outcome, SendResult)
            if sent % (n // 10) == 0:
                print(
                    f"  {sent:>7} sent   RSS {rss_mb():6.1f} MB   "
                    f"{sent / (time.perf_counter() - started):7.0f} msg/s",
                    flush=True,
                )


# -- the sink and the latency proxy (subprocesses of the orchestrator) ----------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def sink(server: str = "smtp-sink") -> Iterator[tuple[int, str]]:
    if server == "postfix":
        import postfix_smtpd

        if not postfix_smtpd.available():
            raise SystemExit("--server postfix needs Postfix installed and root")
        with postfix_smtpd.postfix_smtpd() as postfix:
            yield postfix.port, f"Postfix {postfix_smtpd.version()} smtpd, discard transport"
            log = postfix.wait_for_log(lambda text: "removed" in text, timeout=5)
            print(
                f"\nPostfix mail log: {log.count('status=sent')} deliveries (discarded), "
                f"{log.count(' bdat=')} sessions used BDAT, {log.count(' data=')} used DATA"
            )
        return
    port = free_port()
    smtp_sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if Path(smtp_sink).exists():
        command = [smtp_sink, "-c" if False else "-a", f"127.0.0.1:{port}", "1024"]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "nobody"]
        name = "Postfix smtp-sink"
    else:
        command = [sys.executable, str(HERE), "--aiosmtpd-sink", str(port)]
        name = "aiosmtpd sink (install postfix for smtp-sink)"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield port, name
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def aiosmtpd_sink(port: int) -> None:
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
            return "250 2.0.0 Ok: queued"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


async def proxy(listen: int, upstream: int, delay: float) -> None:
    """Forward bytes both ways, each chunk delivered ``delay`` seconds after it arrived."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    writer.close()
                    return
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((loop.time() + delay, b""))
        await sender

    async def session(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream)
        await asyncio.gather(
            pipe(client_reader, server_writer),
            pipe(server_reader, client_writer),
            return_exceptions=True,
        )

    server = await asyncio.start_server(session, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


@contextmanager
def latency_proxy(upstream: int, rtt_ms: float) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE), "--proxy", str(port), str(upstream), str(rtt_ms / 2000)]
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- the orchestrator -------------------------------------------------------------------


def run_variant(variant: str, port: int, n: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, str(HERE), "--variant", variant, "--port", str(port), "--n", str(n)],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout))


def report(title: str, results: dict[str, dict[str, float]], n: int) -> None:
    base = results[BASELINE]["messages_per_s"]
    print(f"\n{title} ({n} messages of ~2.4 KB, 1 recipient each)")
    print(
        f"{'client':<38}{'msg/s':>9}{'x aiosmtplib':>14}{'CPU µs/msg':>12}{'peak RSS MB':>13}"
        f"{'sent':>7}"
    )
    for variant, figures in results.items():
        print(
            f"{variant:<38}{figures['messages_per_s']:>9.0f}"
            f"{figures['messages_per_s'] / base:>13.2f}x"
            f"{figures['cpu_us_per_message']:>12.0f}{figures['peak_rss_mb']:>13.1f}"
            f"{figures['sent']:>7.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="messages per client (loopback)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        nargs="+",
        default=[20.0],
        help="emulated round trips, one pass each (0 to skip)",
    )
    parser.add_argument(
        "--server",
        choices=("smtp-sink", "postfix"),
        default="smtp-sink",
        help="smtp-sink (fast, no CHUNKING) or Postfix's own smtpd (CHUNKING; root)",
    )
    parser.add_argument("--latency-n", type=int, default=300, help="messages per client there")
    parser.add_argument("--memory", type=int, default=0, help="stream this many messages")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--proxy", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--aiosmtpd-sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:
        print(json.dumps(measure(args.variant, args.port, args.n)))
        return
    if args.proxy:
        listen, upstream, delay = args.proxy
        asyncio.run(proxy(int(listen), int(upstream), float(delay)))
        return
    if args.aiosmtpd_sink:
        aiosmtpd_sink(args.aiosmtpd_sink)
        return

    with sink(args.server) as (port, sink_name):
        print(
            f"sink: {sink_name} on 127.0.0.1:{port}; Python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPUs"
        )
        if args.n > 0:
            results = {variant: run_variant(variant, port, args.n) for variant in VARIANTS}
            report("Loopback", results, args.n)
        for rtt in (ms for ms in args.latency_ms if ms > 0):
            with latency_proxy(port, rtt) as slow_port:
                slow = {v: run_variant(v, slow_port, args.latency_n) for v in LATENCY_VARIANTS}
            report(f"Emulated {rtt:g} ms round trip", slow, args.latency_n)
            one_plain = slow[SERIAL]["messages_per_s"]
            for variant in (CHUNKED, ACROSS, PIPELINED, "reliable-smtp 8 conn, across messages"):
                rate = slow[variant]["messages_per_s"]
                print(f"{variant}: {rate / one_plain:.2f}x one non-pipelined connection")
        if args.memory:
            print(f"\nStreaming {args.memory} messages through AsyncMailer.stream (8 connections)")
            asyncio.run(memory_run(port, args.memory))


if __name__ == "__main__":
    main()
