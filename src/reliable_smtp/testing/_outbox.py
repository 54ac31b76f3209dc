"""The outbox: a transport that keeps what the application sent, and asks questions about it.

This module owns:

* :class:`Outbox` - a :class:`~reliable_smtp.MemoryTransport` with assertion
  helpers (:meth:`Outbox.find`, :meth:`Outbox.one`, :meth:`Outbox.assert_sent`,
  :meth:`Outbox.assert_nothing_sent`) whose failures list what *is* in the outbox;
* :class:`OutboxMessage` - one message it kept, with the parsed parts a test asks
  about: ``text``, ``html``, ``attachments``, ``headers``, ``to``/``cc``/``bcc``;
* :class:`OutboxAttachment` - one attachment (or inline image) of such a message.

The outbox works the same behind a sync :class:`~reliable_smtp.Mailer` and an
:class:`~reliable_smtp.AsyncMailer`: it is just a transport. Read it once the send
has returned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from typing import TypeAlias

from .._envelope import Envelope
from .._replies import Reply
from .._result import DeliveryReport
from .._transports._commit import before_commit
from .._transports.memory import MemoryTransport, SentMessage

__all__ = ["Outbox", "OutboxAttachment", "OutboxMessage", "TextMatch"]

#: A filter on text: a string (compared as documented per filter) or a compiled regex,
#: which matches when :meth:`re.Pattern.search` finds it.
TextMatch: TypeAlias = "str | re.Pattern[str]"


def _address(value: str) -> str:
    # "Ann <ann@x.org>" and "ANN@X.ORG" name the same mailbox for a test's purposes.
    return (parseaddr(value)[1] or value).strip().lower()


def _lines(text: str) -> str:
    # Bodies arrive with CRLF line endings; tests compare with "\n".
    return text.replace("\r\n", "\n")


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxAttachment:
    """One attachment or inline image of an :class:`OutboxMessage`, decoded."""

    filename: str | None
    content_type: str
    """The MIME type without parameters (``"application/pdf"``)."""
    content: bytes
    inline: bool = False
    """True for a part with ``Content-Disposition: inline`` (an image the HTML shows)."""
    content_id: str | None = None
    """The ``Content-ID`` without angle brackets, for ``cid:`` references."""


class _Headers(Mapping[str, str]):
    """Header name -> first value, looked up case-insensitively (``headers["list-id"]``)."""

    __slots__ = ("_first", "_names")

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._first: dict[str, str] = {}
        self._names: list[str] = []
        for name, value in items:
            key = name.lower()
            if key not in self._first:
                self._first[key] = value
                self._names.append(name)

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"Headers({dict(zip(self._names, self._first.values(), strict=True))!r})"


class OutboxMessage(SentMessage):
    """A message an :class:`Outbox` kept: the envelope, the exact bytes, and parsed views.

    Everything here is read from ``content`` the way a mail client would read it:
    ``text`` and ``html`` are the decoded bodies (with ``"\\n"`` line endings),
    ``headers`` the decoded headers, ``to``/``cc`` the addresses in those headers and
    ``bcc`` the envelope recipients that no header names.
    """

    __slots__ = ()

    @property
    def text(self) -> str | None:
        """The decoded ``text/plain`` body, or ``None`` when there is none."""
        return self._body("plain")

    @property
    def html(self) -> str | None:
        """The decoded ``text/html`` body, or ``None`` when there is none."""
        return self._body("html")

    def _body(self, subtype: str) -> str | None:
        part = self.message.get_body(preferencelist=(subtype,))
        if not isinstance(part, EmailMessage) or part.get_content_subtype() != subtype:
            return None
        content = part.get_content()
        return _lines(content) if isinstance(content, str) else None

    @property
    def attachments(self) -> tuple[OutboxAttachment, ...]:
        """Every attachment and inline image, in order, decoded."""
        found: list[OutboxAttachment] = []
        for part in self.message.walk():
            if part.is_multipart():
                continue
            disposition = part.get_content_disposition()
            filename = part.get_filename()
            if disposition != "attachment" and filename is None:
                continue  # a body, not a file
            payload = part.get_payload(decode=True)
            content_id = part.get("Content-ID")
            found.append(
                OutboxAttachment(
                    filename=filename,
                    content_type=part.get_content_type(),
                    content=payload if isinstance(payload, bytes) else b"",
                    inline=disposition == "inline",
                    content_id=str(content_id).strip().strip("<>") if content_id else None,
                )
            )
        return tuple(found)

    @property
    def headers(self) -> Mapping[str, str]:
        """The decoded headers: name -> first value, case-insensitive names.

        For a header that occurs more than once use ``message.get_all(name)``.
        """
        return _Headers((name, str(value)) for name, value in self.message.items())

    @property
    def from_address(self) -> str | None:
        """The bare address of the ``From`` header (the envelope sender is ``sender``)."""
        value = self.message["From"]
        return None if value is None else (parseaddr(str(value))[1] or None)

    @property
    def to(self) -> tuple[str, ...]:
        """The bare addresses of the ``To`` header(s)."""
        return self._header_addresses("To")

    @property
    def cc(self) -> tuple[str, ...]:
        """The bare addresses of the ``Cc`` header(s)."""
        return self._header_addresses("Cc")

    @property
    def bcc(self) -> tuple[str, ...]:
        """Envelope recipients that no ``To``/``Cc`` header names: the blind copies."""
        shown = {_address(a) for a in (*self.to, *self.cc)}
        return tuple(r for r in self.recipients if _address(r) not in shown)

    @property
    def message_id(self) -> str | None:
        """The ``Message-ID`` without angle brackets."""
        value = self.message["Message-ID"]
        return None if value is None else str(value).strip().strip("<>")

    def _header_addresses(self, name: str) -> tuple[str, ...]:
        values = [str(v) for v in self.message.get_all(name, [])]
        return tuple(address for _, address in getaddresses(values) if address)

    def describe(self) -> str:
        """One line for failure messages: sender, recipients and subject."""
        recipients = ", ".join(self.recipients)
        return f"from {self.sender or '<>'} to {recipients}: {self.subject or ''!r}"


def _matches(value: str | None, wanted: TextMatch) -> bool:
    if value is None:
        return False
    if isinstance(wanted, re.Pattern):
        return wanted.search(value) is not None
    return value == wanted


def _contains(mail: OutboxMessage, wanted: TextMatch) -> bool:
    for body in (mail.text, mail.html):
        if body is None:
            continue
        if isinstance(wanted, re.Pattern):
            if wanted.search(body) is not None:
                return True
        elif wanted in body:
            return True
    return False


def _as_outbox_message(sent: SentMessage) -> OutboxMessage:
    if isinstance(sent, OutboxMessage):
        return sent
    return OutboxMessage(envelope=sent.envelope, content=sent.content)


class Outbox(MemoryTransport):
    """A :class:`~reliable_smtp.MemoryTransport` to assert on: every recipient is ``SENT``.

    ::

        outbox = Outbox()
        with Mailer(outbox) as mailer:
            reset_password(mailer, "alice@example.org")
        mail = outbox.one(to="alice@example.org")
        assert "https://example.com/reset/" in mail.text

    Filters (all keyword-only, all optional, combined with *and*):

    * ``to`` - an envelope recipient (Bcc included), compared case-insensitively;
      ``"Ann <ann@example.org>"`` works too;
    * ``subject`` - the decoded subject: equal to a string, or a regex found in it;
    * ``sender`` - the ``From`` address or the envelope sender (MAIL FROM);
    * ``contains`` - a substring (or regex) of the text or the HTML body.

    Iterating, indexing and :attr:`messages` give :class:`OutboxMessage` objects;
    ``outbox`` is the underlying list, as on any ``MemoryTransport``.
    """

    name = "outbox"

    @property
    def messages(self) -> list[OutboxMessage]:
        """Every message kept so far, oldest first (a copy)."""
        return [_as_outbox_message(sent) for sent in self.outbox]

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        """Keep the message and report every recipient ``SENT``."""
        self.ensure_open()
        await before_commit(envelope, transport_name=self.name)
        self.outbox.append(OutboxMessage(envelope=envelope, content=bytes(content)))
        return DeliveryReport.all_sent(
            envelope, transport_name=self.name, reply=Reply(250, "2.0.0", "kept in the outbox")
        )

    # -- questions -----------------------------------------------------------------------

    def find(
        self,
        *,
        to: str | None = None,
        subject: TextMatch | None = None,
        sender: str | None = None,
        contains: TextMatch | None = None,
    ) -> list[OutboxMessage]:
        """The messages matching every given filter (see the class docstring), oldest first."""
        found = []
        for mail in self.messages:
            if to is not None and _address(to) not in {_address(r) for r in mail.recipients}:
                continue
            if subject is not None and not _matches(mail.subject, subject):
                continue
            if sender is not None and _address(sender) not in {
                _address(mail.sender),
                _address(mail.from_address or ""),
            }:
                continue
            if contains is not None and not _contains(mail, contains):
                continue
            found.append(mail)
        return found

    def one(
        self,
        *,
        to: str | None = None,
        subject: TextMatch | None = None,
        sender: str | None = None,
        contains: TextMatch | None = None,
    ) -> OutboxMessage:
        """The one message matching the filters.

        Raises :class:`AssertionError` when none or several match; its message lists
        what the outbox does hold.
        """
        found = self.find(to=to, subject=subject, sender=sender, contains=contains)
        if len(found) != 1:
            wanted = _describe_filters(to=to, subject=subject, sender=sender, contains=contains)
            raise AssertionError(
                f"expected exactly 1 message {wanted}, found {len(found)}. {self._listing()}"
            )
        return found[0]

    def assert_sent(
        self,
        *,
        to: str | None = None,
        subject: TextMatch | None = None,
        sender: str | None = None,
        contains: TextMatch | None = None,
        count: int | None = None,
    ) -> list[OutboxMessage]:
        """Assert at least one message (or exactly ``count``) matches; return the matches."""
        found = self.find(to=to, subject=subject, sender=sender, contains=contains)
        if (count is None and not found) or (count is not None and len(found) != count):
            wanted = _describe_filters(to=to, subject=subject, sender=sender, contains=contains)
            expected = "at least 1 message" if count is None else f"{count} message(s)"
            raise AssertionError(
                f"expected {expected} {wanted}, found {len(found)}. {self._listing()}"
            )
        return found

    def assert_nothing_sent(self) -> None:
        """Assert the outbox is empty."""
        if self.outbox:
            raise AssertionError(f"expected no message to be sent. {self._listing()}")

    def _listing(self) -> str:
        messages = self.messages
        if not messages:
            return "The outbox is empty."
        lines = [f"The outbox holds {len(messages)} message{'s' * (len(messages) != 1)}:"]
        lines += [f"  [{index}] {mail.describe()}" for index, mail in enumerate(messages)]
        return "\n".join(lines)

    # -- a read-only sequence of messages ------------------------------------------------

    def __len__(self) -> int:
        return len(self.outbox)

    def __iter__(self) -> Iterator[OutboxMessage]:
        return iter(self.messages)

    def __getitem__(self, index: int) -> OutboxMessage:
        return _as_outbox_message(self.outbox[index])

    def __bool__(self) -> bool:
        # A transport is always "something", even when empty: `transport or default`
        # must never replace an empty outbox.
        return True


def _describe_filters(**filters: TextMatch | None) -> str:
    given = [f"{name}={value!r}" for name, value in filters.items() if value is not None]
    return f"matching {', '.join(given)}" if given else "(no filter)"
