"""A FastAPI app that sends mail through reliable-smtp: lifespan, dependency, errors.

The mailer is opened once when the app starts (``mailer_lifespan``), handed to
path operations (``MailerDep``), and closed at shutdown after the background
sends (``send_later``) have finished. ``add_error_handlers`` turns a refused
recipient into a 502 with the SMTP facts instead of a bare 500.

Run it as a script: it starts a local SMTP server on 127.0.0.1, drives the app
with FastAPI's TestClient and prints what happened. Serve it for real with
``RELIABLE_SMTP_URL=smtp://... uvicorn examples.fastapi_app:app``.

    python examples/fastapi_app.py
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from reliable_smtp import AsyncMailer, Message, RetryPolicy, SMTPTransport
from reliable_smtp.contrib.fastapi import MailerDep, add_error_handlers, mailer_lifespan, send_later


def create_app(factory: Callable[[], AsyncMailer] | None = None) -> FastAPI:
    app = FastAPI(lifespan=mailer_lifespan(factory))
    add_error_handlers(app)

    @app.post("/signup")
    async def signup(email: str, mailer: MailerDep) -> dict[str, object]:
        result = await mailer.send(
            Message(
                sender="Shop <no-reply@example.com>",
                to=[email],
                subject="Welcome",
                text="Thanks for signing up.",
            )
        )
        status = result.recipients[email]
        return {"accepted": list(result.accepted), "reply": str(status.reply)}

    @app.post("/newsletter")
    async def newsletter(email: str, request: Request) -> dict[str, str]:
        message = Message(
            sender="Shop <news@example.com>", to=[email], subject="News", text="Hello."
        )
        send_later(request, message)  # the response does not wait; shutdown does
        return {"status": "queued"}

    return app


app = create_app()  # configured from RELIABLE_SMTP_* at startup


def main() -> None:
    from reliable_smtp.testing import LocalSMTPServer

    with LocalSMTPServer() as server:
        server.script("RCPT", "550 5.1.1 No such user", recipient="gone@example.org", times=None)

        def local_mailer() -> AsyncMailer:
            transport = SMTPTransport("127.0.0.1", server.port, tls="none")
            return AsyncMailer(transport, retry=RetryPolicy().without_waits())

        with TestClient(create_app(local_mailer)) as client:
            ok = client.post("/signup", params={"email": "ann@example.org"})
            print("signup ann:", ok.status_code, ok.json()["reply"])
            refused = client.post("/signup", params={"email": "gone@example.org"})
            body = refused.json()
            print("signup gone:", refused.status_code, body["outcome"], body["code"])
            queued = client.post("/newsletter", params={"email": "bob@example.org"})
            print("newsletter bob:", queued.json()["status"])
        # Leaving the TestClient ran the shutdown: the background send has finished.
        print("server received:", ", ".join(m.recipients[0] for m in server.messages))


if __name__ == "__main__":
    main()
