"""Subclasses of both SMTP backends, as projects write them: a header on every message."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends import smtp

from reliable_smtp.contrib import django as reliable


def _tag(messages: Iterable[EmailMessage]) -> list[EmailMessage]:
    tagged = list(messages)
    for message in tagged:
        message.extra_headers["X-Tenant"] = "acme"
    return tagged


class TaggingDjangoBackend(smtp.EmailBackend):  # type: ignore[misc]
    def send_messages(self, email_messages: Any) -> int:
        return super().send_messages(_tag(email_messages))  # type: ignore[no-any-return]


class TaggingReliableBackend(reliable.EmailBackend):
    def send_messages(self, email_messages: Any) -> int:
        return super().send_messages(_tag(email_messages))
