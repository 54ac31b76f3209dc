"""SendmailTransport against real executables written by the tests, and classify_exit."""

from __future__ import annotations

import asyncio
import json
import math
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import recorded_io
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import (
    AuthOrConfigError,
    ConfigurationError,
    DeliveryError,
    PermanentError,
    ProgramExit,
    ProtocolError,
    SMTPTimeoutError,
    TransientError,
)
from reliable_smtp._replies import Outcome, Phase, Reply, classify
from reliable_smtp._transports.sendmail import SendmailTransport, classify_exit, reply_from_output

CONTENT = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n.\r\nmore\r\n"
ENVELOPE = Envelope("a@example.com", ("b@example.org", "c@example.net"))

MakeScript = Callable[[str], Path]


@pytest.fixture
def make_script(tmp_path: Path) -> MakeScript:
    """Write an executable /bin/sh script whose body is given; it runs in tmp_path."""
    counter = iter(range(1000))

    def make(body: str) -> Path:
        path = tmp_path / f"sendmail-{next(counter)}"
        path.write_text(f"#!/bin/sh\ncd '{tmp_path}'\n{body}\n")
        path.chmod(0o755)
        return path

    return make


@pytest.fixture
def recorder(tmp_path: Path) -> Path:
    """A sendmail stand-in that records its exact argv and stdin, then exits 0."""
    path = tmp_path / "record-sendmail"
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"out = {str(tmp_path)!r}\n"
        "open(out + '/argv.json', 'w').write(json.dumps(sys.argv))\n"
        "open(out + '/stdin.bin', 'wb').write(sys.stdin.buffer.read())\n"
    )
    path.chmod(0o755)
    return path


def _wait_for_file(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text().strip()):
            return text
        time.sleep(0.01)
    raise AssertionError(f"{path} was never written")


def _process_state(pid: int) -> str | None:
    """The process's state letter from /proc, or None once it no longer exists."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat_line.rsplit(")", 1)[1].split()[0]


def _assert_dead(pid: int, *, reaped: bool) -> None:
    # Our direct child must be reaped by the transport; a grandchild is reaped by
    # whatever adopted it, so for it "dead" (zombie) is enough.
    deadline = time.monotonic() + 2.0
    while True:
        state = _process_state(pid)
        if state is None or (not reaped and state == "Z"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} is still there (state {state})")
        time.sleep(0.01)


# -- the command line and the bytes -------------------------------------------------------


async def test_argv_and_stdin_are_exact(recorder: Path, tmp_path: Path) -> None:
    envelope = Envelope("bounce@example.com", ("bob@example.org", "-oQ@example.org"))
    transport = SendmailTransport(recorder)

    report = await transport.deliver(envelope, CONTENT)

    assert list(report.recipients) == list(envelope.recipients)
    assert all(status.accepted for status in report.recipients.values())
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == [
        str(recorder),
        "-i",
        "-f",
        "bounce@example.com",
        "--",
        "bob@example.org",
        "-oQ@example.org",  # after "--": an address, not an option
    ]
    assert (tmp_path / "stdin.bin").read_bytes() == CONTENT
    assert transport.command(envelope) == argv


async def test_extra_args_go_before_the_double_dash(recorder: Path, tmp_path: Path) -> None:
    transport = SendmailTransport(recorder, extra_args=["-C", "/etc/msmtprc"])
    await transport.deliver(ENVELOPE, CONTENT)
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[1:] == [
        "-i",
        "-f",
        "a@example.com",
        "-C",
        "/etc/msmtprc",
        "--",
        "b@example.org",
        "c@example.net",
    ]


async def test_null_sender_is_an_empty_f_argument(recorder: Path, tmp_path: Path) -> None:
    await SendmailTransport(recorder).deliver(Envelope("", ("b@example.org",)), CONTENT)
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[1:4] == ["-i", "-f", ""]


async def test_large_message_is_written_whole(recorder: Path, tmp_path: Path) -> None:
    # Far beyond a pipe buffer: the writer must wait for the reader, not truncate.
    content = CONTENT + (b"y" * 76 + b"\r\n") * 40_000
    await SendmailTransport(recorder).deliver(ENVELOPE, content)
    assert (tmp_path / "stdin.bin").read_bytes() == content


async def test_exit_zero_reports_every_recipient_sent(recorder: Path) -> None:
    transport = SendmailTransport(recorder)
    report = await transport.deliver(ENVELOPE, CONTENT)

    assert list(report.recipients) == list(ENVELOPE.recipients)
    assert all(s.outcome is Outcome.SENT for s in report.recipients.values())
    assert report.final_reply == Reply(250, "2.0.0", "handed to sendmail")
    assert report.transport_name == f"sendmail:{recorder}"
    assert {s.transport_name for s in report.recipients.values()} == {f"sendmail:{recorder}"}


async def test_exit_zero_with_chatter_on_stderr_is_still_success(make_script: MakeScript) -> None:
    script = make_script("cat >/dev/null; echo 'warning: 550 5.1.1 in some old log line' >&2")
    report = await SendmailTransport(script).deliver(ENVELOPE, CONTENT)
    assert list(report.recipients) == list(ENVELOPE.recipients)
    assert all(s.accepted for s in report.recipients.values())


# -- failures by exit status -------------------------------------------------------------

EXIT_CLASSES: list[tuple[int, type[DeliveryError], Outcome]] = [
    (64, ProtocolError, Outcome.PERMANENT),
    (65, PermanentError, Outcome.PERMANENT),
    (66, PermanentError, Outcome.PERMANENT),
    (67, PermanentError, Outcome.PERMANENT),
    (68, PermanentError, Outcome.PERMANENT),
    (69, PermanentError, Outcome.PERMANENT),
    (70, PermanentError, Outcome.PERMANENT),
    (71, TransientError, Outcome.TRANSIENT),
    (72, PermanentError, Outcome.PERMANENT),
    (73, PermanentError, Outcome.PERMANENT),
    (74, PermanentError, Outcome.PERMANENT),
    (75, TransientError, Outcome.TRANSIENT),
    (76, PermanentError, Outcome.PERMANENT),
    (77, AuthOrConfigError, Outcome.AUTH_OR_CONFIG),
    (78, AuthOrConfigError, Outcome.AUTH_OR_CONFIG),
    (1, PermanentError, Outcome.PERMANENT),
    (255, PermanentError, Outcome.PERMANENT),
]


@pytest.mark.parametrize(("code", "error_class", "outcome"), EXIT_CLASSES)
async def test_exit_status_raises_its_class(
    make_script: MakeScript, code: int, error_class: type[DeliveryError], outcome: Outcome
) -> None:
    script = make_script(f"cat >/dev/null; echo 'sendmail: failure number {code}' >&2; exit {code}")
    transport = SendmailTransport(script)

    with pytest.raises(DeliveryError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)

    error = caught.value
    assert type(error) is error_class
    assert error.outcome is outcome
    assert error.retryable is (outcome is Outcome.TRANSIENT)
    assert error.phase is Phase.DATA_END
    assert error.transport_name == transport.name
    assert error.program_exit == ProgramExit(
        exit_code=code, signal=None, stderr=f"sendmail: failure number {code}\n"
    )
    text = str(error)
    assert f"exited with status {code}" in text
    assert f"sendmail: failure number {code}" in text
    assert error.explanation
    assert error.explanation in text


async def test_exit_status_without_stderr_says_so(make_script: MakeScript) -> None:
    with pytest.raises(TransientError) as caught:
        await SendmailTransport(make_script("exit 75")).deliver(ENVELOPE, CONTENT)
    assert "status 75 (EX_TEMPFAIL)" in str(caught.value)
    assert "stderr was empty" in str(caught.value)


async def test_usage_error_before_reading_stdin_is_still_classified(
    make_script: MakeScript,
) -> None:
    # It exits without reading a message far larger than the pipe buffer: the
    # broken pipe is ours to swallow, the exit status is the answer.
    script = make_script("echo 'sendmail: usage: bad option' >&2; exit 64")
    with pytest.raises(ProtocolError) as caught:
        await SendmailTransport(script).deliver(ENVELOPE, CONTENT + b"z" * 2_000_000)
    assert caught.value.program_exit is not None
    assert caught.value.program_exit.exit_code == 64
    assert caught.value.verdict.protocol_error  # the class follows from the verdict


async def test_msmtp_transient_reply_overrides_exit_69(make_script: MakeScript) -> None:
    script = make_script(
        "cat >/dev/null\n"
        "echo 'msmtp: server message: 451 4.7.1 try later' >&2\n"
        "echo 'msmtp: could not send mail (account default from /etc/msmtprc)' >&2\n"
        "exit 69"
    )
    with pytest.raises(TransientError) as caught:
        await SendmailTransport(script).deliver(ENVELOPE, CONTENT)

    error = caught.value
    reply = Reply(451, "4.7.1", "try later")
    assert error.reply == reply
    assert error.outcome is classify(reply, Phase.DATA_END).outcome
    assert error.outcome in (Outcome.TRANSIENT, Outcome.THROTTLED)
    assert error.program_exit is not None
    assert error.program_exit.exit_code == 69
    assert "status 69" in str(error)
    assert "451 4.7.1 try later" in str(error)


async def test_msmtp_permanent_reply_overrides_exit_65(make_script: MakeScript) -> None:
    script = make_script(
        "cat >/dev/null\n"
        "echo 'msmtp: recipient address bob@x not accepted by the server' >&2\n"
        "echo 'msmtp: server message: 550 5.1.1 <bob@x>: Recipient address rejected' >&2\n"
        "exit 65"
    )
    with pytest.raises(PermanentError) as caught:
        await SendmailTransport(script).deliver(ENVELOPE, CONTENT)
    assert caught.value.reply == Reply(550, "5.1.1", "<bob@x>: Recipient address rejected")
    assert caught.value.code == 550
    assert caught.value.enhanced_code == "5.1.1"


async def test_death_by_signal_is_transient(make_script: MakeScript) -> None:
    script = make_script("cat >/dev/null; kill -TERM $$")
    with pytest.raises(TransientError) as caught:
        await SendmailTransport(script).deliver(ENVELOPE, CONTENT)

    error = caught.value
    assert type(error) is TransientError
    assert error.retryable
    assert error.program_exit is not None
    assert error.program_exit.exit_code is None
    assert error.program_exit.signal == signal.SIGTERM
    assert "SIGTERM" in str(error)


async def test_long_stderr_is_trimmed_in_the_message_but_kept_whole(
    make_script: MakeScript,
) -> None:
    script = make_script(
        'cat >/dev/null; i=0; while [ $i -lt 400 ]; do echo "line $i of noise" >&2; '
        "i=$((i+1)); done; exit 70"
    )
    with pytest.raises(PermanentError) as caught:
        await SendmailTransport(script).deliver(ENVELOPE, CONTENT)
    assert len(str(caught.value)) < 1500
    assert "…" in str(caught.value)
    assert caught.value.program_exit is not None
    assert "line 399 of noise" in caught.value.program_exit.stderr


async def test_error_keeps_exit_facts_across_pickling(make_script: MakeScript) -> None:
    with pytest.raises(TransientError) as caught:
        await SendmailTransport(make_script("echo busy >&2; exit 75")).deliver(ENVELOPE, CONTENT)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is TransientError
    assert copy.program_exit == ProgramExit(exit_code=75, signal=None, stderr="busy\n")
    assert str(copy) == str(caught.value)


async def test_old_exit_attributes_still_read_with_a_deprecation_warning(
    make_script: MakeScript,
) -> None:
    with pytest.raises(TransientError) as caught:
        await SendmailTransport(make_script("echo busy >&2; exit 75")).deliver(ENVELOPE, CONTENT)
    with pytest.warns(DeprecationWarning, match="program_exit.exit_code"):
        assert caught.value.exit_code == 75
    with pytest.warns(DeprecationWarning, match="program_exit.stderr"):
        assert caught.value.stderr == "busy\n"
    with pytest.warns(DeprecationWarning, match="program_exit.signal"):
        assert caught.value.signal is None
    with pytest.raises(AttributeError):
        _ = caught.value.no_such_fact


# -- timeouts and cancellation: the child never outlives deliver() -------------------------


async def test_timeout_before_the_message_was_written_is_transient(
    make_script: MakeScript, tmp_path: Path
) -> None:
    # It never reads stdin, and the message overflows the pipe: stdin never closes.
    script = make_script("echo $$ > pid; sleep 30 & echo $! > child; wait")
    transport = SendmailTransport(script, timeout=0.5)

    started = time.monotonic()
    with pytest.raises(SMTPTimeoutError) as caught:
        await transport.deliver(ENVELOPE, CONTENT + b"z" * 2_000_000)

    assert time.monotonic() - started < 3
    assert caught.value.phase is Phase.DATA
    assert caught.value.retryable
    assert isinstance(caught.value.__cause__, asyncio.TimeoutError)
    _assert_dead(int(_wait_for_file(tmp_path / "pid")), reaped=True)
    _assert_dead(int(_wait_for_file(tmp_path / "child")), reaped=False)


async def test_timeout_after_the_message_was_written_is_ambiguous(
    make_script: MakeScript, tmp_path: Path
) -> None:
    script = make_script("cat >/dev/null; echo $$ > pid; sleep 30 & echo $! > child; wait")
    transport = SendmailTransport(script, timeout=0.5)

    report = await transport.deliver(ENVELOPE, CONTENT)

    assert list(report.recipients) == list(ENVELOPE.recipients)
    for status in report.recipients.values():
        assert status.outcome is Outcome.AMBIGUOUS
        assert status.phase is Phase.DATA_END
        assert not status.retryable
        assert "may have" in status.explanation
        assert status.transport_name == transport.name
    _assert_dead(int(_wait_for_file(tmp_path / "pid")), reaped=True)
    _assert_dead(int(_wait_for_file(tmp_path / "child")), reaped=False)


async def test_exit_status_counts_when_a_background_child_holds_the_pipes(
    make_script: MakeScript, tmp_path: Path
) -> None:
    # Like a sendmail that forks a background delivery process and exits 0: the
    # pipes stay open past the timeout, but the exit status is known and is kept.
    script = make_script("cat >/dev/null; sleep 30 & echo $! > child; exit 0")
    report = await SendmailTransport(script, timeout=0.5).deliver(ENVELOPE, CONTENT)

    assert list(report.recipients) == list(ENVELOPE.recipients)
    assert all(s.accepted for s in report.recipients.values())
    child = int(_wait_for_file(tmp_path / "child"))
    assert _process_state(child) not in (None, "Z")  # left alone to do its work
    os.kill(child, signal.SIGKILL)
    _assert_dead(child, reaped=False)
    await asyncio.sleep(0.1)  # let asyncio see the pipes close


async def test_cancellation_kills_the_child(make_script: MakeScript, tmp_path: Path) -> None:
    script = make_script("cat >/dev/null; echo $$ > pid; sleep 30")
    task = asyncio.create_task(SendmailTransport(script, timeout=30).deliver(ENVELOPE, CONTENT))
    pid = None
    for _ in range(500):
        await asyncio.sleep(0.01)
        if (tmp_path / "pid").exists() and (text := (tmp_path / "pid").read_text().strip()):
            pid = int(text)
            break
    assert pid is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _assert_dead(pid, reaped=True)


# -- a missing or unusable program ---------------------------------------------------------


async def test_missing_program_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "sendmail"
    transport = SendmailTransport(missing)
    with pytest.raises(AuthOrConfigError) as caught:
        await transport.deliver(ENVELOPE, CONTENT)

    error = caught.value
    assert error.phase is Phase.CONNECT
    assert error.setting == "path"
    assert error.outcome is Outcome.AUTH_OR_CONFIG
    assert isinstance(error.__cause__, FileNotFoundError)
    text = str(error)
    assert str(missing) in text
    assert "does not exist" in text
    assert "postfix" in text
    assert "msmtp" in text
    assert "RELIABLE_SMTP_SENDMAIL_PATH" in text


@pytest.mark.parametrize("kind", ["not executable", "directory"])
async def test_unrunnable_program_is_a_configuration_error(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        path = tmp_path / "a-directory"
        path.mkdir()
    else:
        path = tmp_path / "sendmail"
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)  # no x bit: refused even for root
    with pytest.raises(AuthOrConfigError) as caught:
        await SendmailTransport(path).deliver(ENVELOPE, CONTENT)
    assert str(path) in str(caught.value)
    assert "cannot be run" in str(caught.value)


# -- construction: pure checks -------------------------------------------------------------


def test_defaults_and_name() -> None:
    transport = SendmailTransport()
    assert transport.path == "/usr/sbin/sendmail"
    assert transport.timeout == 60.0
    assert transport.extra_args == ()
    assert transport.name == "sendmail:/usr/sbin/sendmail"
    assert "sendmail:/usr/sbin/sendmail" in repr(transport)


def test_construction_does_no_io(tmp_path: Path) -> None:
    # Nothing is looked up, opened or run until the first delivery (which then names
    # a missing program: test_missing_program_names_the_path_and_the_fix).
    missing = tmp_path / "not-here" / "sendmail"
    with recorded_io() as calls:
        transport = SendmailTransport(missing, timeout=1, extra_args=["-v"])
    assert calls == []
    assert transport.path == str(missing)
    assert transport.command(ENVELOPE)[0] == str(missing)
    # The net is real: an existence check, a file and a process are all seen.
    with recorded_io() as calls:
        missing.exists()
        (tmp_path / "probe").write_bytes(b"")
        subprocess.run(["true"], check=True)
    assert "posix.stat" in calls
    assert "open" in calls
    assert "subprocess.Popen" in calls


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, True, "5"])
def test_bad_timeout_is_refused(timeout: object) -> None:
    with pytest.raises(ConfigurationError, match="timeout") as caught:
        SendmailTransport(timeout=timeout)  # type: ignore[arg-type]
    assert caught.value.setting == "timeout"


@pytest.mark.parametrize(
    "extra_args", [["-t"], ["-it"], ["-ti"], ["-v", "-t"], ["--read-recipients"]]
)
def test_reading_recipients_from_headers_is_refused(extra_args: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="envelope recipients") as caught:
        SendmailTransport(extra_args=extra_args)
    assert caught.value.setting == "extra_args"


@pytest.mark.parametrize("extra_args", ["-v", ["--"], ["bad\x00arg"], [b"-v"]])
def test_malformed_extra_args_are_refused(extra_args: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SendmailTransport(extra_args=extra_args)  # type: ignore[arg-type]
    assert caught.value.setting == "extra_args"


@pytest.mark.parametrize("path", ["", "/usr/sbin/send\x00mail"])
def test_bad_path_is_refused(path: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SendmailTransport(path)
    assert caught.value.setting == "path"


def test_options_after_path_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        SendmailTransport("/usr/sbin/sendmail", 5.0)  # type: ignore[call-arg]


# -- classify_exit: pure -------------------------------------------------------------------

SYSEXITS: dict[int, Outcome] = {
    64: Outcome.PERMANENT,
    65: Outcome.PERMANENT,
    66: Outcome.PERMANENT,
    67: Outcome.PERMANENT,
    68: Outcome.PERMANENT,
    69: Outcome.PERMANENT,
    70: Outcome.PERMANENT,
    71: Outcome.TRANSIENT,
    72: Outcome.PERMANENT,
    73: Outcome.PERMANENT,
    74: Outcome.PERMANENT,
    75: Outcome.TRANSIENT,
    76: Outcome.PERMANENT,
    77: Outcome.AUTH_OR_CONFIG,
    78: Outcome.AUTH_OR_CONFIG,
}


@pytest.mark.parametrize(("code", "outcome"), sorted(SYSEXITS.items()))
def test_classify_exit_sysexits(code: int, outcome: Outcome) -> None:
    verdict = classify_exit(code, "")
    assert verdict.outcome is outcome
    assert verdict.retryable is (outcome is Outcome.TRANSIENT)
    assert verdict.explanation


def test_classify_exit_names_the_setting_for_config_errors() -> None:
    assert "msmtprc" in classify_exit(78, "").explanation
    assert "main.cf" in classify_exit(78, "").explanation
    assert "permission" in classify_exit(77, "").explanation


@pytest.mark.parametrize("code", [1, 2, 63, 79, 100, 127, 255])
def test_classify_exit_unknown_codes_are_permanent(code: int) -> None:
    verdict = classify_exit(code, "something went wrong")
    assert verdict.outcome is Outcome.PERMANENT
    assert str(code) in verdict.explanation


def test_classify_exit_zero_is_sent_whatever_stderr_says() -> None:
    assert classify_exit(0, "").outcome is Outcome.SENT
    assert classify_exit(0, "msmtp: server message: 550 5.1.1 no").outcome is Outcome.SENT


def test_classify_exit_unknown_status_is_ambiguous() -> None:
    verdict = classify_exit(None, "")
    assert verdict.outcome is Outcome.AMBIGUOUS
    assert not verdict.retryable


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV, 99])
def test_classify_exit_death_by_signal_is_transient(signum: int) -> None:
    verdict = classify_exit(None, "", signal=signum)
    assert verdict.outcome is Outcome.TRANSIENT
    assert verdict.retryable
    assert classify_exit(-signum, "") == verdict  # asyncio's negative returncode


def test_classify_exit_signal_names_it() -> None:
    assert "SIGKILL" in classify_exit(None, "", signal=signal.SIGKILL).explanation


@pytest.mark.parametrize(
    ("exit_code", "stderr", "reply"),
    [
        (69, "msmtp: server message: 451 4.7.1 try later\n", Reply(451, "4.7.1", "try later")),
        (
            65,
            "msmtp: server message: 550 5.1.1 <bob@x>: Recipient address rejected\n",
            Reply(550, "5.1.1", "<bob@x>: Recipient address rejected"),
        ),
        (
            75,
            "sendmail: relay said 554 5.7.1 Relaying denied",
            Reply(554, "5.7.1", "Relaying denied"),
        ),
        (1, "5.1.1 user unknown\nsecond line", Reply(554, "5.1.1", "user unknown")),
        (70, "4.3.0 mail system busy", Reply(451, "4.3.0", "mail system busy")),
    ],
)
def test_classify_exit_reply_on_stderr_overrides_exit_code(
    exit_code: int, stderr: str, reply: Reply
) -> None:
    assert reply_from_output(stderr) == reply
    assert classify_exit(exit_code, stderr) == classify(reply, Phase.DATA_END)


def test_classify_exit_reply_overrides_signal_too() -> None:
    stderr = "msmtp: server message: 550 5.7.1 rejected\n"
    assert classify_exit(None, stderr, signal=15).outcome is Outcome.PERMANENT


# -- reply_from_output ---------------------------------------------------------------------


def test_msmtp_multiline_reply_is_joined() -> None:
    stderr = (
        "msmtp: server message: 550-5.1.1 The email account that you tried to reach does\n"
        "msmtp: server message: 550-5.1.1 not exist. Please try double-checking\n"
        "msmtp: server message: 550 5.1.1 the recipient's email address. - gsmtp\n"
        "msmtp: could not send mail\n"
    )
    reply = reply_from_output(stderr)
    assert reply is not None
    assert (reply.code, reply.enhanced_code) == (550, "5.1.1")
    assert reply.text.splitlines() == [
        "The email account that you tried to reach does",
        "5.1.1 not exist. Please try double-checking",
        "5.1.1 the recipient's email address. - gsmtp",
    ]


def test_msmtp_reply_without_enhanced_code() -> None:
    assert reply_from_output("msmtp: server message: 452 mailbox full\n") == Reply(
        452, None, "mailbox full"
    )


@pytest.mark.parametrize(
    "stderr",
    [
        "",
        "sendmail: fatal: no recipients\n",
        "error at line 451 of /etc/msmtprc\n",  # a number, not a reply
        "postdrop: warning: 250 2.0.0 queued\n",  # a success code explains no failure
        "msmtp: server message: 250 OK\n",
        "see RFC 5.1.1 for details\n",  # an enhanced code not at the start of the output
    ],
)
def test_no_reply_in_output(stderr: str) -> None:
    assert reply_from_output(stderr) is None


def test_exit_code_drives_classification_without_a_reply() -> None:
    assert classify_exit(69, "error at line 451 of config").outcome is Outcome.PERMANENT
    assert classify_exit(75, "sendmail: fatal: queue file write error").outcome is (
        Outcome.TRANSIENT
    )


async def test_no_shell_is_involved(recorder: Path, tmp_path: Path) -> None:
    # argv goes straight to exec: shell syntax in an address stays literal text.
    # (${IFS} for the space: the Envelope refuses whitespace in a path.)
    hostile = f"$(touch${{IFS}}{tmp_path}/pwned)@example.org"
    await SendmailTransport(recorder).deliver(Envelope("a@example.com", (hostile,)), CONTENT)
    assert json.loads((tmp_path / "argv.json").read_text())[-1] == hostile
    assert not (tmp_path / "pwned").exists()
