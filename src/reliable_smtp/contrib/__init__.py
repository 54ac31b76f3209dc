"""Framework drop-ins: thin layers that map a framework's conventions onto the core.

* :mod:`reliable_smtp.contrib.django` - ``EmailBackend`` for Django's ``EMAIL_BACKEND``
  (or a ``MAILERS`` entry on Django 6.1+), extra ``reliable-smtp[django]``;
* :mod:`reliable_smtp.contrib.fastapi` - a lifespan and a dependency handing an
  :class:`~reliable_smtp.AsyncMailer` to path operations, extra ``reliable-smtp[fastapi]``;
* :mod:`reliable_smtp.contrib.flask` - an ``init_app`` extension sharing one
  :class:`~reliable_smtp.Mailer`, extra ``reliable-smtp[flask]``.

The core never imports a framework; each module here imports its own and, when
it is missing, fails with the one-line fix.
"""

from __future__ import annotations

__all__ = ["missing_framework"]


def missing_framework(module: str, framework: str, extra: str) -> ImportError:
    """The ImportError a contrib module raises when its framework is not installed."""
    return ImportError(
        f"{module} needs {framework}, which is not installed: pip install 'reliable-smtp[{extra}]'"
    )
