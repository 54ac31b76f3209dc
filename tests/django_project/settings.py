"""Settings of the test project: the reliable-smtp backend, as a user would set it up.

The SMTP server's address comes from the environment (``MAILAPP_SMTP_PORT``), so
the project can be run by ``python -m django test`` against a server a test
started; the comparison tests override the settings per test.
"""

from __future__ import annotations

import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver"]
# reliable_smtp.contrib.django: the outbox's commands, and `migrate` creates its tables.
INSTALLED_APPS = ["django_project.mailapp", "reliable_smtp.contrib.django"]
DATABASES: dict[str, dict[str, object]] = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
}
if os.environ.get("MAILAPP_DB"):  # a file, for a worker run as `django reliable_smtp_worker`
    DATABASES["default"]["NAME"] = os.environ["MAILAPP_DB"]
if os.environ.get("MAILAPP_TEST_DB"):
    # The outbox worker reads the database on connections of its own: under Django's
    # test runner the test database must then be a file, not SQLite's :memory:.
    DATABASES["default"]["TEST"] = {"NAME": os.environ["MAILAPP_TEST_DB"]}
ROOT_URLCONF = "django_project.urls"
MIDDLEWARE: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

EMAIL_BACKEND = "reliable_smtp.contrib.django.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("MAILAPP_SMTP_PORT", "2525"))
DEFAULT_FROM_EMAIL = "Shop <shop@example.com>"
SERVER_EMAIL = "errors@example.com"
# (name, address) pairs: what Django 5.2 requires (6.1 also takes them, with a warning).
ADMINS = [("Ops", "ops@example.com")]
MANAGERS = [("Sales", "sales@example.com")]
