"""The ``reliable-smtp`` command line: the parser assembled from one module per command, and
:func:`main`.

Each command module (:mod:`.check`, :mod:`.send`, :mod:`.explain`, :mod:`.devserver`, and
the durable outbox's :mod:`reliable_smtp.cli_outbox`) registers its sub-parser and sets the
handler that runs it; :func:`main` parses, installs the log handler, runs the handler and
turns usage and configuration errors into exit status 2. The public entry point is
:func:`reliable_smtp.cli.main`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import ConfigurationError, InvalidMessageError
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

    from ..cli_outbox import register as register_outbox  # the durable outbox's commands

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
