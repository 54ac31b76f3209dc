"""Each script in examples/ runs to completion and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "django_app.py": [
        "sent: 1",
        "bob@example.org: 250 2.0.0 OK: queued after 2 attempt(s)",
        "copies: ann 1 bob 1",
        "refused: 550 5.1.1 rcpt",
    ],
    "fastapi_app.py": [
        "signup ann: 200 250 2.0.0 OK",
        "signup gone: 502 permanent 550",
        "server received: ann@example.org, bob@example.org",
    ],
    "flask_app.py": [
        "signups accepted: 6",
        "signup gone: 502 {'code': 550, 'error': 'permanent'}",
        "server received: 6 messages",
    ],
    "from_env.py": [
        "password         **********",
        "1 sent after 1 attempt",
        "server received 1 message(s)",
    ],
    "oauth2.py": [
        "<SMTPTransport smtp://smtp.gmail.com:587 user='app@example.com'>",
        "<SMTPTransport smtp://smtp.office365.com:587 user='app@example.com'>",
        "1 sent after 1 attempt\n  ops@example.org: sent",
        "token refreshes: 1 (after one refusal)",
        "tokens asked for: force_refresh=False, force_refresh=True",
        "Refused: the OAuth2 access token was refused twice, before and after a forced refresh",
        "setting to fix: oauth_token_provider",
        "server said:    535 5.7.8",
        "https://mail.google.com/",
        "logins tried: 2; messages received in all: 2",
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
