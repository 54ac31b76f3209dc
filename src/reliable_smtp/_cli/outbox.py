"""The durable outbox's commands: ``reliable-smtp worker`` and ``reliable-smtp outbox ...``.

* ``worker`` - send what the outbox holds (sending settings from ``RELIABLE_SMTP_*``,
  the queue from ``RELIABLE_SMTP_OUTBOX_URL`` or ``--outbox URL``) until SIGTERM or
  SIGINT, which let in-flight transactions finish and exit 0;
* ``outbox stats | list | show ID | retry ID | cancel ID | resolve ID --as
  sent|failed|resend | purge --older-than AGE | migrate`` - what an operator needs:
  counts by state, the age of the oldest due entry, and what each ambiguous entry
  needs decided.

Registered in :mod:`reliable_smtp._cli`'s parser by :func:`register`; the work is
done by :class:`~reliable_smtp._outbox.worker.OutboxWorker` and the store.
Exit status: 0 done, 1 the outbox is unreachable or an entry cannot take the
action, 2 usage and configuration errors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .._outbox.errors import OutboxError
from .._outbox.model import EntryState, OutboxEntry, OutboxStats, RecipientState
from .._outbox.store import OUTBOX_URL_VARIABLE, Store, open_store

if TYPE_CHECKING:
    from .console import Console as _Console

__all__ = ["register"]

Handler = Callable[[argparse.Namespace, "_Console"], int]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def register(
    commands: Any,
    *,
    logs: argparse.ArgumentParser,
    connection_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add ``worker`` and ``outbox`` to the ``reliable-smtp`` sub-command parser."""
    url_option = argparse.ArgumentParser(add_help=False)
    url_option.add_argument(
        "--outbox",
        metavar="URL",
        help=f"the outbox database ({OUTBOX_URL_VARIABLE}): sqlite:///path.db or "
        "postgresql://user@host/db",
    )

    worker = commands.add_parser(
        "worker",
        parents=[logs, url_option],
        help="send what the durable outbox holds, until SIGTERM/SIGINT",
        description="Claim due outbox entries and send them with the configured SMTP "
        "settings, on the outbox's retry schedule. SIGTERM or SIGINT stop claiming, let "
        "transactions in flight finish and record their results, and exit 0.",
    )
    worker.add_argument(
        "--concurrency", type=int, help="transactions in flight (default: connections, 4)"
    )
    worker.add_argument(
        "--lease", type=float, default=60.0, metavar="SECONDS", help="lease length (default 60)"
    )
    worker.add_argument(
        "--poll",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="longest idle wait before looking again (default 1; wake-ups come sooner)",
    )
    worker.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for transactions in flight (default 30)",
    )
    worker.add_argument(
        "--until-idle", action="store_true", help="exit once nothing is due (for scripts)"
    )
    connection_options(worker)
    worker.set_defaults(handler=_cmd_worker)

    outbox = commands.add_parser(
        "outbox",
        help="look at and act on the durable outbox (stats, list, show, retry, ...)",
        description="Inspect and act on the durable outbox.",
    )
    actions = outbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    stats = actions.add_parser(
        "stats", parents=[url_option], help="counts by state, the oldest due entry"
    )
    stats.add_argument("--json", action="store_true")
    stats.add_argument(
        "--watch",
        action="store_true",
        help="refresh until Ctrl-C: counts, the oldest due entry and the send rate "
        "(redrawn in place on a terminal, a line per refresh otherwise)",
    )
    stats.add_argument(
        "--interval",
        type=_positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="seconds between refreshes with --watch (default 2)",
    )
    # For tests and scripts: stop after N refreshes.
    stats.add_argument("--count", type=int, default=None, help=argparse.SUPPRESS)
    stats.set_defaults(handler=_cmd_stats)
    listing = actions.add_parser("list", parents=[url_option], help="entries, oldest first")
    listing.add_argument("--state", choices=[state.value for state in EntryState])
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_cmd_list)
    for name, helptext, handler in (
        ("show", "one entry, every recipient, and what it needs", _cmd_show),
        ("retry", "failed/deferred recipients: send again now", _cmd_retry),
        ("cancel", "pending recipients: never send", _cmd_cancel),
    ):
        action = actions.add_parser(name, parents=[url_option], help=helptext)
        action.add_argument("id", type=int, metavar="ID")
        if name == "show":
            action.add_argument("--json", action="store_true")
        action.set_defaults(handler=handler)
    resolve = actions.add_parser(
        "resolve",
        parents=[url_option],
        help="decide an ambiguous entry: it arrived (sent), it did not (failed), or resend",
    )
    resolve.add_argument("id", type=int, metavar="ID")
    resolve.add_argument(
        "--as",
        dest="resolution",
        required=True,
        choices=["sent", "failed", "resend"],
        help="sent: it arrived; failed: it did not, give up; resend: send again (may be a "
        "second copy)",
    )
    resolve.set_defaults(handler=_cmd_resolve)
    purge = actions.add_parser(
        "purge", parents=[url_option], help="delete final entries older than an age"
    )
    purge.add_argument(
        "--older-than",
        required=True,
        type=_duration,
        metavar="AGE",
        help="e.g. 30d, 12h, 90m, 3600 (seconds)",
    )
    purge.set_defaults(handler=_cmd_purge)
    migrate = actions.add_parser(
        "migrate", parents=[url_option], help="create or upgrade the outbox schema"
    )
    migrate.set_defaults(handler=_cmd_migrate)


# -- helpers -----------------------------------------------------------------------------


def _duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an age: write a number and a unit, e.g. 30d, 12h, 90m, 3600"
        )
    return float(match.group(1)) * _UNITS.get(match.group(2) or "s", 1.0)


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0, e.g. 2")
    return seconds


def _url(args: argparse.Namespace) -> str:
    from .console import UsageError as _UsageError

    url = args.outbox or os.environ.get(OUTBOX_URL_VARIABLE)
    if not url:
        raise _UsageError(
            f"no outbox: give --outbox URL or set {OUTBOX_URL_VARIABLE} "
            "(e.g. sqlite:///var/lib/app/outbox.db or postgresql://app@db/app)"
        )
    return url


def _with_store(args: argparse.Namespace, console: _Console, work: Callable[[Store], int]) -> int:
    try:
        store = open_store(_url(args), migrate=args.action == "migrate")
    except OutboxError as error:
        console.err(f"reliable-smtp outbox {args.action}: {error}")
        return 1
    try:
        return work(store)
    except OutboxError as error:
        console.err(f"reliable-smtp outbox {args.action}: {error}")
        return 1
    finally:
        store.close()


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _entry_json(entry: OutboxEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "state": entry.state.value,
        "message_id": entry.message_id,
        "sender": entry.sender,
        "idempotency_key": entry.idempotency_key,
        "attempts": entry.attempts,
        "created_at": entry.created_at,
        "updated_at": entry.updated_at,
        "due_at": entry.due_at,
        "expires_at": entry.expires_at,
        "last_error": entry.last_error,
        "recipients": [
            {
                "address": r.address,
                "state": r.state.value,
                "outcome": r.outcome.value if r.outcome else None,
                "code": r.reply.code if r.reply else None,
                "enhanced_code": r.reply.enhanced_code if r.reply else None,
                "text": r.reply.text if r.reply else None,
                "phase": r.phase.value if r.phase else None,
                "explanation": r.explanation,
                "attempts": r.attempts,
                "due_at": r.due_at,
                "dot_at": r.dot_at,
            }
            for r in entry.recipients
        ],
    }


def _decision_needed(entry: OutboxEntry) -> list[str]:
    """What an operator must decide about an ambiguous entry, in plain words."""
    if not entry.ambiguous:
        return []
    who = ", ".join(entry.ambiguous)
    return [
        f"AMBIGUOUS: the final dot went to {who}, but no reply was recorded (the link broke "
        "or the worker died after the dot). The server may or may not have the message.",
        f"Check the provider's logs or the mailbox for Message-ID {entry.message_id}, then:",
        f"  reliable-smtp outbox resolve {entry.id} --as sent     it arrived",
        f"  reliable-smtp outbox resolve {entry.id} --as failed   it did not; give up",
        f"  reliable-smtp outbox resolve {entry.id} --as resend   send again (may be a "
        "second copy)",
    ]


# -- outbox actions ----------------------------------------------------------------------


def _cmd_stats(args: argparse.Namespace, console: _Console) -> int:
    if args.watch and args.json:
        from .console import UsageError as _UsageError

        raise _UsageError("--watch and --json do not go together: pick one")

    def work(store: Store) -> int:
        if args.watch:
            return watch_stats(store, console, interval=args.interval, count=args.count)
        stats = store.stats(now=time.time())
        if args.json:
            console.out(
                json.dumps(
                    {
                        "counts": {state.value: n for state, n in stats.counts.items()},
                        "oldest_due_age": stats.oldest_due_age,
                        "ambiguous": stats.ambiguous,
                        "total": stats.total,
                    }
                )
            )
            return 0
        console.out(f"outbox {store.url}: {stats.total} entries")
        for state in EntryState:
            note = ""
            if state is EntryState.AMBIGUOUS and stats.ambiguous:
                note = "  <- need a decision: reliable-smtp outbox list --state ambiguous"
            console.out(f"  {state.value:<10} {stats.counts[state]:>8}{note}")
        if stats.oldest_due_age is None:
            console.out("nothing is due")
        else:
            console.out(f"oldest due entry: due {_ago(stats.oldest_due_age)} ago")
        return 0

    return _with_store(args, console, work)


# -- outbox stats --watch ----------------------------------------------------------------

#: ANSI: cursor up N lines, to column 1, clear to the end of the screen (no curses needed).
_REDRAW = "\x1b[{lines}A\r\x1b[J"


def watch_stats(
    store: Store,
    console: _Console,
    *,
    interval: float,
    count: int | None = None,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """``outbox stats --watch``: the queue and its send rate, refreshed every ``interval``.

    On a terminal the view is redrawn in place; otherwise (a pipe, a log file) each
    refresh is one appended line. The rate is the change of the SENT and FAILED counts
    between two refreshes over the time between them (``-`` on the first; a purge
    that lowers a count reads as 0, not a negative rate). Ctrl-C ends it with status 0;
    ``count`` ends it after that many refreshes. ``clock``, ``monotonic`` and ``sleep``
    are injected by tests.
    """
    in_place = _is_terminal(console.stdout)
    drawn = 0  # lines of the previous frame, to move back over
    previous: tuple[float, OutboxStats] | None = None
    refreshes = 0
    try:
        while True:
            stats = store.stats(now=clock())
            taken = monotonic()
            rates = _rates(previous, taken, stats)
            previous = (taken, stats)
            refreshes += 1
            stamp = datetime.fromtimestamp(clock(), tz=timezone.utc).strftime("%H:%M:%S UTC")
            if in_place:
                # A line wider than the terminal wraps onto two rows, and moving up one
                # row per line would then leave the top of the old frame behind: cut each
                # line to the width (read each time: the window may have been resized).
                width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
                frame = [line[:width] for line in _frame(store.url, stamp, interval, stats, rates)]
                prefix = _REDRAW.format(lines=drawn) if drawn else ""
                console.out(prefix + "\n".join(frame))
                drawn = len(frame)
            else:
                console.out(_line(stamp, stats, rates))
            if count is not None and refreshes >= count:
                return 0
            sleep(interval)
    except KeyboardInterrupt:
        return 0  # the operator is done looking: not an error


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _rates(
    previous: tuple[float, OutboxStats] | None, taken: float, stats: OutboxStats
) -> tuple[float, float] | None:
    """Sent and failed entries per second since the previous refresh (``None``: first)."""
    if previous is None:
        return None
    before, old = previous
    elapsed = taken - before
    if elapsed <= 0:
        return None
    sent = max(0, stats.counts[EntryState.SENT] - old.counts[EntryState.SENT])
    failed = max(0, stats.counts[EntryState.FAILED] - old.counts[EntryState.FAILED])
    return sent / elapsed, failed / elapsed


def _rate_text(rates: tuple[float, float] | None) -> str:
    if rates is None:
        return "rate: - (after the next refresh)"
    return f"rate: {rates[0]:.1f} sent/s, {rates[1]:.1f} failed/s"


def _oldest_text(stats: OutboxStats) -> str:
    if stats.oldest_due_age is None:
        return "nothing is due"
    return f"oldest due entry: due {_ago(stats.oldest_due_age)} ago"


def _frame(
    url: str, stamp: str, interval: float, stats: OutboxStats, rates: tuple[float, float] | None
) -> list[str]:
    lines = [f"outbox {url}  {stamp}  (every {interval:g} s, Ctrl-C to quit)"]
    for state in EntryState:
        note = ""
        if state is EntryState.AMBIGUOUS and stats.ambiguous:
            note = "  <- need a decision: reliable-smtp outbox list --state ambiguous"
        lines.append(f"  {state.value:<10} {stats.counts[state]:>8}{note}")
    lines.append(_oldest_text(stats))
    lines.append(_rate_text(rates))
    return lines


def _line(stamp: str, stats: OutboxStats, rates: tuple[float, float] | None) -> str:
    counts = " ".join(f"{state.value}={stats.counts[state]}" for state in EntryState)
    return f"{stamp} {counts} | {_oldest_text(stats)} | {_rate_text(rates)}"


def _cmd_list(args: argparse.Namespace, console: _Console) -> int:
    def work(store: Store) -> int:
        state = EntryState(args.state) if args.state else None
        entries = store.list(state=state, limit=args.limit)
        if args.json:
            for entry in entries:
                console.out(json.dumps(_entry_json(entry)))
            return 0
        for entry in entries:
            done = sum(r.state is RecipientState.SENT for r in entry.recipients)
            console.out(
                f"{entry.id:>8}  {entry.state.value:<10} {done}/{len(entry.recipients)} sent  "
                f"{entry.message_id}  updated {_when(entry.updated_at)}"
            )
            if entry.last_error and entry.state is not EntryState.SENT:
                console.out(f"{'':>10}{entry.last_error}")
        if not entries:
            console.out("no entries" + (f" in state {state.value}" if state else ""))
        return 0

    return _with_store(args, console, work)


def _cmd_show(args: argparse.Namespace, console: _Console) -> int:
    def work(store: Store) -> int:
        entry = store.get(args.id)
        if args.json:
            console.out(json.dumps(_entry_json(entry)))
            return 0
        _print_entry(console, entry)
        return 0

    return _with_store(args, console, work)


def _print_entry(console: _Console, entry: OutboxEntry) -> None:
    now = time.time()
    console.out(f"entry {entry.id}: {entry.state.value}  <{entry.message_id.strip('<>')}>")
    console.out(f"  from {entry.sender}; claimed {entry.attempts} time(s)")
    if entry.idempotency_key:
        console.out(f"  idempotency key {entry.idempotency_key}")
    console.out(f"  created {_when(entry.created_at)}, expires {_when(entry.expires_at)}")
    if entry.due_at is not None and not entry.state.final:
        due = entry.due_at - now
        console.out(f"  next try {'now' if due <= 0 else 'in ' + _ago(due)}")
    for recipient in entry.recipients:
        reply = recipient.reply
        said = f"  {reply.code} {reply.enhanced_code or ''} {reply.text}".rstrip() if reply else ""
        console.out(
            f"  {recipient.address}: {recipient.state.value} after {recipient.attempts} "
            f"attempt(s){said}"
        )
        if recipient.explanation and recipient.state is not RecipientState.SENT:
            console.out(f"      {recipient.explanation}")
    if entry.last_error and entry.state is not EntryState.SENT:
        console.out(f"  last error: {entry.last_error}")
    for line in _decision_needed(entry):
        console.out(line)


def _acting(name: str, act: Callable[[Store, int], OutboxEntry]) -> Handler:
    def handler(args: argparse.Namespace, console: _Console) -> int:
        def work(store: Store) -> int:
            entry = act(store, args.id)
            console.out(f"entry {entry.id}: {name} -> {entry.state.value}")
            _print_entry(console, entry)
            return 0

        return _with_store(args, console, work)

    return handler


_cmd_retry = _acting("retry", lambda store, entry_id: store.retry(entry_id, now=time.time()))
_cmd_cancel = _acting("cancel", lambda store, entry_id: store.cancel(entry_id, now=time.time()))


def _cmd_resolve(args: argparse.Namespace, console: _Console) -> int:
    return _acting(
        f"resolve as {args.resolution}",
        lambda store, entry_id: store.resolve(entry_id, args.resolution, now=time.time()),
    )(args, console)


def _cmd_purge(args: argparse.Namespace, console: _Console) -> int:
    def work(store: Store) -> int:
        removed = store.purge(older_than=args.older_than, now=time.time())
        console.out(f"purged {removed} final entr{'y' if removed == 1 else 'ies'}")
        return 0

    return _with_store(args, console, work)


def _cmd_migrate(args: argparse.Namespace, console: _Console) -> int:
    def work(store: Store) -> int:
        version = store.migrate()
        console.out(f"outbox {store.url}: schema version {version}")
        return 0

    return _with_store(args, console, work)


# -- the worker --------------------------------------------------------------------------


def _cmd_worker(args: argparse.Namespace, console: _Console) -> int:
    from .._mailer import AsyncMailer
    from .._outbox.worker import OutboxWorker, stderr_notice
    from .options import settings_from_args as _settings

    settings = _settings(args, console)
    url = _url(args)
    try:
        store = open_store(url)
    except OutboxError as error:
        console.err(f"reliable-smtp worker: {error}")
        return 1
    try:
        mailer = AsyncMailer(settings.build_transport(), retry=settings.retry_policy())
        worker = OutboxWorker(
            store,
            mailer,
            concurrency=args.concurrency,
            lease_seconds=args.lease,
            poll_interval=args.poll,
            stop_timeout=args.stop_timeout,
            limits=settings.outbox_limits(),
        )
        console.out(f"worker {worker.owner}: sending from {store.url} via {mailer.transport.name}")

        async def serve() -> Any:
            async with mailer:
                if args.until_idle:
                    return await worker.run_until_idle()
                return await worker.arun()

        # SIGTERM/SIGINT: the first stops gracefully, a second at once; stderr says which.
        stats = worker.serve(serve, notice=stderr_notice("reliable-smtp worker"))
    finally:
        store.close()
    outcomes = ", ".join(f"{n} {o}" for o, n in sorted(stats.recipients.items())) or "nothing"
    console.out(
        f"worker stopped: {stats.claimed} claimed, {stats.settled} settled ({outcomes}), "
        f"{stats.lost} lease(s) lost"
    )
    return 0
