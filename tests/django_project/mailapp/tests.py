"""The project's own tests, run by Django's test runner (``python -m django test``).

Django's runner swaps EMAIL_BACKEND (or MAILERS) for the locmem backend, so these
see ``mail.outbox`` even though settings.py names the reliable-smtp backend -
the two coexist without configuration. One test opts out of locmem to send over
real SMTP through the reliable-smtp backend.
"""

from __future__ import annotations

from django.core import mail
from django.test import SimpleTestCase, override_settings


class OrderMailTests(SimpleTestCase):
    def test_locmem_outbox_still_works(self) -> None:
        response = self.client.get("/orders/7/")
        assert response.content == b"sent 1"
        assert len(mail.outbox) == 1
        assert mail.outbox[0].subject == "Order 7 confirmed"

    @override_settings(EMAIL_BACKEND="reliable_smtp.contrib.django.EmailBackend")
    def test_real_smtp_through_reliable_backend(self) -> None:
        response = self.client.get("/orders/8/?to=carol@example.org")
        assert response.content == b"sent 1"
        assert len(mail.outbox) == 0  # it went over SMTP, not to locmem
