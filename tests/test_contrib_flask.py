"""The Flask extension, through Flask's test client and a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("flask")

from flask import Flask

from reliable_smtp import (
    ConfigurationError,
    Mailer,
    MemoryTransport,
    Message,
    RecipientsRejectedError,
    RetryPolicy,
)
from reliable_smtp.contrib.flask import ReliableSMTP
from reliable_smtp.testing import LocalSMTPServer

USER, PASSWORD = "app", "pw-Zebra-7431-secret"


@pytest.fixture
def smtp() -> Iterator[LocalSMTPServer]:
    with LocalSMTPServer() as running:
        yield running


def welcome(to: str) -> Message:
    return Message(sender="shop@example.com", to=[to], subject="Welcome", text="Hi.")


def make_app(mail: ReliableSMTP, **config: Any) -> Flask:
    app = Flask("mailapp")
    app.config.update(config)
    mail.init_app(app)

    @app.post("/send/<to>")
    def send(to: str) -> dict[str, Any]:
        result = mail.send(welcome(to))
        return {"accepted": list(result.accepted), "mailer": id(mail.mailer)}

    return app


def relay(server: LocalSMTPServer, **more: Any) -> dict[str, Any]:
    return {
        "RELIABLE_SMTP_HOST": "127.0.0.1",
        "RELIABLE_SMTP_PORT": server.port,
        "RELIABLE_SMTP_TLS": "none",
        "RELIABLE_SMTP_RETRY": RetryPolicy().without_waits(),
        **more,
    }


def test_init_app_and_one_mailer_shared_by_request_threads(smtp: LocalSMTPServer) -> None:
    mail = ReliableSMTP()
    app = make_app(mail, **relay(smtp, RELIABLE_SMTP_MAX_CONNECTIONS=2))
    client = app.test_client()
    emails = [f"u{i}@example.org" for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda to: client.post(f"/send/{to}"), emails))
    assert [r.json["accepted"] for r in responses] == [[to] for to in emails]
    assert len({r.json["mailer"] for r in responses}) == 1
    assert sorted(m.recipients[0] for m in smtp.messages) == sorted(emails)
    assert smtp.connections <= 2  # the pool's limit, shared by every thread
    mail.close(app)
    assert list(smtp.commands_named("QUIT"))


def test_constructor_form_and_app_config_beats_the_environment(
    smtp: LocalSMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELIABLE_SMTP_HOST", "elsewhere.invalid")
    monkeypatch.setenv("RELIABLE_SMTP_RETRY_ATTEMPTS", "2")
    mail = ReliableSMTP()
    app = Flask("direct")
    app.config.update(relay(smtp))
    del app.config["RELIABLE_SMTP_RETRY"]
    ReliableSMTP.__init__(mail, app)
    with app.app_context():
        assert mail.send(welcome("a@example.org")).accepted == ("a@example.org",)
        assert mail.mailer.retry.attempts == 2  # not in app.config: from the environment
    mail.close(app)


def test_starttls_and_auth_from_config() -> None:
    with LocalSMTPServer(tls="starttls", auth={USER: PASSWORD}) as server:
        mail = ReliableSMTP()
        app = make_app(
            mail,
            RELIABLE_SMTP_HOST="127.0.0.1",
            RELIABLE_SMTP_PORT=server.port,
            RELIABLE_SMTP_TLS="starttls",
            RELIABLE_SMTP_CA_FILE=str(server.ca_file),
            RELIABLE_SMTP_USERNAME=USER,
            RELIABLE_SMTP_PASSWORD=PASSWORD,
        )
        assert app.test_client().post("/send/t@example.org").json["accepted"] == ["t@example.org"]
        mail.close(app)
        assert len(server.messages) == 1


@pytest.mark.parametrize(
    ("key", "value"), [("RELIABLE_SMTP_MAX_CONNECTIONS", 0), ("RELIABLE_SMTP_HOTS", "x")]
)
def test_bad_config_fails_at_init_app_naming_the_key(key: str, value: Any) -> None:
    app = Flask("bad")
    app.config[key] = value
    with pytest.raises(ConfigurationError, match=key):
        ReliableSMTP(app)


def test_recipient_policy_and_factory(smtp: LocalSMTPServer) -> None:
    mail = ReliableSMTP()
    app = make_app(mail, **relay(smtp))
    with app.app_context(), pytest.raises(RecipientsRejectedError):
        mail.send(welcome("dev@localhost"))  # the default policy refuses special-use names
    mail.close(app)

    memory = MemoryTransport()
    custom = ReliableSMTP(factory=lambda app: Mailer(memory, recipient_policy=None))
    other = make_app(custom)
    assert other.test_client().post("/send/dev@localhost").status_code == 200
    assert len(memory.outbox) == 1
    custom.close(other)


def test_misuse_says_what_to_do(smtp: LocalSMTPServer) -> None:
    mail = ReliableSMTP()
    with pytest.raises(RuntimeError, match="init_app"):
        mail.mailer_for(Flask("never-initialised"))
    app = make_app(mail, **relay(smtp))
    mail.close(app)
    with app.app_context(), pytest.raises(RuntimeError, match="closed"):
        mail.send(welcome("a@example.org"))


def test_the_mailer_is_closed_at_interpreter_exit(smtp: LocalSMTPServer) -> None:
    script = textwrap.dedent(
        f"""
        from flask import Flask
        from reliable_smtp import Message
        from reliable_smtp.contrib.flask import ReliableSMTP

        app = Flask("exiting")
        app.config.update(RELIABLE_SMTP_HOST="127.0.0.1", RELIABLE_SMTP_PORT={smtp.port},
                          RELIABLE_SMTP_TLS="none")
        mail = ReliableSMTP(app)
        with app.app_context():
            mail.send(Message(sender="s@example.com", to=["t@example.org"], subject="x",
                              text="y"))
        # no close(): the extension's atexit hook sends QUIT
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert len(smtp.messages) == 1
    assert list(smtp.commands_named("QUIT"))
