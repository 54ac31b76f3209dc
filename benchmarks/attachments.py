"""Large attachments: CPU per message and peak memory, reliable-smtp against raw aiosmtplib.

Run: .venv/bin/python benchmarks/attachments.py [--sizes-mib 1 25] [--n 20]

In one run it starts Postfix's ``smtp-sink`` on 127.0.0.1 (as ``throughput.py``
does; an aiosmtpd sink when Postfix is not installed) and, for each attachment
size, sends messages with one attachment of that many random bytes, each client
in a fresh process so that CPU time and peak RSS are its own:

* reliable-smtp, full stack (``Message`` -> render -> envelope -> retry loop ->
  pool -> wire), the attachment given as ``bytes``;
* the same with ``Attachment.from_path`` (the file is read for every message);
* raw aiosmtplib: ``send_message(EmailMessage)`` with ``add_attachment``, one
  reused connection, the baseline measured in the same run.

``--n`` messages are sent per client for 1 MiB; larger sizes send
``max(2, n // size_mib)``, each after one uncounted warm-up message (it opens the
connection). CPU is the process's CPU time per counted message. "RSS growth" is
the peak RSS of the process minus its RSS just before the first message, when
the attachment's bytes (or its file) already exist; it is shown against the size
of one encoded message (the bytes the server receives). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import rss_mb, sink  # the shared sink

HERE = Path(__file__).resolve()
SENDER = "Reports <reports@example.com>"
RECIPIENT = "alice@example.org"
TEXT = "Your monthly report is attached.\n"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_reliable(
    port: int, n: int, data: bytes, path: Path | None, started: list[float]
) -> tuple[int, int]:
    from reliable_smtp import AsyncMailer, Attachment, Message, SMTPTransport, render

    transport = SMTPTransport(
        "127.0.0.1", port, tls="none", max_connections=1, local_hostname="bench.test"
    )

    def message() -> Message:
        attachment = (
            Attachment.from_path(path)
            if path is not None
            else Attachment(filename="report.bin", content=data)
        )
        return Message(
            sender=SENDER, to=RECIPIENT, subject="Report", text=TEXT, attachments=[attachment]
        )

    sent = 0
    async with AsyncMailer(transport) as mailer:
        for i in range(n + 1):
            if i == 1:  # the first message warms the connection up and is not counted
                started.append(time.process_time())
            result = await mailer.send(message())
            sent += result.ok and i > 0
    return sent, len(render(message()).content)


async def run_aiosmtplib(
    port: int, n: int, data: bytes, path: Path | None, started: list[float]
) -> tuple[int, int]:
    import aiosmtplib

    def message() -> EmailMessage:
        email = EmailMessage()
        email["From"] = SENDER
        email["To"] = RECIPIENT
        email["Subject"] = "Report"
        email.set_content(TEXT)
        email.add_attachment(
            data, maintype="application", subtype="octet-stream", filename="report.bin"
        )
        return email

    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench.test"
    )
    await smtp.connect()
    sent = 0
    for i in range(n + 1):
        if i == 1:
            started.append(time.process_time())
        errors, _ = await smtp.send_message(message())
        sent += not errors and i > 0
    await smtp.quit()
    return sent, len(message().as_bytes())


VARIANTS = {
    "reliable-smtp, bytes": (run_reliable, False),
    "reliable-smtp, from_path": (run_reliable, True),
    "aiosmtplib send_message": (run_aiosmtplib, False),
}
BASELINE = "aiosmtplib send_message"


def measure(variant: str, port: int, n: int, size: int) -> dict[str, float]:
    import aiosmtplib  # noqa: F401  (imports are not part of the figures)

    import reliable_smtp  # noqa: F401

    run, from_path = VARIANTS[variant]
    data = os.urandom(size)
    with tempfile.TemporaryDirectory() as directory:
        path = None
        if from_path:
            path = Path(directory, "report.bin")
            path.write_bytes(data)
            data = b""
        before = rss_mb()
        started: list[float] = []
        sent, encoded = asyncio.run(run(port, n, data, path, started))
        cpu = time.process_time() - started[0]
        growth = peak_rss_mb() - before
    return {
        "sent": float(sent),
        "cpu_ms_per_message": cpu / n * 1e3,
        "rss_growth_mb": growth,
        "encoded_mb": encoded / 2**20,
    }


def run_variant(variant: str, port: int, n: int, size: int) -> dict[str, float]:
    command = [sys.executable, str(HERE), "--variant", variant, "--port", str(port)]
    command += ["--n", str(n), "--size", str(size)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mib", type=float, nargs="+", default=[1.0, 25.0])
    parser.add_argument("--n", type=int, default=20, help="messages per client at 1 MiB")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.port, args.n, args.size)))
        return

    with sink() as (port, sink_name):
        print(f"sink: {sink_name}; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        for mib in args.sizes_mib:
            n = max(2, int(args.n / mib)) if mib > 1 else args.n
            results = {v: run_variant(v, port, n, int(mib * 2**20)) for v in VARIANTS}
            base = results[BASELINE]["cpu_ms_per_message"]
            print(f"\n{mib:g} MiB attachment, {n} messages, one connection")
            print(
                f"{'client':<28}{'CPU ms/msg':>11}{'x aiosmtplib':>14}{'RSS growth MB':>15}"
                f"{'x encoded':>11}{'sent':>6}"
            )
            for variant, figures in results.items():
                print(
                    f"{variant:<28}{figures['cpu_ms_per_message']:>11.2f}"
                    f"{figures['cpu_ms_per_message'] / base:>13.2f}x"
                    f"{figures['rss_growth_mb']:>15.1f}"
                    f"{figures['rss_growth_mb'] / figures['encoded_mb']:>10.2f}x"
                    f"{figures['sent']:>6.0f}"
                )


if __name__ == "__main__":
    main()
