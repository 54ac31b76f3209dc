"""The ``reliable-smtp`` command: ``check``, ``send``, ``explain`` and ``devserver``.

* ``check`` - connect to the configured server step by step (DNS, TCP, TLS,
  greeting, EHLO, STARTTLS, AUTH, optionally a test message) and say what failed,
  why, and what to change (:func:`reliable_smtp.check_connection`);
* ``send`` - send one message from flags or an ``.eml`` file, or one message per
  recipient of a CSV/JSONL list, through the configured transport;
* ``explain`` - what an SMTP reply means and what to do, from the library's table;
* ``devserver`` - a local capture SMTP server (optional TLS, AUTH and scripted
  replies) that prints and saves what it receives.

Settings come from where the library reads them (``RELIABLE_SMTP_*`` variables and
``.env``), overridden by flags. A password is never taken as a flag value: it comes
from the environment, from ``--password-env VAR`` or from ``--password-prompt``, and
it is scrubbed from everything this command prints.

Exit status: 0 when everything succeeded, 1 when a check step or a delivery
failed, 2 for usage and configuration errors (argparse's convention).

The command is a thin shell: argument parsing and presentation, one module per
command (:mod:`.check`, :mod:`.send`, :mod:`.explain`, :mod:`.devserver`, and the
durable outbox's :mod:`.outbox`), each registering its sub-parser and the handler that
runs it; :func:`main` here parses, installs the log handler, runs the handler and turns
usage and configuration errors into exit status 2. It is the console script's entry
point and ``python -m reliable_smtp``'s. The work is
done by the library (:func:`~reliable_smtp.check_connection`, :class:`~reliable_smtp.AsyncMailer`,
:func:`~reliable_smtp._replies.classify`, :class:`~reliable_smtp.testing.LocalSMTPServer`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from .._errors import ConfigurationError, InvalidMessageError
from . import check, devserver, explain, send
from .console import PROG, Console, LogHandler, UsageError, prefer_replacement
from .options import add_connection_options

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command's sub-parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Check an SMTP setup, send mail, explain replies, run a local test server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Options every command that talks to a server takes, after the command name.
    logs = argparse.ArgumentParser(add_help=False)
    logs.add_argument(
        "--log",
        choices=["debug", "info", "warning"],
        help="show the library's log records at this level on stderr (default: none)",
    )
    check.register(commands, logs=logs)
    send.register(commands, logs=logs)
    explain.register(commands, logs=logs)
    devserver.register(commands, logs=logs)

    from .outbox import register as register_outbox  # the durable outbox's commands

    register_outbox(commands, logs=logs, connection_options=add_connection_options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    prefer_replacement(sys.stdout)
    prefer_replacement(sys.stderr)
    console = Console(sys.stdout, sys.stderr)
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, Console], int] = args.handler
    library = logging.getLogger("reliable_smtp")
    log_handler = LogHandler(console, getattr(args, "log", None))
    library.addHandler(log_handler)
    previous_level = library.level
    if getattr(args, "log", None):
        library.setLevel(log_handler.level)
    try:
        status = handler(args, console)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return status
    except (UsageError, ConfigurationError, InvalidMessageError) as exc:
        console.err(f"{PROG} {args.command}: {exc}")
        return 2
    except KeyboardInterrupt:
        console.err(f"{PROG} {args.command}: interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`reliable-smtp outbox list | head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # what a shell reports for SIGPIPE (128 + 13)
    finally:
        library.removeHandler(log_handler)
        library.setLevel(previous_level)
