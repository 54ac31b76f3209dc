"""The step-by-step SMTP connection check behind ``reliable-smtp check``.

:func:`check_connection` takes the same :class:`~reliable_smtp.MailerSettings` the
library sends with and walks the connection one step at a time - DNS, TCP,
TLS, greeting, EHLO, STARTTLS, AUTH and optionally a real test message through
the normal :class:`~reliable_smtp.AsyncMailer` - timing each step, recording what
the server offered, and stopping at the first failure with the likely cause and
the fix. It returns a :class:`CheckReport` (data, JSON-ready with
:meth:`CheckReport.to_dict`); printing it is the CLI's business.

Failures are explained by the library's own table: the error boundary
(:func:`~reliable_smtp._transports.smtp.translate_error`),
:func:`~reliable_smtp._replies.classify` and
:func:`~reliable_smtp._replies.classify_tls_failure`. The only wording added here is
``_HINTS`` (in ``_diagnostics.record``): a short name for the cause and which setting
to change, keyed by the name of the library rule that decided.

The probe opens the session with the transport's own code
(:func:`reliable_smtp._transports._session.open_session`: the same EHLO name, HELO
fallback, required STARTTLS, AUTH mechanism and credential exchange) and records
each step through the session's observer interface. It opens the socket itself so
that DNS and TCP get their own step and time, and marks the end of the TLS
handshake through the context's ``sslobject_class`` so that, with implicit TLS, the
handshake and the greeting are timed apart although aiosmtplib does both in one
call. The password is read only to log in; it is in no step, error or report.

Layout:

* ``report`` - the values: :class:`CheckTarget`, :class:`CheckStep`, :class:`CheckReport`;
* ``record`` - :class:`Probe`, which records steps as they run, and the causes and hints
  the check adds to the library's explanation of a failure;
* ``facts`` - what the server offered: the TLS session and the EHLO capabilities;
* ``check`` - :func:`check_connection`, the probe that walks the steps.

The per-recipient rows of a test message are
:meth:`SendResult.recipient_rows() <reliable_smtp.SendResult.recipient_rows>`.
"""

from __future__ import annotations

from .check import check_connection
from .report import SLOW_SECONDS, CheckReport, CheckStep, CheckTarget

__all__ = ["SLOW_SECONDS", "CheckReport", "CheckStep", "CheckTarget", "check_connection"]
