"""Refused addresses: why each one was refused, and the error that lists them.

This module owns :class:`AddressProblem` (the address as given, the kind of
problem, the detail, sender or recipient; as a never-contacted PERMANENT
:class:`~reliable_smtp.RecipientStatus` through :meth:`AddressProblem.to_status`)
and :class:`RecipientsRejectedError`, raised when the policy refuses a message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, TypeAlias

from .._errors import InvalidAddressError
from .._replies import Outcome, Phase
from .._result import RecipientStatus

ProblemKind: TypeAlias = Literal[
    "syntax", "smtputf8", "denied", "not_allowed", "suppressed", "undeliverable"
]
"""Why an address was refused (:attr:`AddressProblem.kind`)."""

# Phrases that open AddressProblem.explanation, per kind.
_LEADS: Mapping[str, str] = MappingProxyType(
    {
        "syntax": "is not a valid address",
        "smtputf8": "needs SMTPUTF8",
        "denied": "is in a denied domain",
        "not_allowed": "is not in an allowed domain",
        "suppressed": "is suppressed",
        "undeliverable": "is undeliverable",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressProblem:
    """Why one address was refused.

    ``address`` is the address as given; ``kind`` the class of problem;
    ``reason`` the detail (for syntax errors, email-validator's own sentence);
    ``role`` whether it is the sender or a recipient.
    """

    address: str
    kind: ProblemKind
    reason: str
    role: Literal["sender", "recipient"] = "recipient"

    @property
    def explanation(self) -> str:
        """One line for people: who, what is wrong, and the fix where there is one."""
        return f"{self.role} {self.address!r} {_LEADS[self.kind]}: {self.reason}"

    def __str__(self) -> str:
        return self.explanation

    def to_status(self, *, transport_name: str = "") -> RecipientStatus:
        """This refusal as a recipient status: PERMANENT, phase RCPT, no reply, 0 attempts."""
        return RecipientStatus(
            recipient=self.address,
            outcome=Outcome.PERMANENT,
            phase=Phase.RCPT,
            reply=None,
            explanation=self.explanation,
            transport_name=transport_name,
            retryable=False,
            attempts=0,
        )


class RecipientsRejectedError(InvalidAddressError):
    """The recipient policy refused the message; nothing was sent.

    ``problems`` lists every refused address (the sender's first, if it was
    refused) with its kind and reason. Raised when the sender is refused, when
    any recipient is refused and the policy says ``on_invalid="reject"``, and
    when no recipient is left. ``address`` and ``reason`` (from
    :class:`~reliable_smtp.InvalidAddressError`) are those of the first problem.
    """

    def __init__(self, problems: Iterable[AddressProblem]) -> None:
        listed = tuple(problems)
        if not listed:
            raise ValueError("RecipientsRejectedError needs at least one problem")
        super().__init__(_summarize(listed), address=listed[0].address, reason=listed[0].reason)
        self.problems = listed


def _summarize(problems: tuple[AddressProblem, ...]) -> str:
    recipients = sum(p.role == "recipient" for p in problems)
    parts = []
    if recipients < len(problems):
        parts.append("the sender")
    if recipients:
        parts.append(f"{recipients} recipient{'s' * (recipients != 1)}")
    lines = [f"the recipient policy refused {' and '.join(parts)}; nothing was sent:"]
    lines.extend(f"  - {p.explanation}" for p in problems)
    return "\n".join(lines)
