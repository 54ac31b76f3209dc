"""Address syntax: the envelope form of one bare address, through email-validator.

This module owns :func:`parse_address` (pure, hence cached in one module-level
LRU of :data:`SYNTAX_CACHE_SIZE` entries): CR/LF/NUL refused before
email-validator sees the text, every email-validator option explicit on every
call, the local part as email-validator normalizes it and the domain in
lowercase IDNA form; and the limit (:data:`MAX_ADDRESS_INPUT`) that keeps
oversized inputs out of the cache.

Most addresses are plain ASCII (``dot-atom@host.name``), and for those
email-validator's answer is known without running it (~40 µs per address, the
largest cost of a send): :func:`_plain_address` takes exactly those whose
checks it can make itself - every length limit, the special-use names, the
RFC 2142 mailbox names - and hands everything else (non-ASCII, Punycode or
``--`` labels, a dotless or numeric TLD, quotes, literals, any doubt) to
email-validator. ``tests/test_validation.py`` checks that both give the same
result. Its domain checks are remembered per domain (:func:`_plain_domain`), as
a new address is usually at a domain seen before.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

import email_validator
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import (
    CASE_INSENSITIVE_MAILBOX_NAMES,
    DNS_LABEL_LENGTH_LIMIT,
    DOMAIN_MAX_LENGTH,
    EMAIL_MAX_LENGTH,
    LOCAL_PART_MAX_LENGTH,
)

from .._errors import InvalidAddressError

SYNTAX_CACHE_SIZE = 4096
"""How many syntax results the module-level LRU keeps (shared by every policy)."""

MAX_ADDRESS_INPUT = 1024
"""Inputs longer than this are refused without parsing or caching (an address is at
most 254 octets, RFC 5321 §4.5.3.1.3; the margin leaves email-validator's precise
"too long" reasons for near misses)."""

_CONTROLS = {"\r": "CR", "\n": "LF", "\x00": "NUL"}


class Parsed(NamedTuple):
    # A NamedTuple, not a frozen dataclass: as immutable, and built in half the time
    # (one is built per new address, and it is the plain path's largest cost after the
    # regular expression).
    address: str
    """Envelope form: normalized local part @ ASCII domain."""
    domain: str
    """ASCII, lowercase; ``[...]`` for an IP literal."""
    smtputf8: bool
    literal: bool


# check_deliverability=False means no DNS in validate_email; a timeout is still passed so
# that no email-validator module global is ever read.
_NO_DNS_TIMEOUT = 1


# RFC 5322 atext (email-validator's ATEXT) in dot-atom form @ hostname labels (letters,
# digits, inner hyphens; at most DNS_LABEL_LENGTH_LIMIT characters) with at least one
# dot, the last label ending in a letter: what passes every option of email-validator
# alike. ASCII only: [a-z] never matches beyond it. Neither part can hold an "@", so an
# address is plain when the parts either side of its last "@" match.
_ATEXT = r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+"
_INNER = f"{{0,{DNS_LABEL_LENGTH_LIMIT - 2}}}"  # a label's characters between its ends
_LABEL = rf"[a-zA-Z0-9](?:[a-zA-Z0-9-]{_INNER}[a-zA-Z0-9])?"
_PLAIN_LOCAL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_PLAIN_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+(?:[a-zA-Z0-9][a-zA-Z0-9-]{_INNER})?[a-zA-Z]")

DOMAIN_CACHE_SIZE = 512
"""How many domains :func:`_plain_domain` remembers (cleared when full)."""


class _SpecialUse(NamedTuple):
    """email-validator's special-use names, as read, and what is derived from them."""

    names: list[str]
    suffixes: tuple[str, ...]
    """``.name`` for each name: one ``str.endswith`` call checks them all."""
    domains: dict[str, str | None]
    """:func:`_plain_domain`'s answers, which depend on the names."""


_special_use = _SpecialUse([], (), {})


def _plain_domain(domain: str) -> str | None:
    """The lowercase form of a plain hostname, or ``None``: email-validator decides.

    Remembered (at most :data:`DOMAIN_CACHE_SIZE` domains, cleared when full): most
    new addresses are at a domain seen before (a new customer at gmail.com), and these
    checks cost as much as the rest of a plain address. The answers are
    dropped whenever ``email_validator.SPECIAL_USE_DOMAIN_NAMES`` no longer equals the
    list they were made with, so that it is still read at call time, as email-validator
    does (applications may change it, in place or by assignment).
    """
    global _special_use
    special_use = _special_use
    names = email_validator.SPECIAL_USE_DOMAIN_NAMES
    if names != special_use.names:  # an unchanged list compares equal item by identity
        suffixes = tuple(f".{name}" for name in names)
        special_use = _special_use = _SpecialUse(list(names), suffixes, {})  # atomically
    known = special_use.domains
    if domain in known:
        return known[domain]
    answer: str | None = None
    # "--" after two characters is Punycode (xn--, decoded by email-validator) or an
    # invalid R-LDH label (RFC 5890); either way email-validator decides. The labels
    # are within the DNS limit (the regular expression says so). UTS-46 mapping of an
    # ASCII hostname is lowercasing, and the special-use names are checked on the
    # result: "x.test" ends with ".test", and so does "." + "test" itself.
    if (
        len(domain) <= DOMAIN_MAX_LENGTH
        and "--" not in domain
        and _PLAIN_DOMAIN.fullmatch(domain) is not None
    ):
        lowered = domain.lower()
        if not f".{lowered}".endswith(special_use.suffixes):
            answer = lowered
    if len(known) >= DOMAIN_CACHE_SIZE:
        known.clear()
    known[domain] = answer
    return answer


def _plain_address(address: str) -> Parsed | None:
    """What email-validator would return for a plain ASCII address; ``None``: ask it.

    ``None`` for everything this function does not decide exactly as email-validator
    does, including every address it would refuse (so the refusal keeps its wording).
    """
    local, at, domain = address.rpartition("@")
    if (
        not at
        or len(address) > EMAIL_MAX_LENGTH
        or len(local) > LOCAL_PART_MAX_LENGTH
        or _PLAIN_LOCAL.fullmatch(local) is None
    ):
        return None
    ascii_domain = _plain_domain(domain)
    if ascii_domain is None:
        return None
    if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:  # RFC 2142: postmaster@, abuse@...
        local = local.lower()
    return Parsed(f"{local}@{ascii_domain}", ascii_domain, False, False)


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
    # A plain address means the same under every option: no quotes, no literal, a dot.
    return _plain_address(address) or _validated(
        address, allow_quoted_local, allow_domain_literal, globally_deliverable
    )


def _validated(
    address: str,
    allow_quoted_local: bool,
    allow_domain_literal: bool,
    globally_deliverable: bool,
) -> Parsed | str:
    """:func:`parse_address` through email-validator, for any address."""
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
