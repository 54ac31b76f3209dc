"""Configuration from the environment: ``RELIABLE_SMTP_*`` variables and ``.env``.

:class:`MailerSettings` reads the variables once, validates them, and builds the
transport and retry policy; the rest of the library never reads the
environment. Invalid values raise :class:`~reliable_smtp.ConfigurationError`
naming the variable and the fix. The password and the URL are ``SecretStr``:
they never appear in ``repr()`` or errors.

Precedence, highest first:

1. keyword arguments (``MailerSettings(host=...)``, ``Mailer.from_env(host=...)``);
2. environment variables (``RELIABLE_SMTP_HOST``);
3. the ``.env`` file in the working directory;
4. the parts of the URL (``RELIABLE_SMTP_URL`` or ``url=``), wherever it came from:
   a discrete setting from any of 1-3 overrides that part of the URL, so a URL
   in ``.env`` can take its password from a secret store's variable;
5. the defaults.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._checks import count_problem, rate_problem, seconds_problem
from ._dsn import parse_url
from ._errors import ConfigurationError
from ._outbox.limits import OutboxLimits
from ._ratelimit import RateLimit
from ._retry import RetryPolicy
from ._transports._login import TokenProvider
from ._transports._session import (
    DEFAULT_PORTS,
    TLSMode,
    port_mode_conflict,
    port_problem,
    warn_if_password_in_clear,
)
from ._transports.base import Transport
from ._transports.smtp import SMTPTransport

__all__ = ["ENV_PREFIX", "MailerSettings"]

ENV_PREFIX = "RELIABLE_SMTP_"

TransportName = Literal["smtp", "sendmail", "file", "memory"]

#: Settings a URL describes: a fallback URL brings its own, never the primary's.
_CONNECTION_FIELDS = frozenset(
    {"transport", "host", "port", "tls", "username", "password", "sendmail_path", "file_directory"}
)


class MailerSettings(BaseSettings):
    """Every setting, with its ``RELIABLE_SMTP_<NAME>`` environment variable.

    ``MailerSettings(host="smtp.example.com")`` overrides ``RELIABLE_SMTP_HOST``;
    ``MailerSettings(_env_file=None)`` ignores ``.env``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    url: SecretStr | None = Field(
        default=None,
        description="Everything in one URL, e.g. smtps://user:pass@smtp.example.com:465 "
        "(schemes: smtp, smtps, smtp+plain, sendmail, file, memory).",
    )
    fallback_urls: SecretStr | None = Field(
        default=None,
        description="Comma-separated URLs of servers to fail over to, in order of preference.",
    )
    failover_down_for: float = Field(
        default=30.0, description="Seconds a failed server is left alone (with fallbacks)."
    )
    transport: TransportName = Field(
        default="smtp", description="Which transport: smtp, sendmail, file or memory."
    )
    host: str = Field(default="localhost", description="SMTP server host name or address.")
    port: int | None = Field(
        default=None,
        description="SMTP port; default 587 (starttls), 465 (implicit), 25 (none).",
    )
    tls: TLSMode = Field(
        default=TLSMode.STARTTLS,
        description="starttls (required STARTTLS), implicit (SMTPS), or none (trusted relay).",
    )
    username: str | None = Field(
        default=None, description="AUTH user name; unset or empty: no AUTH is sent."
    )
    password: SecretStr | None = Field(default=None, description="AUTH password (kept secret).")
    timeout: float = Field(default=60.0, description="Seconds to wait for each command reply.")
    connect_timeout: float = Field(
        default=10.0,
        description="Seconds for TCP connect, TLS handshake and greeting (each); see the "
        "README's timeouts table for why 10.",
    )
    data_timeout: float = Field(
        default=600.0, description="Seconds to wait for the reply to the final dot."
    )
    oauth_token_timeout: float | None = Field(
        default=None,
        description="Seconds to wait for the OAuth2 token provider (default: connect_timeout).",
    )
    local_hostname: str | None = Field(default=None, description="Name sent in EHLO.")
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the server.")
    sendmail_path: Path = Field(
        default=Path("/usr/sbin/sendmail"), description="sendmail binary (transport=sendmail)."
    )
    file_directory: Path | None = Field(
        default=None, description="Directory for .eml files (transport=file)."
    )
    max_connections: int = Field(default=1, description="SMTP connections kept at most.")
    max_messages_per_connection: int = Field(
        default=100, description="Messages sent on one connection before it is renewed."
    )
    idle_timeout: float = Field(default=60.0, description="Seconds an idle connection is kept.")
    pool_timeout: float = Field(default=60.0, description="Seconds to wait for a free connection.")
    pipelining: bool = Field(default=True, description="Use PIPELINING when the server offers it.")
    pipeline_across_messages: bool = Field(
        default=True,
        description="With PIPELINING, send the next message's MAIL, RCPT and DATA with the "
        "final dot of the one before, before its reply.",
    )
    chunking: bool = Field(
        default=True,
        description="Send MAIL, RCPT and the message in one write (BDAT) when the server "
        "offers CHUNKING and PIPELINING.",
    )
    rate_per_second: float | None = Field(
        default=None, description="Messages per second over all connections."
    )
    rate_per_minute: float | None = Field(
        default=None, description="Messages per minute over all connections."
    )
    rate_per_connection: float | None = Field(
        default=None, description="Messages per second on each connection."
    )
    retry_attempts: int = Field(default=5, description="Tries per message, the first included.")
    retry_deadline: float = Field(
        default=120.0, description="Seconds after which no new try starts."
    )
    outbox_url: SecretStr | None = Field(
        default=None,
        description="The durable outbox (Outbox.from_env(), the worker): sqlite:///path.db "
        "or postgresql://user@host/db.",
    )
    outbox_rate_per_second: float | None = Field(
        default=None, description="Outbox: messages per second over all workers."
    )
    outbox_rate_per_minute: float | None = Field(
        default=None, description="Outbox: messages per minute over all workers."
    )
    outbox_rate_per_day: float | None = Field(
        default=None, description="Outbox: messages per day over all workers."
    )
    outbox_max_connections: int | None = Field(
        default=None, description="Outbox: SMTP connections open at once over all workers."
    )
    outbox_burst: int = Field(
        default=1, description="Outbox: messages of the per-second cap sent back to back."
    )

    def __init__(self, **values: Any) -> None:
        _refuse_unknown_arguments(values)
        failure: ConfigurationError | None = None
        try:
            super().__init__(**values)
        except ValidationError as exc:
            failure = _configuration_error(exc)
        if failure is not None:
            # Raised outside the except block: pydantic's error holds the input (the
            # URL with its password), and as __context__ it would stay reachable.
            raise failure

    @model_validator(mode="before")
    @classmethod
    def _expand_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("url") in (None, ""):
            return data
        url = data["url"]
        text = url.get_secret_value() if isinstance(url, SecretStr) else str(url)
        # Discrete settings (from arguments, the environment or .env) refine the URL.
        return {**parse_url(text, variable=f"{ENV_PREFIX}URL"), **data}

    @field_validator("username", mode="before")
    @classmethod
    def _blank_username_is_unset(cls, value: object) -> object:
        # One rule for the transport and `reliable-smtp check`: an empty
        # RELIABLE_SMTP_USERNAME= means "no login", exactly like an unset one.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("tls", mode="before")
    @classmethod
    def _lower_tls(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    # The rules are the library's own (reliable_smtp._checks, transports._session), in
    # the same words; pydantic adds the RELIABLE_SMTP_* variable that failed.

    @field_validator(
        "timeout",
        "connect_timeout",
        "data_timeout",
        "oauth_token_timeout",
        "retry_deadline",
        "idle_timeout",
        "pool_timeout",
        "failover_down_for",
    )
    @classmethod
    def _seconds(cls, value: float | None) -> float | None:
        problem = None if value is None else seconds_problem(value)
        if problem is not None:
            raise ValueError(f"{problem} (every wait is bounded)")
        return value

    @field_validator(
        "rate_per_second",
        "rate_per_minute",
        "rate_per_connection",
        "outbox_rate_per_second",
        "outbox_rate_per_minute",
        "outbox_rate_per_day",
    )
    @classmethod
    def _rate(cls, value: float | None, info: ValidationInfo) -> float | None:
        name = info.field_name or ""
        per = "minute" if name.endswith("minute") else "day" if name.endswith("day") else "second"
        problem = None if value is None else rate_problem(value, per=per)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("port")
    @classmethod
    def _port_range(cls, value: int | None) -> int | None:
        problem = None if value is None else port_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator(
        "retry_attempts",
        "max_connections",
        "max_messages_per_connection",
        "outbox_max_connections",
        "outbox_burst",
    )
    @classmethod
    def _at_least_one(cls, value: int | None) -> int | None:
        problem = None if value is None else count_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MailerSettings:
        if self.transport == "smtp":
            port = self.port or DEFAULT_PORTS[self.tls]
            conflict = port_mode_conflict(self.tls, port, spell=_variable_spelling)
            if conflict is not None:
                raise ValueError(conflict)
            if self.password is not None and self.username is None:
                raise ValueError(
                    "RELIABLE_SMTP_PASSWORD is set but RELIABLE_SMTP_USERNAME is not (an empty "
                    "value counts as not set, and then no AUTH is sent): set both to log in, "
                    "or neither for a server that takes mail without a login"
                )
            warn_if_password_in_clear(
                self.tls,
                self.host,
                password_set=self.password is not None,
                spell=_variable_spelling,
                stacklevel=2,
            )
            if self.rate_per_second is not None and self.rate_per_minute is not None:
                raise ValueError(
                    "set RELIABLE_SMTP_RATE_PER_SECOND or RELIABLE_SMTP_RATE_PER_MINUTE, not both"
                )
        if self.transport == "file" and self.file_directory is None:
            raise ValueError(
                "transport=file needs RELIABLE_SMTP_FILE_DIRECTORY (where to write .eml files)"
            )
        return self

    # -- building ------------------------------------------------------------------------

    def build_transport(
        self,
        *,
        oauth_token_provider: TokenProvider | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Transport:
        """The transport these settings describe.

        With ``fallback_urls``, a :class:`~reliable_smtp.FailoverTransport` over this
        server and then each fallback (which share every setting their URL does not
        set). ``oauth_token_provider`` (SMTP only) authenticates the primary with
        XOAUTH2 instead of a password, and ``ssl_context`` (SMTP only) replaces the
        context built from ``ca_file``: neither can come from the environment.
        """
        primary = self._build_one(oauth_token_provider, ssl_context)
        if self.fallback_urls is None:
            return primary
        from ._transports.composite import FailoverTransport

        urls = [u.strip() for u in self.fallback_urls.get_secret_value().split(",") if u.strip()]
        members = [primary, *(self._fallback(url)._build_one(None, None) for url in urls)]
        return FailoverTransport(members, down_for=self.failover_down_for)

    def _fallback(self, url: str) -> MailerSettings:
        """Settings for one fallback server: its URL, plus our settings it does not set."""
        text: str | None = None
        try:
            # What the URL sets (its query options too: ?timeout=5) is its own; only the
            # rest is shared. A shared value passed beside the URL would override it, as
            # discrete settings refine RELIABLE_SMTP_URL.
            own = parse_url(url, variable=f"{ENV_PREFIX}URL")
            shared = self.model_dump(
                exclude=set(_CONNECTION_FIELDS | {"url", "fallback_urls"} | own.keys())
            )
            # model_validate, not the constructor: the environment must not override
            # the fallback URL's host, port or credentials with the primary's.
            return MailerSettings.model_validate({**shared, "url": url})
        except ValidationError as exc:
            text = str(_configuration_error(exc))
        except ConfigurationError as error:
            text = str(error)
        # Raised outside the except blocks, so that neither pydantic's error (which holds
        # the URL) nor the first ConfigurationError is kept as __context__.
        raise ConfigurationError(
            text.replace(f"{ENV_PREFIX}URL", f"{ENV_PREFIX}FALLBACK_URLS"),
            setting=f"{ENV_PREFIX}FALLBACK_URLS",
        )

    def _build_one(
        self, oauth_token_provider: TokenProvider | None, ssl_context: ssl.SSLContext | None
    ) -> Transport:
        if ssl_context is not None and self.transport != "smtp":
            raise ConfigurationError(
                f"ssl_context is for SMTP, but RELIABLE_SMTP_TRANSPORT is {self.transport!r}",
                setting="ssl_context",
            )
        if self.transport == "sendmail":
            from ._transports.sendmail import SendmailTransport

            return SendmailTransport(str(self.sendmail_path), timeout=self.timeout)
        if self.transport == "file":
            from ._transports.file import FileTransport

            assert self.file_directory is not None  # checked by _consistent
            return FileTransport(self.file_directory)
        if self.transport == "memory":
            from ._transports.memory import MemoryTransport

            return MemoryTransport()
        return SMTPTransport(
            self.host,
            self.port,
            tls=self.tls,
            username=self.username,
            password=self.password,
            ssl_context=ssl_context,
            ca_file=self.ca_file,
            local_hostname=self.local_hostname,
            connect_timeout=self.connect_timeout,
            command_timeout=self.timeout,
            data_timeout=self.data_timeout,
            max_connections=self.max_connections,
            max_messages_per_connection=self.max_messages_per_connection,
            idle_timeout=self.idle_timeout,
            pool_timeout=self.pool_timeout,
            pipelining=self.pipelining,
            pipeline_across_messages=self.pipeline_across_messages,
            chunking=self.chunking,
            rate_limit=self.rate_limit(),
            warn_insecure=False,  # checked above, with the variable names
            oauth_token_provider=oauth_token_provider,
            oauth_token_timeout=self.oauth_token_timeout,
        )

    def rate_limit(self) -> RateLimit | None:
        """The rate limit these settings describe, or ``None``."""
        per_transport = self.rate_per_second
        if self.rate_per_minute is not None:
            per_transport = self.rate_per_minute / 60
        if per_transport is None and self.rate_per_connection is None:
            return None
        return RateLimit(per_transport=per_transport, per_connection=self.rate_per_connection)

    def outbox_limits(self) -> OutboxLimits:
        """The outbox's shared limits these settings describe (every worker of an outbox)."""
        return OutboxLimits(
            per_second=self.outbox_rate_per_second,
            per_minute=self.outbox_rate_per_minute,
            per_day=self.outbox_rate_per_day,
            max_connections=self.outbox_max_connections,
            burst=self.outbox_burst,
        )

    def retry_policy(self) -> RetryPolicy:
        """The retry policy these settings describe (other fields keep their defaults)."""
        return RetryPolicy(attempts=self.retry_attempts, deadline=self.retry_deadline)


def _variable_spelling(setting: str, value: object) -> str:
    """A setting as the environment spells it: ``RELIABLE_SMTP_TLS=implicit``."""
    return f"{ENV_PREFIX}{setting.upper()}={value}"


def _refuse_unknown_arguments(values: dict[str, Any]) -> None:
    """A ConfigurationError naming a keyword argument that is no setting.

    pydantic would report it as an "extra input" under a ``RELIABLE_SMTP_<NAME>``
    variable nobody set; the mistake is in the call, so say so there.
    """
    fields = MailerSettings.model_fields
    for name in values:
        if name.startswith("_") or name in fields:
            continue  # pydantic-settings' own options (_env_file, ...) and the settings
        hint = (
            "; pass it to Mailer.from_env(ssl_context=...) or "
            "build_transport(ssl_context=...): a context cannot come from the environment"
            if name == "ssl_context"
            else f"; the settings are: {', '.join(sorted(fields))}"
        )
        raise ConfigurationError(
            f"MailerSettings() got an unexpected keyword argument {name!r}{hint}", setting=name
        )


def _configuration_error(exc: ValidationError) -> ConfigurationError:
    lines = []
    first: str | None = None
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if field:
            variable = f"{ENV_PREFIX}{field.upper()}"
            first = first or variable
            message = f"{variable}: {message}"
        else:
            # A model-level check (the URL): our own ConfigurationError names the setting.
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, ConfigurationError) and cause.setting:
                first = first or cause.setting
        lines.append(message)
    return ConfigurationError("invalid mail settings:\n  " + "\n  ".join(lines), setting=first)
