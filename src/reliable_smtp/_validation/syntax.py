"""Address syntax: the envelope form of one bare address, through email-validator.

This module owns :func:`parse_address` (pure, hence cached in one module-level
LRU of :data:`SYNTAX_CACHE_SIZE` entries): CR/LF/NUL refused before
email-validator sees the text, every email-validator option explicit on every
call, the local part as email-validator normalizes it and the domain in
lowercase IDNA form; and the limit (:data:`MAX_ADDRESS_INPUT`) that keeps
oversized inputs out of the cache.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from .._errors import InvalidAddressError

SYNTAX_CACHE_SIZE = 4096
"""How many syntax results the module-level LRU keeps (shared by every policy)."""

MAX_ADDRESS_INPUT = 1024
"""Inputs longer than this are refused without parsing or caching (an address is at
most 254 octets, RFC 5321 §4.5.3.1.3; the margin leaves email-validator's precise
"too long" reasons for near misses)."""

_CONTROLS = {"\r": "CR", "\n": "LF", "\x00": "NUL"}


@dataclass(frozen=True, slots=True)
class Parsed:
    address: str
    """Envelope form: normalized local part @ ASCII domain."""
    domain: str
    """ASCII, lowercase; ``[...]`` for an IP literal."""
    smtputf8: bool
    literal: bool


# check_deliverability=False means no DNS in validate_email; a timeout is still passed so
# that no email-validator module global is ever read.
_NO_DNS_TIMEOUT = 1


@functools.lru_cache(maxsize=SYNTAX_CACHE_SIZE)
def parse_address(
    address: str,
    allow_quoted_local: bool,
    allow_domain_literal: bool,
    globally_deliverable: bool,
) -> Parsed | str:
    """The envelope form of ``address``, or the reason it is not one. Pure, hence cached.

    SMTPUTF8 is always allowed here and refused by the policy afterwards, so the
    refusal gets its own kind and policies that differ only there share entries.
    """
    for char, name in _CONTROLS.items():
        if char in address:
            return (
                f"it contains a {name} character; remove it (CR, LF and NUL would let an "
                "address inject SMTP commands or headers)"
            )
    if not address:
        return "it is empty; give an address of the form local@domain"
    if address.strip() != address:
        return "it has leading or trailing whitespace; give the bare address local@domain"
    try:
        result = validate_email(
            address,
            allow_smtputf8=True,
            allow_empty_local=False,
            allow_quoted_local=allow_quoted_local,
            allow_domain_literal=allow_domain_literal,
            # Display names are parsed so the refusal below can say what was meant.
            allow_display_name=True,
            # strict: enforce RFC 5321's 64-octet local part too.
            strict=True,
            check_deliverability=False,
            test_environment=False,
            globally_deliverable=globally_deliverable,
            timeout=_NO_DNS_TIMEOUT,
            dns_resolver=None,
        )
    except EmailNotValidError as exc:
        return str(exc)
    except UnicodeError as exc:  # defensive: IDNA codecs on odd input
        return f"its domain cannot be encoded ({exc})"
    if result.display_name is not None:
        return (
            f"it is not a bare address: it has angle brackets or a display name around "
            f"{result.normalized!r}; give only local@domain (a display name that looks "
            "like an address is a phishing trick, so neither is picked)"
        )
    domain = result.ascii_domain.lower()
    return Parsed(
        address=f"{result.local_part}@{domain}",
        domain=domain,
        smtputf8=bool(result.smtputf8),
        literal=domain.startswith("["),
    )


def as_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidAddressError(
            f"{what} must be a str such as 'alice@example.org', got {type(value).__name__}",
            address=repr(value),
            reason="not a str",
        )
    # A str subclass may redefine __eq__/__hash__ (the cache key) or __str__: take the value.
    return value if type(value) is str else str.__str__(value)
