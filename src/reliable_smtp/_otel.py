"""OpenTelemetry traces and metrics for reliable-smtp, as a hook (:class:`OpenTelemetryHooks`).

Opt in per mailer: ``AsyncMailer(transport, hooks=[OpenTelemetryHooks()])``. It
needs only ``opentelemetry-api`` (``pip install 'reliable-smtp[otel]'``); the
application installs and configures the SDK and its exporters. Without the API
the hook registers nothing and costs nothing.

What it records (names namespaced ``reliable_smtp.*`` where the semantic
conventions have none):

* one ``reliable_smtp.send`` span (CLIENT) per ``send()``, the current span while
  the send runs, with ``server.address``/``server.port``, the outcome, the recipient
  counts, ``error.type`` and an ERROR status when it failed;
* on it, one ``reliable_smtp.attempt`` event per attempt (its outcome, reply code,
  enhanced code, phase, duration), one ``reliable_smtp.recipient`` event per
  recipient an attempt did not deliver to, and the session's events (``connect``,
  ``tls``, ``auth``, ``rate_limit_wait``). Events, not child spans: measured with the
  SDK, a span costs 20-45 us of CPU and an event about 6 us, against ~300 us for a
  whole send to a local sink - and attempts are sequential, so a span per attempt
  would add no structure that the events' timestamps do not show;
* metrics: ``reliable_smtp.sends``, ``reliable_smtp.recipients``,
  ``reliable_smtp.attempts``, ``reliable_smtp.throttled`` (counters),
  ``reliable_smtp.send.duration`` and ``reliable_smtp.rate_limit.wait``
  (histograms, seconds), ``reliable_smtp.connections`` (an observable up-down counter
  of the pooled connections of every transport a send went through, by
  ``reliable_smtp.connection.state`` idle/used, after ``db.client.connection.count``),
  and with :func:`observe_outbox` the outbox's
  ``reliable_smtp.outbox.entries`` (by state), ``reliable_smtp.outbox.oldest_due.age``
  and ``reliable_smtp.outbox.enqueued``.

Never recorded: addresses (recipients are counted; with ``address_hash_key`` each
refused recipient's keyed hash is added), message content, reply text (servers
echo addresses, and sometimes what the client sent), credentials.

Trace context through the outbox: ``Outbox.enqueue`` stores the caller's context
(W3C ``traceparent``) in the entry's metadata under :data:`TRACE_CONTEXT_KEY`; the
worker sends inside :func:`use_trace_context` so the send span is the child of the
span that enqueued it, hours later, in another process. A parent, not only a link (the
messaging conventions' default for consumers, which may process batches): an outbox
send continues exactly one enqueue, backends that ignore links still show one trace,
and a parent-based sampler keeps or drops the request and its mail together.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import DeliveryError, InvalidMessageError, ReliableSMTPError
from ._hooks import (
    AttemptFinished,
    MailerHooks,
    SendFinished,
    SendStarted,
    SessionEvent,
)
from ._replies import Outcome

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
except ImportError:  # pragma: no cover - depends on the environment
    API_AVAILABLE = False
else:
    API_AVAILABLE = True

if TYPE_CHECKING:
    from ._transports.base import Transport

__all__ = [
    "TRACE_CONTEXT_KEY",
    "OpenTelemetryHooks",
    "extract_trace_context",
    "inject_trace_context",
    "observe_outbox",
    "use_trace_context",
]

logger = logging.getLogger("reliable_smtp")

_SCOPE = "reliable_smtp"

#: The outbox entry's metadata key holding the enqueuing trace context (a dict of
#: W3C Trace Context headers: ``traceparent``, ``tracestate``).
TRACE_CONTEXT_KEY = "reliable_smtp.trace_context"

#: Advisory histogram boundaries in seconds (the semantic conventions' for durations).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


def _version() -> str:
    from . import __version__

    return __version__


@dataclass(slots=True, kw_only=True)
class _SendSpans:
    """The spans and attached contexts of the send under way in this task."""

    span: Any
    token: object
    transport: str
    server: str | None
    metric_attributes: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[_SendSpans | None] = ContextVar("reliable_smtp_otel_send", default=None)


def _transport_attributes(transport: Transport) -> dict[str, Any]:
    """``reliable_smtp.transport`` (a kind, low-cardinality) and the server's address."""
    kind = transport.name.split(":", 1)[0].split("(", 1)[0] or type(transport).__name__
    attributes: dict[str, Any] = {"reliable_smtp.transport": kind}
    host, port = getattr(transport, "host", None), getattr(transport, "port", None)
    if isinstance(host, str) and host:
        attributes["server.address"] = host
        if isinstance(port, int) and not isinstance(port, bool):
            attributes["server.port"] = port
        attributes["network.transport"] = "tcp"
        attributes["network.protocol.name"] = "smtp"
    return attributes


def _outcome_of(error: BaseException | None) -> str:
    if error is None:
        return Outcome.SENT.value
    if isinstance(error, DeliveryError):
        return error.outcome.value
    if isinstance(error, InvalidMessageError):
        return "invalid"
    if isinstance(error, ReliableSMTPError):
        return "error"
    return "cancelled" if type(error).__name__ == "CancelledError" else "error"


def _error_type(error: BaseException) -> str:
    """``error.type``: the exception's class, by its public name for the library's own."""
    cls = type(error)
    if cls.__module__.startswith("reliable_smtp"):
        return f"reliable_smtp.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


class OpenTelemetryHooks(MailerHooks):
    """Spans and metrics for every send, through the OpenTelemetry API (a hook).

    ``tracer_provider`` / ``meter_provider`` default to the global ones (set by the
    SDK's configuration). ``address_hash_key`` (bytes) opts in to a keyed hash
    (HMAC-SHA256, 16 hex digits) of each refused recipient on its span event, to
    correlate with your own records without exporting the address; by default
    recipients are only counted. ``record_message_id`` puts the Message-ID (which is
    not a mailbox, but carries the sender's domain) on the send span.
    """

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        address_hash_key: bytes | None = None,
        record_message_id: bool = True,
    ) -> None:
        if address_hash_key is not None and not isinstance(address_hash_key, bytes):
            raise TypeError("address_hash_key must be bytes (a secret of your own), or None")
        self._hash_key = address_hash_key
        self._record_message_id = record_message_id
        #: ``False`` without ``opentelemetry-api``: the mailer then skips this hook.
        self.active = API_AVAILABLE
        if not API_AVAILABLE:
            logger.warning(
                "OpenTelemetryHooks does nothing: opentelemetry-api is not installed "
                "(pip install 'reliable-smtp[otel]')"
            )
            return
        self._tracer = trace.get_tracer(_SCOPE, _version(), tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, _version(), meter_provider=meter_provider)
        # The counters are tallied here and read by the SDK when it collects: a dict
        # increment instead of an SDK measurement (measured: ~7-17 us each, as much as a
        # span) on every send. Same data: a counter's points are cumulative sums anyway.
        self._sends = _Tally(meter, "reliable_smtp.sends", "{send}", "Sends ended, by outcome")
        self._recipients = _Tally(
            meter,
            "reliable_smtp.recipients",
            "{recipient}",
            "Recipients whose send ended, by their final outcome",
        )
        self._attempts = _Tally(
            meter, "reliable_smtp.attempts", "{attempt}", "Attempts, by outcome"
        )
        self._throttled = _Tally(
            meter,
            "reliable_smtp.throttled",
            "{reply}",
            "Replies that mean the server is throttling us (per recipient)",
        )
        self._duration = _histogram(
            meter,
            "reliable_smtp.send.duration",
            "Time from a send's first attempt to its end, retries included",
        )
        self._rate_wait = _histogram(
            meter, "reliable_smtp.rate_limit.wait", "Time a message waited for the rate limiter"
        )
        # Pooled transports this hook has seen a send on; read when the SDK collects.
        # Weak: the hook must not keep a closed transport (and its pool) alive.
        self._pooled: dict[int, weakref.ref[Any]] = {}
        # Per transport sent on: its span attributes and its metric attributes (weak too).
        # An entry here means the transport is in _pooled too (both are set together).
        self._attributes: dict[int, tuple[weakref.ref[Any], dict[str, Any], dict[str, Any]]] = {}
        self._pooled_lock = threading.Lock()
        self._connections = meter.create_observable_up_down_counter(
            "reliable_smtp.connections",
            callbacks=[self._observe_connections],
            unit="{connection}",
            description="Connections open now, by state: idle (pooled) or used (sending)",
        )

    # -- the hook ------------------------------------------------------------------------

    def on_send(self, event: SendStarted) -> None:
        key = id(event.transport)
        known = self._attributes.get(key)
        if known is None or known[0]() is not event.transport:  # new (or a reused id)
            self._watch_connections(event.transport)
            # Worked out once per transport: its name and address do not change.
            attributes_of = _transport_attributes(event.transport)
            metric_of = {
                k: v
                for k, v in attributes_of.items()
                if k in ("reliable_smtp.transport", "server.address")
            }
            known = self._attributes[key] = (weakref.ref(event.transport), attributes_of, metric_of)
        _, transport, metric_attributes = known  # shared, read-only: copied where extended
        attributes: dict[str, Any] = {
            **transport,
            "reliable_smtp.recipients.count": len(event.envelope.recipients),
        }
        if self._record_message_id:
            attributes["reliable_smtp.message_id"] = event.message_id
        span = self._tracer.start_span(
            "reliable_smtp.send", kind=trace.SpanKind.CLIENT, attributes=attributes
        )
        # Current while the send runs, so what the transport does (an HTTP client's own
        # instrumentation, a database) nests under it.
        token = otel_context.attach(trace.set_span_in_context(span))
        _current.set(
            _SendSpans(
                span=span,
                token=token,
                transport=transport["reliable_smtp.transport"],
                server=transport.get("server.address"),
                metric_attributes=metric_attributes,
            )
        )

    def on_session_event(self, event: SessionEvent) -> None:
        spans = _current.get()
        if spans is not None:
            spans.span.add_event(event.name, dict(event.attributes))
        if event.name == "rate_limit_wait":
            seconds = event.attributes.get("seconds")
            if isinstance(seconds, int | float):
                attributes = spans.metric_attributes if spans is not None else {}
                self._rate_wait.record(float(seconds), attributes)

    def on_attempt(self, event: AttemptFinished) -> None:
        record = event.attempt
        spans = _current.get()
        metric_attributes = dict(spans.metric_attributes) if spans is not None else {}
        self._attempts.add(1, {**metric_attributes, "reliable_smtp.outcome": record.outcome.value})
        throttled = [s for s in event.statuses.values() if s.outcome is Outcome.THROTTLED]
        for status in throttled:
            reply = {"reliable_smtp.reply.code": status.reply.code} if status.reply else {}
            self._throttled.add(1, {**metric_attributes, **reply})
        if spans is None or not spans.span.is_recording():
            return  # sampled out: the events would be dropped, do not build them
        span = spans.span
        attributes: dict[str, Any] = {
            "reliable_smtp.attempt": record.number,
            "reliable_smtp.attempt.duration": record.duration,
            "reliable_smtp.outcome": record.outcome.value,
            "reliable_smtp.recipients.count": len(record.recipients),
            "reliable_smtp.recipients.accepted": sum(
                s.outcome is Outcome.SENT for s in event.statuses.values()
            ),
            "reliable_smtp.recipients.pending": len(event.pending),
        }
        if record.phase is not None:
            attributes["reliable_smtp.phase"] = record.phase.value
        if record.reply is not None:
            attributes["reliable_smtp.reply.code"] = record.reply.code
            if record.reply.enhanced_code:
                attributes["reliable_smtp.reply.enhanced_code"] = record.reply.enhanced_code
        if record.outcome is not Outcome.SENT:
            attributes["error.type"] = record.outcome.value
        span.add_event("reliable_smtp.attempt", attributes)
        for status in event.statuses.values():
            if status.outcome is Outcome.SENT:
                continue
            detail: dict[str, Any] = {
                "reliable_smtp.attempt": record.number,
                "reliable_smtp.outcome": status.outcome.value,
                "reliable_smtp.phase": status.phase.value,
            }
            if status.reply is not None:
                detail["reliable_smtp.reply.code"] = status.reply.code
                if status.reply.enhanced_code:
                    detail["reliable_smtp.reply.enhanced_code"] = status.reply.enhanced_code
            if self._hash_key is not None:
                detail["reliable_smtp.recipient.hash"] = self._hash(status.recipient)
            span.add_event("reliable_smtp.recipient", detail)

    def on_result(self, event: SendFinished) -> None:
        outcome = _outcome_of(event.error)
        spans = _current.get()
        _current.set(None)
        metric_attributes = dict(spans.metric_attributes) if spans is not None else {}
        self._sends.add(1, {**metric_attributes, "reliable_smtp.outcome": outcome})
        result = event.result
        if result is not None:
            by_outcome: dict[str, int] = {}
            for status in result.recipients.values():
                by_outcome[status.outcome.value] = by_outcome.get(status.outcome.value, 0) + 1
            for name, count in by_outcome.items():
                self._recipients.add(count, {**metric_attributes, "reliable_smtp.outcome": name})
        if spans is None:
            return  # nothing was tried (an invalid message): counted, no span
        self._duration.record(
            event.elapsed, {**metric_attributes, "reliable_smtp.outcome": outcome}
        )
        span = spans.span
        _detach(spans.token)
        if not span.is_recording():
            span.end()
            return
        attributes: dict[str, Any] = {"reliable_smtp.outcome": outcome}
        if result is not None:
            attributes["reliable_smtp.attempts"] = len(result.attempts)
            attributes["reliable_smtp.recipients.accepted"] = len(result.accepted)
            attributes["reliable_smtp.recipients.rejected"] = len(result.rejected)
        if event.error is not None:
            attributes["error.type"] = _error_type(event.error)
            reply = getattr(event.error, "reply", None)
            span.set_status(trace.StatusCode.ERROR, _status_text(outcome, event.error))
            if reply is not None:
                attributes["reliable_smtp.reply.code"] = reply.code
                if reply.enhanced_code:
                    attributes["reliable_smtp.reply.enhanced_code"] = reply.enhanced_code
        span.set_attributes(attributes)
        span.end()

    def _watch_connections(self, transport: Transport) -> None:
        """Remember ``transport`` (and a composite's members) for ``reliable_smtp.connections``."""
        found: list[Any] = []
        pending: list[Any] = [transport]
        while pending:
            current = pending.pop()
            found.append(current)
            pending.extend(getattr(current, "transports", ()))  # failover / round-robin
        with self._pooled_lock:
            for item in found:
                self._pooled[id(item)] = weakref.ref(item)

    def _observe_connections(self, options: Any) -> Iterable[Any]:
        with self._pooled_lock:
            pooled = list(self._pooled.items())
        # Summed here: two pools to one server (two mailers, two users) are one series,
        # and what an SDK does with one callback's duplicate observations is its choice.
        totals: dict[tuple[tuple[str, Any], ...], int] = {}
        for key, ref in pooled:
            transport = ref()
            if transport is None:
                with self._pooled_lock:
                    self._pooled.pop(key, None)
                continue
            counts = getattr(transport, "connections", None)
            if counts is None:  # not a pooled transport (memory, sendmail, a composite)
                continue
            # The pool's identity: which transport, which server (as the convention's
            # db.client.connection.pool.name is for a database pool).
            attributes = {
                k: v
                for k, v in _transport_attributes(transport).items()
                if k in ("reliable_smtp.transport", "server.address", "server.port")
            }
            for state, count in (("idle", counts.idle), ("used", counts.in_use)):
                series = (*attributes.items(), ("reliable_smtp.connection.state", state))
                totals[series] = totals.get(series, 0) + count
        return [metrics.Observation(count, dict(series)) for series, count in totals.items()]

    def _hash(self, address: str) -> str:
        assert self._hash_key is not None
        digest = hmac.new(self._hash_key, address.lower().encode(), hashlib.sha256)
        return digest.hexdigest()[:16]


class _Tally:
    """A monotonic counter kept in-process and exported as an observable counter."""

    def __init__(self, meter: Any, name: str, unit: str, description: str) -> None:
        self._counts: dict[tuple[tuple[str, Any], ...], int] = {}
        self._lock = threading.Lock()  # one hook may serve mailers on several threads
        self.instrument = meter.create_observable_counter(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def add(self, amount: int, attributes: Mapping[str, Any]) -> None:
        key = tuple(attributes.items())
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def _observe(self, options: Any) -> Iterable[Any]:
        with self._lock:
            counts = list(self._counts.items())
        return [metrics.Observation(count, dict(key)) for key, count in counts]


def _status_text(outcome: str, source: Any) -> str:
    """A span status description from codes only: reply texts may echo addresses."""
    reply = getattr(source, "reply", None)
    phase = getattr(source, "phase", None)
    parts = [outcome]
    if reply is not None:
        parts.append(f"{reply.code}{' ' + reply.enhanced_code if reply.enhanced_code else ''}")
    if phase is not None:
        parts.append(f"at {phase.value}")
    return " ".join(parts)


def _histogram(meter: Any, name: str, description: str) -> Any:
    try:
        return meter.create_histogram(
            name,
            unit="s",
            description=description,
            explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
        )
    except TypeError:  # an API older than 1.24 has no advisory boundaries
        return meter.create_histogram(name, unit="s", description=description)


def _detach(token: object) -> None:
    if token is None:
        return
    try:
        otel_context.detach(token)  # type: ignore[arg-type]
    except Exception:  # a context attached in another task: nothing left to undo here
        logger.debug("could not detach an OpenTelemetry context", exc_info=True)


# -- the trace context through the outbox ---------------------------------------------------


def inject_trace_context() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``...); ``{}`` if none."""
    if not API_AVAILABLE:
        return {}
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(carrier)
    return carrier


def extract_trace_context(carrier: Mapping[str, object] | None) -> Any:
    """The context in ``carrier``: headers from :func:`inject_trace_context`, or an outbox
    entry's metadata (its :data:`TRACE_CONTEXT_KEY`). ``None`` when there is none."""
    if not API_AVAILABLE or not carrier:
        return None
    headers = carrier.get(TRACE_CONTEXT_KEY, carrier)
    if not isinstance(headers, Mapping):
        return None
    strings = {str(k): v for k, v in headers.items() if isinstance(v, str)}
    if "traceparent" not in strings:
        return None
    return propagate.extract(strings)


@contextlib.contextmanager
def use_trace_context(carrier: Mapping[str, object] | None) -> Iterator[None]:
    """Run the body in the context ``carrier`` holds (see :func:`extract_trace_context`).

    For the outbox worker: ``with use_trace_context(entry.metadata): send...`` makes
    the send span the child of the span that enqueued the entry. Without a context
    (or without the API) the body runs unchanged.
    """
    context = extract_trace_context(carrier)
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def with_trace_context(metadata: Mapping[str, object] | None) -> dict[str, object]:
    """``metadata`` plus the current trace context (for ``Outbox.prepare``); a key the
    caller set is kept as given."""
    carried = dict(metadata or {})
    if TRACE_CONTEXT_KEY not in carried:
        headers = inject_trace_context()
        if headers:
            carried[TRACE_CONTEXT_KEY] = headers
    return carried


# -- the outbox's metrics ----------------------------------------------------------------

#: The ``reliable_smtp.outbox.enqueued`` counters :func:`observe_outbox` registered.
_enqueued: list[Any] = []


def note_enqueued(count: int) -> None:
    """Count entries written by ``Outbox.enqueue`` (a no-op until :func:`observe_outbox`)."""
    for counter in _enqueued:
        counter.add(count)


def observe_outbox(outbox: Any, *, meter_provider: Any = None) -> list[Any]:
    """Export ``outbox.stats()`` as observable metrics; return the instruments.

    ``reliable_smtp.outbox.entries`` (``{entry}``, by ``reliable_smtp.outbox.state``),
    ``reliable_smtp.outbox.oldest_due.age`` (seconds; no point when nothing is due)
    and ``reliable_smtp.outbox.enqueued`` (a counter of the entries this process's
    outboxes enqueue from now on: its rate is the enqueue rate). ``outbox`` is an
    :class:`~reliable_smtp.Outbox` or an :class:`~reliable_smtp.AsyncOutbox`; the SDK
    reads its stats on the SDK's collection thread
    (one query per collection). A failing read is logged and yields no point.
    """
    if not API_AVAILABLE:
        return []
    sync = getattr(outbox, "sync", outbox)
    meter = metrics.get_meter(_SCOPE, _version(), meter_provider=meter_provider)

    def entries(options: Any) -> Iterable[Any]:
        stats = _read_stats(sync)
        if stats is None:
            return []
        return [
            metrics.Observation(count, {"reliable_smtp.outbox.state": state.value})
            for state, count in stats.counts.items()
        ]

    def oldest(options: Any) -> Iterable[Any]:
        stats = _read_stats(sync)
        if stats is None or stats.oldest_due_age is None:
            return []
        return [metrics.Observation(float(stats.oldest_due_age))]

    enqueued = meter.create_counter(
        "reliable_smtp.outbox.enqueued", unit="{entry}", description="Entries enqueued"
    )
    _enqueued.append(enqueued)
    return [
        enqueued,
        meter.create_observable_up_down_counter(
            "reliable_smtp.outbox.entries",
            callbacks=[entries],
            unit="{entry}",
            description="Outbox entries, by state",
        ),
        meter.create_observable_gauge(
            "reliable_smtp.outbox.oldest_due.age",
            callbacks=[oldest],
            unit="s",
            description="How long the oldest due (queued or deferred) entry has waited",
        ),
    ]


def _read_stats(outbox: Any) -> Any:
    try:
        return outbox.stats()
    except Exception:
        logger.exception("reading the outbox's stats for its metrics failed")
        return None
