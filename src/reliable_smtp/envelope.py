"""The SMTP envelope: who the message is from (MAIL FROM) and to whom it goes (RCPT TO).

The envelope is separate from the message headers: Bcc recipients are in the
envelope but never in the headers, and a bounce address may differ from From:.
Transports see only an :class:`Envelope` and the rendered bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._checks import address_key, line_breaker
from .errors import InvalidAddressError, InvalidMessageError

__all__ = ["Envelope", "check_no_control_characters", "dedupe_addresses"]


def check_no_control_characters(value: str, *, what: str) -> None:
    """Reject CR, LF and NUL: they would let a value inject SMTP commands or headers."""
    name = line_breaker(value)
    if name is not None:
        raise InvalidAddressError(
            f"{what} {value!r} contains a {name} character; remove it "
            "(CR, LF and NUL would let it inject SMTP commands or headers)",
            address=value,
            reason=f"contains {name}",
        )


def dedupe_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """Drop repeated addresses (domain compared case-insensitively), keeping first occurrences."""
    seen: set[str] = set()
    unique: list[str] = []
    for address in addresses:
        key = address_key(address)
        if key not in seen:
            seen.add(key)
            unique.append(address)
    return tuple(unique)


@dataclass(frozen=True, slots=True)
class Envelope:
    """MAIL FROM and RCPT TO for one message.

    ``sender`` is the bare reverse-path address (``""`` for the null sender ``<>``
    used by bounces); ``recipients`` are bare addresses, deduplicated, in order.
    Use :meth:`build` to deduplicate; the constructor only validates.
    """

    sender: str
    recipients: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.recipients, tuple):
            object.__setattr__(self, "recipients", tuple(self.recipients))
        check_no_control_characters(self.sender, what="envelope sender")
        if not self.recipients:
            raise InvalidMessageError(
                "the envelope has no recipients: give at least one To, Cc or Bcc address"
            )
        for recipient in self.recipients:
            if not recipient or "@" not in recipient:
                raise InvalidAddressError(
                    f"envelope recipient {recipient!r} is not an address of the form local@domain",
                    address=recipient,
                    reason="not local@domain",
                )
            check_no_control_characters(recipient, what="envelope recipient")
        if self.sender and "@" not in self.sender:
            raise InvalidAddressError(
                f"envelope sender {self.sender!r} is not an address of the form local@domain "
                "(use '' for the null sender)",
                address=self.sender,
                reason="not local@domain",
            )

    @classmethod
    def build(cls, sender: str, recipients: Iterable[str]) -> Envelope:
        """An envelope with ``recipients`` deduplicated (first occurrence kept)."""
        return cls(sender, dedupe_addresses(recipients))

    @property
    def needs_smtputf8(self) -> bool:
        """True when an address has non-ASCII characters (RFC 6531 SMTPUTF8 needed)."""
        return not all(a.isascii() for a in (self.sender, *self.recipients))

    def only(self, recipients: Iterable[str]) -> Envelope:
        """The same envelope restricted to ``recipients`` (used to retry the pending ones)."""
        wanted = set(recipients)
        return Envelope(self.sender, tuple(r for r in self.recipients if r in wanted))
