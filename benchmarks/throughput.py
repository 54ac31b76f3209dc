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
* stdlib smtplib: one connection, ``send_message(EmailMessage)`` per message;
* loopback only, for reference (issue #15): the Python floor, a hand-written
  ``asyncio.Protocol`` client on 8 connections sending prebuilt bytes (every
  message rendered by ``render()``, dot-stuffed and framed before the clock
  starts; EHLO once per connection; every reply code checked), in two forms:
  ``python floor, 8 conn`` writes whole transactions (MAIL, RCPT, DATA, content,
  dot) with up to ``FLOOR_WINDOW`` messages in flight per connection, content
  before its 354, which RFC 2920 does not allow a client; ``354 first`` waits
  for the 354 and writes the content with the next message's MAIL, RCPT and
  DATA, the dialogue of reliable-smtp's ``across messages``. A third,
  ``python streams client, 8 conn``, is the client most people write by hand
  (``asyncio.open_connection``, ``readline`` per reply line, the envelope pipelined
  per RFC 2920, one message at a time per connection). And Postfix's
  ``smtp-source`` (C, 8 sessions, ``-d``: many messages per connection; it
  speaks HELO and does not pipeline), sending the same rendered message with
  ``-F``; its CPU comes from ``os.wait4``, its peak RSS from its VmHWM.

It prints messages/s, client CPU microseconds per message and peak RSS, with
ratios against raw aiosmtplib measured in the same run, then the reliable-smtp
8-connection ``across messages`` rate and CPU against the floors and smtp-source.
``--latency-ms`` adds a pass per round trip given through a proxy on 127.0.0.1
that delays every chunk by half the round trip in each direction, so the effect
of pipelining, CHUNKING and the pool shows (one connection, each against the
non-pipelined rate).

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
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

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


# -- the Python floor and the C limit ----------------------------------------------------

FLOOR = "python floor, 8 conn"
STRICT_FLOOR = "python floor, 8 conn, 354 first"
STREAMS_FLOOR = "python streams client, 8 conn"
SOURCE = "smtp-source (C), 8 sessions"
#: Messages each floor connection keeps in flight (written, final reply not yet read).
FLOOR_WINDOW = 8
MAIL, RCPT, DATA, DOT = range(4)
EXPECTED = {MAIL: b"250", RCPT: b"250", DATA: b"354", DOT: b"250"}


def offered_extensions(port: int) -> dict[str, str]:
    """The server's EHLO keywords, asked on a connection of its own before the clock starts."""
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test") as probe:
        probe.ehlo()
        return dict(probe.esmtp_features)


def floor_messages(n: int, size: bool) -> list[tuple[bytes, bytes]]:
    """Each message's transaction as bytes: MAIL + RCPT + DATA, and content + dot.

    The content is what reliable-smtp sends (``render()`` of the same ``Message``),
    dot-stuffed; MAIL carries ``SIZE=`` when the server offers SIZE, as reliable-smtp's
    does. Built before the clock starts.
    """
    from reliable_smtp import render

    built = []
    for message in reliable_messages(n):
        rendered = render(message)  # type: ignore[arg-type]
        content = rendered.content
        if content.startswith(b"."):
            content = b"." + content
        content = content.replace(b"\r\n.", b"\r\n..")
        if not content.endswith(b"\r\n"):
            content += b"\r\n"
        (recipient,) = rendered.recipients
        mail = f"MAIL FROM:<{rendered.sender}>"
        if size:
            mail += f" SIZE={len(rendered.content)}"
        envelope = f"{mail}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n"
        built.append((envelope.encode("ascii"), content + b".\r\n"))
    return built


class FloorConnection(asyncio.Protocol):
    """One connection of the Python floor: EHLO once, then the prebuilt messages, pipelined.

    With ``whole`` (:data:`FLOOR`), up to ``window`` messages are on the wire at once:
    each one's MAIL, RCPT, DATA, content and dot go in one write, before the replies
    of the messages ahead of it and before its own 354. RFC 2920 makes DATA the last
    command of a group (the content waits for the 354), so no real client can do this;
    a sink that reads on does not mind. A DATA refused with content already behind it
    would have the server read that content as commands: the connection is then
    closed and its unsent messages count as not sent.

    Without (:data:`STRICT_FLOOR`), the content goes only after its 354, in one write
    with the next message's MAIL, RCPT and DATA - one round trip per message, the
    dialogue of reliable-smtp's ``pipeline_across_messages``.

    Every reply is read and checked: a message counts as sent only if it got 250, 250,
    354 and 250.
    """

    def __init__(
        self, pairs: list[tuple[bytes, bytes]], whole: list[bytes] | None, window: int
    ) -> None:
        self.pairs = pairs
        self.whole = whole
        self.window = window
        self.written = 0  # messages whose MAIL has been written
        self.sent = 0
        self.failed = False  # a reply of the current message was not the expected one
        self.expected: deque[int] = deque()
        self.buffer = b""
        self.stage = "greeting"
        self.ehlo: list[bytes] = []
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self) -> bytes:
        if self.whole is not None:
            return self.next_wholes(self.window)
        return self.next_envelope()

    def next_wholes(self, count: int) -> bytes:
        batch = self.whole[self.written : self.written + count]  # type: ignore[index]
        self.written += len(batch)
        self.expected.extend((MAIL, RCPT, DATA, DOT) * len(batch))
        return b"".join(batch)

    def next_envelope(self) -> bytes:
        if self.written == len(self.pairs):
            return b""
        self.written += 1
        self.expected.extend((MAIL, RCPT, DATA))
        return self.pairs[self.written - 1][0]

    def data_received(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\r\n")
        out: list[bytes] = []
        finished = 0
        for line in lines:
            if self.stage == "session":
                if line[3:4] == b"-":
                    continue  # a multiline reply goes on
                kind = self.expected.popleft()
                ok = line[:3] == EXPECTED[kind]
                if kind == DOT:
                    self.sent += ok and not self.failed
                    self.failed = False
                    finished += 1
                elif kind != DATA:
                    self.failed |= not ok
                elif self.whole is None:
                    if ok:  # the content after its 354, with the next envelope
                        out.append(self.pairs[self.written - 1][1])
                        self.expected.append(DOT)
                    else:  # no content: the message ends here, not sent
                        self.failed = False
                    out.append(self.next_envelope())
                elif not ok:  # the content behind it would be read as commands
                    self.stage = "broken"
                    self.transport.close()  # type: ignore[union-attr]
                    return
            elif self.stage == "greeting":
                if line[3:4] == b"-":
                    continue
                self.check(line, b"220")
                out.append(b"EHLO bench.test\r\n")
                self.stage = "ehlo"
            elif self.stage == "ehlo":
                self.ehlo.append(line[4:].upper())
                if line[3:4] != b"-":
                    self.check(line, b"250")
                    if b"PIPELINING" not in self.ehlo:
                        self.fail(RuntimeError("the server does not offer PIPELINING"))
                        return
                    self.stage = "session"
                    out.append(self.start())
            elif self.stage == "quit":
                self.transport.close()  # type: ignore[union-attr]
                return
        if self.whole is not None and finished:
            out.append(self.next_wholes(finished))
        if self.stage == "session" and not self.expected:
            self.stage = "quit"
            out.append(b"QUIT\r\n")
        if out:
            self.transport.write(b"".join(out))  # type: ignore[union-attr]

    def check(self, line: bytes, code: bytes) -> None:
        if line[:3] != code:
            got = line.decode(errors="replace")
            self.fail(RuntimeError(f"expected {code.decode()}, got {got!r}"))

    def fail(self, error: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(error)
        self.transport.close()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.sent)


async def run_floor(
    port: int, pairs: list[tuple[bytes, bytes]], whole: list[bytes] | None, connections: int = 8
) -> int:
    loop = asyncio.get_running_loop()
    shares = [
        (pairs[i::connections], None if whole is None else whole[i::connections])
        for i in range(connections)
    ]
    opened = await asyncio.gather(
        *(
            loop.create_connection(
                lambda share=share: FloorConnection(*share, FLOOR_WINDOW), "127.0.0.1", port
            )
            for share in shares
        )
    )
    return sum(await asyncio.gather(*(protocol.done for _, protocol in opened)))


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """One reply's code (its last line's), read line by line."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        if line[3:4] != b"-":
            return line[:3]


async def streams_connection(port: int, pairs: list[tuple[bytes, bytes]]) -> int:
    """One connection of the streams client: EHLO once, then each prebuilt message in turn,
    its envelope pipelined (RFC 2920: MAIL, RCPT, DATA in one write), its content after 354."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        if await read_reply(reader) != b"220":
            raise RuntimeError("no 220 greeting")
        writer.write(b"EHLO bench.test\r\n")
        if await read_reply(reader) != b"250":
            raise RuntimeError("EHLO refused")
        for envelope, content in pairs:
            writer.write(envelope)
            codes = [await read_reply(reader) for _ in range(3)]
            if codes != [b"250", b"250", b"354"]:
                continue
            writer.write(content)
            sent += await read_reply(reader) == b"250"
        writer.write(b"QUIT\r\n")
        await read_reply(reader)
    finally:
        writer.close()
    return sent


async def run_streams_floor(
    port: int, pairs: list[tuple[bytes, bytes]], connections: int = 8
) -> int:
    shares = (pairs[i::connections] for i in range(connections))
    return sum(await asyncio.gather(*(streams_connection(port, share) for share in shares)))


def vm_hwm_kb(pid: int) -> int:
    """A running process's peak RSS (0 once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure_smtp_source(port: int, n: int) -> dict[str, object]:
    """Postfix's smtp-source: 8 sessions, each sending messages over one connection."""
    binary = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    if not Path(binary).exists():
        return {"skipped": "smtp-source is not installed (apt-get install postfix)"}
    from reliable_smtp import render

    (message,) = reliable_messages(1)
    content = render(message).content  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as directory:
        # -F sends the file as it is (no headers of its own), a CRLF after every line,
        # and one more CRLF before the dot: the server gets an empty last line too.
        message_file = Path(directory) / "message.eml"
        message_file.write_bytes(content.replace(b"\r\n", b"\n"))
        counter, errors = Path(directory) / "counter", Path(directory) / "errors"
        command = [binary, "-s", "8", "-m", str(n), "-d", "-c", "-N"]
        command += ["-f", "no-reply@example.com", "-t", RECIPIENT, "-M", "bench.test"]
        command += ["-F", str(message_file), f"127.0.0.1:{port}"]
        with counter.open("wb") as stdout, errors.open("wb") as stderr:
            wall = time.perf_counter()
            process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
            # The child's ru_maxrss would be this Python process's (Linux keeps the
            # high-water mark across exec), so a thread reads its own VmHWM as it runs.
            peaks = [0]
            exited = threading.Event()

            def sample() -> None:
                while not exited.wait(0.005):
                    peaks.append(vm_hwm_kb(process.pid))

            sampler = threading.Thread(target=sample)
            sampler.start()
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - wall
            exited.set()
            sampler.join()
            peak_kb = max(peaks)
        process.returncode = os.waitstatus_to_exitcode(status)
        # -c prints a counter after every completed DATA: the last one is the count sent.
        sent = counter.read_bytes().replace(b"\r", b"\n").split()
        figures: dict[str, object] = {
            "sent": float(sent[-1]) if sent else 0.0,
            "messages_per_s": n / wall,
            "cpu_us_per_message": (usage.ru_utime + usage.ru_stime) / n * 1e6,
            "peak_rss_mb": peak_kb / 1024 if peak_kb else float("nan"),
        }
        if process.returncode:
            figures["note"] = f"exit {process.returncode}: {errors.read_text().strip()[-300:]}"
    return figures


CHUNKED = "reliable-smtp 1 conn, CHUNKING"
ACROSS = "reliable-smtp 1 conn, across messages"
PIPELINED = "reliable-smtp 1 conn, pipelining"
SERIAL = "reliable-smtp 1 conn, no pipelining"
ACROSS_8 = "reliable-smtp 8 conn, across messages"

VARIANTS: dict[str, Callable[[int, int], object]] = {
    CHUNKED: lambda p, n: run_reliable(p, n, 1, True, chunking=True),
    ACROSS: lambda p, n: run_reliable(p, n, 1, True, across_messages=True),
    PIPELINED: lambda p, n: run_reliable(p, n, 1, True),
    SERIAL: lambda p, n: run_reliable(p, n, 1, False),
    "reliable-smtp 8 conn, CHUNKING": lambda p, n: run_reliable(p, n, 8, True, chunking=True),
    ACROSS_8: lambda p, n: run_reliable(p, n, 8, True, across_messages=True),
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
    ACROSS_8,
    BASELINE,
)


#: Loopback rows after ``VARIANTS``: the Python floor and the C limit (issue #15).
REFERENCES = (FLOOR, STRICT_FLOOR, STREAMS_FLOOR, SOURCE)


def measure(variant: str, port: int, n: int) -> dict[str, object]:
    if variant == SOURCE:
        return measure_smtp_source(port, n)
    if variant in (FLOOR, STRICT_FLOOR, STREAMS_FLOOR):
        # Before the clock starts: the floors send prebuilt bytes.
        offered = offered_extensions(port)
        if "pipelining" not in offered:
            return {"skipped": "the server does not offer PIPELINING"}
        pairs = floor_messages(n, size="size" in offered)
        whole = [envelope + content for envelope, content in pairs] if variant == FLOOR else None
        run: Callable[[int, int], object] = (
            (lambda p, n: run_streams_floor(p, pairs))
            if variant == STREAMS_FLOOR
            else (lambda p, n: run_floor(p, pairs, whole))
        )
    else:
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
        command = [smtp_sink, "-a", f"127.0.0.1:{port}", "1024"]
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


def run_variant(variant: str, port: int, n: int) -> dict[str, Any]:
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


def report(title: str, results: dict[str, dict[str, Any]], n: int) -> None:
    base = results[BASELINE]["messages_per_s"]
    print(f"\n{title} ({n} messages of ~2.4 KB, 1 recipient each)")
    print(
        f"{'client':<38}{'msg/s':>9}{'x aiosmtplib':>14}{'CPU µs/msg':>12}{'peak RSS MB':>13}"
        f"{'sent':>7}"
    )
    for variant, figures in results.items():
        if "skipped" in figures:
            print(f"{variant:<38}skipped: {figures['skipped']}")
            continue
        print(
            f"{variant:<38}{figures['messages_per_s']:>9.0f}"
            f"{figures['messages_per_s'] / base:>13.2f}x"
            f"{figures['cpu_us_per_message']:>12.0f}{figures['peak_rss_mb']:>13.1f}"
            f"{figures['sent']:>7.0f}"
        )
        if "note" in figures:
            print(f"{'':<38}{figures['note']}")


def against_references(results: dict[str, dict[str, Any]]) -> None:
    """The reliable-smtp 8-connection variant against the Python floors and smtp-source."""
    comparisons = (
        (ACROSS_8, FLOOR, "the Python floor's", " (issue #15 target: >= 40%)"),
        (ACROSS_8, STRICT_FLOOR, "the 354-first floor's", " (the same dialogue)"),
        (ACROSS_8, STREAMS_FLOOR, "the streams client's", ""),
        (ACROSS_8, SOURCE, "smtp-source's", ""),
        (FLOOR, SOURCE, "smtp-source's", ""),
        (STRICT_FLOOR, SOURCE, "smtp-source's", ""),
    )
    for variant, reference, whose, remark in comparisons:
        ours, theirs = results[variant], results.get(reference, {})
        if "messages_per_s" in ours and "messages_per_s" in theirs:
            cpu = ours["cpu_us_per_message"] / theirs["cpu_us_per_message"]
            print(
                f"{variant}: {ours['messages_per_s'] / theirs['messages_per_s']:.0%} of {whose} "
                f"rate{remark}, {cpu:.{2 if cpu < 1 else 1}f}x its CPU/msg"
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
            loopback = (*VARIANTS, *REFERENCES)
            results = {variant: run_variant(variant, port, args.n) for variant in loopback}
            report("Loopback", results, args.n)
            against_references(results)
        for rtt in (ms for ms in args.latency_ms if ms > 0):
            with latency_proxy(port, rtt) as slow_port:
                slow = {v: run_variant(v, slow_port, args.latency_n) for v in LATENCY_VARIANTS}
            report(f"Emulated {rtt:g} ms round trip", slow, args.latency_n)
            one_plain = slow[SERIAL]["messages_per_s"]
            for variant in (CHUNKED, ACROSS, PIPELINED, ACROSS_8):
                rate = slow[variant]["messages_per_s"]
                print(f"{variant}: {rate / one_plain:.2f}x one non-pipelined connection")
        if args.memory:
            print(f"\nStreaming {args.memory} messages through AsyncMailer.stream (8 connections)")
            asyncio.run(memory_run(port, args.memory))


if __name__ == "__main__":
    main()
