"""The Django app ``reliable_smtp.contrib.django``: management commands and the outbox tables.

Add it to ``INSTALLED_APPS`` when you use :class:`OutboxEmailBackend`: ``manage.py
migrate`` then creates (or upgrades) the outbox tables in the outbox's database,
and ``reliable_smtp_worker`` / ``reliable_smtp_migrate`` become available. The
direct :class:`EmailBackend` needs no app.
"""

from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ReliableSMTPConfig(AppConfig):
    name = "reliable_smtp.contrib.django"
    label = "reliable_smtp"
    verbose_name = "reliable-smtp"
    default = True

    def ready(self) -> None:
        from ._outbox import _migrate_hook

        # sender=self: post_migrate is sent once per app; the tables are created once.
        post_migrate.connect(_migrate_hook, sender=self, dispatch_uid="reliable_smtp_outbox")
