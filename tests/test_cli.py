"""The ``reliable-smtp`` command against real local servers.

Every test runs the command in an empty working directory (no ``.env``) with the
``RELIABLE_SMTP_*`` variables of the calling environment removed, and asserts the
exit status, the named cause and the JSON report. The password is a distinctive
string that must never appear in any output. Most run ``main(argv)`` in this
process (:func:`run_cli`: a subprocess costs ~0.3 s of interpreter start-up);
:func:`run_cli_process` runs the real ``python -m reliable_smtp`` for the tests of
the entry point itself, the terminal encoding and the devserver's signals.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PASSWORD, USERNAME, free_port
from reliable_smtp import Mailer, Message, RetryPolicy, SMTPTransport, TransientError
from reliable_smtp._cli import main
from reliable_smtp.testing import LocalSMTPServer

WRONG_PASSWORD = "pw-Wrong-Okapi-9902-secret"


@pytest.fixture
def server() -> Iterator[LocalSMTPServer]:
    """A plain local relay, one mode only.

    Overrides conftest's ``server``, which runs every test twice (serial and
    pipelined): the check and the command line never depend on PIPELINING, and
    the delivery tests cover both modes.
    """
    with LocalSMTPServer() as running:
        yield running


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELIABLE_SMTP_")}
    env["RELIABLE_SMTP_LOCAL_HOSTNAME"] = "client.test"  # no getfqdn() lookups
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def run_cli(
    cwd: Path, *args: object, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``main(args)`` in this process, seeing what ``python -m reliable_smtp`` would.

    For the call only: the working directory is ``cwd`` (so its ``.env``), the
    environment is exactly ``env``, stdin holds ``input``, stdout/stderr are pipes
    that are no terminal, in the ``PYTHONIOENCODING`` of ``env``, and the root
    logger has no handlers, as in a fresh interpreter (pytest's would otherwise
    swallow a log record that Python's last-resort handler prints on stderr).
    Output is read back as ``subprocess.run(text=True)`` would (universal newlines).
    """
    argv = [str(arg) for arg in args]
    env = env if env is not None else cli_env()
    encoding = env.get("PYTHONIOENCODING", "utf-8")
    pipes = {name: io.BytesIO() for name in ("stdout", "stderr")}
    # Kept here: a TextIOWrapper closes its buffer when it is collected.
    streams = {name: io.TextIOWrapper(pipe, encoding=encoding) for name, pipe in pipes.items()}
    with pytest.MonkeyPatch.context() as patch:
        for name in set(os.environ) - set(env):
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.chdir(cwd)
        patch.setattr(logging.root, "handlers", [])
        patch.setattr(logging.root, "level", logging.WARNING)
        patch.setattr(sys, "stdin", io.StringIO(input or ""))
        for name, stream in streams.items():
            patch.setattr(sys, name, stream)
        try:
            status = main(argv)
        except SystemExit as exit:  # argparse: --version, usage errors
            status = exit.code if isinstance(exit.code, int) else 2
    out, err = (
        io.TextIOWrapper(io.BytesIO(streams[name].detach().getvalue()), encoding=encoding).read()
        for name in ("stdout", "stderr")
    )
    return subprocess.CompletedProcess(argv, status, out, err)


def run_cli_process(
    cwd: Path, *args: object, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``python -m reliable_smtp`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "reliable_smtp", *map(str, args)],
        cwd=cwd,
        env=env if env is not None else cli_env(),
        input=input,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def cli_main(workdir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`run_cli` in ``workdir`` with the default environment."""

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return run_cli(workdir, *args)

    return run


def check(cwd: Path, server: LocalSMTPServer | None, *args: object, **env: str) -> Any:
    """``check --json`` against ``server``; returns (process, parsed report)."""
    target = ["--host", "127.0.0.1"]
    if server is not None:
        target += ["--port", str(server.port)]
    done = run_cli(cwd, "check", "--json", *target, *args, env=cli_env(**env))
    assert PASSWORD not in done.stdout + done.stderr
    return done, json.loads(done.stdout)


def tls_args(server: LocalSMTPServer) -> list[str]:
    tls = "implicit" if server.tls == "implicit" else "starttls"
    return ["--tls", tls, "--ca-file", str(server.ca_file), "--username", USERNAME]


# -- check ---------------------------------------------------------------------------------


def test_check_passes_with_exit_0(workdir: Path, tls_server: LocalSMTPServer) -> None:
    # The real entry point, end to end: python -m reliable_smtp.
    done = run_cli_process(
        workdir,
        "check",
        "--host",
        "127.0.0.1",
        "--port",
        tls_server.port,
        *tls_args(tls_server),
        "--password-env",
        "SMTP_PW",
        env=cli_env(SMTP_PW=PASSWORD),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"Checking smtp://127.0.0.1:{tls_server.port}" in out
    for title in ("DNS resolution", "TCP connect", "Greeting", "EHLO", "STARTTLS", "AUTH"):
        assert re.search(rf"✔ {title}\s", out), title
    assert "TLSv1." in out
    assert "verified: yes" in out
    assert "AUTH LOGIN PLAIN" in out
    assert "✔ all 7 steps passed" in out
    assert PASSWORD not in out + done.stderr


def test_check_json_report(workdir: Path, smtps_server: LocalSMTPServer) -> None:
    done, report = check(
        workdir, smtps_server, *tls_args(smtps_server), RELIABLE_SMTP_PASSWORD=PASSWORD
    )

    assert done.returncode == 0, done.stderr
    assert report["ok"] is True
    assert report["failed_step"] is None
    assert [s["name"] for s in report["steps"]] == ["dns", "tcp", "tls", "greeting", "ehlo", "auth"]
    tls = report["steps"][2]
    assert tls["details"]["verified"] is True
    assert tls["details"]["not_after"]
    for step in report["steps"]:
        assert isinstance(step["seconds"], float)
        assert step["error"] is None
    assert report["target"]["password_set"] is True


def test_refused_port(workdir: Path) -> None:
    done = run_cli(workdir, "check", "--host", "127.0.0.1", "--port", free_port(), "--tls", "none")

    assert done.returncode == 1
    assert "✘ TCP connect" in done.stdout
    assert "cause:   connection refused" in done.stdout
    assert "fix:" in done.stdout


def test_implicit_tls_on_a_plaintext_port(workdir: Path, server: LocalSMTPServer) -> None:
    done, report = check(workdir, server, "--tls", "implicit")

    assert done.returncode == 1
    assert report["failed_step"] == "tls"
    failed = report["steps"][-1]
    assert failed["ok"] is False
    assert failed["rule"] == "tls-wrong-port"
    assert failed["cause"] == "this port expects STARTTLS (or plain SMTP), not implicit TLS"
    assert "tls=starttls" in failed["hint"]
    assert "port 465" in failed["hint"]
    assert "wrong version number" in failed["error"]
    assert failed["explanation"].startswith("this port does not speak implicit TLS")


def test_starttls_on_an_implicit_tls_port_times_out_at_the_greeting(
    workdir: Path, smtps_server: LocalSMTPServer
) -> None:
    done, report = check(
        workdir, smtps_server, "--tls", "starttls", "--ca-file", smtps_server.ca_file,
        "--timeout", "0.5",
    )  # fmt: skip

    assert done.returncode == 1
    failed = report["steps"][-1]
    assert failed["name"] == "greeting"
    assert failed["rule"] == "no-greeting"
    assert "implicit TLS" in failed["cause"]
    assert "tls=implicit" in failed["hint"]
    assert failed["seconds"] >= 0.5


def test_missing_starttls(workdir: Path, server: LocalSMTPServer) -> None:
    done, report = check(workdir, server, "--tls", "starttls")

    assert done.returncode == 1
    assert report["failed_step"] == "starttls"
    assert report["steps"][-1]["cause"] == "the server does not offer STARTTLS"


def test_bad_password(workdir: Path, tls_server: LocalSMTPServer) -> None:
    env = {"SMTP_PW": WRONG_PASSWORD}
    done, report = check(
        workdir, tls_server, *tls_args(tls_server), "--password-env", "SMTP_PW", **env
    )
    text = run_cli(
        workdir, "check", "--host", "127.0.0.1", "--port", tls_server.port,
        *tls_args(tls_server), "--password-env", "SMTP_PW", env=cli_env(**env),
    )  # fmt: skip

    assert done.returncode == 1
    assert text.returncode == 1
    failed = report["steps"][-1]
    assert failed["name"] == "auth"
    assert failed["rule"] == "bad-credentials"
    assert failed["outcome"] == "auth_or_config"
    assert failed["details"]["reply"]["code"] == 535
    assert "app password" in failed["hint"]
    assert "the server rejected the username or password" in text.stdout
    for output in (done.stdout, done.stderr, text.stdout, text.stderr):
        assert WRONG_PASSWORD not in output
    assert tls_server.auth_attempts == 2  # one per run


def test_relay_denied_with_send_to(workdir: Path, server: LocalSMTPServer) -> None:
    server.script("RCPT", "554 5.7.1 <bob@example.org>: Relay access denied")
    done, report = check(
        workdir,
        server,
        "--tls",
        "none",
        "--send-to",
        "bob@example.org",
        "--from",
        "app@example.com",
    )

    assert done.returncode == 1
    failed = report["steps"][-1]
    assert failed["name"] == "send"
    assert failed["rule"] == "relay-denied"
    assert failed["cause"] == "relay denied"
    assert failed["details"]["recipients"][0]["enhanced_code"] == "5.7.1"
    assert server.messages == []


def test_send_to_delivers_a_test_message(workdir: Path, server: LocalSMTPServer) -> None:
    done, report = check(
        workdir, server, "--tls", "none", "--send-to", "bob@example.org", "--from", "a@example.com"
    )

    assert done.returncode == 0, done.stdout
    assert report["steps"][-1]["details"]["recipients"][0]["outcome"] == "sent"
    assert server.messages[0].recipients == ("bob@example.org",)


def test_slow_server_times_out(workdir: Path, server: LocalSMTPServer) -> None:
    server.script("EHLO", hang=True)
    done, report = check(workdir, server, "--tls", "none", "--timeout", "0.5")

    assert done.returncode == 1
    failed = report["steps"][-1]
    assert failed["name"] == "ehlo"
    assert failed["rule"] == "timeout"
    assert "no reply in time" in failed["explanation"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "465", "--tls", "starttls"], "port 465 speaks implicit TLS"),
        (["--password-env", "NO_SUCH_VARIABLE_4711"], "NO_SUCH_VARIABLE_4711 is not set"),
        (["--timeout", "0"], "RELIABLE_SMTP_TIMEOUT"),
        (["--tls", "sometimes"], "invalid choice"),
        (["--send-to", "not an address", "--from", "a@example.com"], "test message"),
        (["--send-to", "bob@example.org"], "needs a sender"),
    ],
)
def test_configuration_errors_exit_2(
    cli_main: Callable[..., subprocess.CompletedProcess[str]], args: list[str], message: str
) -> None:
    done = cli_main("check", "--host", "127.0.0.1", *args)

    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_settings_come_from_the_environment_and_dotenv(
    workdir: Path, server: LocalSMTPServer
) -> None:
    (workdir / ".env").write_text(f"RELIABLE_SMTP_PORT={server.port}\nRELIABLE_SMTP_TLS=none\n")
    done = run_cli(workdir, "check", "--json", env=cli_env(RELIABLE_SMTP_HOST="127.0.0.1"))

    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["target"]["url"] == f"smtp+plain://127.0.0.1:{server.port}"


def test_ascii_markers_when_the_terminal_cannot_show_them(workdir: Path) -> None:
    # A real interpreter, so the encoding comes from PYTHONIOENCODING as in a terminal.
    done = run_cli_process(
        workdir, "check", "--host", "127.0.0.1", "--port", free_port(), "--tls", "none",
        env=cli_env(PYTHONIOENCODING="ascii"),
    )  # fmt: skip

    assert done.returncode == 1
    assert "FAIL TCP connect" in done.stdout
    assert "OK   DNS resolution" in done.stdout


def test_no_password_in_any_output(workdir: Path, tls_server: LocalSMTPServer) -> None:
    # Even when the server echoes it back (the CLI scrubs everything it prints).
    tls_server.script("AUTH", f"535 5.7.8 password {PASSWORD} not accepted")
    echoed = run_cli(
        workdir, "check", "--host", "127.0.0.1", "--port", tls_server.port,
        *tls_args(tls_server), env=cli_env(RELIABLE_SMTP_PASSWORD=PASSWORD),
    )  # fmt: skip
    assert echoed.returncode == 1
    assert "535 5.7.8 password ******** not accepted" in echoed.stdout
    outputs = [echoed.stdout, echoed.stderr]
    for extra in ([], ["--json"], ["--send-to", "bob@example.org", "--from", "app@example.com"]):
        done = run_cli(
            workdir, "check", "--host", "127.0.0.1", "--port", tls_server.port,
            *tls_args(tls_server), *extra, env=cli_env(RELIABLE_SMTP_PASSWORD=PASSWORD),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout
        outputs += [done.stdout, done.stderr]
    done = run_cli(
        workdir, "send", "--host", "127.0.0.1", "--port", tls_server.port, *tls_args(tls_server),
        "--from", "app@example.com", "--to", "bob@example.org", "--text", "hi",
        env=cli_env(RELIABLE_SMTP_PASSWORD=PASSWORD),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    outputs += [done.stdout, done.stderr]
    assert not [output for output in outputs if PASSWORD in output]


# -- explain -------------------------------------------------------------------------------


def test_explain_a_whole_reply_line(workdir: Path) -> None:
    done = run_cli(workdir, "explain", "550 5.1.1 <bob@example.org>: no such user")

    assert done.returncode == 0
    assert "outcome:  permanent - never retried" in done.stdout
    assert "the mailbox does not exist" in done.stdout
    assert "give_up" not in done.stderr  # the library's log records stay quiet without --log
    assert "phase:    rcpt (assumed" in done.stdout


def test_explain_separate_words_with_phase_as_json(
    cli_main: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    done = cli_main(
        "explain", "421", "4.7.0", "Try again in 30 seconds", "--phase", "MAIL", "--json"
    )

    assert done.returncode == 0
    verdict = json.loads(done.stdout)
    assert verdict["code"] == 421
    assert verdict["enhanced_code"] == "4.7.0"
    assert verdict["phase"] == "mail"
    assert verdict["phase_assumed"] is False
    assert verdict["outcome"] == "throttled"
    assert verdict["delay_hint"] == 30.0


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("535 5.7.8 Username and Password not accepted", "auth/config"),
        ("451 4.3.0 Temporary local problem", "transient"),
        ("550 5.4.5 Daily user sending quota exceeded", "throttled"),
    ],
)
def test_explain_classes(
    cli_main: Callable[..., subprocess.CompletedProcess[str]], reply: str, label: str
) -> None:
    done = cli_main("explain", reply)

    assert done.returncode == 0
    assert f"outcome:  {label}" in done.stdout


def test_explain_a_pasted_multiline_reply(
    cli_main: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    reply = "550-5.1.1 The email account that you tried to reach does not exist.\n550 5.1.1 Gmail"
    done = cli_main("explain", reply, "--json")

    verdict = json.loads(done.stdout)
    assert verdict["enhanced_code"] == "5.1.1"
    assert verdict["rule"] == "mailbox-does-not-exist"


def test_explain_rejects_what_is_not_a_reply(
    cli_main: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    assert cli_main("explain", "hello").returncode == 2
    assert cli_main("explain", "550", "--phase", "nowhere").returncode == 2


# -- send ----------------------------------------------------------------------------------


def relay(server: LocalSMTPServer) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(server.port), "--tls", "none"]


def test_send_from_flags(workdir: Path, server: LocalSMTPServer) -> None:
    (workdir / "report.pdf").write_bytes(b"%PDF-1.4 test")
    done = run_cli(
        workdir, "send", *relay(server), "--from", "App <app@example.com>",
        "--to", "ann@example.org", "--to", "bob@example.org", "--bcc", "audit@example.net",
        "--subject", "Hello", "--text", "-", "--html", "<b>hi</b>", "--attach", "report.pdf",
        "--results", "results.jsonl", input="plain body\n",
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert "✔ sent <" in done.stdout
    assert "to 3 recipients" in done.stdout
    assert re.search(r"✔ bob@example.org\s+sent\s+250", done.stdout)
    [received] = server.messages
    assert received.recipients == ("ann@example.org", "bob@example.org", "audit@example.net")
    message = received.message
    assert message["Subject"] == "Hello"
    assert "Bcc" not in message
    assert message.get_body(("plain",)).get_content().rstrip() == "plain body"
    assert [a.get_filename() for a in message.iter_attachments()] == ["report.pdf"]
    rows = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in rows] == ["sent"] * 3
    assert {"recipient", "code", "enhanced_code", "text", "explanation", "message_id"} <= set(
        rows[0]
    )


def test_send_reports_a_refused_recipient_with_exit_1(
    workdir: Path, server: LocalSMTPServer
) -> None:
    server.script("RCPT", "550 5.1.1 <bob@example.org>: no such user", recipient="bob@example.org")
    done = run_cli(
        workdir, "send", *relay(server), "--attempts", "1", "--from", "app@example.com",
        "--to", "ann@example.org", "--to", "bob@example.org", "--text", "hi",
    )  # fmt: skip

    assert done.returncode == 1
    assert "was not delivered to 1 of 2 recipients" in done.stdout
    assert re.search(r"✔ ann@example.org\s+sent", done.stdout)
    assert re.search(r"✘ bob@example.org\s+permanent\s+550 5.1.1", done.stdout)
    assert "the mailbox does not exist" in done.stdout
    assert "give_up" not in done.stderr  # the library's log records stay quiet without --log
    assert server.deliveries_to("ann@example.org") == 1


def test_send_an_eml_file_with_an_envelope_override(workdir: Path, server: LocalSMTPServer) -> None:
    (workdir / "m.eml").write_bytes(
        b"From: app@example.com\r\nTo: ann@example.org\r\nSubject: Saved\r\n\r\nbody\r\n"
    )
    done = run_cli(workdir, "send", *relay(server), "--eml", "m.eml", "--to", "qa@example.net")

    assert done.returncode == 0, done.stdout + done.stderr
    [received] = server.messages
    assert received.recipients == ("qa@example.net",)
    assert received.message["To"] == "ann@example.org"


def test_send_usage_errors_exit_2(
    cli_main: Callable[..., subprocess.CompletedProcess[str]], server: LocalSMTPServer
) -> None:
    no_recipient = cli_main("send", *relay(server), "--from", "app@example.com")
    bad_address = cli_main("send", *relay(server), "--from", "app", "--to", "x@example.org")
    missing_file = cli_main("send", *relay(server), "--eml", "nope.eml")

    assert [p.returncode for p in (no_recipient, bad_address, missing_file)] == [2, 2, 2]
    assert "--to" in no_recipient.stderr
    assert "nope.eml" in missing_file.stderr
    assert server.connections == 0


def test_bulk_send_from_csv(workdir: Path, server: LocalSMTPServer) -> None:
    server.script("RCPT", "550 5.1.1 no such user", recipient="gone@example.org")
    (workdir / "list.csv").write_text(
        "name,Email\nAnn,ann@example.org\nGone,gone@example.org\nBad,not-an-address\n"
        "Bob,bob@example.org\n"
    )
    done = run_cli(
        workdir, "send", *relay(server), "--attempts", "1", "--from", "app@example.com",
        "--subject", "News", "--text", "hello", "--recipients", "list.csv",
        "--results", "out.jsonl",
    )  # fmt: skip

    assert done.returncode == 1, done.stdout + done.stderr
    assert sorted(r for m in server.messages for r in m.recipients) == [
        "ann@example.org",
        "bob@example.org",
    ]
    # Progress on stderr: not a terminal here, so whole lines, the last one complete.
    assert "4/4 done (2 sent, 2 failed)" in done.stderr
    assert "line 4: skipped" in done.stderr
    table = dict(re.findall(r"^(sent|permanent|invalid|total)\s+(\d+)", done.stdout, re.M))
    assert table == {"sent": "2", "permanent": "1", "invalid": "1", "total": "4"}
    rows = [json.loads(line) for line in (workdir / "out.jsonl").read_text().splitlines()]
    by_line = {row["line"]: row for row in rows}
    assert by_line[2]["outcome"] == "sent"
    assert by_line[2]["recipient"] == "ann@example.org"
    assert by_line[3]["outcome"] == "permanent"
    assert by_line[3]["code"] == 550
    assert by_line[3]["explanation"]
    assert by_line[3]["message_id"]
    assert by_line[4]["outcome"] == "invalid"
    assert by_line[4]["recipient"] == "not-an-address"


def test_bulk_send_from_jsonl(workdir: Path, server: LocalSMTPServer) -> None:
    lines = [json.dumps({"email": f"user{i}@example.org", "name": f"U{i}"}) for i in range(6)]
    (workdir / "list.jsonl").write_text("\n".join(lines) + "\n")
    done = run_cli(
        workdir, "send", *relay(server), "--from", "app@example.com", "--text", "hi",
        "--recipients", "list.jsonl", "--concurrency", "3", "--log", "info",
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert len(server.messages) == 6
    assert re.search(r"^sent\s+6$", done.stdout, re.MULTILINE)
    assert "msg/s" in done.stderr
    assert "INFO reliable_smtp: " in done.stderr


def test_bulk_file_errors_exit_2(
    workdir: Path,
    cli_main: Callable[..., subprocess.CompletedProcess[str]],
    server: LocalSMTPServer,
) -> None:
    (workdir / "no-email.csv").write_text("name,address\nAnn,ann@example.org\n")
    (workdir / "broken.jsonl").write_text('{"email": "a@example.org"}\n{oops\n')
    (workdir / "l.csv").write_text("email\nann@example.org\n")
    common = ["send", *relay(server), "--from", "app@example.com", "--text", "x"]

    no_column = cli_main(*common, "--recipients", "no-email.csv")
    broken = cli_main(*common, "--recipients", "broken.jsonl")

    assert no_column.returncode == 2
    assert "no 'email' column" in no_column.stderr
    assert broken.returncode == 2
    assert "broken.jsonl:2" in broken.stderr
    bad_sender = cli_main(*common[:-4], "--from", "app", "--text", "x", "--recipients", "l.csv")
    assert bad_sender.returncode == 2
    assert "--from" in bad_sender.stderr
    assert server.connections == 0


# -- devserver -----------------------------------------------------------------------------


class DevServer:
    """``reliable-smtp devserver`` in a subprocess, read until it says where it listens."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reliable_smtp", "devserver", "--port", "0", *args],
            cwd=cwd,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.lines: list[str] = []
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"devserver exited: {self.process.communicate()}")
            self.lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        banner = "".join(self.lines)
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", banner)
        assert match, banner
        self.port = int(match.group(1))
        ca = re.search(r"CA certificate +(\S+)", banner)
        self.ca_file = ca.group(1) if ca else None

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=10)
        return self.process.returncode, "".join(self.lines) + out + err


@pytest.fixture
def devservers() -> Iterator[list[DevServer]]:
    started: list[DevServer] = []
    yield started
    for dev in started:
        if dev.process.poll() is None:
            dev.process.kill()
            dev.process.communicate()


def test_devserver_scripted_reply_then_capture(workdir: Path, devservers: list[DevServer]) -> None:
    outdir = workdir / "mail"
    refusing = DevServer(workdir, "--reply", "RCPT=450", "--outdir", str(outdir))
    devservers.append(refusing)
    message = Message(sender="app@example.com", to=["ann@example.org"], subject="Hi", text="x")
    transport = SMTPTransport("127.0.0.1", refusing.port, tls="none")
    with (
        Mailer(transport, retry=RetryPolicy.never()) as mailer,
        pytest.raises(TransientError) as raised,
    ):
        mailer.send(message)
    assert raised.value.code == 450
    time.sleep(0.3)  # the devserver polls every 0.1 s: let it print the scripted reply
    status, output = refusing.stop()
    assert status == 0, output
    assert "RCPT answers 450" in output
    assert "scripted; 1 time so far" in output
    assert "stopped: 0 messages received" in output
    assert not list(outdir.glob("*.eml"))

    capturing = DevServer(
        workdir, "--tls", "starttls", "--auth", f"{USERNAME}:{PASSWORD}", "--outdir", str(outdir)
    )
    devservers.append(capturing)
    assert capturing.ca_file
    assert Path(capturing.ca_file).exists()
    transport = SMTPTransport(
        "127.0.0.1", capturing.port, tls="starttls", ca_file=capturing.ca_file,
        username=USERNAME, password=PASSWORD,
    )  # fmt: skip
    with Mailer(transport, retry=RetryPolicy.never()) as mailer:
        mailer.send(message)
    deadline = time.monotonic() + 5
    while not list(outdir.glob("*.eml")) and time.monotonic() < deadline:
        time.sleep(0.05)
    [saved] = outdir.glob("*.eml")
    assert b"Subject: Hi" in saved.read_bytes()
    status, output = capturing.stop()
    assert status == 0, output
    assert "#1 from app@example.com to ann@example.org  'Hi'" in output
    assert str(saved.name) in output
    assert "stopped: 1 message received" in output


def test_devserver_stops_on_sigterm(workdir: Path, devservers: list[DevServer]) -> None:
    dev = DevServer(workdir)
    devservers.append(dev)
    dev.process.send_signal(signal.SIGTERM)
    out, _ = dev.process.communicate(timeout=10)
    assert dev.process.returncode == 0
    assert "stopped: 0 messages received" in out


def test_devserver_rejects_a_bad_reply_option(
    cli_main: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    done = cli_main("devserver", "--reply", "RCPT=hello")
    assert done.returncode == 2
    assert "COMMAND=CODE" not in done.stdout
    assert "must start with a code" in done.stderr


def test_devserver_port_in_use(
    cli_main: Callable[..., subprocess.CompletedProcess[str]], server: LocalSMTPServer
) -> None:
    done = cli_main("devserver", "--port", server.port)
    assert done.returncode == 1
    assert "cannot listen" in done.stderr


def test_version(cli_main: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = cli_main("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("reliable-smtp ")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal() -> None:
    from reliable_smtp._cli.send import Progress as _Progress

    ticks = iter([0.0, 1.0, 2.0, 4.0])
    terminal = FakeTerminal()
    progress = _Progress(4, terminal, clock=lambda: next(ticks))
    progress.update(1, 1, 0)
    progress.update(2, 1, 1)
    progress.finish(4, 3, 1)

    text = terminal.getvalue()
    assert "\n" not in text.rstrip("\n")
    assert text.endswith("\n")
    frames = text.rstrip("\n").split("\r")[1:]
    assert frames[0].startswith("1/4 done (1 sent, 0 failed)  1.0 msg/s  ETA 0:00:03")
    assert frames[-1].startswith("4/4 done (3 sent, 1 failed)  1.0 msg/s")


def test_progress_writes_periodic_lines_elsewhere() -> None:
    from reliable_smtp._cli.send import Progress as _Progress

    ticks = iter([0.0, 1.0, 6.0, 7.0, 8.0])
    log = io.StringIO()
    progress = _Progress(10, log, clock=lambda: next(ticks), interval=5.0)
    progress.update(1, 1, 0)  # 1 s after the start: too soon for a line
    progress.update(6, 6, 0)  # 6 s: a line
    progress.update(7, 7, 0)  # 1 s after the last line: too soon
    progress.finish(10, 10, 0)

    lines = log.getvalue().splitlines()
    assert [line.split(" done")[0] for line in lines] == ["6/10", "10/10"]
    assert "\r" not in log.getvalue()


def test_a_reader_that_goes_away_is_not_a_traceback(tmp_path: Path) -> None:
    # `reliable-smtp explain ... | head -1`: the pipe closes before the output is written.
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "reliable_smtp", "explain", "550", "5.1.1", "no such user"],
            cwd=tmp_path,
            env=cli_env(),
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(writer)
    assert "Traceback" not in done.stderr, done.stderr
    assert "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141
