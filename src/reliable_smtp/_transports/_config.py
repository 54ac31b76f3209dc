"""The SMTP transport's constructor arguments, checked before anything is opened.

This module owns the checks that look at several of :class:`~.smtp.SMTPTransport`'s
arguments together: the endpoint (TLS mode, host, port, and the port that does not
fit the mode), the login (username, password or SecretStr, OAuth token provider:
which combinations make sense) and the TLS files (``ssl_context`` or
``ca_file``/``client_cert``/``client_key``, not both). Each failure is a
:class:`~reliable_smtp.ConfigurationError` naming the setting. The rules for one
value (durations, counts) are :mod:`reliable_smtp._checks`; the port and mode
rules themselves, and the warning for a password sent in clear, are
:mod:`._session` (shared with ``reliable-smtp check`` and the settings).
"""

from __future__ import annotations

import os
import ssl

from .._checks import check_count
from .._envelope import line_break_problem
from .._errors import ConfigurationError
from ._login import TokenProvider
from ._session import DEFAULT_PORTS, TLSMode, keyword_spelling, port_mode_conflict, port_problem


def checked_endpoint(tls: TLSMode | str, host: str, port: int | None) -> tuple[TLSMode, int]:
    """The TLS mode and port (the mode's default when ``None``), once both fit ``host``."""
    try:
        mode = TLSMode(tls)
    except ValueError:
        raise ConfigurationError(
            f"tls must be one of 'starttls', 'implicit' or 'none', not {tls!r}",
            setting="tls",
        ) from None
    if not host or line_break_problem(host) is not None or any(c in host for c in " /"):
        raise ConfigurationError(f"host {host!r} is not a host name or address", setting="host")
    if port is None:
        port = DEFAULT_PORTS[mode]
    problem = port_problem(port)
    if problem is not None:
        raise ConfigurationError(f"port {problem}, got {port!r}", setting="port")
    conflict = port_mode_conflict(mode, port, spell=keyword_spelling)
    if conflict is not None:
        raise ConfigurationError(conflict, setting="tls")
    return mode, port


def checked_login(
    username: str | None, password: object, oauth_token_provider: TokenProvider | None
) -> tuple[str | None, str | None]:
    """The username (``None`` when blank) and the password's text, once they fit together."""
    secret = _secret_value(password)
    if username is not None and not username.strip():
        # The same rule as MailerSettings and `reliable-smtp check`: an empty
        # username means no login at all.
        username = None
    if oauth_token_provider is not None:
        if not callable(oauth_token_provider):
            raise ConfigurationError(
                "oauth_token_provider must be a function returning an access token",
                setting="oauth_token_provider",
            )
        if username is None:
            raise ConfigurationError(
                "XOAUTH2 needs the mailbox as username (e.g. app@example.com)",
                setting="username",
            )
        if secret is not None:
            raise ConfigurationError(
                "give either password or oauth_token_provider, not both",
                setting="password",
            )
    if secret is not None and username is None:
        raise ConfigurationError(
            "a password was given without a username (an empty username counts as "
            "none, and then no AUTH is sent): set both, or neither",
            setting="username",
        )
    return username, secret


def check_tls_files(
    ssl_context: ssl.SSLContext | None,
    ca_file: str | os.PathLike[str] | None,
    client_cert: str | os.PathLike[str] | None,
    client_key: str | os.PathLike[str] | None,
) -> None:
    """Either a ready ``ssl_context`` or the files to build one from, and no key alone."""
    if ssl_context is not None and (ca_file or client_cert or client_key):
        raise ConfigurationError(
            "give either ssl_context or ca_file/client_cert/client_key, not both: "
            "configure the context yourself when you pass one",
            setting="ssl_context",
        )
    if client_key is not None and client_cert is None:
        raise ConfigurationError("client_key needs client_cert", setting="client_cert")


def _secret_value(value: object) -> str | None:
    """Accept a plain string or anything with ``get_secret_value()`` (pydantic SecretStr)."""
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    if callable(getter):
        return str(getter())
    if isinstance(value, str):
        return value
    raise ConfigurationError("password must be a str or a pydantic SecretStr", setting="password")


def _count(name: str, value: int) -> int:
    checked = check_count(name, value)
    assert checked is not None
    return checked
