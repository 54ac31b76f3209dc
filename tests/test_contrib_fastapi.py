"""The FastAPI integration, through FastAPI's TestClient and a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from reliable_smtp import (
    AsyncMailer,
    AsyncOutbox,
    DeliveryReport,
    EntryState,
    Envelope,
    Message,
    OutboxError,
    OutboxWorker,
    PermanentError,
    RetryPolicy,
    SendResult,
    SMTPTransport,
    Transport,
    TransportClosedError,
)
from reliable_smtp.contrib.fastapi import (
    MailerDep,
    OutboxDep,
    add_error_handlers,
    get_mailer,
    mailer_lifespan,
    send_later,
)
from reliable_smtp.testing import LocalSMTPServer


@pytest.fixture
def smtp() -> Iterator[LocalSMTPServer]:
    with LocalSMTPServer() as running:
        yield running


def factory_for(server: LocalSMTPServer, **retry: Any) -> Callable[[], AsyncMailer]:
    def build() -> AsyncMailer:
        transport = SMTPTransport("127.0.0.1", server.port, tls="none")
        return AsyncMailer(transport, retry=RetryPolicy(**retry).without_waits())

    return build


def welcome(to: str) -> Message:
    return Message(sender="shop@example.com", to=[to], subject="Welcome", text="Hi.")


def app_with(factory: Callable[[], AsyncMailer], **lifespan: Any) -> FastAPI:
    app = FastAPI(lifespan=mailer_lifespan(factory, **lifespan))
    opened: list[AsyncMailer] = []
    app.state.opened = opened

    @app.post("/send")
    async def send(to: str, mailer: MailerDep) -> dict[str, Any]:
        opened.append(mailer)
        result = await mailer.send(welcome(to))
        return {"accepted": list(result.accepted), "code": result.recipients[to].reply.code}

    @app.post("/later")
    async def later(to: str, request: Request) -> dict[str, str]:
        request.app.state.task = send_later(request, welcome(to))
        return {"status": "queued"}

    return app


def test_one_mailer_per_app_shared_by_requests_and_closed_at_shutdown(
    smtp: LocalSMTPServer,
) -> None:
    app = app_with(factory_for(smtp))
    with TestClient(app) as client:
        for to in ("a@example.org", "b@example.org"):
            response = client.post("/send", params={"to": to})
            assert response.json() == {"accepted": [to], "code": 250}
    first, second = app.state.opened
    assert first is second
    assert smtp.connections == 1  # the pool kept the connection warm between requests
    assert list(smtp.commands_named("QUIT"))  # shutdown closed the pool
    with pytest.raises(TransportClosedError):
        asyncio.run(first.send(welcome("c@example.org")))


def test_a_restarted_app_gets_a_new_mailer(smtp: LocalSMTPServer) -> None:
    app = app_with(factory_for(smtp))
    for _ in range(2):
        with TestClient(app) as client:
            client.post("/send", params={"to": "a@example.org"})
    first, second = app.state.opened
    assert first is not second


class GatedTransport(Transport):
    """A real SMTP transport whose deliveries wait until the test opens the gate."""

    def __init__(self, inner: SMTPTransport) -> None:
        self.inner = inner
        self.name = inner.name
        self.gate: asyncio.Event | None = None

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        assert self.gate is not None
        await self.gate.wait()
        return await self.inner.deliver(envelope, content)

    async def aclose(self) -> None:
        await self.inner.aclose()
        await super().aclose()


def test_shutdown_waits_for_background_sends(smtp: LocalSMTPServer) -> None:
    gated = GatedTransport(SMTPTransport("127.0.0.1", smtp.port, tls="none"))

    @asynccontextmanager
    async def inner(app: FastAPI) -> AsyncIterator[None]:
        gated.gate = asyncio.Event()
        yield
        # Shutdown has begun and the send is still waiting: open the gate now. The
        # mailer must not be closed under it.
        assert not app.state.task.done()
        gated.gate.set()

    app = app_with(lambda: AsyncMailer(gated), inner=inner)
    with TestClient(app) as client:
        assert client.post("/later", params={"to": "late@example.org"}).json() == {
            "status": "queued"
        }
    outcome = app.state.task.result()
    assert isinstance(outcome, SendResult)
    assert outcome.accepted == ("late@example.org",)
    assert smtp.deliveries_to("late@example.org") == 1
    assert gated.closed


def test_shutdown_timeout_cancels_a_hung_send_and_says_so(
    smtp: LocalSMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    gated = GatedTransport(SMTPTransport("127.0.0.1", smtp.port, tls="none"))

    @asynccontextmanager
    async def inner(app: FastAPI) -> AsyncIterator[None]:
        gated.gate = asyncio.Event()  # never set: the send hangs
        yield

    app = app_with(lambda: AsyncMailer(gated), inner=inner, shutdown_timeout=0.05)
    with caplog.at_level(logging.ERROR, "reliable_smtp.contrib.fastapi"), TestClient(app) as client:
        client.post("/later", params={"to": "hung@example.org"})
    assert app.state.task.cancelled()
    assert "cancelled 1 mail send(s)" in caplog.text
    assert "shutdown_timeout" in caplog.text
    assert gated.closed
    assert smtp.messages == []


def test_inner_lifespan_state_is_passed_on(smtp: LocalSMTPServer) -> None:
    @asynccontextmanager
    async def inner(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        yield {"greeting": "hello"}

    app = FastAPI(lifespan=mailer_lifespan(factory_for(smtp), inner=inner))

    @app.get("/state")
    async def state(request: Request, mailer: MailerDep) -> dict[str, Any]:
        return {"greeting": request.state.greeting, "mailer": type(mailer).__name__}

    with TestClient(app) as client:
        assert client.get("/state").json() == {"greeting": "hello", "mailer": "AsyncMailer"}


def test_without_the_lifespan_the_dependency_says_how_to_fix_it() -> None:
    app = FastAPI()

    @app.get("/")
    async def index(mailer: MailerDep) -> str:
        return "unreachable"

    with TestClient(app) as client, pytest.raises(RuntimeError, match="mailer_lifespan"):
        client.get("/")
    assert get_mailer.__name__ == "get_mailer"


def test_errors_are_plain_exceptions_unless_handlers_are_added(smtp: LocalSMTPServer) -> None:
    smtp.script("RCPT", "550 5.1.1 No such user", times=None)
    app = app_with(factory_for(smtp))
    with TestClient(app) as client, pytest.raises(PermanentError):
        client.post("/send", params={"to": "gone@example.org"})


@pytest.mark.parametrize(
    ("reply", "status", "outcome"),
    [
        ("550 5.1.1 No such user", 502, "permanent"),
        ("451 4.3.0 Temporary local problem", 503, "transient"),
        ("535 5.7.8 Authentication credentials invalid", 500, "auth_or_config"),
    ],
)
def test_error_handlers_map_classes_to_statuses(
    smtp: LocalSMTPServer, reply: str, status: int, outcome: str
) -> None:
    smtp.script("RCPT", reply, times=None)
    app = app_with(factory_for(smtp, attempts=2))
    add_error_handlers(app)
    with TestClient(app) as client:
        response = client.post("/send", params={"to": "x@example.org"})
    assert response.status_code == status
    body = response.json()
    assert (body["outcome"], body["code"], body["phase"]) == (outcome, int(reply[:3]), "rcpt")
    assert "x@example.org" not in response.text


def test_error_handler_gives_retry_after_for_throttling(smtp: LocalSMTPServer) -> None:
    smtp.script("MAIL", "421 4.7.0 Try again in 120 seconds", times=None)
    app = app_with(factory_for(smtp, attempts=1))
    add_error_handlers(app)
    with TestClient(app) as client:
        response = client.post("/send", params={"to": "x@example.org"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "120"
    assert response.json()["outcome"] == "throttled"


def test_error_handler_answers_422_for_an_address_that_cannot_be_sent(
    smtp: LocalSMTPServer,
) -> None:
    app = app_with(factory_for(smtp))
    add_error_handlers(app)
    with TestClient(app) as client:
        response = client.post("/send", params={"to": "not-an-address"})
    assert response.status_code == 422
    assert smtp.messages == []


def test_the_lifespan_opens_an_outbox_whose_entries_a_worker_sends(
    smtp: LocalSMTPServer, tmp_path: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    opened: list[AsyncOutbox] = []

    def outbox() -> AsyncOutbox:
        opened.append(AsyncOutbox(url, recipient_policy=None))
        return opened[-1]

    app = FastAPI(lifespan=mailer_lifespan(factory_for(smtp), outbox=outbox))

    @app.post("/signup")
    async def signup(to: str, box: OutboxDep) -> dict[str, Any]:
        entry = await box.enqueue(welcome(to), idempotency_key=f"welcome-{to}")
        return {"id": entry.id, "state": entry.state.value}

    with TestClient(app) as client:
        first = client.post("/signup", params={"to": "ann@example.org"}).json()
        again = client.post("/signup", params={"to": "ann@example.org"}).json()
    assert first == again == {"id": 1, "state": "queued"}  # idempotent, durable
    assert smtp.messages == []  # the request only queued it
    with pytest.raises(OutboxError, match="closed"):  # closed at shutdown
        asyncio.run(opened[0].get(1))

    async def send_queue() -> EntryState:
        async with AsyncOutbox(url) as box:
            mailer = factory_for(smtp)()
            async with mailer:
                await OutboxWorker(box, mailer).run_until_idle()
            return (await box.get(1)).state

    assert asyncio.run(send_queue()) is EntryState.SENT
    assert smtp.deliveries_to("ann@example.org") == 1


def test_without_an_outbox_the_outbox_dependency_says_how_to_fix_it(
    smtp: LocalSMTPServer,
) -> None:
    app = FastAPI(lifespan=mailer_lifespan(factory_for(smtp)))

    @app.post("/signup")
    async def signup(box: OutboxDep) -> None:  # pragma: no cover - never reached
        raise AssertionError("no outbox")

    with TestClient(app) as client, pytest.raises(RuntimeError, match=r"outbox=AsyncOutbox"):
        client.post("/signup")
