"""A view that sends a confirmation with Django's send_mail()."""

from __future__ import annotations

from django.core.mail import send_mail
from django.http import HttpRequest, HttpResponse


def order_placed(request: HttpRequest, number: int) -> HttpResponse:
    sent = send_mail(
        f"Order {number} confirmed",
        f"Thank you for order {number}.",
        None,
        [request.GET.get("to", "buyer@example.org")],
    )
    return HttpResponse(f"sent {sent}")
