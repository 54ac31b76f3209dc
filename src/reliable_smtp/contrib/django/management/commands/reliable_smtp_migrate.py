"""``python manage.py reliable_smtp_migrate``: create or upgrade the outbox tables."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ..._outbox import migrate_outbox


class Command(BaseCommand):
    help = (
        "Create or upgrade the reliable-smtp outbox tables in the outbox's database "
        "(RELIABLE_SMTP_OUTBOX_DATABASE); `migrate` does it too when the app is installed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database", help="DATABASES alias (default: RELIABLE_SMTP_OUTBOX_DATABASE)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        url, version = migrate_outbox(options["database"])
        self.stdout.write(f"outbox {url}: schema version {version}")
