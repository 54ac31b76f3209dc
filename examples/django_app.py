"""Django's mail API on reliable-smtp: one setting, and every send's outcome per recipient.

``EMAIL_BACKEND = "reliable_smtp.contrib.django.EmailBackend"`` is the only change
a project makes; ``send_mail``, ``EmailMessage``, ``mail_admins`` and every
``EMAIL_*`` setting keep working. What it adds: each message carries its
``reliable_smtp_result``, the ``message_sent`` signal fires, transient failures
are retried (never to a recipient that already has the message), and errors are
classified - and still ``smtplib.SMTPException``, which Django code catches.

Run it as a script: it configures Django in-process, starts a local SMTP server
on 127.0.0.1 and prints what happened.

    python examples/django_app.py
"""

from __future__ import annotations

import smtplib
from typing import Any

import django
from django.conf import settings

from reliable_smtp import PermanentError, RetryPolicy
from reliable_smtp.testing import LocalSMTPServer


def configure(port: int) -> None:
    settings.configure(
        EMAIL_BACKEND="reliable_smtp.contrib.django.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=port,
        DEFAULT_FROM_EMAIL="Shop <shop@example.com>",
        # What reliable-smtp adds; RELIABLE_SMTP_* environment variables work too.
        RELIABLE_SMTP_RETRY=RetryPolicy(attempts=3).without_waits(),  # no waits in a demo
        RELIABLE_SMTP_MAX_CONNECTIONS=1,
    )
    django.setup()


def main() -> None:
    with LocalSMTPServer() as server:
        configure(server.port)
        from django.core import mail

        from reliable_smtp.contrib.django import message_sent

        def log(sender: type, message: Any, result: Any, error: Any, **_: Any) -> None:
            print("signal:", result.summary().split(": ", 1)[1] if result else error)

        message_sent.connect(log)

        # A greylisting server: the first RCPT for bob is deferred, the retry succeeds.
        server.script("RCPT", "451 4.7.1 Greylisted, try again", recipient="bob@example.org")
        message = mail.EmailMessage(
            "Order 42 shipped", "It is on its way.", None, ["ann@example.org", "bob@example.org"]
        )
        print("sent:", message.send())
        for recipient, status in message.reliable_smtp_result.recipients.items():
            print(f"  {recipient}: {status.reply} after {status.attempts} attempt(s)")
        print(
            "copies: ann",
            server.deliveries_to("ann@example.org"),
            "bob",
            server.deliveries_to("bob@example.org"),
        )

        server.script("RCPT", "550 5.1.1 No such user", recipient="gone@example.org", times=None)
        try:
            mail.send_mail("Hello", "Hi", None, ["gone@example.org"])
        except smtplib.SMTPRecipientsRefused as error:  # what Django code already catches
            assert isinstance(error, PermanentError)  # ...and the classified error
            print("refused:", error.code, error.enhanced_code, error.phase.value)


if __name__ == "__main__":
    main()
