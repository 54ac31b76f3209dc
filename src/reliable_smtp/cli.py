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

This module is a thin shell: argument parsing and presentation. The work is
done by the library (:mod:`~reliable_smtp.diagnostics`, :class:`~reliable_smtp.AsyncMailer`,
:func:`~reliable_smtp.replies.classify`, :class:`~reliable_smtp.testing.LocalSMTPServer`).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import email
import email.policy
import getpass
import io
import json
import logging
import os
import re
import shutil
import signal
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .diagnostics import CheckReport, CheckStep, check_connection, recipient_rows
from .envelope import Envelope
from .errors import (
    ConfigurationError,
    DeliveryError,
    InvalidAddressError,
    InvalidMessageError,
    ReliableSMTPError,
)
from .mailer import AsyncMailer, SendResultOrError
from .message import Attachment, Message, bare_address, render
from .redaction import SecretForms
from .replies import Outcome, Phase, Reply, Verdict, classify, likely_phase
from .result import SendResult
from .settings import MailerSettings
from .transports.smtp import TLSMode

__all__ = ["main"]

_PROG = "reliable-smtp"
_COMMANDS = (
    "GREETING",
    "EHLO",
    "STARTTLS",
    "AUTH",
    "MAIL",
    "RCPT",
    "DATA",
    "DATA_END",
    "RSET",
    "NOOP",
)


class _UsageError(Exception):
    """A problem with the command line or its input files: exit status 2."""


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def _can_encode(stream: TextIO, text: str) -> bool:
    try:
        text.encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class _Console:
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


# --------------------------------------------------------------------------------------
# Settings from the environment and flags
# --------------------------------------------------------------------------------------


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
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
            raise _UsageError(
                f"--password-env: environment variable {args.password_env} is not set"
            )
        return value
    if args.password_prompt:
        who = f" for {username}" if username else ""
        return getpass.getpass(f"SMTP password{who}: ")
    return None


def _settings(args: argparse.Namespace, console: _Console, **extra: Any) -> MailerSettings:
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


# --------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace, console: _Console) -> int:
    settings = _settings(args, console)
    report = asyncio.run(check_connection(settings, send_to=args.send_to, sender=args.sender))
    if args.json:
        console.out(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_report(report, console)
    return 0 if report.ok else 1


def _print_report(report: CheckReport, console: _Console) -> None:
    target = report.target
    facts = [f"tls {target.tls.value}"]
    facts.append(f"user {target.username}" if target.username else "no AUTH")
    if target.ca_file:
        facts.append(f"CA file {target.ca_file}")
    facts.append(f"timeout {target.connect_timeout:g} s")
    console.out(f"Checking {target.url} ({', '.join(facts)})")
    console.out()
    title_width = max([20, *(len(step.title) for step in report.steps)])
    any_slow = any(step.slow for step in report.steps)
    indent = 2 + console.mark_width + 1 + title_width + 2 + 9 + (5 if any_slow else 0) + 2
    for step in report.steps:
        _print_step(step, console, title_width, indent, any_slow)
    console.out()
    failed = report.failed
    steps = sum(not step.skipped for step in report.steps)
    if failed is None:
        console.out(f"{console.mark(True)} all {steps} steps passed in {report.seconds:.2f} s")
    else:
        console.out(f"{console.mark(False)} {failed.title} failed: {failed.cause}")


def _print_step(
    step: CheckStep, console: _Console, title_width: int, indent: int, any_slow: bool
) -> None:
    mark = console.mark(None if step.skipped else step.ok)
    timing = "skipped".rjust(9) if step.seconds is None else f"{step.seconds:7.3f} s"
    if any_slow:
        timing += " slow" if step.slow else "     "
    head = f"  {mark:<{console.mark_width}} {step.title:<{title_width}}  {timing}  "
    summary = console.wrap(step.summary, indent)
    console.out(head + summary[0])
    pad = " " * indent
    for line in summary[1:]:
        console.out(pad + line)
    for note in step.notes:
        # "label:   value" notes keep their value column when they wrap.
        column = re.match(r"[\w ]+:\s+", note)
        for line in console.wrap(note, indent, hang=column.end() if column else 2):
            console.out(pad + line)
    for warning in step.warnings:
        for line in console.wrap(f"warning: {warning}", indent, hang=9):
            console.out(pad + line)
    if step.ok:
        return
    for label, text in (
        ("cause", step.cause),
        ("meaning", step.explanation),
        ("fix", step.hint),
    ):
        if not text:
            continue
        lines = console.wrap(f"{label + ':':<9}{text}", indent, hang=9)
        for line in lines:
            console.out(pad + line)


# --------------------------------------------------------------------------------------
# send
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Recipient:
    line: int
    email: str


def _read_recipients(path: Path) -> list[_Recipient]:
    """The ``email`` of every row of a CSV file (a column) or a JSONL file (a key)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise _UsageError(f"--recipients: cannot read {path}: {exc.strerror or exc}") from exc
    suffix = path.suffix.lower()
    jsonl = suffix in (".jsonl", ".ndjson", ".json") or (
        suffix != ".csv" and text.lstrip().startswith("{")
    )
    recipients: list[_Recipient] = []
    if jsonl:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _UsageError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("email"), str):
                raise _UsageError(f'{path}:{number}: expected an object with an "email" string')
            recipients.append(_Recipient(number, row["email"].strip()))
        return recipients
    reader = csv.DictReader(io.StringIO(text))
    columns = {(name or "").strip().lower(): name for name in reader.fieldnames or ()}
    if "email" not in columns:
        found = ", ".join(repr(name) for name in reader.fieldnames or ()) or "none"
        raise _UsageError(f"{path}: no 'email' column (columns: {found})")
    for row in reader:
        recipients.append(_Recipient(reader.line_num, (row[columns["email"]] or "").strip()))
    return recipients


def _read_text_option(value: str | None) -> str | None:
    # "-" reads the body from standard input, so a pipeline can produce it.
    if value == "-":
        return sys.stdin.read()
    return value


def _attachments(paths: Sequence[str]) -> list[Attachment]:
    attachments = []
    for path in paths:
        try:
            attachments.append(Attachment.from_path(path))
        except OSError as exc:
            raise _UsageError(f"--attach: cannot read {path}: {exc.strerror or exc}") from exc
    return attachments


def _bare(addresses: Sequence[str], what: str) -> list[str]:
    # By the Message rules: parseaddr() would silently turn "a@b.org NOTIFY=x"
    # into the different address "a@b.orgNOTIFY=x".
    return [bare_address(address, what=what) for address in addresses]


def _single_message(args: argparse.Namespace) -> tuple[Message | EmailMessage, Envelope | None]:
    if args.eml is not None:
        if args.subject or args.text or args.html or args.attach:
            raise _UsageError(
                "--eml sends the file as it is: drop --subject/--text/--html/--attach"
            )
        try:
            data = Path(args.eml).read_bytes()
        except OSError as exc:
            raise _UsageError(f"--eml: cannot read {args.eml}: {exc.strerror or exc}") from exc
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)  # policy.default makes EmailMessage
        envelope = None
        recipients = [*args.to, *args.cc, *args.bcc]
        if args.sender or recipients:
            # Like sendmail -f and explicit recipients: the envelope, not the headers.
            rendered = render(parsed)
            envelope = Envelope.build(
                _bare([args.sender], "--from")[0] if args.sender else rendered.sender,
                _bare(recipients, "--to/--cc/--bcc address") if recipients else rendered.recipients,
            )
        return parsed, envelope
    if not args.sender:
        raise _UsageError("--from is required (or give --eml FILE)")
    if not (args.to or args.cc or args.bcc):
        raise _UsageError("give at least one --to, --cc or --bcc (or --recipients FILE)")
    message = Message(
        sender=args.sender,
        to=args.to,
        cc=args.cc,
        bcc=args.bcc,
        subject=args.subject or "",
        text=_read_text_option(args.text),
        html=args.html,
        attachments=_attachments(args.attach),
    )
    return message, None


def _result_rows(
    outcome: SendResultOrError, recipient: str | None = None, **extra: Any
) -> list[dict[str, Any]]:
    """Per-recipient JSON rows for a send's result or error (``recipient``: when unknown)."""
    if isinstance(outcome, SendResult):
        return [{**row, **extra} for row in recipient_rows(outcome)]
    if isinstance(outcome, DeliveryError) and outcome.result is not None:
        return [{**row, **extra} for row in recipient_rows(outcome.result)]
    return [
        {
            "recipient": recipient,
            "outcome": "invalid" if isinstance(outcome, InvalidMessageError) else "error",
            "code": None,
            "enhanced_code": None,
            "text": None,
            "explanation": str(outcome),
            "message_id": None,
            **extra,
        }
    ]


def _print_recipients(result: SendResult, console: _Console) -> None:
    width = max(len(r) for r in result.recipients)
    outcome_width = max(len(s.outcome.value) for s in result.recipients.values())
    for recipient, status in result.recipients.items():
        reply = str(status.reply) if status.reply is not None else "(no reply)"
        console.out(
            f"  {console.mark(status.accepted):<{console.mark_width}} {recipient:<{width}}  "
            f"{status.outcome.value:<{outcome_width}}  {reply}"
        )
        if not status.accepted and status.explanation:
            indent = 2 + console.mark_width + 1 + width + 2
            for line in console.wrap(status.explanation, indent):
                console.out(" " * indent + line)


def _cmd_send(args: argparse.Namespace, console: _Console) -> int:
    extra: dict[str, Any] = {}
    if args.attempts is not None:
        extra["retry_attempts"] = args.attempts
    if args.recipients is not None:
        if args.to or args.cc or args.bcc or args.eml:
            raise _UsageError("--recipients sends one message per row: drop --to/--cc/--bcc/--eml")
        if not args.sender:
            raise _UsageError("--from is required with --recipients")
        recipients = _read_recipients(Path(args.recipients))
        attachments = _attachments(args.attach)
        text = _read_text_option(args.text)
        settings = _settings(args, console, **extra)
        return _send_bulk(args, console, settings, recipients, attachments, text)
    message, envelope = _single_message(args)
    settings = _settings(args, console, **extra)
    outcome = asyncio.run(_send_one(settings, message, envelope))
    if args.results:
        _write_rows(Path(args.results), _result_rows(outcome, line=None))
    if isinstance(outcome, SendResult):
        attempts = len(outcome.attempts)
        console.out(
            f"{console.mark(True)} sent <{outcome.message_id}> to {len(outcome.accepted)} "
            f"recipient{'s' * (len(outcome.accepted) != 1)} via {outcome.transport_name} in "
            f"{outcome.elapsed:.2f} s ({attempts} attempt{'s' * (attempts != 1)})"
        )
        _print_recipients(outcome, console)
        return 0
    if isinstance(outcome, DeliveryError):
        console.out(f"{console.mark(False)} {outcome.summary}")
        if outcome.result is not None:
            _print_recipients(outcome.result, console)
        elif outcome.explanation:
            console.out(f"  {outcome.explanation}")
        return 1
    raise _UsageError(str(outcome))


async def _send_one(
    settings: MailerSettings, message: Message | EmailMessage, envelope: Envelope | None
) -> SendResultOrError:
    async with AsyncMailer(settings.build_transport(), retry=settings.retry_policy()) as mailer:
        try:
            return await mailer.send(message, envelope=envelope)
        except ReliableSMTPError as error:
            return error


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")


class _Progress:
    """``120/1000 done (118 sent, 2 failed)  35.2 msg/s  ETA 0:00:25`` on stderr.

    On a terminal the line is rewritten in place (``\\r``) at most ten times a second;
    otherwise (a log, a pipe) a new line is written every ``interval`` seconds, and
    :meth:`finish` writes the last one.
    """

    def __init__(
        self,
        total: int,
        stream: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 5.0,
    ) -> None:
        self.total = total
        self.stream = stream
        self.clock = clock
        self.tty = stream.isatty()
        self.interval = 0.1 if self.tty else interval
        self.started = clock()
        self.last = self.started
        self.width = 0

    def line(self, done: int, sent: int, failed: int, now: float) -> str:
        rate = done / max(now - self.started, 1e-9)
        text = f"{done}/{self.total} done ({sent} sent, {failed} failed)  {rate:.1f} msg/s"
        if 0 < done < self.total:
            eta = int((self.total - done) / rate)
            text += f"  ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}"
        return text

    def update(self, done: int, sent: int, failed: int) -> None:
        now = self.clock()
        if now - self.last < self.interval:
            return
        self.last = now
        self._write(self.line(done, sent, failed, now))

    def finish(self, done: int, sent: int, failed: int) -> None:
        self._write(self.line(done, sent, failed, self.clock()))
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _write(self, text: str) -> None:
        if self.tty:
            # Pad over the previous frame, which may have been longer.
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _outcome_name(outcome: SendResultOrError) -> str:
    if isinstance(outcome, SendResult):
        return Outcome.SENT.value
    if isinstance(outcome, DeliveryError):
        return outcome.outcome.value
    return "invalid" if isinstance(outcome, InvalidMessageError) else "error"


def _send_bulk(
    args: argparse.Namespace,
    console: _Console,
    settings: MailerSettings,
    recipients: list[_Recipient],
    attachments: list[Attachment],
    text: str | None,
) -> int:
    # Build every message first: a malformed address is reported, not sent, and never
    # stops the others; a malformed sender stops everything before anything is sent.
    messages: list[Message] = []
    rows: list[_Recipient] = []  # rows[i]: the input row of messages[i]
    skipped: list[tuple[_Recipient, InvalidMessageError]] = []
    for recipient in recipients:
        try:
            message = Message(
                sender=args.sender,
                to=[recipient.email],
                subject=args.subject or "",
                text=text,
                html=args.html,
                attachments=attachments,
            )
        except InvalidAddressError as error:
            if error.address == args.sender:
                raise _UsageError(f"--from: {error}") from error
            skipped.append((recipient, error))
            continue
        messages.append(message)
        rows.append(recipient)

    if "max_connections" not in settings.model_fields_set:
        # --concurrency sends at once need as many connections: over one, a slow row
        # would hold back every other (RELIABLE_SMTP_MAX_CONNECTIONS, when set, caps them).
        settings = settings.model_copy(update={"max_connections": args.concurrency})

    counts: Counter[str] = Counter()
    results_path = Path(args.results) if args.results else None
    try:
        results_file = results_path.open("w", encoding="utf-8") if results_path else None
    except OSError as exc:
        raise _UsageError(f"--results: cannot write {results_path}: {exc.strerror}") from exc

    def record(outcome: SendResultOrError, recipient: _Recipient) -> None:
        counts[_outcome_name(outcome)] += 1
        if results_file is not None:
            for row in _result_rows(outcome, recipient.email, line=recipient.line):
                results_file.write(json.dumps(row, ensure_ascii=False) + "\n")
            results_file.flush()  # a row per message as it ends: an interrupted run keeps them
        done = sum(counts.values())
        progress.update(done, counts["sent"], done - counts["sent"])

    progress = _Progress(len(recipients), console.stderr)
    for recipient, refusal in skipped:
        console.err(f"line {recipient.line}: skipped: {refusal}")
        record(refusal, recipient)
    started = time.monotonic()

    async def run() -> None:
        async with AsyncMailer(settings.build_transport(), retry=settings.retry_policy()) as mailer:
            # In the order the sends end, not the input order: a slow row (a greylisting
            # server, a timeout) holds back neither the others nor their result rows.
            async for done in mailer.as_completed(messages, concurrency=args.concurrency):
                record(done.result_or_error, rows[done.index])

    try:
        asyncio.run(run())
    finally:
        if results_file is not None:
            results_file.close()
        done = sum(counts.values())
        progress.finish(done, counts["sent"], done - counts["sent"])
    _print_summary(counts, time.monotonic() - started, console)
    return 0 if counts["sent"] == len(recipients) else 1


def _print_summary(counts: Counter[str], elapsed: float, console: _Console) -> None:
    total = sum(counts.values())
    order = [o.value for o in Outcome] + ["invalid", "error"]
    rows = [(name, counts[name]) for name in order if counts[name]]
    width = max([len("outcome"), *(len(name) for name, _ in rows)])
    console.out(f"{'outcome':<{width}}  {'count':>7}")
    for name, count in rows:
        console.out(f"{name:<{width}}  {count:>7}")
    rate = total / elapsed if elapsed > 0 else 0.0
    console.out(f"{'total':<{width}}  {total:>7}  in {elapsed:.2f} s ({rate:.1f} messages/s)")


# --------------------------------------------------------------------------------------
# explain
# --------------------------------------------------------------------------------------

_REPLY_LINE = re.compile(r"^\s*(\d{3})(?:[ -](.*))?$")

_OUTCOME_LABELS = {
    Outcome.SENT: "success",
    Outcome.TRANSIENT: "transient - retried with exponential backoff",
    Outcome.THROTTLED: "throttled - retried later, after a longer wait",
    Outcome.PERMANENT: "permanent - never retried",
    Outcome.AUTH_OR_CONFIG: "auth/config - never retried: a setting or the account must change",
    Outcome.AMBIGUOUS: "ambiguous - the server may have the message; not resent",
}


def _parse_reply(words: Sequence[str]) -> Reply:
    """``550 5.1.1 text``, in one argument or several, one line or a pasted multi-line reply."""
    lines = [line for line in " ".join(words).splitlines() if line.strip()] or [""]
    first = _REPLY_LINE.match(lines[0])
    if first is None:
        raise _UsageError(
            f"{' '.join(words)!r} does not start with a three-digit reply code "
            "(for example: 550 5.1.1 no such user)"
        )
    texts = [first.group(2) or ""]
    for line in lines[1:]:
        match = _REPLY_LINE.match(line)
        texts.append((match.group(2) or "") if match else line.strip())
    return Reply.from_server(int(first.group(1)), "\n".join(texts).strip())


def _phase(value: str) -> Phase:
    try:
        return Phase(value.strip().lower().replace("-", "_"))
    except ValueError:
        names = ", ".join(phase.value for phase in Phase)
        raise argparse.ArgumentTypeError(f"unknown phase {value!r} (choose from {names})") from None


def _cmd_explain(args: argparse.Namespace, console: _Console) -> int:
    reply = _parse_reply(args.reply)
    phase: Phase = args.phase if args.phase is not None else likely_phase(reply)
    verdict = classify(reply, phase)
    if args.json:
        console.out(json.dumps(_verdict_dict(reply, phase, verdict, args.phase is None), indent=2))
        return 0
    assumed = (
        "" if args.phase is not None else " (assumed: where this code is usually seen; set --phase)"
    )
    rows = [
        ("reply", str(reply)),
        ("phase", f"{phase.value}{assumed}"),
        ("outcome", _OUTCOME_LABELS[verdict.outcome]),
        ("meaning", verdict.explanation),
    ]
    if verdict.outcome is not Outcome.SENT:
        rows.append(("retry", "yes, within the call" if verdict.retryable else "no"))
    if verdict.quota:
        rows.append(("quota", "a daily or billing limit: defer for hours, stop sending on it"))
    if verdict.split:
        rows.append(("split", "too many recipients: the rest go at once in a new transaction"))
    if verdict.delay_hint is not None:
        rows.append(("wait", f"the server asks for {verdict.delay_hint:g} s"))
    rows.append(("rule", verdict.rule))
    for label, text in rows:
        for line in console.wrap(f"{label + ':':<10}{text}", 0, hang=10):
            console.out(line)
    return 0


def _verdict_dict(reply: Reply, phase: Phase, verdict: Verdict, assumed: bool) -> dict[str, Any]:
    return {
        "code": reply.code,
        "enhanced_code": reply.enhanced_code,
        "text": reply.text,
        "phase": phase.value,
        "phase_assumed": assumed,
        "outcome": verdict.outcome.value,
        "explanation": verdict.explanation,
        "retryable": verdict.retryable,
        "retry_in_process": verdict.retryable,  # the old name of "retryable", for one release
        "quota": verdict.quota,
        "split": verdict.split,
        "delay_hint": verdict.delay_hint,
        "protocol_error": verdict.protocol_error,
        "rule": verdict.rule,
    }


# --------------------------------------------------------------------------------------
# devserver
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ScriptedReply:
    command: str
    reply: str | None
    disconnect: bool = False
    hang: bool = False

    @property
    def label(self) -> str:
        if self.disconnect:
            return "drops the connection"
        if self.hang:
            return "never answers"
        return f"answers {self.reply}"


def _scripted_reply(value: str) -> _ScriptedReply:
    command, sep, reply = value.partition("=")
    command = command.strip().upper().replace("-", "_")
    reply = reply.strip()
    if not sep or command not in _COMMANDS:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected COMMAND=CODE[ TEXT], COMMAND one of {', '.join(_COMMANDS)}"
        )
    if reply.lower() in ("disconnect", "drop"):
        return _ScriptedReply(command, None, disconnect=True)
    if reply.lower() == "hang":
        return _ScriptedReply(command, None, hang=True)
    match = re.fullmatch(r"([2-5]\d\d)(?:[ -](.*))?", reply)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{value!r}: the reply must start with a code 200-599 (or be 'disconnect' or 'hang')"
        )
    code, text = match.group(1), (match.group(2) or "").strip()
    if not text:
        text = f"{code[0]}.0.0 scripted reply (reliable-smtp devserver)"
    return _ScriptedReply(command, f"{code} {text}")


def _auth_pair(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD")
    return user, password


def _cmd_devserver(args: argparse.Namespace, console: _Console) -> int:
    try:
        from .testing import LocalSMTPServer
    except ImportError as exc:
        raise _UsageError(
            "devserver needs aiosmtpd and trustme: pip install 'reliable-smtp[testing]'"
        ) from exc
    auth = dict([args.auth]) if args.auth else None
    if args.auth:
        console.add_secret(args.auth[1])
    outdir = Path(args.outdir) if args.outdir else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    # Ctrl-C and SIGTERM only ask the loop below to stop, so the server always stops
    # cleanly; installed before anything is printed, so that a supervisor that reads
    # the banner and signals at once is heard.
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda _n, _f: stop.set())
    # aiosmtpd logs a client that fails mid-session (a TLS handshake the client
    # aborted, a reset) with a traceback: one line says it better here.
    server_log = logging.getLogger("mail.log")
    session_errors = _SessionErrorHandler(console)
    server_log.addHandler(session_errors)
    try:
        return _run_devserver(args, console, LocalSMTPServer, auth, outdir, stop)
    finally:
        server_log.removeHandler(session_errors)
        for number, handler in previous.items():
            signal.signal(number, handler)


class _SessionErrorHandler(logging.Handler):
    def __init__(self, console: _Console) -> None:
        super().__init__(logging.ERROR)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        reason = ""
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            cause = error.__cause__ or error.__context__
            reason = f": {type(error).__name__}" + (f" ({type(cause).__name__})" if cause else "")
        try:
            self.console.out(f"{_now()} {record.getMessage()}{reason}")
        except Exception:  # logging must never break the server
            self.handleError(record)


def _run_devserver(
    args: argparse.Namespace,
    console: _Console,
    server_class: Any,
    auth: dict[str, str] | None,
    outdir: Path | None,
    stop: threading.Event,
) -> int:
    server = server_class(tls=args.tls, auth=auth, host=args.host, port=args.port)
    try:
        server.start()
    except RuntimeError as exc:
        console.err(
            f"{_PROG} devserver: cannot listen on {args.host}:{args.port}: {exc.__cause__ or exc}"
        )
        return 1
    try:
        faults = [
            (
                scripted,
                server.script(
                    scripted.command,  # checked against _COMMANDS
                    scripted.reply,
                    disconnect=scripted.disconnect,
                    hang=scripted.hang,
                    times=None,
                ),
            )
            for scripted in args.reply
        ]
        _devserver_banner(args, console, server, outdir, [s for s, _ in faults])
        _serve_until_stopped(args, console, server, outdir, faults, stop)
    finally:
        server.stop()
    console.out(
        f"stopped: {len(server.messages)} message{'s' * (len(server.messages) != 1)} received"
    )
    return 0


def _devserver_banner(
    args: argparse.Namespace,
    console: _Console,
    server: Any,
    outdir: Path | None,
    scripted: list[_ScriptedReply],
) -> None:
    mode = {
        "none": "plain SMTP, no TLS",
        "starttls": "STARTTLS required",
        "implicit": "implicit TLS",
    }
    console.out(f"{_PROG} devserver listening on {server.host}:{server.port} ({mode[args.tls]})")
    facts: list[tuple[str, str]] = []
    exports = [
        f"RELIABLE_SMTP_HOST={server.host} RELIABLE_SMTP_PORT={server.port} "
        f"RELIABLE_SMTP_TLS={args.tls}"
    ]
    if args.tls != "none":
        facts.append(("CA certificate", f"{server.ca_file}"))
        exports.append(f"RELIABLE_SMTP_CA_FILE={server.ca_file}")
    if args.auth:
        facts.append(("AUTH", f"required: user {args.auth[0]!r} (PLAIN or LOGIN)"))
        # The password stays where the user typed it: never printed.
        exports.append(f"RELIABLE_SMTP_USERNAME={args.auth[0]} RELIABLE_SMTP_PASSWORD=...")
    else:
        # Without --auth nobody can log in, so AUTH is not advertised (a client that
        # tries anyway gets 502): leave RELIABLE_SMTP_USERNAME and _PASSWORD unset.
        facts.append(("AUTH", "not offered (add --auth USER PASSWORD to require a login)"))
    for reply in scripted:
        facts.append(("scripted", f"{reply.command} {reply.label}, every time"))
    if outdir is not None:
        facts.append(("messages", f"saved to {outdir}/ as .eml files"))
    else:
        facts.append(("messages", "not saved (add --outdir DIR to keep them as .eml files)"))
    for label, text in facts:
        console.out(f"  {label:<15} {text}")
    console.out("Point your application at it:")
    for line in exports:
        console.out(f"  export {line}")
    console.out("Press Ctrl-C to stop.")


def _serve_until_stopped(
    args: argparse.Namespace,
    console: _Console,
    server: Any,
    outdir: Path | None,
    faults: list[tuple[_ScriptedReply, Any]],
    stop: threading.Event,
) -> None:
    lock = threading.Lock()  # the server's thread and this one both print
    seen_commands = 0
    received = 0

    def print_commands() -> None:
        nonlocal seen_commands
        if args.verbose:
            commands = server.commands
            for connection, command, argument in commands[seen_commands:]:
                console.out(f"{_now()} #{connection} {command} {argument}".rstrip())
            seen_commands = len(commands)

    def on_message(message: Any) -> None:
        # Called by the server as it accepts each message: printed at once, after the
        # commands that carried it.
        nonlocal received
        with lock:
            print_commands()
            received += 1
            console.out(_message_line(received, message, outdir))

    server.on_message = on_message
    fired = [0] * len(faults)
    while True:
        stopping = stop.wait(0.1)
        with lock:
            # Commands and fired faults have no callback: show what is new since last time.
            print_commands()
            for index, (scripted, fault) in enumerate(faults):
                if fault.fired > fired[index]:
                    count = fault.fired
                    console.out(
                        f"{_now()} {scripted.command} {scripted.label} (scripted; {count} "
                        f"time{'s' * (count != 1)} so far)"
                    )
                    fired[index] = count
        if stopping:
            server.on_message = None
            return


def _now() -> str:
    return f"[{datetime.now():%H:%M:%S}]"


def _message_line(number: int, received: Any, outdir: Path | None) -> str:
    parsed = received.message
    subject = str(parsed.get("Subject", ""))
    recipients = list(received.recipients)
    shown = ", ".join(recipients[:3]) + (
        f" (+{len(recipients) - 3} more)" if len(recipients) > 3 else ""
    )
    line = (
        f"{_now()} #{number} from {received.sender or '<>'} to {shown}  "
        f"{subject!r}  {len(received.content)} bytes"
    )
    if outdir is not None:
        line += f"  -> {_save(outdir, number, received.content)}"
    return line


def _save(outdir: Path, number: int, content: bytes) -> Path:
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    for attempt in range(1000):
        suffix = f"-{attempt}" if attempt else ""
        path = outdir / f"{stamp}-{number:04d}{suffix}.eml"
        try:
            with path.open("xb") as file:  # never overwrite an earlier run's message
                file.write(content)
        except FileExistsError:
            continue
        return path
    raise _UsageError(f"cannot find a free file name in {outdir}")


# --------------------------------------------------------------------------------------
# The parser and main()
# --------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
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

    check = commands.add_parser(
        "check",
        parents=[logs],
        help="connect step by step and say what fails and how to fix it",
        description="Connect to the configured SMTP server step by step (DNS, TCP, TLS, "
        "greeting, EHLO, STARTTLS, AUTH) and report each step with its time; on failure, "
        "the likely cause and the fix. Exit status 0 only when every step passed.",
    )
    _add_connection_options(check)
    check.add_argument(
        "--send-to", metavar="ADDRESS", help="also send a test message to ADDRESS (one attempt)"
    )
    check.add_argument(
        "--from", dest="sender", metavar="ADDRESS", help="sender of the test message"
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=_cmd_check)

    send = commands.add_parser(
        "send",
        parents=[logs],
        help="send a message (or one per recipient of a CSV/JSONL list)",
        description="Send a message through the configured transport and print what happened "
        "to each recipient. Exit status 0 only when every recipient accepted it.",
    )
    message = send.add_argument_group("message")
    message.add_argument("--from", dest="sender", metavar="ADDRESS", help="sender (From)")
    message.add_argument("--to", action="append", default=[], metavar="ADDRESS")
    message.add_argument("--cc", action="append", default=[], metavar="ADDRESS")
    message.add_argument("--bcc", action="append", default=[], metavar="ADDRESS")
    message.add_argument("--subject")
    message.add_argument("--text", help="plain-text body ('-': read standard input)")
    message.add_argument("--html", help="HTML body")
    message.add_argument("--attach", action="append", default=[], metavar="PATH")
    message.add_argument(
        "--eml",
        metavar="FILE",
        help="send this RFC 5322 file as it is (--from/--to set the envelope)",
    )
    bulk = send.add_argument_group("bulk")
    bulk.add_argument(
        "--recipients",
        metavar="FILE",
        help="one message per recipient: a CSV file with an 'email' column, or JSONL with an "
        "'email' key",
    )
    bulk.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="messages in flight at once, over as many connections unless "
        "RELIABLE_SMTP_MAX_CONNECTIONS is set (default 4)",
    )
    send.add_argument("--results", metavar="FILE", help="write one JSON line per recipient to FILE")
    send.add_argument(
        "--attempts",
        type=int,
        help="tries per message, the first included (RELIABLE_SMTP_RETRY_ATTEMPTS)",
    )
    _add_connection_options(send)
    send.set_defaults(handler=_cmd_send)

    explain = commands.add_parser(
        "explain",
        help="what an SMTP reply means and what to do",
        description="Classify an SMTP reply with the library's table: "
        "reliable-smtp explain 550 5.1.1 no such user",
    )
    explain.add_argument(
        "reply", nargs="+", metavar="CODE [ENHANCED] [TEXT...]", help="the reply, e.g. 535 5.7.8"
    )
    explain.add_argument(
        "--phase",
        type=_phase,
        help="where it came: " + ", ".join(phase.value for phase in Phase),
    )
    explain.add_argument("--json", action="store_true", help="print the verdict as JSON")
    explain.set_defaults(handler=_cmd_explain)

    devserver = commands.add_parser(
        "devserver",
        parents=[logs],
        help="a local SMTP server that prints and saves what it receives",
        description="Run a local capture SMTP server for development. --reply makes it answer "
        "a command with a chosen reply (every time), to watch an application retry.",
    )
    devserver.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
    )
    devserver.add_argument(
        "--port", type=int, default=2525, help="port (default 2525; 0: any free)"
    )
    devserver.add_argument(
        "--tls",
        choices=["none", "starttls", "implicit"],
        default="none",
        help="TLS with a generated certificate (its CA file is printed)",
    )
    devserver.add_argument(
        "--auth",
        type=_auth_pair,
        metavar="USER:PASSWORD",
        help="require AUTH with these credentials",
    )
    devserver.add_argument("--outdir", metavar="DIR", help="save each message as a .eml file here")
    devserver.add_argument(
        "--reply",
        type=_scripted_reply,
        action="append",
        default=[],
        metavar="COMMAND=CODE[ TEXT]",
        help="answer COMMAND (" + ", ".join(_COMMANDS) + ") with this reply, every time; "
        "'disconnect' or 'hang' instead of a reply drop the link or never answer",
    )
    devserver.add_argument("-v", "--verbose", action="store_true", help="print every command")
    devserver.set_defaults(handler=_cmd_devserver)

    from .cli_outbox import register as register_outbox  # the durable outbox's commands

    register_outbox(commands, logs=logs, connection_options=_add_connection_options)
    return parser


class _LogHandler(logging.Handler):
    """The library's log records on stderr, through the console (so, scrubbed).

    Installed even when ``--log`` is not given, at a level above everything: the
    command prints outcomes itself, and Python's last-resort handler would
    otherwise print the library's warnings (a give-up per failed message) as noise.
    """

    def __init__(self, console: _Console, level: str | None) -> None:
        super().__init__(getattr(logging, level.upper()) if level else logging.CRITICAL + 1)
        self.console = console
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.err(self.format(record))
        except Exception:  # logging must never break the command
            self.handleError(record)


def _prefer_replacement(stream: TextIO) -> None:
    # A server's text may hold characters the terminal cannot show: never crash on them.
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors="replace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    _prefer_replacement(sys.stdout)
    _prefer_replacement(sys.stderr)
    console = _Console(sys.stdout, sys.stderr)
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, _Console], int] = args.handler
    library = logging.getLogger("reliable_smtp")
    log_handler = _LogHandler(console, getattr(args, "log", None))
    library.addHandler(log_handler)
    previous_level = library.level
    if getattr(args, "log", None):
        library.setLevel(log_handler.level)
    try:
        return handler(args, console)
    except (_UsageError, ConfigurationError, InvalidMessageError) as exc:
        console.err(f"{_PROG} {args.command}: {exc}")
        return 2
    except KeyboardInterrupt:
        console.err(f"{_PROG} {args.command}: interrupted")
        return 130
    finally:
        library.removeHandler(log_handler)
        library.setLevel(previous_level)
