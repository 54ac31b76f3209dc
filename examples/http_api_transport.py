"""A transport for an HTTP mail API, written with reliable-smtp's public transport kit alone.

Many providers take mail over HTTPS as well as SMTP. ``HTTPAPITransport`` below is a
complete :class:`reliable_smtp.Transport` for an API of the usual shape - ``POST
/v3/mail/send`` with a bearer key and a JSON body, ``202 Accepted`` with one result
per recipient, 4xx/5xx with ``Retry-After`` when rate limited - and the script runs it
against a fake API on 127.0.0.1:

1. ``check_transport``: the transport keeps the contract the mailer relies on;
2. the API refuses one recipient (550 5.1.1 in its result): the other got the message;
3. a 429 with ``Retry-After: 1``: the mailer waits what the API asked, then sends;
4. the connection drops after the request was written: AMBIGUOUS, never resent;
5. a revoked API key (401): ``AuthOrConfigError``, never retried.

    python examples/http_api_transport.py
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from reliable_smtp import (
    AmbiguousDeliveryError,
    AuthOrConfigError,
    ConfigurationError,
    DeliveryError,
    DeliveryReport,
    Envelope,
    Mailer,
    Message,
    Outcome,
    PermanentError,
    Phase,
    RecipientStatus,
    Reply,
    RetryPolicy,
    Transport,
    Verdict,
)
from reliable_smtp.testing import check_transport_sync

# A 202 that does not say what became of a recipient: the API has taken the message.
_UNACCOUNTED = Verdict(
    outcome=Outcome.AMBIGUOUS,
    explanation="the API took the request but its answer does not account for this "
    "recipient: it may have the message; not resent, to avoid a duplicate",
)


class HTTPAPITransport(Transport):
    """Sends through a provider's HTTP mail API: ``POST /v3/mail/send``, JSON, a bearer key.

    Each delivery is one request on a fresh connection (so there is nothing to forget
    after ``fork()``); http.client blocks, so it runs in a worker thread, every socket
    wait bounded by ``timeout``.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigurationError(
                f"base_url must look like https://api.example.com, got {base_url!r}",
                setting="base_url",
            )
        self._url = url
        self._api_key = api_key  # never in name or repr: check_transport verifies it
        self.timeout = timeout
        self.name = f"{url.scheme}://{url.netloc}/v3/mail/send"

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        self.ensure_open()
        body = json.dumps(
            {
                "from": envelope.sender,
                "to": list(envelope.recipients),
                "raw": base64.b64encode(content).decode("ascii"),
            }
        ).encode()
        try:
            status, headers, answer = await asyncio.to_thread(self._post, body)
        except AmbiguousDeliveryError as lost:
            # The whole request was written and no answer came: the API may have the
            # message. Every recipient shares that fate; the mailer will not resend it.
            return self._everyone(envelope, lost)
        if status != 202:
            raise self._refusal(status, headers, answer)
        try:
            results = {r["email"]: r for r in json.loads(answer)["results"]}
            statuses = {r: self._status(r, results.get(r)) for r in envelope.recipients}
        except (ValueError, KeyError, TypeError):  # a 202 we cannot read: it took the message
            statuses = {r: self._status(r, None) for r in envelope.recipients}
        return DeliveryReport.in_envelope_order(envelope, statuses, transport_name=self.name)

    def _post(self, body: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request; raises the library's error for a failed connection, by phase."""
        host, port = self._url.hostname or "", self._url.port
        connection = (
            http.client.HTTPSConnection(host, port, timeout=self.timeout)
            if self._url.scheme == "https"
            else http.client.HTTPConnection(host, port, timeout=self.timeout)
        )
        phase = Phase.CONNECT  # nothing sent yet
        try:
            connection.connect()
            phase = Phase.DATA  # writing the request: a failure here delivers nothing
            connection.request(
                "POST",
                "/v3/mail/send",
                body,
                {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"},
            )
            phase = Phase.DATA_END  # written whole: from here on the API may have it
            response = connection.getresponse()
            return response.status, response.msg, response.read()
        except ssl.SSLCertVerificationError as exc:
            verdict = Verdict(
                outcome=Outcome.AUTH_OR_CONFIG,
                explanation="the API's certificate did not verify: fix the CA bundle or the "
                "base_url's host name; never disable verification",
            )
            raise DeliveryError.from_verdict(
                verdict, f"TLS failed: {exc}", phase=Phase.TLS, transport_name=self.name
            ) from exc
        except (OSError, http.client.HTTPException) as exc:  # timeouts are OSErrors too
            raise DeliveryError.from_connection_loss(
                f"{type(exc).__name__}: {exc}",
                phase=phase,
                timed_out=isinstance(exc, TimeoutError),
                transport_name=self.name,
            ) from exc
        finally:
            connection.close()

    def _status(self, recipient: str, result: Mapping[str, Any] | None) -> RecipientStatus:
        """A recipient's status from its entry in the 202 answer, classified like SMTP."""
        if result is None:
            return RecipientStatus.from_verdict(
                recipient, _UNACCOUNTED, phase=Phase.DATA_END, transport_name=self.name
            )
        if result["status"] == "queued":
            reply, phase = Reply(250, "2.0.0", "queued by the API"), Phase.DATA_END
        else:  # the API relays the receiving server's refusal, e.g. 550 5.1.1
            reply = Reply(int(result["code"]), result.get("enhanced_code"), result["reason"])
            phase = Phase.RCPT
        return RecipientStatus.from_reply(recipient, reply, phase=phase, transport_name=self.name)

    def _refusal(
        self, status: int, headers: http.client.HTTPMessage, answer: bytes
    ) -> DeliveryError:
        """The error for a request the API refused as a whole: nobody got the message."""
        wait = _retry_after(headers)
        if status in (401, 403):
            verdict = Verdict(
                outcome=Outcome.AUTH_OR_CONFIG,
                explanation="the API key was refused, or lacks the mail.send permission: "
                "set a valid key (api_key)",
            )
        elif status == 429 or (wait is not None and status >= 400):
            verdict = Verdict(
                outcome=Outcome.THROTTLED,
                explanation="the API's rate limit: retried after the wait it asked for",
                retryable=True,
                delay_hint=wait,
            )
        elif status >= 500 or status == 408:
            verdict = Verdict(
                outcome=Outcome.TRANSIENT,
                explanation="the API failed on its side; nothing was delivered: retried",
                retryable=True,
            )
        else:  # 400, 413, 422...: this request can never succeed as it is
            verdict = Verdict(
                outcome=Outcome.PERMANENT,
                explanation="the API refused the request itself: see its message",
            )
        # No recipient was reached: in SMTP terms the login, or the transaction as a whole.
        phase = Phase.AUTH if verdict.outcome is Outcome.AUTH_OR_CONFIG else Phase.MAIL
        text = answer[:300].decode("utf-8", "replace")
        return DeliveryError.from_verdict(
            verdict,
            f"the mail API answered HTTP {status}: {text}",
            phase=phase,
            transport_name=self.name,
        )

    def _everyone(self, envelope: Envelope, error: DeliveryError) -> DeliveryReport:
        statuses = {
            r: RecipientStatus.from_error(r, error, transport_name=self.name)
            for r in envelope.recipients
        }
        return DeliveryReport.in_envelope_order(envelope, statuses, transport_name=self.name)


def _retry_after(headers: http.client.HTTPMessage) -> float | None:
    """Seconds the API asked us to wait: ``Retry-After`` or ``X-RateLimit-Reset`` (epoch)."""
    try:
        if (after := headers.get("Retry-After")) is not None:
            return max(0.0, float(after))
        if (reset := headers.get("X-RateLimit-Reset")) is not None:
            return max(0.0, float(reset) - time.time())
    except ValueError:  # an HTTP date, or garbage: fall back to the mailer's backoff
        pass
    return None


# -- the fake provider and the demonstration ------------------------------------------------


class FakeMailAPI(ThreadingHTTPServer):
    """The provider on 127.0.0.1: accepts mail for a key, refuses ``nobody@``, misbehaves on cue.

    ``cues`` lists what the next requests get: ``"throttle"`` (429, ``Retry-After: 1``)
    or ``"drop"`` (the message is taken, then the connection closes without an answer).
    ``received`` holds every message the API took.
    """

    def __init__(self, api_key: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api_key = api_key
        self.cues: list[str] = []
        self.received: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeMailAPI

    def do_POST(self) -> None:
        api = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Authorization") != f"Bearer {api.api_key}":
            self._answer(401, {"errors": [{"message": "the API key is invalid or revoked"}]})
            return
        cue = api.cues.pop(0) if api.cues else ""
        if cue == "throttle":
            self._answer(429, {"errors": [{"message": "too many requests"}]}, retry_after="1")
            return
        request = json.loads(body)
        api.received.append(request)
        if cue == "drop":
            self.close_connection = True  # took the message; the answer never leaves
            return
        refused = {
            "status": "rejected",
            "code": 550,
            "enhanced_code": "5.1.1",
            "reason": "no such user",
        }
        results = [
            {"email": r, **(refused if r.startswith("nobody@") else {"status": "queued"})}
            for r in request["to"]
        ]
        self._answer(202, {"results": results})

    def _answer(self, status: int, body: object, *, retry_after: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the script prints what matters


@contextmanager
def running(api: FakeMailAPI) -> Iterator[FakeMailAPI]:
    # A short poll interval: shutdown() waits for it (the default is half a second).
    thread = threading.Thread(target=api.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.shutdown()
        api.server_close()
        thread.join()


def receipt(*to: str) -> Message:
    return Message(sender="shop@example.com", to=list(to), subject="Receipt", text="Thanks!")


def main() -> None:
    key = "example-api-key-1234"
    fast = RetryPolicy(attempts=3, initial_wait=0.1, jitter=0.0)
    with running(FakeMailAPI(key)) as api:
        print("1. The contract")
        check_transport_sync(lambda: HTTPAPITransport(api.url, key, timeout=10))
        print("   check_transport: passed")

        with Mailer(HTTPAPITransport(api.url, key, timeout=10), retry=fast) as mailer:
            print("2. One recipient refused")
            try:
                mailer.send(receipt("ann@example.org", "nobody@example.org"))
            except PermanentError as error:
                assert error.result is not None
                print(error.result.describe())

            print("3. Rate limited")
            api.cues.append("throttle")
            result = mailer.send(receipt("ann@example.org"))
            print(result.describe())
            for attempt in result.attempts:
                waited = f", then waited {attempt.delay_after:.0f} s" if attempt.delay_after else ""
                print(f"   attempt {attempt.number}: {attempt.outcome.value}{waited}")

            print("4. The connection drops after the request was written")
            api.cues.append("drop")
            before = len(api.received)
            try:
                mailer.send(receipt("bob@example.org"))
            except AmbiguousDeliveryError as error:
                assert error.result is not None
                print(f"   {error.result.summary()}: {error.explanation}")
                print(f"   copies the API received: {len(api.received) - before}")

        print("5. A revoked API key")
        with Mailer(HTTPAPITransport(api.url, "revoked-key-0000", timeout=10)) as mailer:
            try:
                mailer.send(receipt("ann@example.org"))
            except AuthOrConfigError as error:
                assert error.result is not None
                print(f"   {type(error).__name__}: {error.explanation}")
                print(f"   attempts: {len(error.result.attempts)}")


if __name__ == "__main__":
    main()
