"""Every Python snippet in README.md runs, and CI runs the README's own test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", README, flags=re.DOTALL | re.MULTILINE)


def test_readme_opens_with_the_two_commands() -> None:
    commands = blocks("sh")
    assert len(commands) >= 2
    first, second = commands[0], commands[1]
    assert "examples/quickstart.py" in first
    assert "pytest" in second
    # They come before anything else in the README.
    assert README.index(first) < README.index("```python")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "readme_command 2" in ci
    assert 'bash -c "$test_command"' in ci


@pytest.mark.parametrize("snippet", blocks("python"), ids=lambda s: s.splitlines()[0][:50])
def test_python_snippets_run(snippet: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's directory
    exec(compile(snippet, "README.md", "exec"), {"__name__": "readme"})
