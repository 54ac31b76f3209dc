"""Packaging of the framework drop-ins: the core never imports a framework, and a
contrib module without its framework fails with the install command."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ("django", "fastapi", "flask", "starlette", "werkzeug")


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_core_and_its_testing_helpers_import_no_framework() -> None:
    done = run(
        "import sys, reliable_smtp, reliable_smtp.testing, reliable_smtp.contrib\n"
        "import reliable_smtp.testing.pytest_plugin, reliable_smtp._cli\n"
        f"print(sorted(set({FRAMEWORKS!r}) & {{m.split('.')[0] for m in sys.modules}}))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("reliable_smtp.contrib.django", "django", "django"),
        ("reliable_smtp.contrib.fastapi", "fastapi", "fastapi"),
        ("reliable_smtp.contrib.flask", "flask", "flask"),
    ],
)
def test_a_contrib_module_without_its_framework_names_the_extra(
    module: str, framework: str, extra: str
) -> None:
    # sys.modules[name] = None makes `import name` fail as if it were not installed.
    done = run(f"import sys\nsys.modules[{framework!r}] = None\nimport {module}")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:")
    assert f"pip install 'reliable-smtp[{extra}]'" in last
