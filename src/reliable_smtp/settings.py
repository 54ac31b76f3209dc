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

import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .dsn import parse_url
from .errors import ConfigurationError, InsecureConfigurationWarning
from .ratelimit import RateLimit
from .retry import RetryPolicy
from .transports.base import Transport
from .transports.smtp import (
    DEFAULT_PORTS,
    SMTPTransport,
    TLSMode,
    TokenProvider,
    is_loopback_host,
)

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
    username: str | None = Field(default=None, description="AUTH user name.")
    password: SecretStr | None = Field(default=None, description="AUTH password (kept secret).")
    timeout: float = Field(default=60.0, description="Seconds to wait for each command reply.")
    connect_timeout: float = Field(
        default=30.0, description="Seconds for TCP connect, TLS handshake and greeting."
    )
    data_timeout: float = Field(
        default=600.0, description="Seconds to wait for the reply to the final dot."
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

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _configuration_error(exc) from None

    @model_validator(mode="before")
    @classmethod
    def _expand_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("url") in (None, ""):
            return data
        url = data["url"]
        text = url.get_secret_value() if isinstance(url, SecretStr) else str(url)
        # Discrete settings (from arguments, the environment or .env) refine the URL.
        return {**parse_url(text, variable=f"{ENV_PREFIX}URL"), **data}

    @field_validator("tls", mode="before")
    @classmethod
    def _lower_tls(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "timeout",
        "connect_timeout",
        "data_timeout",
        "retry_deadline",
        "idle_timeout",
        "pool_timeout",
        "rate_per_second",
        "rate_per_minute",
        "rate_per_connection",
        "failover_down_for",
    )
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and (not value > 0 or value == float("inf")):
            raise ValueError("must be a positive, finite number (every wait is bounded)")
        return value

    @field_validator("port")
    @classmethod
    def _port_range(cls, value: int | None) -> int | None:
        if value is not None and not 0 < value < 65536:
            raise ValueError("must be between 1 and 65535")
        return value

    @field_validator("retry_attempts", "max_connections", "max_messages_per_connection")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MailerSettings:
        if self.transport == "smtp":
            port = self.port or DEFAULT_PORTS[self.tls]
            if self.tls is TLSMode.STARTTLS and port == 465:
                raise ValueError(
                    "port 465 speaks implicit TLS: set RELIABLE_SMTP_TLS=implicit, "
                    "or use RELIABLE_SMTP_PORT=587 with STARTTLS"
                )
            if self.tls is TLSMode.IMPLICIT and port in (25, 587):
                raise ValueError(
                    f"port {port} expects STARTTLS: set RELIABLE_SMTP_TLS=starttls, "
                    "or use RELIABLE_SMTP_PORT=465 with implicit TLS"
                )
            if self.password is not None and self.username is None:
                raise ValueError(
                    "RELIABLE_SMTP_PASSWORD is set but RELIABLE_SMTP_USERNAME is not: set both"
                )
            if (
                self.password is not None
                and self.tls is TLSMode.NONE
                and not is_loopback_host(self.host)
            ):
                warnings.warn(
                    f"RELIABLE_SMTP_TLS=none sends the password to {self.host} in clear text; "
                    "use RELIABLE_SMTP_TLS=starttls (587) or implicit (465) unless this relay "
                    "is on a network you trust",
                    InsecureConfigurationWarning,
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

    def build_transport(self, *, oauth_token_provider: TokenProvider | None = None) -> Transport:
        """The transport these settings describe.

        With ``fallback_urls``, a :class:`~reliable_smtp.FailoverTransport` over this
        server and then each fallback (which share every setting their URL does not
        set). ``oauth_token_provider`` (SMTP only) authenticates the primary with
        XOAUTH2 instead of a password: a function cannot come from the environment.
        """
        primary = self._build_one(oauth_token_provider)
        if self.fallback_urls is None:
            return primary
        from .transports.composite import FailoverTransport

        urls = [u.strip() for u in self.fallback_urls.get_secret_value().split(",") if u.strip()]
        members = [primary, *(self._fallback(url)._build_one(None) for url in urls)]
        return FailoverTransport(members, down_for=self.failover_down_for)

    def _fallback(self, url: str) -> MailerSettings:
        """Settings for one fallback server: its URL, plus our settings it does not set."""
        shared = self.model_dump(exclude=set(_CONNECTION_FIELDS | {"url", "fallback_urls"}))
        try:
            # model_validate, not the constructor: the environment must not override
            # the fallback URL's host, port or credentials with the primary's.
            return MailerSettings.model_validate({**shared, "url": url})
        except ValidationError as exc:
            error = _configuration_error(exc)
            raise ConfigurationError(
                str(error).replace(f"{ENV_PREFIX}URL", f"{ENV_PREFIX}FALLBACK_URLS"),
                setting=f"{ENV_PREFIX}FALLBACK_URLS",
            ) from None
        except ConfigurationError as error:
            raise ConfigurationError(
                str(error).replace(f"{ENV_PREFIX}URL", f"{ENV_PREFIX}FALLBACK_URLS"),
                setting=f"{ENV_PREFIX}FALLBACK_URLS",
            ) from None

    def _build_one(self, oauth_token_provider: TokenProvider | None) -> Transport:
        if self.transport == "sendmail":
            from .transports.sendmail import SendmailTransport

            return SendmailTransport(str(self.sendmail_path), timeout=self.timeout)
        if self.transport == "file":
            from .transports.file import FileTransport

            assert self.file_directory is not None  # checked by _consistent
            return FileTransport(self.file_directory)
        if self.transport == "memory":
            from .transports.memory import MemoryTransport

            return MemoryTransport()
        return SMTPTransport(
            self.host,
            self.port,
            tls=self.tls,
            username=self.username,
            password=self.password,
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
            rate_limit=self.rate_limit(),
            warn_insecure=False,  # checked above, with the variable names
            oauth_token_provider=oauth_token_provider,
        )

    def rate_limit(self) -> RateLimit | None:
        """The rate limit these settings describe, or ``None``."""
        per_transport = self.rate_per_second
        if self.rate_per_minute is not None:
            per_transport = self.rate_per_minute / 60
        if per_transport is None and self.rate_per_connection is None:
            return None
        return RateLimit(per_transport=per_transport, per_connection=self.rate_per_connection)

    def retry_policy(self) -> RetryPolicy:
        """The retry policy these settings describe (other fields keep their defaults)."""
        return RetryPolicy(attempts=self.retry_attempts, deadline=self.retry_deadline)


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
        lines.append(message)
    return ConfigurationError("invalid mail settings:\n  " + "\n  ".join(lines), setting=first)
