"""What the check found, as values: :class:`CheckTarget` (the settings checked, without the
password), :class:`CheckStep` (one step, its time and facts, and for a failure its cause
and fix), :class:`CheckReport` (every step that ran), each JSON-ready with ``to_dict``;
and :func:`redact_step`, the password rule run over a finished step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .._redaction import SecretForms
from .._replies import Outcome
from .._settings import MailerSettings
from .._transports._session import DEFAULT_PORTS, TLSMode, session_url

SLOW_SECONDS = 1.0
"""A step that takes longer than this is flagged as slow (a healthy server answers in less)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckTarget:
    """What was checked: the connection settings, without the password."""

    host: str
    port: int
    tls: TLSMode
    username: str | None
    password_set: bool
    ca_file: str | None
    local_hostname: str | None
    connect_timeout: float
    command_timeout: float

    @classmethod
    def from_settings(cls, settings: MailerSettings) -> CheckTarget:
        return cls(
            host=settings.host,
            port=settings.port or DEFAULT_PORTS[settings.tls],
            tls=settings.tls,
            username=settings.username,
            password_set=settings.password is not None,
            ca_file=str(settings.ca_file) if settings.ca_file is not None else None,
            local_hostname=settings.local_hostname,
            connect_timeout=settings.connect_timeout,
            command_timeout=settings.timeout,
        )

    @property
    def url(self) -> str:
        return session_url(self.tls, self.host, self.port)

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "tls": self.tls.value,
            "url": self.url,
            "username": self.username,
            "password_set": self.password_set,
            "ca_file": self.ca_file,
            "local_hostname": self.local_hostname,
            "connect_timeout": self.connect_timeout,
            "command_timeout": self.command_timeout,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckStep:
    """One step of the check and what it found.

    ``name`` is a stable machine name (``dns``, ``tcp``, ``tls``, ``greeting``,
    ``ehlo``, ``starttls``, ``ehlo_tls``, ``auth``, ``send``); ``title`` is for
    people. ``summary`` is one line, ``notes`` further lines for people,
    ``details`` the same facts as data. A failed step has ``error`` (what
    happened), ``cause`` (its short name), ``explanation`` (the library's: what
    it means and the usual fix), ``hint`` (which setting to change, when the
    explanation does not say) and ``outcome``/``rule`` (the library's class and
    the rule that decided).
    """

    name: str
    title: str
    ok: bool
    seconds: float | None
    slow: bool = False
    skipped: bool = False
    summary: str = ""
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    cause: str | None = None
    explanation: str | None = None
    hint: str | None = None
    outcome: Outcome | None = None
    rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "ok": self.ok,
            "skipped": self.skipped,
            "seconds": None if self.seconds is None else round(self.seconds, 6),
            "slow": self.slow,
            "summary": self.summary,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "details": dict(self.details),
            "error": self.error,
            "cause": self.cause,
            "explanation": self.explanation,
            "hint": self.hint,
            "outcome": self.outcome.value if self.outcome is not None else None,
            "rule": self.rule,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    """Every step that ran, in order; the check stops at the first failure."""

    target: CheckTarget
    steps: tuple[CheckStep, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every step passed (skipped steps count as passed)."""
        return all(step.ok for step in self.steps)

    @property
    def failed(self) -> CheckStep | None:
        """The step that failed, if one did."""
        return next((step for step in self.steps if not step.ok), None)

    def step(self, name: str) -> CheckStep | None:
        """The step called ``name``, if it ran."""
        return next((step for step in self.steps if step.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        failed = self.failed
        return {
            "ok": self.ok,
            "target": self.target.to_dict(),
            "seconds": round(self.seconds, 6),
            "failed_step": failed.name if failed is not None else None,
            "steps": [step.to_dict() for step in self.steps],
        }


def _redact(value: Any, secrets: SecretForms) -> Any:
    if isinstance(value, str):
        return secrets.redact(value)
    if isinstance(value, Mapping):
        return {key: _redact(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(item, secrets) for item in value)
    return value


def redact_step(step: CheckStep, secrets: SecretForms) -> CheckStep:
    return replace(
        step,
        summary=_redact(step.summary, secrets),
        notes=_redact(step.notes, secrets),
        warnings=_redact(step.warnings, secrets),
        details=_redact(step.details, secrets),
        error=_redact(step.error, secrets),
        explanation=_redact(step.explanation, secrets),
        cause=_redact(step.cause, secrets),
        hint=_redact(step.hint, secrets),
    )
