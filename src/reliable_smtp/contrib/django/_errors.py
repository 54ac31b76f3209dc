"""Errors Django code can catch: each :class:`~reliable_smtp.DeliveryError` is also
an ``smtplib.SMTPException``.

Django's SMTP backend raises ``smtplib`` exceptions (all ``OSError``), and
application code is written against them: ``except smtplib.SMTPException``,
``except smtplib.SMTPRecipientsRefused``, ``except OSError``. The backend raises
the library's classified error re-typed as a subclass of both its own class and
the ``smtplib`` class Django would have raised for the same SMTP event, so old
``except`` clauses and new ones (``except reliable_smtp.PermanentError``) both
work, with every fact (``code``, ``phase``, ``result``...) kept.

=============================================  =============================================
reliable-smtp error                            also an instance of
=============================================  =============================================
:class:`AuthOrConfigError`, phase AUTH         ``smtplib.SMTPAuthenticationError``
any error in phase MAIL                        ``smtplib.SMTPSenderRefused``
every recipient refused at RCPT                ``smtplib.SMTPRecipientsRefused``
a refusal of DATA or of the message (after .)  ``smtplib.SMTPDataError``
a dropped connection (before the final dot)    ``smtplib.SMTPServerDisconnected``
anything else                                  ``smtplib.SMTPException``
=============================================  =============================================
"""

from __future__ import annotations

import smtplib
from typing import Any

from reliable_smtp import (
    AuthOrConfigError,
    ConnectionFailedError,
    DeliveryError,
    Phase,
)

__all__ = ["django_compatible"]

# (reliable-smtp class, smtplib class) -> the class raised; created once each, and
# published in this module so that pickling (task queues) finds them by name.
_CLASSES: dict[tuple[type[DeliveryError], type[smtplib.SMTPException]], type[DeliveryError]] = {}


def _smtplib_class(error: DeliveryError) -> type[smtplib.SMTPException]:
    if isinstance(error, AuthOrConfigError) and error.phase is Phase.AUTH:
        return smtplib.SMTPAuthenticationError
    if error.phase is Phase.MAIL:
        return smtplib.SMTPSenderRefused
    if error.phase is Phase.RCPT and (error.result is None or not error.result.accepted):
        return smtplib.SMTPRecipientsRefused
    if error.phase in (Phase.DATA, Phase.DATA_END) and error.reply is not None:
        return smtplib.SMTPDataError
    if isinstance(error, ConnectionFailedError):
        # Never an AmbiguousDeliveryError (not a ConnectionFailedError): code that
        # reconnects and resends on SMTPServerDisconnected must not see one.
        return smtplib.SMTPServerDisconnected
    return smtplib.SMTPException


def _compatible_class(
    own: type[DeliveryError], foreign: type[smtplib.SMTPException]
) -> type[DeliveryError]:
    key = (own, foreign)
    found = _CLASSES.get(key)
    if found is None:
        name = f"{own.__name__}As{foreign.__name__}"
        found = type(name, (own, foreign), {"__module__": __name__, "__qualname__": name})
        globals()[name] = found
        _CLASSES[key] = found
    return found


def django_compatible(error: DeliveryError) -> DeliveryError:
    """``error`` as an instance of its own class and of the matching ``smtplib`` class.

    The copy has the same message, attributes (``code``, ``phase``, ``result``...),
    cause and traceback. An error that already is an ``SMTPException`` is returned
    as it is.
    """
    if isinstance(error, smtplib.SMTPException):
        return error
    foreign = _smtplib_class(error)
    cls = _compatible_class(type(error), foreign)
    twin: Any = cls.__new__(cls, *error.args)
    Exception.__init__(twin, *error.args)
    # The attributes smtplib's own classes promise to their except clauses, stored with
    # the facts (errors are immutable once built: no assignment after this).
    promised: dict[str, Any] = {}
    code = error.code if error.code is not None else -1
    text = (error.text or str(error.summary)).encode("utf-8", "replace")
    if issubclass(foreign, smtplib.SMTPResponseException):
        promised.update(smtp_code=code, smtp_error=text)
    if foreign is smtplib.SMTPSenderRefused:
        promised["sender"] = error.result.envelope.sender if error.result is not None else ""
    if foreign is smtplib.SMTPRecipientsRefused:
        promised["recipients"] = _refused(error)
    twin.__dict__.update(promised, **error.__dict__)
    twin.__cause__ = error.__cause__
    twin.__traceback__ = error.__traceback__
    result: DeliveryError = twin
    return result


def _refused(error: DeliveryError) -> dict[str, tuple[int, bytes]]:
    """``{recipient: (code, text)}`` as ``SMTPRecipientsRefused.recipients`` has it."""
    if error.result is None:
        recipient = error.recipient or ""
        return {recipient: (error.code or -1, (error.text or "").encode("utf-8", "replace"))}
    return {
        recipient: (
            status.reply.code if status.reply is not None else -1,
            (status.reply.text if status.reply is not None else status.explanation).encode(
                "utf-8", "replace"
            ),
        )
        for recipient, status in error.result.recipients.items()
        if not status.accepted
    }
