"""``python manage.py reliable_smtp_outbox ACTION ...``: ``reliable-smtp outbox`` on this outbox.

The actions and their options are those of ``reliable-smtp outbox`` (``stats``,
``list``, ``show ID``, ``retry ID``, ``cancel ID``, ``resolve ID --as ...``,
``purge --older-than AGE``, ``migrate``); the outbox is the one
``OutboxEmailBackend`` writes to, so the operator never copies the database
password into a URL.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from reliable_smtp import _cli as cli

from ..._outbox import outbox_url


class Command(BaseCommand):
    help = (
        "Inspect and act on the outbox OutboxEmailBackend writes to: the actions of "
        "`reliable-smtp outbox` (stats, list, show ID, retry ID, cancel ID, resolve ID --as "
        "sent|failed|resend, purge --older-than AGE, migrate)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database", help="DATABASES alias (default: RELIABLE_SMTP_OUTBOX_DATABASE)"
        )
        parser.add_argument("action", help="stats, list, show, retry, cancel, resolve, ...")
        parser.add_argument("rest", nargs=argparse.REMAINDER, help="the action's arguments")

    def handle(self, *args: Any, **options: Any) -> None:
        url = outbox_url(options["database"])
        status = cli.main(["outbox", options["action"], "--outbox", url, *options["rest"]])
        if status:
            raise CommandError(f"reliable-smtp outbox {options['action']} exited {status}")
