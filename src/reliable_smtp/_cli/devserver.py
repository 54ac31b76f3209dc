"""``reliable-smtp devserver``: a local capture SMTP server
(:class:`~reliable_smtp.testing.LocalSMTPServer`) with optional TLS, AUTH and scripted
replies, that prints and saves what it receives until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .console import PROG, Console, UsageError

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


def _cmd_devserver(args: argparse.Namespace, console: Console) -> int:
    try:
        from ..testing import LocalSMTPServer
    except ImportError as exc:
        raise UsageError(
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
    def __init__(self, console: Console) -> None:
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
    console: Console,
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
            f"{PROG} devserver: cannot listen on {args.host}:{args.port}: {exc.__cause__ or exc}"
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
    console: Console,
    server: Any,
    outdir: Path | None,
    scripted: list[_ScriptedReply],
) -> None:
    mode = {
        "none": "plain SMTP, no TLS",
        "starttls": "STARTTLS required",
        "implicit": "implicit TLS",
    }
    console.out(f"{PROG} devserver listening on {server.host}:{server.port} ({mode[args.tls]})")
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
    console: Console,
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
    raise UsageError(f"cannot find a free file name in {outdir}")


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    logs: argparse.ArgumentParser,
) -> None:
    """The ``devserver`` command's parser."""
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
