"""Durable sending: enqueue into an outbox, let a worker send, read what happened.

Runs as it is (a local SMTP server and a temporary SQLite file stand in for the
provider and ``/var/lib/app/outbox.db``)::

    python examples/outbox_send.py

In production the worker is its own process: ``reliable-smtp worker`` with the
``RELIABLE_SMTP_*`` sending settings and ``RELIABLE_SMTP_OUTBOX_URL``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from reliable_smtp import AsyncMailer, Message, Outbox, OutboxWorker, SMTPTransport
from reliable_smtp.testing import LocalSMTPServer


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, LocalSMTPServer() as server:
        server.script("RCPT", "550 5.1.1 no such user", recipient="gone@example.org")
        with Outbox(f"sqlite:///{Path(tmp) / 'outbox.db'}") as outbox:
            # Durable when enqueue() returns; the same key twice gives one entry.
            receipt = outbox.enqueue(
                Message(
                    sender="shop@example.com",
                    to=["ann@example.org", "gone@example.org"],
                    subject="Your receipt",
                    text="Thank you for your order 4711.",
                ),
                idempotency_key="receipt-4711",
            )
            again = outbox.enqueue(
                Message(sender="shop@example.com", to=["ann@example.org"], subject="dup"),
                idempotency_key="receipt-4711",
            )
            print(f"entry {receipt.id}: {receipt.state.value}; same key again -> {again.id}")

            transport = SMTPTransport("127.0.0.1", server.port, tls="none")
            async with AsyncMailer(transport) as mailer:
                stats = await OutboxWorker(outbox, mailer).run_until_idle()
            print(f"worker: {stats.claimed} claimed, {stats.settled} settled")

            entry = outbox.get(receipt.id)
            print(f"entry {entry.id}: {entry.state.value}")
            for recipient in entry.recipients:
                reply = recipient.reply
                print(f"  {recipient.address}: {recipient.state.value} ({reply})")
            print(f"server received {len(server.messages)} message(s)")


if __name__ == "__main__":
    asyncio.run(main())
