"""Signals of the reliable-smtp Django backend.

``message_sent`` fires once per Django message the backend tried to send, after
the attempt (retries included), with keyword arguments:

* ``message`` - the ``django.core.mail.EmailMessage``;
* ``result`` - its :class:`~reliable_smtp.SendResult` (``None`` only when the
  send failed before any server was asked, e.g. a refused recipient policy);
* ``error`` - the :class:`~reliable_smtp.DeliveryError` raised (or silenced by
  ``fail_silently``), ``None`` when every recipient accepted the message.

``sender`` is the backend class.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["message_sent"]

message_sent = Signal()
