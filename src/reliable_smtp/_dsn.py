"""Connection URLs ("DSNs"): one string that says where and how to send mail.

This module owns :func:`parse_url`, the pure translation of a URL into setting
names and values (the same names as :class:`~reliable_smtp.MailerSettings` and
its ``RELIABLE_SMTP_*`` variables):

=====================================  ==============================================
``smtp://user:pass@host:587``          SMTP with STARTTLS (required); port 587 default
``smtps://user:pass@host:465``         SMTP over implicit TLS; port 465 default
``smtp+plain://host:25``               SMTP without TLS: a trusted local relay only
``sendmail:///usr/sbin/sendmail``      the local sendmail program at that path
``file:///var/mail/outbox``            ``.eml`` files in that directory
``memory://``                          an in-memory outbox (tests, development)
=====================================  ==============================================

User name and password are percent-decoded (``p%40ss`` is ``p@ss``). Query
options set the other settings by name: ``?timeout=10&max_connections=3``;
see :data:`QUERY_OPTIONS`. An unknown scheme or option is an error that lists
what is allowed.
"""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from ._errors import ConfigurationError

__all__ = ["QUERY_OPTIONS", "SCHEMES", "parse_url"]

#: scheme -> (transport, tls mode)
SCHEMES: dict[str, tuple[str, str | None]] = {
    "smtp": ("smtp", "starttls"),
    "smtps": ("smtp", "implicit"),
    "smtp+plain": ("smtp", "none"),
    "sendmail": ("sendmail", None),
    "file": ("file", None),
    "memory": ("memory", None),
}

#: Query options a URL may carry; each is the MailerSettings field of the same name.
QUERY_OPTIONS = frozenset(
    {
        "timeout",
        "connect_timeout",
        "data_timeout",
        "local_hostname",
        "ca_file",
        "max_connections",
        "max_messages_per_connection",
        "idle_timeout",
        "pool_timeout",
        "pipelining",
        "pipeline_across_messages",
        "chunking",
        "rate_per_second",
        "rate_per_minute",
        "rate_per_connection",
        "retry_attempts",
        "retry_deadline",
        "tls",
    }
)


def parse_url(url: str, *, variable: str = "RELIABLE_SMTP_URL") -> dict[str, str]:
    """Settings (field name -> text value) described by ``url``. Pure; no I/O.

    Values stay text: :class:`~reliable_smtp.MailerSettings` validates and
    converts them like any environment variable. ``variable`` names the setting
    in error messages.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(
            f"{variable} is empty: give a URL such as smtp://user:password@smtp.example.com:587",
            setting=variable,
        )
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ConfigurationError(
            f"{variable} has an unknown scheme {parts.scheme + '://' if parts.scheme else '(none)'}"
            f"; use one of {known}",
            setting=variable,
        )
    transport, tls = SCHEMES[scheme]
    values: dict[str, str] = {"transport": transport}
    if transport == "smtp":
        if _userinfo_unescaped(parts.path, parts.query, parts.fragment):
            raise ConfigurationError(
                _UNESCAPED.format(variable=variable, scheme=scheme), setting=variable
            )
        if not parts.hostname:
            raise ConfigurationError(
                f"{variable} has no host: write it as {scheme}://host:port", setting=variable
            )
        values["host"] = parts.hostname
        port = _port(parts)
        if port == -1:
            # Raised here, not in an except block: urllib's ValueError quotes the text
            # after the colon, and as __context__ it would keep it reachable.
            raise ConfigurationError(
                f"{variable} has a port that is not a number between 1 and 65535",
                setting=variable,
            )
        if port is not None:
            values["port"] = str(port)
        assert tls is not None
        values["tls"] = tls
        if parts.username:
            values["username"] = unquote(parts.username)
        if parts.password is not None:
            values["password"] = unquote(parts.password)
    elif transport in ("sendmail", "file"):
        path = unquote(parts.path)
        if parts.netloc and parts.netloc != "localhost":
            raise ConfigurationError(
                f"{variable}: {scheme} URLs name a local path, so write three slashes: "
                f"{scheme}:///{parts.netloc}{path}",
                setting=variable,
            )
        if not path:
            raise ConfigurationError(
                f"{variable}: {scheme}:// needs a path, e.g. {scheme}:///"
                + ("usr/sbin/sendmail" if transport == "sendmail" else "var/mail/outbox"),
                setting=variable,
            )
        values["sendmail_path" if transport == "sendmail" else "file_directory"] = path
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        key = name.lower()
        if key not in QUERY_OPTIONS:
            raise ConfigurationError(
                f"{variable} has an unknown option {name!r}; known options: "
                f"{', '.join(sorted(QUERY_OPTIONS))}",
                setting=variable,
            )
        if key == "tls" and transport == "smtp" and value.lower() != values.get("tls"):
            raise ConfigurationError(
                f"{variable}: the scheme {scheme}:// already sets tls={values['tls']}; "
                "use smtp:// (starttls), smtps:// (implicit) or smtp+plain:// (none) instead "
                "of ?tls=",
                setting=variable,
            )
        values[key] = value
    return values


# The message for a user name or password that ends the host part early. It never
# repeats the URL: the text after the stray character is the rest of the password.
_UNESCAPED = (
    "{variable}: the user name or password contains '/', '?' or '#', which end the host "
    "part of a URL, so the host and port cannot be read: percent-encode the password "
    "(and user name) - '/' as %2F, '?' as %3F, '#' as %23, '@' as %40, ':' as %3A, "
    "'%' as %25, e.g. with urllib.parse.quote(password, safe='') - and write "
    "{scheme}://USER:ENCODED-PASSWORD@host:port; or leave it out of the URL and set "
    "RELIABLE_SMTP_PASSWORD instead"
)


def _userinfo_unescaped(path: str, query: str, fragment: str) -> bool:
    """Whether an ``@`` comes after the authority: a password with a raw ``/?#`` in it.

    urlsplit() ends the authority at the first ``/``, ``?`` or ``#``; the real host is
    after the ``@`` that then lands in the path, a query option's name or the fragment
    (an ``@`` in an option's value, such as a ``ca_file`` path, is legitimate).
    """
    if "@" in path or "@" in fragment:
        return True
    return any("@" in name for name, _ in parse_qsl(query, keep_blank_values=True))


def _port(parts: SplitResult) -> int | None:
    """The URL's port, ``None`` when it has none, ``-1`` when it is not a valid port."""
    try:
        return parts.port
    except ValueError:
        return -1
