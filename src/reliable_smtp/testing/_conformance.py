"""check_transport: does a Transport subclass keep the contract the mailer relies on?

This module owns :func:`check_transport` (and its blocking twin
:func:`check_transport_sync`), a conformance check to run in the test suite of
any :class:`~reliable_smtp.Transport` subclass - yours, or one of ours - in the
spirit of ``trio.testing.check_half_closeable_stream``. It raises
:class:`TransportContractError` (an :class:`AssertionError`) naming the first
rule broken. The rules, from :mod:`reliable_smtp._transports.base`:

* ``factory`` - the factory gives a :class:`~reliable_smtp.Transport`;
* ``name`` - ``name`` is a non-empty ``str`` without secrets (``password=``,
  ``user:pass@``, the value of a password attribute);
* ``repr`` - ``repr()`` works, before and after closing, without secrets;
* ``deliver-is-async`` - ``deliver`` is a coroutine function;
* ``deliver-finishes`` - ``deliver`` returns within ``timeout`` seconds;
* ``deliver-returns-report`` - an ordinary message gives a
  :class:`~reliable_smtp.DeliveryReport` (skipped with ``expect_report=False``);
* ``one-status-per-recipient`` - the report has exactly one status per envelope
  recipient, in envelope order, each a :class:`~reliable_smtp.RecipientStatus`
  for that recipient with an ``outcome`` and a ``phase``;
* ``no-foreign-exceptions`` - ``deliver`` raises nothing but a
  :class:`~reliable_smtp.DeliveryError` subclass, even for a null sender, a UTF-8
  address and an 8-bit body with a line starting with a dot;
* ``aclose-twice`` - ``aclose()`` can be awaited twice;
* ``closed-refuses-deliver`` - after ``aclose()``, ``closed`` is true and ``deliver``
  raises :class:`~reliable_smtp.TransportClosedError`;
* ``async-with-closes`` - ``async with transport as t`` gives the transport and
  closes it on exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType
from typing import TypeAlias

from .._envelope import Envelope
from .._errors import DeliveryError, TransportClosedError
from .._message import Message, render
from .._replies import Outcome, Phase
from .._result import DeliveryReport, RecipientStatus
from .._transports.base import Transport

__all__ = [
    "CONTRACT_RULES",
    "TransportContractError",
    "TransportFactory",
    "check_transport",
    "check_transport_sync",
]

#: What :func:`check_transport` accepts: a plain or async callable returning a fresh
#: transport, or returning an async context manager that yields one.
TransportFactory: TypeAlias = Callable[
    [],
    "Transport | Awaitable[Transport] | AbstractAsyncContextManager[Transport]",
]

CONTRACT_RULES: Mapping[str, str] = MappingProxyType(
    {
        "factory": "the factory returns a fresh Transport (or an awaitable or async context "
        "manager giving one)",
        "name": "name is a non-empty str without secrets",
        "repr": "repr() works and shows no secrets",
        "deliver-is-async": "deliver() is a coroutine function",
        "deliver-finishes": "deliver() returns within the check's timeout",
        "deliver-returns-report": "an ordinary message gives a DeliveryReport",
        "one-status-per-recipient": "the report has exactly one RecipientStatus per envelope "
        "recipient, in envelope order, with its outcome and phase set",
        "no-foreign-exceptions": "deliver() raises only DeliveryError subclasses; foreign "
        "exceptions are translated at the transport's boundary (raise ... from exc)",
        "aclose-twice": "aclose() can be called twice",
        "closed-refuses-deliver": "after aclose(), closed is true and deliver() raises "
        "TransportClosedError (call self.ensure_open() first in deliver())",
        "async-with-closes": "`async with transport as t` gives the transport and closes it "
        "on exit",
    }
)
"""Every rule :func:`check_transport` checks, with what it means."""


class TransportContractError(AssertionError):
    """A transport broke a rule of the contract. ``rule`` is a key of :data:`CONTRACT_RULES`."""

    def __init__(self, rule: str, transport: str, detail: str) -> None:
        super().__init__(
            f"{transport} breaks the transport contract, rule {rule!r} "
            f"({CONTRACT_RULES[rule]}): {detail}"
        )
        self.rule = rule
        self.detail = detail


_SECRET_TEXT = re.compile(
    r"(?:password|passwd|pwd|secret|token|api[_-]?key)\s*[=:]|://[^/@\s:]+:[^/@\s]+@",
    re.IGNORECASE,
)
_SECRET_ATTRIBUTE = re.compile(r"pass|secret|token|api_?key|credential", re.IGNORECASE)
_GRACE = 5.0  # seconds a cancelled deliver() gets to unwind


def _label(transport: object) -> str:
    try:
        name = transport.name if isinstance(transport, Transport) else None
    except Exception:  # a broken name property is reported by its own rule
        name = None
    return f"{type(transport).__name__}" + (f" {name!r}" if isinstance(name, str) else "")


def _secrets_of(transport: Transport) -> list[str]:
    """String values of attributes that look like credentials (``_password``, ``token``...)."""
    found: list[str] = []
    for attribute, value in getattr(transport, "__dict__", {}).items():
        if not _SECRET_ATTRIBUTE.search(attribute):
            continue
        reveal = getattr(value, "get_secret_value", None)
        if callable(reveal):
            value = reveal()
        if isinstance(value, str) and len(value) >= 4:
            found.append(value)
    return found


def _check_no_secret(transport: Transport, rule: str, what: str, text: str) -> None:
    match = _SECRET_TEXT.search(text)
    if match is not None:
        raise TransportContractError(
            rule,
            _label(transport),
            f"{what} {text!r} looks like it holds a secret ({match.group(0)!r})",
        )
    for secret in _secrets_of(transport):
        if secret in text:
            raise TransportContractError(
                rule, _label(transport), f"{what} shows the value of a credential attribute"
            )


def _check_name_and_repr(transport: Transport) -> None:
    name = getattr(transport, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise TransportContractError(
            "name", _label(transport), f"name is {name!r}; set a short name such as 'smtp://host'"
        )
    _check_no_secret(transport, "name", "name", name)
    _check_repr(transport)


def _check_repr(transport: Transport) -> None:
    try:
        text = repr(transport)
    except Exception as exc:
        raise TransportContractError("repr", _label(transport), f"repr() raised {exc!r}") from exc
    if not isinstance(text, str):  # pragma: no cover - repr() itself refuses non-str
        raise TransportContractError("repr", _label(transport), f"repr() gave {text!r}")
    _check_no_secret(transport, "repr", "repr()", text)


def _probes() -> tuple[tuple[Envelope, bytes], tuple[Envelope, bytes]]:
    """An ordinary message (two To, one Bcc), and unusual-but-valid input."""
    rendered = render(
        Message(
            sender="Transport Check <check@example.com>",
            to=["first@example.org", "second@example.net"],
            bcc=["third@example.com"],
            subject="reliable-smtp transport check",
            text="If you can read this, the transport works.\n.A line that starts with a dot.\n",
        )
    )
    ordinary = Envelope(rendered.sender, rendered.recipients)
    unusual_content = (
        "From: check@example.com\r\nTo: jürgen@example.org\r\nSubject: check\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n.\r\n..\r\n"
    ).encode()
    unusual = Envelope("", ("jürgen@example.org",))  # the null sender, as bounces use
    return (ordinary, rendered.content), (unusual, unusual_content)


async def _deliver(
    transport: Transport, envelope: Envelope, content: bytes, timeout: float
) -> DeliveryReport | DeliveryError:
    """Run ``deliver`` under the rules that apply to every call; return what it gave."""
    label = _label(transport)
    try:
        pending = transport.deliver(envelope, content)
    except DeliveryError as error:
        return error
    except Exception as exc:
        raise TransportContractError(
            "no-foreign-exceptions", label, f"deliver() raised {exc!r}"
        ) from exc
    if not inspect.isawaitable(pending):
        raise TransportContractError(
            "deliver-is-async", label, f"deliver() returned {pending!r}; declare it `async def`"
        )
    task = asyncio.ensure_future(pending)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=_GRACE)
        raise TransportContractError(
            "deliver-finishes",
            label,
            f"deliver() did not return within {timeout} s (give every network wait a timeout)",
        )
    try:
        result = task.result()
    except DeliveryError as error:
        return error
    except Exception as exc:
        raise TransportContractError(
            "no-foreign-exceptions",
            label,
            f"deliver() raised {type(exc).__module__}.{type(exc).__qualname__}: {exc}",
        ) from exc
    if not isinstance(result, DeliveryReport):
        raise TransportContractError(
            "deliver-returns-report", label, f"deliver() returned {result!r}"
        )
    _check_statuses(transport, envelope, result)
    return result


def _check_statuses(transport: Transport, envelope: Envelope, report: DeliveryReport) -> None:
    label = _label(transport)
    rule = "one-status-per-recipient"
    reported = list(report.recipients)
    wanted = list(envelope.recipients)
    missing = [r for r in wanted if r not in report.recipients]
    extra = [r for r in reported if r not in envelope.recipients]
    if missing:
        raise TransportContractError(rule, label, f"no status for {missing} (envelope {wanted})")
    if extra:
        raise TransportContractError(rule, label, f"statuses for {extra}, not in {wanted}")
    if reported != wanted:
        raise TransportContractError(
            rule, label, f"statuses in the order {reported}, not the envelope's {wanted}"
        )
    for recipient, status in report.recipients.items():
        if not isinstance(status, RecipientStatus):
            raise TransportContractError(
                rule, label, f"the status of {recipient} is {status!r}, not a RecipientStatus"
            )
        if status.recipient != recipient:
            raise TransportContractError(
                rule, label, f"the status under {recipient!r} is for {status.recipient!r}"
            )
        if not isinstance(status.outcome, Outcome) or not isinstance(status.phase, Phase):
            raise TransportContractError(
                rule,
                label,
                f"the status of {recipient} has outcome {status.outcome!r} and phase "
                f"{status.phase!r}; both must be set",
            )


async def _expect_closed(transport: Transport, rule: str, after: str, timeout: float) -> None:
    label = _label(transport)
    if transport.closed is not True:
        raise TransportContractError(
            rule, label, f"closed is {transport.closed!r} after {after} (call super().aclose())"
        )
    (envelope, content), _ = _probes()
    try:
        pending = transport.deliver(envelope, content)
        result = (
            await asyncio.wait_for(pending, timeout) if inspect.isawaitable(pending) else pending
        )
    except TransportClosedError:
        return
    except Exception as exc:
        raise TransportContractError(
            rule, label, f"deliver() after {after} raised {exc!r}, not TransportClosedError"
        ) from exc
    raise TransportContractError(
        rule, label, f"deliver() after {after} returned {result!r}, not TransportClosedError"
    )


async def _aclose(transport: Transport, timeout: float, which: str) -> None:
    try:
        await asyncio.wait_for(transport.aclose(), timeout)
    except Exception as exc:
        raise TransportContractError(
            "aclose-twice", _label(transport), f"the {which} aclose() raised {exc!r}"
        ) from exc


@contextlib.asynccontextmanager
async def _fresh(factory: TransportFactory) -> AsyncIterator[Transport]:
    made: object = factory()
    if inspect.isawaitable(made):
        made = await made
    if isinstance(made, Transport):
        try:
            yield made
        finally:
            with contextlib.suppress(Exception):  # closing is checked by its own rule
                await made.aclose()
    elif isinstance(made, AbstractAsyncContextManager):
        async with made as entered:
            if not isinstance(entered, Transport):
                raise TransportContractError(
                    "factory", _label(entered), f"the factory's context gave {entered!r}"
                )
            yield entered
    else:
        raise TransportContractError(
            "factory", _label(made), f"the factory returned {made!r}, not a Transport"
        )


async def check_transport(
    factory: TransportFactory, *, timeout: float = 30.0, expect_report: bool = True
) -> None:
    """Check that the transports ``factory`` makes keep the transport contract.

    ::

        async def test_my_transport_keeps_the_contract() -> None:
            await check_transport(lambda: MyTransport(...))

    ``factory`` is called once per group of checks, with no arguments, and returns a
    fresh transport - plainly, as an awaitable, or as an async context manager that
    yields it (and cleans up after it). Raises :class:`TransportContractError` (an
    ``AssertionError``) naming the first broken rule of :data:`CONTRACT_RULES`.

    ``timeout`` bounds each ``deliver``/``aclose`` call. With ``expect_report=False``
    a transport may answer the ordinary message with a ``DeliveryError`` (one scripted
    to fail); the per-recipient rule is then checked only when it returns a report.
    """
    ordinary, unusual = _probes()

    async with _fresh(factory) as transport:
        label = _label(transport)
        _check_name_and_repr(transport)
        outcome = await _deliver(transport, *ordinary, timeout)
        if isinstance(outcome, DeliveryError) and expect_report:
            raise TransportContractError(
                "deliver-returns-report",
                label,
                f"deliver() raised {type(outcome).__name__}: {outcome} for an ordinary "
                "message to two recipients and a Bcc; pass expect_report=False if this "
                "transport is meant to fail",
            )
        await _deliver(transport, *unusual, timeout)
        await _aclose(transport, timeout, "first")
        await _aclose(transport, timeout, "second")
        await _expect_closed(transport, "closed-refuses-deliver", "aclose()", timeout)
        _check_repr(transport)

    async with _fresh(factory) as transport:
        label = _label(transport)
        try:
            async with transport as entered:
                if entered is not transport:
                    raise TransportContractError(
                        "async-with-closes",
                        label,
                        f"`async with transport` gave {entered!r}, not the transport itself",
                    )
        except TransportContractError:
            raise
        except Exception as exc:
            raise TransportContractError(
                "async-with-closes", label, f"`async with transport` raised {exc!r}"
            ) from exc
        await _expect_closed(transport, "async-with-closes", "`async with`", timeout)


def check_transport_sync(
    factory: TransportFactory, *, timeout: float = 30.0, expect_report: bool = True
) -> None:
    """:func:`check_transport` for a test without an event loop: blocks until it is done.

    The check runs on a private event loop in a worker thread, so it works whether
    or not the calling thread runs a loop of its own.
    """
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="reliable-smtp-check"
    ) as pool:
        pool.submit(
            asyncio.run, check_transport(factory, timeout=timeout, expect_report=expect_report)
        ).result()
