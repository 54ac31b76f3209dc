"""The sendmail(8) transport: hand the message to the local MTA's ``sendmail`` program.

This module owns:

* :class:`SendmailTransport` - runs ``sendmail -i -f SENDER [extra_args] -- RCPT...``
  without a shell, the message on stdin, bounded by a timeout;
* :func:`classify_exit` - the pure function from an exit status (and stderr) to a
  :class:`~reliable_smtp.Verdict`;
* :func:`reply_from_output` - the SMTP reply an MTA printed on stderr, if any.

What success means: exit status 0 says the MTA **queued the message locally**
(Postfix writes it to its maildrop queue; msmtp got a 250 from its relay). There
is no per-recipient result: every recipient is reported ``SENT`` with the
synthetic reply ``250 2.0.0 handed to sendmail``, and later failures arrive as
bounces (DSNs) to the envelope sender.

How failures are raised (see :mod:`reliable_smtp._transports.base` for the contract):

* the program is missing or not executable: :class:`~reliable_smtp.AuthOrConfigError`
  (phase ``CONNECT``) naming the path and the fix;
* a non-zero exit or death by a signal: sendmail did **not** take the message,
  for anyone, so the transport raises the error :func:`~reliable_smtp._errors.error_for`
  picks for :func:`classify_exit`'s verdict (phase ``DATA_END``; exit 64 raises
  :class:`~reliable_smtp.ProtocolError`). The error's ``program_exit``
  (:class:`~reliable_smtp._errors.ProgramExit`) holds ``exit_code`` (``None`` after a
  signal), ``signal`` and ``stderr``, and its text names both;
* a timeout before the message was fully written to stdin:
  :class:`~reliable_smtp.SMTPTimeoutError` (nothing can have been queued);
* a timeout after stdin was written and closed: the MTA may have queued the message,
  so this is the transport contract's "ambiguous final dot": ``deliver`` returns a
  :class:`~reliable_smtp.DeliveryReport` with every recipient ``AMBIGUOUS`` rather
  than raising.

Whenever ``deliver`` gives up on the child (timeout, cancellation, a pipe error)
it kills the child's whole process group, so helpers such as Postfix's
``postdrop`` go too, and asyncio reaps it: no zombie, no orphan. One exception:
a child that exited in time but left a background process holding its output
pipes (a background delivery) is judged by its exit status, and that process is
left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import re
import signal as signal_module
from collections.abc import Sequence

from .._checks import check_seconds
from .._envelope import Envelope
from .._errors import (
    AuthOrConfigError,
    ConfigurationError,
    DeliveryError,
    ProgramExit,
    error_class,
    error_for,
)
from .._replies import Outcome, Phase, Reply, Verdict, classify, classify_connection_loss
from .._result import DeliveryReport, RecipientStatus
from ._commit import before_commit
from .base import Transport

__all__ = ["SendmailTransport", "classify_exit", "reply_from_output"]

DEFAULT_SENDMAIL_PATH = "/usr/sbin/sendmail"

# Only this much of stderr is kept from the child: a runaway program must not
# fill our memory. Enough for any real MTA diagnostic.
_STDERR_LIMIT = 64 * 1024
# ... and this much of it goes into the error message.
_STDERR_IN_MESSAGE = 500
# Seconds to wait for a killed child's pipes to close (see _kill).
_REAP_GRACE = 5.0

# errno values from exec() that mean "the path is wrong", as opposed to a
# passing shortage of processes, memory or file descriptors.
_BAD_PATH_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EACCES,
        errno.EPERM,
        errno.ENOEXEC,
        errno.EISDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Sysexit:
    name: str
    outcome: Outcome
    explanation: str


_RETRY = "temporary failure: retried"
# sysexits.h as Postfix reads a child's exit status (global/sys_exits.c): only
# EX_TEMPFAIL and EX_OSERR are soft; everything else bounces. Reference D.2.
_SYSEXITS: dict[int, _Sysexit] = {
    64: _Sysexit(
        "EX_USAGE",
        Outcome.PERMANENT,
        "sendmail rejected its command line: check extra_args, and that path points to a "
        "sendmail-compatible program; not retried",
    ),
    65: _Sysexit(
        "EX_DATAERR",
        Outcome.PERMANENT,
        "the message or an address was refused as malformed (msmtp exits 65 on a 5xx reply "
        "from its relay); not retried",
    ),
    66: _Sysexit("EX_NOINPUT", Outcome.PERMANENT, "sendmail could not read its input; not retried"),
    67: _Sysexit("EX_NOUSER", Outcome.PERMANENT, "a recipient address is unknown; not retried"),
    68: _Sysexit(
        "EX_NOHOST",
        Outcome.PERMANENT,
        "a host name is unknown (msmtp: the relay's name does not resolve); not retried",
    ),
    69: _Sysexit(
        "EX_UNAVAILABLE",
        Outcome.PERMANENT,
        "the service refused the message (Postfix: size, content or recipient rejection; "
        "msmtp: a 4xx reply, see stderr); not retried",
    ),
    70: _Sysexit(
        "EX_SOFTWARE",
        Outcome.PERMANENT,
        "sendmail hit an internal software error: check the MTA's logs; not retried",
    ),
    71: _Sysexit("EX_OSERR", Outcome.TRANSIENT, f"sendmail hit a system error; {_RETRY}"),
    72: _Sysexit(
        "EX_OSFILE",
        Outcome.PERMANENT,
        "a critical OS file is missing: check the MTA's installation; not retried",
    ),
    73: _Sysexit(
        "EX_CANTCREAT",
        Outcome.PERMANENT,
        "sendmail could not create an output file: check the MTA's queue directory; not retried",
    ),
    74: _Sysexit(
        "EX_IOERR",
        Outcome.PERMANENT,
        "sendmail hit an input/output error; with msmtp this can mean the link broke after "
        "the message was sent, so check the relay's logs before resending; not retried",
    ),
    75: _Sysexit(
        "EX_TEMPFAIL", Outcome.TRANSIENT, f"sendmail reported a temporary failure; {_RETRY}"
    ),
    76: _Sysexit(
        "EX_PROTOCOL",
        Outcome.PERMANENT,
        "a remote protocol error (msmtp: the TLS handshake with its relay failed); not retried",
    ),
    77: _Sysexit(
        "EX_NOPERM",
        Outcome.AUTH_OR_CONFIG,
        "permission denied: the MTA refused this user, or msmtp's relay refused its "
        "credentials; fix the MTA's permissions or authentication settings",
    ),
    78: _Sysexit(
        "EX_CONFIG",
        Outcome.AUTH_OR_CONFIG,
        "the MTA's configuration is wrong (Postfix: main.cf; msmtp: ~/.msmtprc or "
        "/etc/msmtprc); fix it, then send again",
    ),
}

# "msmtp: server message: 550 5.1.1 <bob@x>: Recipient address rejected"; msmtp
# prints each line of a multi-line reply this way ("550-5.1.1 ...").
_SERVER_MESSAGE = re.compile(r"server message:\s*([45]\d\d)([ -]|$)(.*)$")
# Any line with a basic code followed by an enhanced status code.
_CODED_REPLY = re.compile(r"(?:^|[\s:(\[])([45]\d\d)[ -]([245]\.\d{1,3}\.\d{1,3})(?=\s|$)(.*)$")
# Output that *begins* with an RFC 3463 code: Postfix 2.3+ lets it override the exit status.
_LEADING_ENHANCED = re.compile(r"\A\s*([45])\.(\d{1,3})\.(\d{1,3})(?=\s|$)(.*)", re.DOTALL)
# The basic code to pair with a bare enhanced code: Postfix's own defer/bounce codes.
_BASIC_FOR_CLASS = {"4": 451, "5": 554}
# "-t", alone or bundled with other flag letters ("-it", "-ti", "-vt").
_READS_RECIPIENTS = re.compile(r"^-[inv]*t[intv]*$")


def reply_from_output(output: str) -> Reply | None:
    """The SMTP reply a sendmail program printed, or ``None`` when it printed none.

    Looked for, in order: msmtp's ``server message: NNN ...`` lines (continuation
    lines of a multi-line reply are joined), the first line anywhere with a
    ``NNN X.Y.Z`` reply, and an ``X.Y.Z`` code at the very start of the output
    (paired with 451 or 554). Only 4xx/5xx replies count: a failed exit is never
    explained by a success code.
    """
    lines = output.splitlines()
    reply = _msmtp_reply(lines)
    if reply is not None:
        return reply
    for line in lines:
        match = _CODED_REPLY.search(line)
        if match is not None:
            code, enhanced, rest = match.groups()
            return Reply.from_server(int(code), f"{enhanced} {rest.strip()}".rstrip())
    leading = _LEADING_ENHANCED.match(output)
    if leading is not None:
        klass, subject, detail, rest = leading.groups()
        first_line = rest.strip().split("\n", 1)[0].strip()
        return Reply(_BASIC_FOR_CLASS[klass], f"{klass}.{subject}.{detail}", first_line)
    return None


def _msmtp_reply(lines: list[str]) -> Reply | None:
    code: str | None = None
    texts: list[str] = []
    for line in lines:
        match = _SERVER_MESSAGE.search(line)
        if match is None:
            if code is not None:
                break
            continue
        line_code, separator, text = match.groups()
        if code is None:
            code = line_code
        elif line_code != code:
            break
        texts.append(text.strip())
        if separator != "-":
            break
    if code is None:
        return None
    return Reply.from_server(int(code), "\n".join(texts))


def _signal_name(number: int) -> str:
    try:
        return signal_module.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify_exit(exit_code: int | None, stderr: str, *, signal: int | None = None) -> Verdict:
    """Classify how a sendmail program ended. Pure.

    ``exit_code`` is the exit status (``None`` when it died by a signal or is not
    known; a negative value ``-N``, as :mod:`asyncio` reports a signal, means
    ``signal=N``). ``stderr`` is what it printed.

    * 0 is success: the message was queued locally (``SENT``), whatever stderr says;
    * an SMTP reply on stderr (msmtp's ``server message: 451 4.7.1 ...``, any
      ``NNN X.Y.Z`` line, or an ``X.Y.Z`` code starting the output) overrides the
      exit status: it is classified by :func:`~reliable_smtp.classify` as a reply to
      the final dot;
    * death by a signal is ``TRANSIENT`` (Postfix defers it);
    * 75 (EX_TEMPFAIL) and 71 (EX_OSERR) are ``TRANSIENT``; 77 (EX_NOPERM) and 78
      (EX_CONFIG) are ``AUTH_OR_CONFIG``; every other code, known or not, is
      ``PERMANENT``, as Postfix reads sysexits (reference D.2);
    * no exit status and no signal: the program's fate is unknown, so it may have
      queued the message - ``AMBIGUOUS``.
    """
    if exit_code is not None and exit_code < 0 and signal is None:
        signal = -exit_code
        exit_code = None
    if exit_code == 0 and signal is None:
        return Verdict(outcome=Outcome.SENT, explanation="handed to sendmail: queued locally")
    reply = reply_from_output(stderr)
    if reply is not None:
        return classify(reply, Phase.DATA_END)
    if signal is not None:
        return Verdict(
            outcome=Outcome.TRANSIENT,
            explanation=f"sendmail was killed by {_signal_name(signal)}; {_RETRY}",
            retryable=True,
        )
    if exit_code is None:
        return Verdict(
            outcome=Outcome.AMBIGUOUS,
            explanation=(
                "sendmail's exit status is unknown: it may have queued the message; "
                "not resent automatically, to avoid a duplicate"
            ),
        )
    known = _SYSEXITS.get(exit_code)
    if known is None:
        return Verdict(
            outcome=Outcome.PERMANENT,
            explanation=(
                f"sendmail exited with unknown status {exit_code} (not a sysexits.h code); "
                "check the MTA's logs; not retried"
            ),
        )
    return Verdict(
        outcome=known.outcome,
        explanation=known.explanation,
        retryable=known.outcome is Outcome.TRANSIENT,
        # 64 (EX_USAGE): we called it wrongly - "the other side did not understand the
        # command", the protocol error that makes the error a ProtocolError.
        protocol_error=known.name == "EX_USAGE",
    )


def _describe_exit(exit_code: int | None, signal: int | None) -> str:
    if signal is not None:
        return f"was killed by {_signal_name(signal)} (signal {signal})"
    if exit_code is None:
        return "ended with an unknown exit status"
    known = _SYSEXITS.get(exit_code)
    return f"exited with status {exit_code}" + (f" ({known.name})" if known else "")


def _trim(text: str, limit: int = _STDERR_IN_MESSAGE) -> str:
    flat = " / ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class _Exchange:
    """What happened on the child's pipes (filled in while it runs)."""

    __slots__ = ("stderr", "stdin_closed")

    def __init__(self) -> None:
        self.stdin_closed = False
        self.stderr = bytearray()


async def _read_capped(stream: asyncio.StreamReader | None, into: bytearray, limit: int) -> None:
    # Keep the first `limit` bytes and drain the rest, so the child never blocks
    # on a full pipe and we never hold more than `limit`. Appends as it goes, so
    # a timeout keeps what had arrived.
    if stream is None:
        return
    while chunk := await stream.read(65536):
        if len(into) < limit:
            into += chunk[: limit - len(into)]


class SendmailTransport(Transport):
    """Deliver through the local MTA's ``sendmail`` program (Postfix, Exim, msmtp...).

    ``path`` is the program (``/usr/sbin/sendmail`` by default; a bare name is
    looked up on ``PATH``). ``timeout`` bounds the whole run in seconds.
    ``extra_args`` go after ``-f SENDER`` and before ``--`` (for example
    ``("-C", "/etc/msmtprc")``). ``-t`` is refused because the recipients come from
    the envelope; do not put ``-f`` there either, it would override the envelope
    sender.

    The command is ``[path, "-i", "-f", sender, *extra_args, "--", *recipients]``:
    ``-i`` so a line holding a single ``.`` does not end the message, ``--`` so a
    recipient starting with ``-`` cannot be read as an option. The null sender
    (``""``) is passed as an empty ``-f`` argument.
    """

    marks_final_dot = True

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_SENDMAIL_PATH,
        *,
        timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        path = os.fspath(path)
        if not isinstance(path, str) or not path or "\x00" in path:
            raise ConfigurationError(
                f"SendmailTransport path must be a non-empty path without NUL, got {path!r}",
                setting="path",
            )
        self.timeout = check_seconds("timeout", timeout, why="sendmail is killed after it")
        self.path = path
        self.extra_args = _checked_extra_args(extra_args)
        self.name = f"sendmail:{path}"

    def command(self, envelope: Envelope) -> list[str]:
        """The argv ``deliver`` runs for ``envelope`` (no shell is involved)."""
        return [
            self.path,
            "-i",
            "-f",
            envelope.sender,
            *self.extra_args,
            "--",
            *envelope.recipients,
        ]

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        """Run sendmail for ``envelope`` with ``content`` on stdin; see the module docstring."""
        self.ensure_open()
        # The MTA queues whatever reached it once stdin closes - also a truncated message
        # if this process dies mid-write - so the commit point is before the spawn.
        await before_commit(envelope, transport_name=self.name)
        process = await self._spawn(self.command(envelope))
        exchange = _Exchange()
        try:
            await asyncio.wait_for(self._communicate(process, content, exchange), self.timeout)
        except asyncio.TimeoutError as exc:
            if process.returncode is None:
                await self._kill(process)
                outcome = self._timed_out(envelope, exchange)
                if isinstance(outcome, DeliveryError):
                    raise outcome from exc
                return outcome
            # It exited in time, but something it started in the background (a
            # delivery process) still holds its output pipes: its exit status is the
            # answer, and that process is left alone to do its work.
        except OSError as exc:
            await self._kill(process)
            verdict = classify_connection_loss(Phase.DATA, timed_out=False)
            raise error_for(
                verdict,
                f"{self.name}: talking to the sendmail process failed: {exc}",
                phase=Phase.DATA,
                transport_name=self.name,
            ) from exc
        finally:
            # Cancellation from outside lands here too: never leave the child running.
            if process.returncode is None:
                await self._kill(process)

        returncode = process.returncode
        assert returncode is not None  # waited for, or seen to exit
        if returncode == 0:
            return DeliveryReport.all_sent(
                envelope, transport_name=self.name, reply=Reply(250, "2.0.0", "handed to sendmail")
            )
        raise self._exit_error(returncode, bytes(exchange.stderr).decode("utf-8", "replace"))

    async def _spawn(self, argv: list[str]) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # Its own process group, so a timeout can kill helpers it forked too.
                start_new_session=True,
            )
        except OSError as exc:
            if exc.errno in _BAD_PATH_ERRNOS:
                problem = (
                    "does not exist"
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR)
                    else f"cannot be run ({exc.strerror})"
                )
                raise AuthOrConfigError(
                    f"sendmail program {self.path!r} {problem}",
                    setting="path",
                    phase=Phase.CONNECT,
                    transport_name=self.name,
                    explanation=(
                        "install an MTA that provides sendmail (for example postfix, or msmtp "
                        "with msmtp-mta), or point SendmailTransport(path=...) or "
                        "RELIABLE_SMTP_SENDMAIL_PATH at an executable sendmail"
                    ),
                ) from exc
            # Out of processes, memory or file descriptors: may pass.
            verdict = Verdict(
                outcome=Outcome.TRANSIENT,
                explanation=f"could not start sendmail ({exc.strerror}); {_RETRY}",
                retryable=True,
            )
            raise error_for(
                verdict,
                f"{self.name}: could not start {self.path!r}",
                phase=Phase.CONNECT,
                transport_name=self.name,
            ) from exc

    @staticmethod
    async def _communicate(
        process: asyncio.subprocess.Process, content: bytes, exchange: _Exchange
    ) -> None:
        async def feed() -> None:
            stdin = process.stdin
            assert stdin is not None
            try:
                stdin.write(content)
                await stdin.drain()
                stdin.close()
                await stdin.wait_closed()
            except (BrokenPipeError, ConnectionResetError):
                # It stopped reading (usually: it is exiting with an error); its exit
                # status says why.
                return
            exchange.stdin_closed = True

        # All three at once: a child that writes a lot before reading its input must
        # not deadlock against us. stdout is read only to keep its pipe flowing.
        await asyncio.gather(
            feed(),
            _read_capped(process.stderr, exchange.stderr, _STDERR_LIMIT),
            _read_capped(process.stdout, bytearray(), 0),
        )
        await process.wait()

    @staticmethod
    async def _kill(process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            try:
                os.killpg(process.pid, signal_module.SIGKILL)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        # asyncio's child watcher reaps the killed child (no zombie) whether or not
        # we wait; wait() also waits for its pipes to close, which is immediate once
        # the group is dead but never happens while a process that left the group
        # holds them, hence the bound.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.wait(), _REAP_GRACE)

    def _timed_out(self, envelope: Envelope, exchange: _Exchange) -> DeliveryReport | DeliveryError:
        if not exchange.stdin_closed:
            verdict = classify_connection_loss(Phase.DATA, timed_out=True)
            return error_for(
                verdict,
                f"{self.name} did not take the message within {self.timeout:g} s; it was "
                "killed before the whole message was written to it",
                phase=Phase.DATA,
                transport_name=self.name,
            )
        # The whole message was written: the MTA may have queued it before we killed it.
        lost = classify_connection_loss(Phase.DATA_END, timed_out=True)
        verdict = dataclasses.replace(
            lost,
            explanation=(
                f"{self.name} did not exit within {self.timeout:g} s after reading the whole "
                f"message and was killed; {lost.explanation}"
            ),
        )
        return DeliveryReport(
            recipients={
                r: RecipientStatus.from_verdict(
                    r, verdict, phase=Phase.DATA_END, transport_name=self.name
                )
                for r in envelope.recipients
            },
            transport_name=self.name,
        )

    def _exit_error(self, returncode: int, stderr: str) -> DeliveryError:
        exit_code, signal = (None, -returncode) if returncode < 0 else (returncode, None)
        verdict = classify_exit(exit_code, stderr, signal=signal)
        reply = reply_from_output(stderr)
        summary = f"{self.name} {_describe_exit(exit_code, signal)}"
        summary += f"; stderr: {_trim(stderr)}" if stderr.strip() else "; stderr was empty"
        # The class follows from the verdict alone; the raw facts travel with the error.
        return error_class(verdict)(
            summary,
            verdict=verdict,
            reply=reply,
            phase=Phase.DATA_END,
            transport_name=self.name,
            program_exit=ProgramExit(exit_code=exit_code, signal=signal, stderr=stderr),
        )


def _checked_extra_args(extra_args: Sequence[str]) -> tuple[str, ...]:
    if isinstance(extra_args, (str, bytes)):
        raise ConfigurationError(
            f"SendmailTransport extra_args must be a sequence of arguments, not one string "
            f"({extra_args!r}); write extra_args=[{extra_args!r}]",
            setting="extra_args",
        )
    args = tuple(extra_args)
    for arg in args:
        if not isinstance(arg, str) or "\x00" in arg:
            raise ConfigurationError(
                f"SendmailTransport extra_args must be strings without NUL, got {arg!r}",
                setting="extra_args",
            )
        if _READS_RECIPIENTS.match(arg) or arg.startswith("--read-recipients"):
            raise ConfigurationError(
                f"SendmailTransport extra_args must not contain {arg!r}: -t makes sendmail "
                "read recipients from the To/Cc/Bcc headers, but reliable-smtp passes the "
                "envelope recipients itself (Bcc included) after '--'",
                setting="extra_args",
            )
        if arg == "--":
            raise ConfigurationError(
                "SendmailTransport extra_args must not contain '--': the transport adds it "
                "before the recipients, and anything after it would be read as a recipient",
                setting="extra_args",
            )
    return args
