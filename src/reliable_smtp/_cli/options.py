"""The connection options every command that talks to a server takes, and the settings
they make.

Flags beat ``RELIABLE_SMTP_*`` variables, which beat ``.env``; a password comes from the
environment, ``--password-env VAR`` or ``--password-prompt``, never from a flag value, and
is added to the console's secrets before anything can print it.
"""

from __future__ import annotations

import argparse
import getpass
import os
from typing import Any

from .._settings import MailerSettings
from .._transports.smtp import TLSMode
from .console import Console, UsageError


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Add the connection flags (host, port, TLS, user, password source, timeouts, CA)."""
    group = parser.add_argument_group(
        "connection (flags beat RELIABLE_SMTP_* variables, which beat .env)"
    )
    group.add_argument("--host", help="SMTP server (RELIABLE_SMTP_HOST)")
    group.add_argument("--port", type=int, help="port (RELIABLE_SMTP_PORT; 587, 465 or 25)")
    group.add_argument(
        "--tls",
        choices=[mode.value for mode in TLSMode],
        help="starttls (required), implicit (SMTPS) or none (RELIABLE_SMTP_TLS)",
    )
    group.add_argument("--username", help="AUTH user name (RELIABLE_SMTP_USERNAME)")
    secret = group.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from environment variable VAR (default: RELIABLE_SMTP_PASSWORD)",
    )
    secret.add_argument(
        "--password-prompt", action="store_true", help="ask for the password (not echoed)"
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="bound every wait: connect, TLS, greeting, each reply (RELIABLE_SMTP_TIMEOUT "
        "and _CONNECT_TIMEOUT, _DATA_TIMEOUT)",
    )
    group.add_argument("--ca-file", help="CA bundle to verify the server (RELIABLE_SMTP_CA_FILE)")
    group.add_argument("--local-hostname", help="name sent in EHLO (RELIABLE_SMTP_LOCAL_HOSTNAME)")
    group.add_argument(
        "--env-file",
        metavar="PATH",
        help="read settings from this file instead of ./.env ('none': no file)",
    )


def _password(args: argparse.Namespace, username: str | None) -> str | None:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise UsageError(f"--password-env: environment variable {args.password_env} is not set")
        return value
    if args.password_prompt:
        who = f" for {username}" if username else ""
        return getpass.getpass(f"SMTP password{who}: ")
    return None


def settings_from_args(args: argparse.Namespace, console: Console, **extra: Any) -> MailerSettings:
    """The settings from the environment and ``.env``, overridden by the flags (and
    ``extra``); every form of the password is added to the console's secrets."""
    values: dict[str, Any] = {}
    for flag in ("host", "port", "tls", "username", "ca_file", "local_hostname"):
        value = getattr(args, flag)
        if value is not None:
            values[flag] = value
    if args.timeout is not None:
        values.update(timeout=args.timeout, connect_timeout=args.timeout, data_timeout=args.timeout)
    if args.env_file is not None:
        values["_env_file"] = None if args.env_file.lower() == "none" else args.env_file
    values.update(extra)
    username = values.get("username") or os.environ.get("RELIABLE_SMTP_USERNAME")
    password = _password(args, username)
    if password is not None:
        console.add_secret(password)
        values["password"] = password
    # Scrub the environment's password too, before anything can print it.
    console.add_secret(os.environ.get("RELIABLE_SMTP_PASSWORD"))
    settings = MailerSettings(**values)
    if settings.password is not None:
        console.add_secret(settings.password.get_secret_value(), username=settings.username)
    return settings
