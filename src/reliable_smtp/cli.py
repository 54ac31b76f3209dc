"""The ``reliable-smtp`` command: ``check``, ``send``, ``explain`` and ``devserver``.

* ``check`` - connect to the configured server step by step (DNS, TCP, TLS,
  greeting, EHLO, STARTTLS, AUTH, optionally a test message) and say what failed,
  why, and what to change (:func:`reliable_smtp.diagnostics.check_connection`);
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
command in the private package ``reliable_smtp._cli``; this module is its public
entry point (the console script and ``python -m reliable_smtp``). The work is
done by the library (:mod:`~reliable_smtp.diagnostics`, :class:`~reliable_smtp.AsyncMailer`,
:func:`~reliable_smtp.replies.classify`, :class:`~reliable_smtp.testing.LocalSMTPServer`).
"""

from __future__ import annotations

from ._cli import main
from ._cli.console import Console, UsageError
from ._cli.options import settings_from_args
from ._cli.send import Progress

__all__ = ["main"]

# Under their old names, for reliable_smtp.cli_outbox and the tests, which import them
# from here.
_Console = Console
_UsageError = UsageError
_settings = settings_from_args
_Progress = Progress
