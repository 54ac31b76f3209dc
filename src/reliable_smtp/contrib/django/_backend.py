"""``EmailBackend``: Django's SMTP backend, with reliable-smtp doing the sending.

It keeps Django's contract - the settings, the constructor keywords, ``open()`` /
``close()`` / ``with``, ``send_messages()`` and its count, ``fail_silently`` - and
hands each message, converted with ``message.message()``, to a
:class:`~reliable_smtp.Mailer` over an :class:`~reliable_smtp.SMTPTransport`.

Where the settings come from, highest first:

1. constructor keywords (``get_connection(host=...)``, or a ``MAILERS`` entry's
   ``OPTIONS`` on Django 6.1+);
2. Django settings: ``EMAIL_*`` for the connection (ignored for a ``MAILERS``
   entry, as Django does), ``RELIABLE_SMTP_<NAME>`` for what reliable-smtp adds;
3. ``RELIABLE_SMTP_<NAME>`` environment variables (and ``.env``), for what
   reliable-smtp adds only: the connection is Django's to configure;
4. the defaults.

``<NAME>`` is one of :data:`RELIABLE_OPTIONS` (as keyword: lower case), plus two
that take objects: ``RELIABLE_SMTP_RETRY`` (a :class:`~reliable_smtp.RetryPolicy`,
overriding ``retry_attempts``/``retry_deadline``) and
``RELIABLE_SMTP_RECIPIENT_POLICY`` (a :class:`~reliable_smtp.RecipientPolicy`;
default ``None``: Django checks address syntax itself), and one switch:
``RELIABLE_SMTP_SHARED = True`` (keyword ``shared``) shares one mailer per
configuration across the process instead of one per open connection.
"""

from __future__ import annotations

import atexit
import email
import email.message
import email.policy
import ssl
import threading
from collections.abc import Iterable
from email.headerregistry import Address, AddressHeader
from functools import cached_property
from typing import Any

from django.conf import settings
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage
from django.core.mail.utils import DNS_NAME
from django.utils.encoding import force_str

from reliable_smtp import (
    AsyncMailer,
    DeliveryError,
    Envelope,
    InvalidAddressError,
    Mailer,
    MailerSettings,
    RecipientPolicy,
    RetryPolicy,
    SendResult,
    SMTPTransport,
    TLSMode,
)

from ._errors import django_compatible
from .signals import message_sent

__all__ = ["RELIABLE_OPTIONS", "EmailBackend", "close_shared_connections"]

#: What reliable-smtp adds, by keyword (``OPTIONS``) name; the Django setting and the
#: environment variable are ``RELIABLE_SMTP_`` + the name in upper case.
RELIABLE_OPTIONS = (
    "ca_file",
    "chunking",
    "connect_timeout",
    "data_timeout",
    "idle_timeout",
    "local_hostname",
    "max_connections",
    "max_messages_per_connection",
    "pipeline_across_messages",
    "pipelining",
    "pool_timeout",
    "rate_per_connection",
    "rate_per_minute",
    "rate_per_second",
    "retry_attempts",
    "retry_deadline",
)

_UNSET: Any = object()

#: With ``RELIABLE_SMTP_SHARED = True``: one mailer per configuration for the whole
#: process, used by every backend instance, so connections stay warm between
#: requests and rate limits hold across ``send_mail()`` calls.
_SHARED: dict[tuple[object, ...], Mailer] = {}
_SHARED_LOCK = threading.Lock()


def close_shared_connections() -> None:
    """Close every shared mailer (QUIT); the next send opens new ones.

    Runs at interpreter exit; call it yourself to end the connections sooner
    (a test's teardown, a worker's shutdown hook).
    """
    with _SHARED_LOCK:
        mailers = list(_SHARED.values())
        _SHARED.clear()
    for mailer in mailers:
        mailer.close()


atexit.register(close_shared_connections)


def _setting(name: str, default: Any = _UNSET) -> Any:
    return getattr(settings, name, default)


class EmailBackend(BaseEmailBackend):
    """A drop-in for ``django.core.mail.backends.smtp.EmailBackend``.

    Same keywords, same settings, same results; what it adds is configured by
    keyword (the names in :data:`RELIABLE_OPTIONS`, plus ``retry``,
    ``recipient_policy`` and ``shared``) or by ``RELIABLE_SMTP_*`` settings. ``connection`` is
    the open :class:`~reliable_smtp.Mailer` (``None`` when closed); ``options`` the
    :class:`~reliable_smtp.MailerSettings` in force (connection fields included).

    Subclass hooks: :meth:`build_transport`, :meth:`build_mailer`,
    :attr:`ssl_context`, :meth:`prep_address`, :meth:`convert`.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        fail_silently: bool = False,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        recipient_policy: RecipientPolicy | None = _UNSET,
        shared: bool | None = None,
        **kwargs: Any,
    ) -> None:
        own = {name: kwargs.pop(name) for name in RELIABLE_OPTIONS if name in kwargs}
        super().__init__(**kwargs)  # Django 6.1: alias=..., and it refuses unknown OPTIONS
        self.fail_silently = fail_silently
        self.connection: Mailer | None = None
        self._lock = threading.RLock()
        alias = getattr(self, "alias", None)
        if alias is None:
            # EMAIL_* settings, as Django's backend reads them.
            self.host = host or settings.EMAIL_HOST
            self.port = port or settings.EMAIL_PORT
            self.username = settings.EMAIL_HOST_USER if username is None else username
            self.password = settings.EMAIL_HOST_PASSWORD if password is None else password
            self.use_tls = settings.EMAIL_USE_TLS if use_tls is None else use_tls
            self.use_ssl = settings.EMAIL_USE_SSL if use_ssl is None else use_ssl
            self.timeout = settings.EMAIL_TIMEOUT if timeout is None else timeout
            self.ssl_keyfile = settings.EMAIL_SSL_KEYFILE if ssl_keyfile is None else ssl_keyfile
            self.ssl_certfile = (
                settings.EMAIL_SSL_CERTFILE if ssl_certfile is None else ssl_certfile
            )
            if self.use_ssl and self.use_tls:
                raise ValueError(
                    "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set "
                    "one of those settings to True."
                )
        else:
            # A MAILERS entry (Django 6.1+): OPTIONS only, as Django's backend does.
            from django.core.mail import InvalidMailer

            self.host, self.port, self.username, self.password = host, port, username, password
            self.use_tls, self.use_ssl = bool(use_tls), bool(use_ssl)
            self.timeout, self.ssl_keyfile, self.ssl_certfile = timeout, ssl_keyfile, ssl_certfile
            if self.host is None:
                raise InvalidMailer("OPTIONS must define 'host'.", alias=alias)
            if self.use_ssl and self.use_tls:
                raise InvalidMailer(
                    "The 'use_ssl' and 'use_tls' OPTIONS are incompatible. "
                    "Set at most one of them to True.",
                    alias=alias,
                )
            if self.port is None:
                self.port = 465 if self.use_ssl else 587 if self.use_tls else 25
        self.options = self._reliable_settings(own)
        self.retry = retry if retry is not None else _setting("RELIABLE_SMTP_RETRY", None)
        if recipient_policy is _UNSET:
            recipient_policy = _setting("RELIABLE_SMTP_RECIPIENT_POLICY", None)
        self.recipient_policy = recipient_policy
        self.shared = bool(_setting("RELIABLE_SMTP_SHARED", False) if shared is None else shared)

    # -- configuration -------------------------------------------------------------------

    @property
    def tls_mode(self) -> TLSMode:
        if self.use_ssl:
            return TLSMode.IMPLICIT
        return TLSMode.STARTTLS if self.use_tls else TLSMode.NONE

    def _reliable_settings(self, given: dict[str, Any]) -> MailerSettings:
        from_settings = {
            name: _setting(f"RELIABLE_SMTP_{name.upper()}") for name in RELIABLE_OPTIONS
        }
        values = {name: value for name, value in from_settings.items() if value is not _UNSET}
        values.update(given)
        # The connection is Django's: pass it explicitly so that no RELIABLE_SMTP_HOST
        # (or _URL) in the environment can redirect the mail.
        return MailerSettings(
            transport="smtp", host=str(self.host), port=int(self.port), tls=self.tls_mode, **values
        )

    @cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context: the system's trust store (or ``ca_file``), plus the client
        certificate when ``EMAIL_SSL_CERTFILE``/``EMAIL_SSL_KEYFILE`` are set."""
        ca_file = self.options.ca_file
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if self.ssl_certfile or self.ssl_keyfile:
            context.load_cert_chain(self.ssl_certfile or "", self.ssl_keyfile)
        return context

    def build_transport(self) -> SMTPTransport:
        """The transport for one open connection (a pool of ``max_connections``)."""
        options = self.options
        tls = self.tls_mode
        login = bool(self.username and self.password)  # Django logs in only with both
        return SMTPTransport(
            str(self.host),
            int(self.port),
            tls=tls,
            username=self.username if login else None,
            password=self.password if login else None,
            ssl_context=self.ssl_context if tls is not TLSMode.NONE else None,
            local_hostname=options.local_hostname or DNS_NAME.get_fqdn(),
            # EMAIL_TIMEOUT bounds connecting and each command, as it does for Django's
            # socket. Without it reliable-smtp's bounded defaults apply (Django would
            # wait forever). The final dot keeps its own, long timeout (RFC 5321
            # §4.5.3.2): giving up early there risks a duplicate.
            connect_timeout=self.timeout or options.connect_timeout,
            command_timeout=self.timeout or options.timeout,
            data_timeout=options.data_timeout,
            max_connections=options.max_connections,
            max_messages_per_connection=options.max_messages_per_connection,
            idle_timeout=options.idle_timeout,
            pool_timeout=options.pool_timeout,
            pipelining=options.pipelining,
            pipeline_across_messages=options.pipeline_across_messages,
            chunking=options.chunking,
            rate_limit=options.rate_limit(),
        )

    def build_mailer(self) -> Mailer:
        """The mailer for one open connection."""
        return Mailer(
            self.build_transport(),
            retry=self.retry or self.options.retry_policy(),
            recipient_policy=self.recipient_policy,
        )

    def build_async_mailer(self) -> AsyncMailer:
        """The same mailer for async code: what ``reliable_smtp_worker`` sends with."""
        return AsyncMailer(
            self.build_transport(),
            retry=self.retry or self.options.retry_policy(),
            recipient_policy=self.recipient_policy,
        )

    # -- Django's backend API ------------------------------------------------------------

    def open(self) -> bool | None:
        """Make sure a connection is open; True if this call opened it, False if it
        already was, None when opening failed silently.

        The SMTP connection itself is made when the first message goes (and made
        again if the server dropped it while idle).
        """
        if self.connection is not None:
            return False
        try:
            # Loading EMAIL_SSL_CERTFILE/KEYFILE can fail with an OSError: Django
            # silences those in open() too. Configuration errors are never silenced.
            self.connection = self._shared_mailer() if self.shared else self.build_mailer()
        except OSError:
            if self.fail_silently:
                return None
            raise
        return True

    def close(self) -> None:
        """Close the connection (QUIT); closing a closed backend is fine.

        A shared mailer stays open for the other backend instances (see
        :func:`close_shared_connections`).
        """
        mailer, self.connection = self.connection, None
        if mailer is not None and not self.shared:
            mailer.close()

    def _shared_mailer(self) -> Mailer:
        # Everything that shapes the mailer is in the key: a backend never borrows a
        # mailer built for another server, account or policy.
        key = (
            type(self),
            self.host,
            self.port,
            self.tls_mode,
            self.username,
            self.password,
            self.timeout,
            self.ssl_certfile,
            self.ssl_keyfile,
            self.options.model_dump_json(),
            self.retry,
            id(self.recipient_policy),
        )
        with _SHARED_LOCK:
            mailer = _SHARED.get(key)
            if mailer is None:
                mailer = _SHARED[key] = self.build_mailer()
            return mailer

    def send_messages(self, email_messages: Iterable[EmailMessage]) -> int:
        """Send the messages in order; return how many every recipient accepted."""
        if not email_messages:
            return 0
        with self._lock:
            new_connection = self.open()
            if self.connection is None or new_connection is None:
                return 0
            sent = 0
            try:
                for message in email_messages:
                    if self._send(message):
                        sent += 1
            finally:
                if new_connection:
                    self.close()
        return sent

    def _send(self, email_message: EmailMessage) -> bool:
        if not email_message.recipients():
            return False
        mailer = self.connection
        assert mailer is not None  # send_messages opened it
        envelope = Envelope.build(
            self.prep_address(email_message.from_email),
            [self.prep_address(address) for address in email_message.recipients()],
        )
        try:
            result = mailer.send(self.convert(email_message, envelope), envelope=envelope)
        except DeliveryError as error:
            raised = django_compatible(error)
            self._record(email_message, error.result, raised)
            if not self.fail_silently:
                raise raised from error.__cause__
            return False
        self._record(email_message, result, None)
        return True

    def _record(
        self, message: EmailMessage, result: SendResult | None, error: DeliveryError | None
    ) -> None:
        message.reliable_smtp_result = result  # type: ignore[attr-defined]
        message_sent.send(sender=type(self), message=message, result=result, error=error)

    # -- conversion ----------------------------------------------------------------------

    def convert(
        self, email_message: EmailMessage, envelope: Envelope
    ) -> email.message.EmailMessage:
        """The stdlib message reliable-smtp renders: Django's ``message()``.

        Bcc addresses are never in Django's headers; the envelope carries them. A
        ``Bcc`` header is added to the copy only so a message without To/Cc has
        recipients to render; reliable-smtp strips it from what is sent.
        """
        produced: email.message.Message = email_message.message()
        if isinstance(produced, email.message.EmailMessage):
            stdlib = produced  # Django 6
        else:
            # Django 5.2's SafeMIME* classes cannot be rendered under another policy
            # (their as_bytes() takes none): hand over a parse of their bytes.
            stdlib = email.message_from_bytes(produced.as_bytes(), policy=email.policy.default)
            assert isinstance(stdlib, email.message.EmailMessage)
        if stdlib.get("To") is None and stdlib.get("Cc") is None:
            stdlib["Bcc"] = ", ".join(envelope.recipients)
        return stdlib

    def prep_address(self, address: Any, force_ascii: bool = True) -> str:
        """The addr-spec of ``address``, IDNA-encoding a non-ASCII domain.

        Raises :class:`~reliable_smtp.InvalidAddressError` (a ``ValueError``, as
        Django raises) for anything but one valid address, CR/LF injection included.
        """
        text = force_str(address)
        parsed = AddressHeader.value_parser(text)
        defects = {str(defect) for defect in parsed.all_defects}
        defects.discard("addr-spec local part with no domain")  # Django allows "webmaster"
        if not force_ascii:
            defects.discard("local-part contains non-ASCII characters)")
        if defects:
            raise InvalidAddressError(
                f"Invalid address {text!r}: {'; '.join(sorted(defects))}",
                address=text,
                reason="; ".join(sorted(defects)),
            )
        mailboxes = parsed.all_mailboxes
        if len(mailboxes) != 1:
            raise InvalidAddressError(
                f"Invalid address {text!r}: must be a single address",
                address=text,
                reason="not a single address",
            )
        mailbox = mailboxes[0]
        if force_ascii and mailbox.domain and not mailbox.domain.isascii():
            try:
                domain = mailbox.domain.encode("idna").decode("ascii")
            except UnicodeError as exc:
                raise InvalidAddressError(
                    f"Invalid address {text!r}: the domain cannot be IDNA-encoded ({exc})",
                    address=text,
                    reason="domain not IDNA-encodable",
                ) from None
            return str(Address(username=mailbox.local_part, domain=domain))
        return str(mailbox.addr_spec)
