"""A Flask app that sends mail through reliable-smtp's ``init_app`` extension.

The extension reads ``RELIABLE_SMTP_*`` keys from ``app.config`` (the environment
fills in the rest), builds one thread-safe :class:`~reliable_smtp.Mailer` per app
on first use, keeps its connection warm between requests and closes it at exit.

Run it as a script: it starts a local SMTP server on 127.0.0.1, drives the app
with Flask's test client from several threads and prints what happened.

    python examples/flask_app.py
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask, request

from reliable_smtp import DeliveryError, Message, RetryPolicy
from reliable_smtp.contrib.flask import ReliableSMTP

mail = ReliableSMTP()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config or {})
    mail.init_app(app)

    @app.post("/signup")
    def signup() -> tuple[dict[str, Any], int]:
        to = request.args["email"]
        message = Message(
            sender="Shop <no-reply@example.com>", to=[to], subject="Welcome", text="Hi."
        )
        try:
            result = mail.send(message)
        except DeliveryError as error:
            return {"error": error.outcome.value, "code": error.code}, 502
        return {"accepted": list(result.accepted), "reply": str(result.recipients[to].reply)}, 200

    return app


def main() -> None:
    from reliable_smtp.testing import LocalSMTPServer

    with LocalSMTPServer() as server:
        server.script("RCPT", "550 5.1.1 No such user", recipient="gone@example.org", times=None)
        app = create_app(
            {
                "RELIABLE_SMTP_URL": server.url,  # smtp+plain://127.0.0.1:PORT
                "RELIABLE_SMTP_MAX_CONNECTIONS": 2,
                "RELIABLE_SMTP_RETRY": RetryPolicy().without_waits(),
            }
        )
        client = app.test_client()
        with ThreadPoolExecutor(4) as pool:
            emails = [f"user{i}@example.org" for i in range(6)]
            replies = list(
                pool.map(lambda e: client.post("/signup", query_string={"email": e}), emails)
            )
        print("signups accepted:", sum(r.status_code == 200 for r in replies))
        refused = client.post("/signup", query_string={"email": "gone@example.org"})
        print("signup gone:", refused.status_code, refused.json)
        mail.close(app)
        print("server received:", len(server.messages), "messages")
        print("connections used:", server.connections, "(RELIABLE_SMTP_MAX_CONNECTIONS=2)")


if __name__ == "__main__":
    main()
