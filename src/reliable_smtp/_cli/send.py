"""``reliable-smtp send``: one message from flags or an ``.eml`` file, or one message per
recipient of a CSV/JSONL list (bulk), with a progress line, per-recipient JSON rows and
a count per outcome.

Bulk sends go through :meth:`~reliable_smtp.AsyncMailer.as_completed`: each result is
written as its send ends, so a slow row holds back neither the others nor their rows.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import email
import email.policy
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TextIO

from .._envelope import Envelope
from .._errors import DeliveryError, InvalidAddressError, InvalidMessageError, ReliableSMTPError
from .._mailer import AsyncMailer, SendResultOrError
from .._message import Attachment, Message, bare_address, render
from .._replies import Outcome
from .._result import SendResult
from .._settings import MailerSettings
from .console import Console, UsageError
from .options import add_connection_options, settings_from_args


@dataclass(frozen=True, slots=True)
class _Recipient:
    line: int
    email: str


def _read_recipients(path: Path) -> list[_Recipient]:
    """The ``email`` of every row of a CSV file (a column) or a JSONL file (a key)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"--recipients: cannot read {path}: {exc.strerror or exc}") from exc
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
                raise UsageError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("email"), str):
                raise UsageError(f'{path}:{number}: expected an object with an "email" string')
            recipients.append(_Recipient(number, row["email"].strip()))
        return recipients
    reader = csv.DictReader(io.StringIO(text))
    columns = {(name or "").strip().lower(): name for name in reader.fieldnames or ()}
    if "email" not in columns:
        found = ", ".join(repr(name) for name in reader.fieldnames or ()) or "none"
        raise UsageError(f"{path}: no 'email' column (columns: {found})")
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
            raise UsageError(f"--attach: cannot read {path}: {exc.strerror or exc}") from exc
    return attachments


def _bare(addresses: Sequence[str], what: str) -> list[str]:
    # By the Message rules: parseaddr() would silently turn "a@b.org NOTIFY=x"
    # into the different address "a@b.orgNOTIFY=x".
    return [bare_address(address, what=what) for address in addresses]


def _single_message(args: argparse.Namespace) -> tuple[Message | EmailMessage, Envelope | None]:
    if args.eml is not None:
        if args.subject or args.text or args.html or args.attach:
            raise UsageError("--eml sends the file as it is: drop --subject/--text/--html/--attach")
        try:
            data = Path(args.eml).read_bytes()
        except OSError as exc:
            raise UsageError(f"--eml: cannot read {args.eml}: {exc.strerror or exc}") from exc
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
        raise UsageError("--from is required (or give --eml FILE)")
    if not (args.to or args.cc or args.bcc):
        raise UsageError("give at least one --to, --cc or --bcc (or --recipients FILE)")
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
        return [{**row, **extra} for row in outcome.recipient_rows()]
    if isinstance(outcome, DeliveryError) and outcome.result is not None:
        return [{**row, **extra} for row in outcome.result.recipient_rows()]
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


def _print_recipients(result: SendResult, console: Console) -> None:
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


def _cmd_send(args: argparse.Namespace, console: Console) -> int:
    extra: dict[str, Any] = {}
    if args.attempts is not None:
        extra["retry_attempts"] = args.attempts
    if args.recipients is not None:
        if args.to or args.cc or args.bcc or args.eml:
            raise UsageError("--recipients sends one message per row: drop --to/--cc/--bcc/--eml")
        if not args.sender:
            raise UsageError("--from is required with --recipients")
        recipients = _read_recipients(Path(args.recipients))
        attachments = _attachments(args.attach)
        text = _read_text_option(args.text)
        settings = settings_from_args(args, console, **extra)
        return _send_bulk(args, console, settings, recipients, attachments, text)
    message, envelope = _single_message(args)
    settings = settings_from_args(args, console, **extra)
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
    raise UsageError(str(outcome))


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


class Progress:
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
    console: Console,
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
                raise UsageError(f"--from: {error}") from error
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
        raise UsageError(f"--results: cannot write {results_path}: {exc.strerror}") from exc

    def record(outcome: SendResultOrError, recipient: _Recipient) -> None:
        counts[_outcome_name(outcome)] += 1
        if results_file is not None:
            for row in _result_rows(outcome, recipient.email, line=recipient.line):
                results_file.write(json.dumps(row, ensure_ascii=False) + "\n")
            results_file.flush()  # a row per message as it ends: an interrupted run keeps them
        done = sum(counts.values())
        progress.update(done, counts["sent"], done - counts["sent"])

    progress = Progress(len(recipients), console.stderr)
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


def _print_summary(counts: Counter[str], elapsed: float, console: Console) -> None:
    total = sum(counts.values())
    order = [o.value for o in Outcome] + ["invalid", "error"]
    rows = [(name, counts[name]) for name in order if counts[name]]
    width = max([len("outcome"), *(len(name) for name, _ in rows)])
    console.out(f"{'outcome':<{width}}  {'count':>7}")
    for name, count in rows:
        console.out(f"{name:<{width}}  {count:>7}")
    rate = total / elapsed if elapsed > 0 else 0.0
    console.out(f"{'total':<{width}}  {total:>7}  in {elapsed:.2f} s ({rate:.1f} messages/s)")


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    logs: argparse.ArgumentParser,
) -> None:
    """The ``send`` command's parser."""
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
    add_connection_options(send)
    send.set_defaults(handler=_cmd_send)
