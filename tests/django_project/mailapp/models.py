"""An order: what the outbox tests save in the same transaction as its confirmation."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    number = models.IntegerField(unique=True)
    email = models.CharField(max_length=200)

    class Meta:
        app_label = "mailapp"
