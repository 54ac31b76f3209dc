"""The outbox under Django's test runner: ``django test django_project.mailapp.outbox_checks``.

Not named ``tests*.py``: it needs a file test database (``MAILAPP_TEST_DB``) and
an SMTP server (``MAILAPP_SMTP_PORT``), which tests/test_contrib_django_outbox.py
provides. It shows what a project's own tests do: the runner swaps
EMAIL_BACKEND for locmem, so a test that wants the outbox says so with
``override_settings``; it is a ``TransactionTestCase`` because the worker reads
only what is committed (a ``TestCase`` never commits). ``migrate`` created the
outbox tables in the test database (the app's ``post_migrate`` hook).
"""

from __future__ import annotations

import io

from django.core import mail
from django.core.management import call_command
from django.test import TransactionTestCase, override_settings

from .models import Order
from .orders import place_order


@override_settings(EMAIL_BACKEND="reliable_smtp.contrib.django.OutboxEmailBackend")
class OutboxOrderTests(TransactionTestCase):
    def test_committed_orders_are_mailed_by_the_worker_rolled_back_ones_never(self) -> None:
        assert place_order(1, "ann@example.org") == 1
        with self.assertRaisesMessage(RuntimeError, "payment declined"):
            place_order(2, "bob@example.org", fail=True)
        assert list(Order.objects.values_list("number", flat=True)) == [1]
        assert mail.outbox == []  # queued in the database, not in locmem

        out = io.StringIO()
        call_command("reliable_smtp_worker", until_idle=True, stdout=out)
        assert "1 claimed, 1 settled (1 sent)" in out.getvalue()
