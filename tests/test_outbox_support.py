"""Fixtures for the outbox tests: a fresh SQLite file, and a fresh PostgreSQL database.

The PostgreSQL database (``reliable_smtp_test_<random>``) is created once per test
session on the machine's server and dropped at the end; each test gets its own
schema in it. Without a reachable server the PostgreSQL cases skip, saying how
to enable them - except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

ADMIN_URL = os.environ.get(
    "RELIABLE_SMTP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ENABLE = (
    "PostgreSQL is not reachable at {url} ({error}); start it (trust auth, user postgres, "
    "database test) or set RELIABLE_SMTP_TEST_POSTGRES_URL to an admin URL to run these tests"
)


def _url_for(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The URL of a fresh database for this session (dropped afterwards)."""
    try:
        import psycopg

        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except Exception as exc:  # ImportError or any connection failure
        reason = ENABLE.format(url=ADMIN_URL, error=exc)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, so the PostgreSQL tests must run: {reason}")
        pytest.skip(reason)
    name = f"reliable_smtp_test_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _url_for(name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """An outbox URL nobody has used yet: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/outbox.db"
    database: str = request.getfixturevalue("postgres_database")
    return f"{database}?schema=t_{secrets.token_hex(4)}"
