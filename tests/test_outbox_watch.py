"""``reliable-smtp outbox stats --watch``: the live view of the queue, on real SQLite files.

In-process through ``main(argv)`` (not a terminal: a line per refresh), through
``watch_stats`` with an injected clock and sleep (exact rates, and a fake terminal
for the in-place redraw), and one real subprocess stopped with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reliable_smtp import EntryState, Message, Outbox
from reliable_smtp._cli import main
from reliable_smtp._cli.console import Console as _Console
from reliable_smtp._cli.outbox import watch_stats
from reliable_smtp._replies import Outcome, Phase, Reply
from reliable_smtp._result import RecipientStatus

#: Header, one line per state, the oldest due entry, the rate.
FRAME_LINES = 1 + len(EntryState) + 2


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.db'}"


def message(*to: str) -> Message:
    return Message(sender="app@example.com", to=list(to), subject="hi", text="body")


def sent(address: str) -> RecipientStatus:
    return RecipientStatus(
        recipient=address,
        outcome=Outcome.SENT,
        phase=Phase.DATA_END,
        reply=Reply(250, "2.0.0", "queued"),
        explanation="accepted",
        retryable=False,
    )


class Terminal(io.StringIO):
    """What a terminal looks like to the command: a stream that says it is a TTY."""

    def isatty(self) -> bool:
        return True


class Clock:
    """Epoch and monotonic time for the view; ``sleep`` advances it and runs ``between``."""

    def __init__(self, between: list[int]) -> None:
        self.now = 1_000_000.0
        self.outbox: Outbox | None = None  # set once the outbox (on this clock) is open
        self.between = list(between)  # entries to send during each sleep
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        assert self.outbox is not None
        for claim in self.outbox.store.claim(
            "test-worker", limit=self.between.pop(0), lease_seconds=60, now=self.now
        ):
            assert self.outbox.store.settle(
                claim, {r: sent(r) for r in claim.recipients}, now=self.now
            )


def test_not_a_terminal_appends_a_line_per_refresh(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Outbox(url) as outbox:
        for address in ("a@example.org", "b@example.org"):
            outbox.enqueue(message(address))
    # --count (hidden) stops after three refreshes; 1 ms apart, nothing changes between them.
    status = main(
        ["outbox", "stats", "--outbox", url, "--watch", "--interval", "0.001", "--count", "3"]
    )
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 3
    assert "\x1b" not in out  # plain text for a pipe or a log
    for line in lines:
        assert (
            "queued=2 sending=0 deferred=0 sent=0 failed=0 ambiguous=0 cancelled=0 | "
            "oldest due entry: due " in line
        )
    assert lines[0].endswith("| rate: - (after the next refresh)")
    assert lines[1].endswith("| rate: 0.0 sent/s, 0.0 failed/s")
    assert lines[2].endswith("| rate: 0.0 sent/s, 0.0 failed/s")


def test_the_rate_is_the_change_of_the_counts_over_the_interval(url: str) -> None:
    clock = Clock(between=[3, 4])  # 3 sent in the first 2 s, 4 in the next
    with Outbox(url, clock=clock) as outbox:
        clock.outbox = outbox
        for n in range(7):
            outbox.enqueue(message(f"r{n}@example.org"))
        stream = io.StringIO()
        status = watch_stats(
            outbox.store,
            _Console(stream, io.StringIO()),
            interval=2.0,
            count=3,
            clock=clock,
            monotonic=clock,
            sleep=clock.sleep,
        )
    assert status == 0
    assert clock.sleeps == [2.0, 2.0]
    lines = stream.getvalue().splitlines()
    assert [line.split(" | ")[0].split(" ", 2)[2] for line in lines] == [
        "queued=7 sending=0 deferred=0 sent=0 failed=0 ambiguous=0 cancelled=0",
        "queued=4 sending=0 deferred=0 sent=3 failed=0 ambiguous=0 cancelled=0",
        "queued=0 sending=0 deferred=0 sent=7 failed=0 ambiguous=0 cancelled=0",
    ]
    assert [line.split(" | ")[2] for line in lines] == [
        "rate: - (after the next refresh)",
        "rate: 1.5 sent/s, 0.0 failed/s",
        "rate: 2.0 sent/s, 0.0 failed/s",
    ]
    assert lines[0].split(" | ")[1] == "oldest due entry: due 0.0 s ago"
    assert lines[2].split(" | ")[1] == "nothing is due"


def test_a_terminal_is_redrawn_in_place(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # wide enough for the whole header
    clock = Clock(between=[1])
    with Outbox(url, clock=clock) as outbox:
        clock.outbox = outbox
        outbox.enqueue(message("a@example.org"))
        outbox.enqueue(message("b@example.org"))
        terminal = Terminal()
        status = watch_stats(
            outbox.store,
            _Console(terminal, io.StringIO()),
            interval=5.0,
            count=2,
            clock=clock,
            monotonic=clock,
            sleep=clock.sleep,
        )
    assert status == 0
    screen = terminal.getvalue()
    first, redraw, second = screen.partition(f"\x1b[{FRAME_LINES}A\r\x1b[J")
    assert redraw, screen  # back up over the whole first frame, clear, draw the second
    assert first.count("\n") == FRAME_LINES
    assert second.count("\n") == FRAME_LINES
    assert "\x1b" not in first + second  # one redraw sequence, nothing else
    assert first.startswith(f"outbox {url}  ")
    assert "(every 5 s, Ctrl-C to quit)" in first
    assert "  queued            2\n" in first
    assert "  queued            1\n" in second
    assert "  sent              1\n" in second
    assert first.endswith("rate: - (after the next refresh)\n")
    assert second.endswith("rate: 0.2 sent/s, 0.0 failed/s\n")


def test_ctrl_c_ends_the_view_with_status_0(url: str) -> None:
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with Outbox(url) as outbox:
        stream = io.StringIO()
        status = watch_stats(
            outbox.store, _Console(stream, io.StringIO()), interval=1.0, sleep=interrupted
        )
    assert status == 0
    assert len(stream.getvalue().splitlines()) == 1


def test_watch_and_json_are_refused(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "stats", "--outbox", url, "--watch", "--json"]) == 2
    assert "--watch and --json do not go together" in capsys.readouterr().err


@pytest.mark.parametrize("interval", ["0", "-1", "soon", "inf"])
def test_an_interval_must_be_a_positive_number(
    url: str, interval: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["outbox", "stats", "--outbox", url, "--watch", "--interval", interval])
    assert exited.value.code == 2
    assert "is not a number of seconds above 0" in capsys.readouterr().err


def test_sigint_stops_a_real_watch_with_status_0(url: str, tmp_path: Path) -> None:
    with Outbox(url) as outbox:
        outbox.enqueue(message("a@example.org"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELIABLE_SMTP_")}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "reliable_smtp", "outbox", "stats", "--outbox", url, "--watch"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()  # the first refresh is on screen: it is watching
        assert "queued=1" in first
        watcher.send_signal(signal.SIGINT)
        _, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    assert "Traceback" not in err


def test_a_narrow_terminal_gets_lines_cut_to_its_width(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Wrapped lines would take two rows each and break moving back over the frame.
    monkeypatch.setenv("COLUMNS", "30")
    clock = Clock(between=[0])
    with Outbox(url, clock=clock) as outbox:
        clock.outbox = outbox
        ambiguous = outbox.enqueue(message("maybe@example.org"))
        (claim,) = outbox.store.claim("dead-worker", limit=1, lease_seconds=1.0, now=clock.now)
        outbox.store.mark_final_dot(claim, claim.recipients, now=clock.now)
        outbox.store.recover(now=clock.now + 5)
        assert outbox.get(ambiguous.id).state is EntryState.AMBIGUOUS
        terminal = Terminal()
        watch_stats(
            outbox.store,
            _Console(terminal, io.StringIO()),
            interval=1.0,
            count=2,
            clock=clock,
            monotonic=clock,
            sleep=clock.sleep,
        )
    first, redraw, second = terminal.getvalue().partition(f"\x1b[{FRAME_LINES}A\r\x1b[J")
    assert redraw
    for frame in (first, second):
        lines = frame.splitlines()
        assert len(lines) == FRAME_LINES
        assert max(len(line) for line in lines) == 29  # one column spare: no wrap
        assert f"  {'ambiguous':<10} {1:>8}  <- need a decision"[:29] in lines
