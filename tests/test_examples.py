"""Each script in examples/ runs to completion and prints what it promises."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

EXPECTED = {
    "django_app.py": [
        "sent: 1",
        "bob@example.org: 250 2.0.0 OK: queued after 2 attempt(s)",
        "copies: ann 1 bob 1",
        "refused: 550 5.1.1 rcpt",
    ],
    "django_outbox.py": [
        "rolled back: payment declined",
        "queued: 1",
        "sent: 1",
        "server received: Order 42 confirmed",
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
    "http_api_transport.py": [
        "check_transport: passed",
        "ann@example.org: sent - 250 2.0.0 queued by the API",
        "nobody@example.org: permanent - 550 5.1.1 no such user",
        "1 sent after 2 attempts",
        "attempt 1: throttled, then waited 1 s",
        "1 ambiguous after 1 attempt",
        "copies the API received: 1",
        "AuthOrConfigError: the API key was refused",
        "attempts: 1",
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
    "observability.py": [
        "result: 1 attempt(s); recipients: sent",
        "result: 2 attempt(s); recipients: sent",
        "result: 1 attempt(s); recipients: permanent",
        '"name": "reliable_smtp.send"',
        '"name": "reliable_smtp.attempt"',
        '"reliable_smtp.outcome": "throttled"',
        '"name": "reliable_smtp.sends"',
        '"name": "reliable_smtp.send.duration"',
        "server received: 2 messages",
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


def _imports(tree: ast.Module) -> set[tuple[str, str, str | None]]:
    found: set[tuple[str, str, str | None]] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {("", alias.name, alias.asname) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found |= {(node.module or "", alias.name, alias.asname) for alias in node.names}
    return found


def test_readme_shows_the_http_api_transport_as_the_example_has_it() -> None:
    # The README's "Writing your own transport" excerpt is the example's code, verbatim:
    # what the suite runs (test_example_runs) is what the README teaches. test_readme
    # executes the excerpt on its own; pyflakes' rules (ruff F) say its imports are exactly
    # what it uses - none missing (a name used only inside a method), none left over.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = (EXAMPLES / "http_api_transport.py").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", readme, flags=re.DOTALL | re.MULTILINE)
    [excerpt] = [b for b in blocks if "class HTTPAPITransport(Transport):" in b]
    tree = ast.parse(excerpt)
    last_import = max(
        node.end_lineno or node.lineno
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
    )
    code = "\n".join(excerpt.splitlines()[last_import:]).strip("\n")
    assert code.count("\n") > 100  # the whole transport, not a fragment
    assert code in example
    assert _imports(tree) <= _imports(ast.parse(example))
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "F", "--stdin-filename", "x.py", "-"],
        input=excerpt,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout
