"""Each script in examples/ runs to completion and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "from_env.py": [
        "password         **********",
        "1 sent after 1 attempt",
        "server received 1 message(s)",
    ],
    "outbox_send.py": [
        "entry 1: queued; same key again -> 1",
        "ann@example.org: sent (250",
        "gone@example.org: failed (550 5.1.1",
        "server received 1 message(s)",
    ],
    "quickstart.py": ["2 sent after 1 attempt", "Subject: =?utf-8?q?Your_sign-in_code"],
    "retry_and_results.py": [
        "2 sent after 2 attempts",
        "copies received by ann: 1, bob: 1",
        "delivered to: ann@example.org",
    ],
}


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for expected in EXPECTED[name]:
        assert expected in done.stdout
