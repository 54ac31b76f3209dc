"""Django integration: ``EmailBackend``, a drop-in for Django's SMTP backend.

::

    # settings.py
    EMAIL_BACKEND = "reliable_smtp.contrib.django.EmailBackend"
    EMAIL_HOST = "smtp.example.com"          # every EMAIL_* setting works as before
    EMAIL_PORT = 587
    EMAIL_USE_TLS = True
    RELIABLE_SMTP_RETRY_ATTEMPTS = 3          # what reliable-smtp adds (optional)

On Django 6.1+ the same backend goes in ``MAILERS``, its settings in ``OPTIONS``::

    MAILERS = {"default": {"BACKEND": "reliable_smtp.contrib.django.EmailBackend",
                           "OPTIONS": {"host": "smtp.example.com", "use_tls": True,
                                       "retry_attempts": 3}}}

After a send, every Django message carries ``message.reliable_smtp_result`` (the
:class:`~reliable_smtp.SendResult`: who got it, each server reply) and the
:data:`message_sent` signal fires. Failures raise classified
:class:`~reliable_smtp.DeliveryError` subclasses that are also
``smtplib.SMTPException`` (an ``OSError``), which is what Django code catches.

``OutboxEmailBackend`` queues instead, in the application's database transaction,
for ``python manage.py reliable_smtp_worker`` to send (add
``"reliable_smtp.contrib.django"`` to ``INSTALLED_APPS`` for the command and for
``migrate`` to create the outbox tables)::

    EMAIL_BACKEND = "reliable_smtp.contrib.django.OutboxEmailBackend"

Needs Django: ``pip install 'reliable-smtp[django]'``.
"""

from __future__ import annotations

try:
    import django  # noqa: F401 - only to fail early with the fix
except ImportError:  # pragma: no cover - depends on the environment
    from .. import missing_framework

    raise missing_framework("reliable_smtp.contrib.django", "Django", "django") from None

from ._backend import RELIABLE_OPTIONS, EmailBackend, close_shared_connections
from ._errors import django_compatible
from ._outbox import (
    IDEMPOTENCY_HEADER,
    OutboxEmailBackend,
    close_outboxes,
    migrate_outbox,
    outbox_url,
)
from .signals import message_sent

__all__ = [
    "IDEMPOTENCY_HEADER",
    "RELIABLE_OPTIONS",
    "EmailBackend",
    "OutboxEmailBackend",
    "close_outboxes",
    "close_shared_connections",
    "django_compatible",
    "message_sent",
    "migrate_outbox",
    "outbox_url",
]
