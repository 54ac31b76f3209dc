"""One view that sends a mail: what the project's own tests exercise."""

from __future__ import annotations

from django.urls import path

from .mailapp.views import order_placed

urlpatterns = [path("orders/<int:number>/", order_placed)]
