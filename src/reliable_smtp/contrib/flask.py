"""Flask integration: an extension sharing one :class:`~reliable_smtp.Mailer` per app.

::

    from flask import Flask
    from reliable_smtp import Message
    from reliable_smtp.contrib.flask import ReliableSMTP

    mail = ReliableSMTP()

    def create_app():
        app = Flask(__name__)
        app.config["RELIABLE_SMTP_URL"] = "smtps://app:secret@smtp.example.com:465"
        mail.init_app(app)
        return app

    @app.post("/signup")
    def signup():
        result = mail.send(Message(...))     # the SendResult, per recipient
        return {"accepted": list(result.accepted)}

Configuration: every ``RELIABLE_SMTP_<NAME>`` key of ``app.config`` is a
:class:`~reliable_smtp.MailerSettings` field (``RELIABLE_SMTP_HOST``,
``RELIABLE_SMTP_TLS``, ``RELIABLE_SMTP_MAX_CONNECTIONS``...); keys ``app.config``
does not have come from the ``RELIABLE_SMTP_*`` environment variables (and
``.env``), so **app.config wins over the environment**. Two keys take objects:
``RELIABLE_SMTP_RETRY`` (a :class:`~reliable_smtp.RetryPolicy`) and
``RELIABLE_SMTP_RECIPIENT_POLICY`` (a :class:`~reliable_smtp.RecipientPolicy`, or
``None`` for no checks). ``ReliableSMTP(factory=...)`` replaces all of it with
your own ``factory(app) -> Mailer``.

The mailer is built on first use (a misconfiguration raises
:class:`~reliable_smtp.ConfigurationError` at ``init_app``, though), shared by
every request thread - :class:`~reliable_smtp.Mailer` is thread-safe and keeps
its connections warm between requests - and closed at interpreter exit, or by
:meth:`ReliableSMTP.close`.

Needs Flask: ``pip install 'reliable-smtp[flask]'``.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Any

try:
    from flask import Flask, current_app
except ImportError:  # pragma: no cover - depends on the environment
    from . import missing_framework

    raise missing_framework("reliable_smtp.contrib.flask", "Flask", "flask") from None

from reliable_smtp import (
    ConfigurationError,
    Envelope,
    Mailer,
    MailerSettings,
    Message,
    RecipientPolicy,
    RetryPolicy,
    SendResult,
    SendResultOrError,
)

__all__ = ["ReliableSMTP"]

_PREFIX = "RELIABLE_SMTP_"
_OBJECT_KEYS = frozenset({"RETRY", "RECIPIENT_POLICY"})
_UNSET: Any = object()


class _AppMail:
    """One application's mailer, built once on first use."""

    def __init__(self, build: Callable[[], Mailer]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._mailer: Mailer | None = None
        self.closed = False

    def get(self) -> Mailer:
        with self._lock:
            if self.closed:
                raise RuntimeError("the reliable-smtp mailer of this app was closed")
            if self._mailer is None:
                self._mailer = self._build()
            return self._mailer

    def close(self) -> None:
        with self._lock:
            self.closed = True
            mailer, self._mailer = self._mailer, None
        if mailer is not None:
            mailer.close()


class ReliableSMTP:
    """The extension: ``ReliableSMTP(app)`` or ``ReliableSMTP()`` + ``init_app(app)``."""

    def __init__(
        self, app: Flask | None = None, *, factory: Callable[[Flask], Mailer] | None = None
    ) -> None:
        self._factory = factory
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register on ``app``; read and check its ``RELIABLE_SMTP_*`` configuration."""
        if self._factory is not None:
            factory = self._factory

            def build() -> Mailer:
                return factory(app)
        else:
            settings, retry, policy = _read_config(app.config)

            def build() -> Mailer:
                return Mailer(
                    settings.build_transport(),
                    retry=retry if retry is not None else settings.retry_policy(),
                    recipient_policy=policy,
                )

        previous = app.extensions.get("reliable_smtp")
        if isinstance(previous, _AppMail):
            previous.close()
        mail = _AppMail(build)
        app.extensions["reliable_smtp"] = mail
        # Flask has no application-shutdown hook; the process's exit is the end of the app.
        atexit.register(mail.close)

    # -- use -----------------------------------------------------------------------------

    def mailer_for(self, app: Flask) -> Mailer:
        """``app``'s mailer (built on first use)."""
        mail = app.extensions.get("reliable_smtp")
        if not isinstance(mail, _AppMail):
            raise RuntimeError(
                "reliable-smtp is not set up on this app: call ReliableSMTP.init_app(app)"
            )
        return mail.get()

    @property
    def mailer(self) -> Mailer:
        """The current application's mailer (inside an app or request context)."""
        return self.mailer_for(current_app)

    def send(self, message: Message | Any, *, envelope: Envelope | None = None) -> SendResult:
        """Send through the current app's mailer; see :meth:`reliable_smtp.Mailer.send`."""
        return self.mailer.send(message, envelope=envelope)

    def send_many(self, messages: Any, *, concurrency: int = 4) -> list[SendResultOrError]:
        """Send a batch; see :meth:`reliable_smtp.Mailer.send_many`."""
        return self.mailer.send_many(messages, concurrency=concurrency)

    def close(self, app: Flask) -> None:
        """Close ``app``'s mailer now (QUIT); it cannot send afterwards."""
        mail = app.extensions.get("reliable_smtp")
        if isinstance(mail, _AppMail):
            mail.close()


def _read_config(
    config: Any,
) -> tuple[MailerSettings, RetryPolicy | None, RecipientPolicy | None]:
    values: dict[str, Any] = {}
    for key, value in config.items():
        if not key.startswith(_PREFIX) or key[len(_PREFIX) :] in _OBJECT_KEYS:
            continue
        values[key[len(_PREFIX) :].lower()] = value
    known = MailerSettings.model_fields
    for name in values:
        if name not in known:
            raise ConfigurationError(
                f"app.config[{_PREFIX + name.upper()!r}] is not a reliable-smtp setting; the "
                f"keys are {', '.join(_PREFIX + field.upper() for field in sorted(known))}",
                setting=_PREFIX + name.upper(),
            )
    settings = MailerSettings(**values)
    retry = config.get(f"{_PREFIX}RETRY")
    policy = config.get(f"{_PREFIX}RECIPIENT_POLICY", _UNSET)
    if policy is _UNSET:
        policy = RecipientPolicy()
    return settings, retry, policy
