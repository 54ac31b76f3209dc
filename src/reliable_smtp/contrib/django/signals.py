"""Signals of the reliable-smtp Django backend.

``message_sent`` fires once per Django message the backend handed to the server,
after the last attempt (retries included), whether it succeeded or failed, with
keyword arguments:

* ``message`` - the ``django.core.mail.EmailMessage`` (its
  ``reliable_smtp_result`` is already set);
* ``result`` - its :class:`~reliable_smtp.SendResult`: every recipient's status;
* ``error`` - the :class:`~reliable_smtp.DeliveryError` raised (or silenced by
  ``fail_silently``), ``None`` when every recipient accepted the message.

A message refused before anything is sent - an invalid address, a refusing
``RELIABLE_SMTP_RECIPIENT_POLICY`` - raises its ``ValueError`` without the signal.

``sender`` is the backend class.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["message_sent"]

message_sent = Signal()
