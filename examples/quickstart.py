"""Quickstart: a real send through the full stack to an embedded local server.

Starts a local SMTP server on 127.0.0.1 (STARTTLS required, AUTH required, a
throw-away certificate authority), sends one message with the synchronous
Mailer over STARTTLS + AUTH, and prints the result and the message exactly as
the server received it.

    python examples/quickstart.py
"""

from __future__ import annotations

from reliable_smtp import Mailer, Message, SMTPTransport, TLSMode
from reliable_smtp.testing import LocalSMTPServer


def main() -> None:
    with LocalSMTPServer(tls="starttls", auth={"app": "app-password"}) as server:
        transport = SMTPTransport(
            "127.0.0.1",
            server.port,
            tls=TLSMode.STARTTLS,
            # Verification stays on: we trust the local server's test CA, nothing more.
            ssl_context=server.client_ssl_context(),
            username="app",
            password="app-password",
        )
        message = Message(
            sender="Example App <no-reply@example.com>",
            to=["Alice Émile <alice@example.org>"],
            bcc=["audit@example.net"],
            subject="Your sign-in code ✔",
            text="Your code is 123456.",
            html="<p>Your code is <b>123456</b>.</p>",
        )
        with Mailer(transport) as mailer:
            result = mailer.send(message)

        print("SendResult")
        print("----------")
        print(result.describe())
        print()
        [received] = server.messages
        print(
            f"Received by the server (MAIL FROM:<{received.sender}>, "
            f"RCPT TO: {', '.join(received.recipients)})"
        )
        print("-" * 60)
        print(received.content.decode("utf-8"))


if __name__ == "__main__":
    main()
