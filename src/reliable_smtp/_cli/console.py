"""Where the command prints: the secret-scrubbing console, the log handler, usage errors.

Everything any command writes goes through :class:`Console`, which scrubs every form of
every secret the command has seen (:class:`~reliable_smtp._redaction.SecretForms`) and
picks Unicode or ASCII markers for the terminal. :class:`UsageError` is the one error
that means exit status 2.
"""

from __future__ import annotations

import io
import logging
import shutil
import textwrap
from typing import TextIO

from .._redaction import SecretForms

PROG = "reliable-smtp"


class UsageError(Exception):
    """A problem with the command line or its input files: exit status 2."""


def _can_encode(stream: TextIO, text: str) -> bool:
    try:
        text.encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class Console:
    """Where everything is printed: scrubs secrets, picks ✔/✘ or ASCII markers, flushes."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.unicode = _can_encode(stdout, "✔✘")
        self._secrets = SecretForms()
        self.width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))

    def add_secret(self, secret: str | None, *, username: str | None = None) -> None:
        """Scrub ``secret`` in every form it takes on the wire (the library's one rule)."""
        if secret:
            self._secrets |= SecretForms.for_password(username or "", secret)

    def scrub(self, text: str) -> str:
        return self._secrets.redact(text)

    def mark(self, ok: bool | None) -> str:
        """✔ passed, ✘ failed, - skipped (``None``); OK / FAIL / SKIP without Unicode."""
        if self.unicode:
            return {True: "✔", False: "✘", None: "-"}[ok]
        return {True: "OK", False: "FAIL", None: "SKIP"}[ok]

    @property
    def mark_width(self) -> int:
        return 1 if self.unicode else 4

    def out(self, text: str = "", *, end: str = "\n") -> None:
        self.stdout.write(self.scrub(text) + end)
        self.stdout.flush()

    def err(self, text: str = "", *, end: str = "\n") -> None:
        self.stderr.write(self.scrub(text) + end)
        self.stderr.flush()

    def wrap(self, text: str, indent: int, *, hang: int = 0) -> list[str]:
        """``text`` in lines that fit after ``indent`` columns; ``hang`` indents the rest."""
        return textwrap.wrap(
            text,
            width=max(40, self.width - indent),
            subsequent_indent=" " * hang,
            break_long_words=False,
            break_on_hyphens=False,
        ) or [""]


class LogHandler(logging.Handler):
    """The library's log records on stderr, through the console (so, scrubbed).

    Installed even when ``--log`` is not given, at a level above everything: the
    command prints outcomes itself, and Python's last-resort handler would
    otherwise print the library's warnings (a give-up per failed message) as noise.
    """

    def __init__(self, console: Console, level: str | None) -> None:
        super().__init__(getattr(logging, level.upper()) if level else logging.CRITICAL + 1)
        self.console = console
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.err(self.format(record))
        except Exception:  # logging must never break the command
            self.handleError(record)


def prefer_replacement(stream: TextIO) -> None:
    # A server's text may hold characters the terminal cannot show: never crash on them.
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors="replace")
