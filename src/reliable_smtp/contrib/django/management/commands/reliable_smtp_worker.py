"""``python manage.py reliable_smtp_worker``: send what ``OutboxEmailBackend`` queued.

The outbox is the one the backend writes to (``RELIABLE_SMTP_OUTBOX_DATABASE`` /
``RELIABLE_SMTP_OUTBOX_URL``); the sending is configured as for
:class:`~reliable_smtp.contrib.django.EmailBackend` - ``EMAIL_HOST``, ``EMAIL_PORT``,
``EMAIL_USE_TLS``... and ``RELIABLE_SMTP_*`` - through the ``EMAIL_BACKEND``
class when it is one of ours (so a subclass's ``build_transport`` is used).
SIGTERM/SIGINT stop claiming; in-flight transactions finish and settle. The same signal
again stops at once (in-flight entries are recovered like a crashed worker's).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from reliable_smtp import Outbox, OutboxWorker
from reliable_smtp._outbox.worker import WorkerStats, stderr_notice

from ..._backend import EmailBackend
from ..._outbox import outbox_url


class Command(BaseCommand):
    help = "Send the messages OutboxEmailBackend queued, with the EMAIL_* settings."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database", help="DATABASES alias (default: RELIABLE_SMTP_OUTBOX_DATABASE)"
        )
        parser.add_argument(
            "--until-idle", action="store_true", help="send what is due now, then exit"
        )
        parser.add_argument("--concurrency", type=int, help="SMTP transactions in flight")
        parser.add_argument("--lease", type=float, default=60.0, help="claim lease, seconds")
        parser.add_argument("--poll", type=float, default=1.0, help="longest idle wait, seconds")
        parser.add_argument(
            "--stop-timeout", type=float, default=30.0, help="wait for in-flight sends on stop"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.is_overridden("MAILERS") and getattr(settings, "MAILERS", None):
            # Django 6.1's MAILERS: the EMAIL_* fallback below would send to EMAIL_HOST's
            # default (localhost) instead of the configured mailer. Refuse rather than guess.
            raise CommandError(
                "reliable_smtp_worker reads the EMAIL_* settings; MAILERS (Django 6.1) is not "
                "supported yet: set EMAIL_HOST, EMAIL_PORT... for the worker, or run "
                "`reliable-smtp worker` with RELIABLE_SMTP_* variables and --outbox URL"
            )
        backend_class: Any = import_string(settings.EMAIL_BACKEND)
        if not (isinstance(backend_class, type) and issubclass(backend_class, EmailBackend)):
            backend_class = EmailBackend
        backend: EmailBackend = backend_class()
        mailer = backend.build_async_mailer()
        with Outbox(outbox_url(options["database"])) as outbox:
            worker = OutboxWorker(
                outbox,
                mailer,
                concurrency=options["concurrency"],
                lease_seconds=options["lease"],
                poll_interval=options["poll"],
                stop_timeout=options["stop_timeout"],
            )
            self.stdout.write(
                f"worker {worker.owner}: sending from {outbox.url} via {mailer.transport.name}"
            )

            async def serve() -> WorkerStats:
                async with mailer:
                    if options["until_idle"]:
                        return await worker.run_until_idle()
                    return await worker.arun()

            # SIGTERM/SIGINT: the first stops gracefully, a second at once (as the CLI).
            stats = worker.serve(serve, notice=stderr_notice("reliable_smtp_worker"))
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(stats.recipients.items())) or "nothing"
        self.stdout.write(
            f"worker stopped: {stats.claimed} claimed, {stats.settled} settled ({outcomes}), "
            f"{stats.lost} lease(s) lost"
        )
