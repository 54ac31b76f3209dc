"""Placing an order: the row and its confirmation mail in one transaction."""

from __future__ import annotations

from django.core.mail import send_mail
from django.db import transaction

from .models import Order


def place_order(number: int, email: str, *, using: str = "default", fail: bool = False) -> int:
    """Save the order and mail its confirmation atomically; ``fail`` raises before commit."""
    with transaction.atomic(using=using):
        Order.objects.using(using).create(number=number, email=email)
        sent = send_mail(
            f"Order {number} confirmed", f"Thank you for order {number}.", None, [email]
        )
        if fail:
            raise RuntimeError(f"order {number}: payment declined")
    return sent
