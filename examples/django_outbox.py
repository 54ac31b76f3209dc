"""Django's mail API, queued in the application's own transaction: ``OutboxEmailBackend``.

``EMAIL_BACKEND = "reliable_smtp.contrib.django.OutboxEmailBackend"`` makes
``send_mail()`` write the message into the durable outbox through Django's own
database connection, so it commits or rolls back with the order it belongs to;
``python manage.py reliable_smtp_worker`` sends what is queued, with the same
``EMAIL_*`` / ``RELIABLE_SMTP_*`` settings as ``EmailBackend``.

Run it as a script: it configures Django in-process with an SQLite database in a
temporary directory, starts a local SMTP server on 127.0.0.1 and prints what
happened.

    python examples/django_outbox.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import django
from django.conf import settings

from reliable_smtp import EntryState, Outbox
from reliable_smtp.testing import LocalSMTPServer


def configure(port: int, directory: Path) -> None:
    settings.configure(
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": directory / "app.db"}
        },
        INSTALLED_APPS=["reliable_smtp.contrib.django"],  # its management commands
        EMAIL_BACKEND="reliable_smtp.contrib.django.OutboxEmailBackend",
        EMAIL_HOST="127.0.0.1",  # what the worker sends through
        EMAIL_PORT=port,
        DEFAULT_FROM_EMAIL="Shop <shop@example.com>",
    )
    django.setup()


def main() -> None:
    with tempfile.TemporaryDirectory() as directory, LocalSMTPServer() as server:
        configure(server.port, Path(directory))
        from django.core import mail
        from django.core.management import call_command
        from django.db import transaction

        from reliable_smtp.contrib.django import outbox_url

        call_command("reliable_smtp_migrate")  # or `manage.py migrate` with the app installed

        # The order fails after the mail was "sent": the rollback takes the mail with it.
        try:
            with transaction.atomic():
                mail.send_mail("Order 41 confirmed", "Thanks!", None, ["ann@example.org"])
                raise RuntimeError("payment declined")
        except RuntimeError as error:
            print("rolled back:", error)

        # The order commits: its mail is queued in the same transaction.
        with transaction.atomic():
            mail.send_mail("Order 42 confirmed", "Thanks!", None, ["bob@example.org"])

        with Outbox(outbox_url()) as outbox:
            print("queued:", outbox.stats().counts[EntryState.QUEUED])
            call_command("reliable_smtp_worker", "--until-idle")  # normally a long-running process
            print("sent:", outbox.stats().counts[EntryState.SENT])
        print("server received:", ", ".join(m.message["Subject"] for m in server.messages))


if __name__ == "__main__":
    main()
