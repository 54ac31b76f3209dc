"""The recipient policy: which addresses a message may go to, and in what form.

This module owns :class:`RecipientPolicy` (its settings, checked when it is
built, and :meth:`RecipientPolicy.check`: syntax, denied and allowed domains,
suppression, deliverability, deduplication, limits, ``on_invalid``) and
:class:`RecipientCheck`, what a check decided. The decisions behind it are
documented once, in :mod:`reliable_smtp._validation`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeAlias

from .._checks import address_key, check_count, check_seconds
from .._envelope import Envelope, slot_setter
from .._errors import ConfigurationError, InvalidMessageError
from .._result import RecipientStatus
from .problems import AddressProblem, RecipientsRejectedError
from .resolver import DNSResolver, DomainCache, Resolver
from .syntax import MAX_ADDRESS_INPUT, Parsed, as_str, parse_address

ACCEPTED_CACHE_SIZE = 1024
"""How many accepted addresses each policy remembers (see ``RecipientPolicy._syntax``)."""

OnInvalid: TypeAlias = Literal["reject", "skip"]
"""``"reject"``: refuse the whole message; ``"skip"``: send to the valid recipients."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientCheck:
    """What :meth:`RecipientPolicy.check` decided.

    ``sender`` and ``recipients`` are in envelope form (normalized, IDNA domain),
    ``recipients`` deduplicated, in order, never empty. ``refused`` maps each
    refused address *as given* to its problem (only with ``on_invalid="skip"``;
    otherwise a refusal raises). ``originals`` maps each envelope recipient to the
    first address given for it. ``needs_smtputf8`` is True when an address has a
    non-ASCII local part.
    """

    sender: str
    recipients: tuple[str, ...]
    refused: Mapping[str, AddressProblem] = field(default_factory=dict)
    originals: Mapping[str, str] = field(default_factory=dict)
    needs_smtputf8: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipients", tuple(self.recipients))
        object.__setattr__(self, "refused", MappingProxyType(dict(self.refused)))
        object.__setattr__(self, "originals", MappingProxyType(dict(self.originals)))

    @property
    def problems(self) -> tuple[AddressProblem, ...]:
        """The refused recipients' problems, in the order they were given."""
        return tuple(self.refused.values())

    def envelope(self) -> Envelope:
        """MAIL FROM / RCPT TO for the accepted recipients."""
        return Envelope(self.sender, self.recipients)

    def refused_statuses(self, *, transport_name: str = "") -> dict[str, RecipientStatus]:
        """A PERMANENT, never-contacted status per refused address, keyed as given.

        See :meth:`AddressProblem.to_status`.
        """
        return {
            address: p.to_status(transport_name=transport_name)
            for address, p in self.refused.items()
        }


# What check() hands over when nothing was refused: one shared read-only empty mapping.
_NONE_REFUSED: Mapping[str, AddressProblem] = MappingProxyType({})


# The slots' own setters, for _decided.
_SET_SENDER = slot_setter(RecipientCheck, "sender")
_SET_RECIPIENTS = slot_setter(RecipientCheck, "recipients")
_SET_REFUSED = slot_setter(RecipientCheck, "refused")
_SET_ORIGINALS = slot_setter(RecipientCheck, "originals")
_SET_NEEDS_SMTPUTF8 = slot_setter(RecipientCheck, "needs_smtputf8")


def _decided(
    sender: str,
    recipients: tuple[str, ...],
    refused: dict[str, AddressProblem],
    originals: dict[str, str],
    needs_smtputf8: bool,
) -> RecipientCheck:
    """The :class:`RecipientCheck` that the constructor would make, without its copies.

    :meth:`RecipientPolicy.check` owns ``refused`` and ``originals`` and never touches
    them again, so read-only views of them need no copy; and the frozen dataclass's
    ``__init__`` and ``__post_init__`` (eight ``object.__setattr__`` calls, two dict
    copies) would cost a third of a check.
    """
    checked = object.__new__(RecipientCheck)
    _SET_SENDER(checked, sender)
    _SET_RECIPIENTS(checked, recipients)
    _SET_REFUSED(checked, MappingProxyType(refused) if refused else _NONE_REFUSED)
    _SET_ORIGINALS(checked, MappingProxyType(originals))
    _SET_NEEDS_SMTPUTF8(checked, needs_smtputf8)
    return checked


def _check_flag(value: object, setting: str) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{setting} must be True or False, got {value!r}", setting=setting)


def _normalize_domains(entries: object, setting: str) -> frozenset[str]:
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Iterable):
        raise ConfigurationError(
            f"{setting} must be a collection of domains such as ['example.com'], got {entries!r}",
            setting=setting,
        )
    domains = set()
    for entry in entries:
        if not isinstance(entry, str) or entry.startswith(("*", ".")):
            raise ConfigurationError(
                f"{setting} entry {entry!r} is not a domain: give the bare domain "
                "('example.com'); subdomains match when match_subdomains=True",
                setting=setting,
            )
        parsed = parse_address(f"postmaster@{entry}", False, True, False)
        if isinstance(parsed, str):
            raise ConfigurationError(
                f"{setting} entry {entry!r} is not a valid domain: {parsed}", setting=setting
            )
        domains.add(parsed.domain)
    return frozenset(domains)


def _matches(domain: str, domains: Collection[str], subdomains: bool) -> bool:
    if domain in domains:
        return True
    if not subdomains or domain.startswith("["):
        return False
    # Walk the parents at label boundaries: a.b.example.com -> b.example.com -> ...
    dot = domain.find(".")
    while dot >= 0:
        if domain[dot + 1 :] in domains:
            return True
        dot = domain.find(".", dot + 1)
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientPolicy:
    """Which addresses a message may go to, and what to do with the others.

    ``RecipientPolicy()`` checks syntax (internationalized addresses allowed;
    quoted local parts and IP literals refused), deduplicates, and refuses the
    whole message when any address is bad. No DNS unless
    ``check_deliverability=True``.

    Syntax (through email-validator, every option explicit on every call):

    * ``allow_smtputf8`` - non-ASCII local parts (``jörg@example.org``) are
      allowed and flagged :attr:`RecipientCheck.needs_smtputf8`; False refuses
      them (kind ``"smtputf8"``);
    * ``allow_quoted_local`` - ``"john doe"@example.com``;
    * ``allow_domain_literal`` - ``user@[192.0.2.1]``;
    * ``globally_deliverable`` - False also allows dotless domains; special-use
      names (``localhost``, ``.local``, ``.test``, ``.invalid``) are always refused
      by email-validator.

    Who may be mailed (recipients only; never the sender):

    * ``allowed_domains`` - when given, only these domains (``None``: any domain;
      an empty collection: none); ``denied_domains`` - never these;
      ``match_subdomains`` - entries also match their subdomains (default True;
      see the module docstring);
    * ``is_suppressed(address) -> bool`` - called with each remaining recipient in
      envelope form; True refuses it (known hard bounces, unsubscribes). Called
      from a worker thread under :meth:`acheck` with deliverability on.

    Limits:

    * ``max_recipients`` - distinct recipients per message (domain compared
      case-insensitively), counted before validation; more raise
      :class:`~reliable_smtp.InvalidMessageError`. ``None``: no limit;
    * ``max_recipients_per_transaction`` - how many RCPT TO one transaction may
      carry (100, the number RFC 5321 §4.5.3.1.8 obliges every server to accept);
      the mailer splits larger envelopes. ``None``: no splitting.

    Deliverability (off by default): ``check_deliverability``, ``dns_timeout``
    (seconds per domain), ``resolver`` (default :class:`DNSResolver`),
    ``dns_cache_size`` and ``dns_cache_ttl`` (per-policy cache), ``clock`` (for
    the cache's expiry; tests pass a fake).

    ``on_invalid``: ``"reject"`` raises :class:`RecipientsRejectedError` listing
    every refused address; ``"skip"`` returns the valid ones and reports the others
    in :attr:`RecipientCheck.refused`. A refused sender, or no recipient left,
    raises either way.
    """

    allow_smtputf8: bool = True
    allow_quoted_local: bool = False
    allow_domain_literal: bool = False
    globally_deliverable: bool = True
    allowed_domains: Collection[str] | None = None
    denied_domains: Collection[str] = frozenset()
    match_subdomains: bool = True
    is_suppressed: Callable[[str], bool] | None = field(default=None, compare=False)
    max_recipients: int | None = None
    max_recipients_per_transaction: int | None = 100
    on_invalid: OnInvalid = "reject"
    check_deliverability: bool = False
    dns_timeout: float = 5.0
    resolver: Resolver | None = field(default=None, compare=False)
    dns_cache_size: int = 1024
    dns_cache_ttl: float = 300.0
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    _dns_cache: DomainCache = field(init=False, repr=False, compare=False)
    _accepted: dict[str, Parsed] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in (
            "allow_smtputf8",
            "allow_quoted_local",
            "allow_domain_literal",
            "globally_deliverable",
            "match_subdomains",
            "check_deliverability",
        ):
            _check_flag(getattr(self, name), name)
        if self.on_invalid not in ("reject", "skip"):
            raise ConfigurationError(
                f"on_invalid must be 'reject' or 'skip', got {self.on_invalid!r}",
                setting="on_invalid",
            )
        check_count("max_recipients", self.max_recipients, allow_none=True)
        check_count(
            "max_recipients_per_transaction", self.max_recipients_per_transaction, allow_none=True
        )
        check_count("dns_cache_size", self.dns_cache_size, minimum=0, why="0 = no cache")
        check_seconds("dns_timeout", self.dns_timeout)
        check_seconds("dns_cache_ttl", self.dns_cache_ttl, allow_zero=True, why="0 = no caching")
        if self.allowed_domains is not None:
            allowed = _normalize_domains(self.allowed_domains, "allowed_domains")
            object.__setattr__(self, "allowed_domains", allowed)
        denied = _normalize_domains(self.denied_domains, "denied_domains")
        object.__setattr__(self, "denied_domains", denied)
        if self.is_suppressed is not None and not callable(self.is_suppressed):
            raise ConfigurationError(
                "is_suppressed must be a callable taking an address and returning a bool "
                f"(for example known_bounces.__contains__), got {self.is_suppressed!r}",
                setting="is_suppressed",
            )
        if not callable(self.clock):
            raise ConfigurationError(f"clock must be callable, got {self.clock!r}", setting="clock")
        if self.resolver is not None and not isinstance(self.resolver, Resolver):
            raise ConfigurationError(
                "resolver must have a has_mail_host(domain, *, timeout) method, "
                f"got {self.resolver!r}",
                setting="resolver",
            )
        if self.check_deliverability and self.resolver is None:
            if importlib.util.find_spec("dns") is None:  # pragma: no cover - a dependency
                raise ConfigurationError(
                    "check_deliverability=True needs dnspython: install it "
                    "(pip install dnspython) or pass resolver=",
                    setting="resolver",
                )
            object.__setattr__(self, "resolver", DNSResolver())
        object.__setattr__(self, "_dns_cache", DomainCache(self.dns_cache_size, self.dns_cache_ttl))
        object.__setattr__(self, "_accepted", {})

    # -- the entry points ---------------------------------------------------------------

    def check(self, sender: str, recipients: Sequence[str]) -> RecipientCheck:
        """Validate ``sender`` and ``recipients``; return the envelope to send.

        ``sender`` is a bare address or ``""`` (the null sender, for bounces);
        ``recipients`` a list of bare addresses. Raises
        :class:`RecipientsRejectedError` when the policy refuses the message (see
        ``on_invalid``), :class:`~reliable_smtp.InvalidAddressError` for an entry
        that is not a str, and :class:`~reliable_smtp.InvalidMessageError` for no
        recipients or more than ``max_recipients``. Does DNS lookups only with
        ``check_deliverability=True``.
        """
        given = self._recipient_list(recipients)
        sender_text = as_str(sender, "the sender")
        problems: list[AddressProblem] = []
        # Screening (domain lists, suppression) and DNS are off by default: skip their
        # calls then, as they cost more than the rest of a check of a cached address.
        screened = (
            bool(self.denied_domains)
            or self.allowed_domains is not None
            or self.is_suppressed is not None
        )
        dns = self.check_deliverability
        accepted = self._accepted  # see _syntax

        envelope_sender = ""
        needs_smtputf8 = False
        if sender_text:
            parsed_sender = accepted.get(sender_text) or self._syntax(sender_text, "sender")
            if isinstance(parsed_sender, AddressProblem):
                problems.append(parsed_sender)
            else:
                envelope_sender = parsed_sender.address
                needs_smtputf8 = parsed_sender.smtputf8
                if dns:
                    problem = self._deliverability(sender_text, parsed_sender, "sender")
                    if problem is not None:
                        problems.append(problem)

        refused: dict[str, AddressProblem] = {}
        # Envelope forms decided, accepted or refused. An envelope form is its own
        # address_key (its domain is lowercase already), so it serves as the dedupe key.
        seen: set[str] = set()
        originals: dict[str, str] = {}  # envelope form -> as given, in order
        for address in given:
            # Fast path for a repeat: an envelope form parses to itself, so a given address
            # equal to one already accepted is that same mailbox.
            if address in refused or address in originals:
                continue
            parsed = accepted.get(address) or self._syntax(address, "recipient")
            if isinstance(parsed, AddressProblem):
                refused[address] = parsed
                continue
            form = parsed.address
            if form in seen:
                # Another spelling of a mailbox already decided: same verdict, not a new one.
                continue
            seen.add(form)
            if screened or dns:
                problem = self._who(address, parsed) or self._deliverability(
                    address, parsed, "recipient"
                )
                if problem is not None:
                    refused[address] = problem
                    continue
            originals[form] = address
            needs_smtputf8 = needs_smtputf8 or parsed.smtputf8

        if problems or (refused and self.on_invalid == "reject") or not originals:
            raise RecipientsRejectedError([*problems, *refused.values()])
        return _decided(envelope_sender, tuple(originals), refused, originals, needs_smtputf8)

    async def acheck(self, sender: str, recipients: Sequence[str]) -> RecipientCheck:
        """:meth:`check` for async code: in a worker thread when it may do DNS lookups."""
        if not self.check_deliverability:
            return self.check(sender, recipients)
        return await asyncio.to_thread(self.check, sender, recipients)

    # -- the steps ------------------------------------------------------------------------

    def _recipient_list(self, recipients: object) -> list[str]:
        # A list or a tuple (what the mailer passes) skips the Iterable check, an ABC
        # check dearer than the rest of this method.
        if not isinstance(recipients, (list, tuple)) and (
            isinstance(recipients, (str, bytes)) or not isinstance(recipients, Iterable)
        ):
            raise InvalidMessageError(
                "recipients must be a list of addresses such as ['alice@example.org'], "
                f"got {type(recipients).__name__}"
                + (": wrap a single address in a list" if isinstance(recipients, str) else "")
            )
        # as_str inline for the usual exact str: a call per recipient costs more.
        given = [r if type(r) is str else as_str(r, "a recipient") for r in recipients]
        if not given:
            raise InvalidMessageError(
                "the message has no recipients: give at least one To, Cc or Bcc address"
            )
        if self.max_recipients is not None and len(given) > self.max_recipients:
            # Counted on distinct addresses, before validation: a huge list fails fast.
            count = len({address_key(a) for a in given})
            if count > self.max_recipients:
                raise InvalidMessageError(
                    f"the message has {count} distinct recipients, more than the recipient "
                    f"policy's max_recipients={self.max_recipients}: split it into several "
                    "messages, or raise max_recipients"
                )
        return given

    def _syntax(
        self, address: str, role: Literal["sender", "recipient"]
    ) -> Parsed | AddressProblem:
        if len(address) > MAX_ADDRESS_INPUT:
            return AddressProblem(
                address=address,
                kind="syntax",
                reason=f"it is {len(address)} characters long; an address is at most 254 octets",
                role=role,
            )
        parsed = parse_address(
            address, self.allow_quoted_local, self.allow_domain_literal, self.globally_deliverable
        )
        if isinstance(parsed, str):
            return AddressProblem(address=address, kind="syntax", reason=parsed, role=role)
        if parsed.smtputf8 and not self.allow_smtputf8:
            return AddressProblem(
                address=address,
                kind="smtputf8",
                reason=(
                    "its local part has non-ASCII characters, which need the SMTPUTF8 "
                    "extension, and this policy has allow_smtputf8=False; use an ASCII "
                    "address"
                ),
                role=role,
            )
        # Remembered for this policy (whose options decided it), so that a repeat - the
        # sender on nearly every message, recurring recipients - costs one dict lookup
        # instead of this method and the LRU's key of four arguments. Accepted addresses
        # only: a refusal is rare and needs its role. Bounded: cleared when full.
        accepted = self._accepted
        if len(accepted) >= ACCEPTED_CACHE_SIZE:
            accepted.clear()
        accepted[address] = parsed
        return parsed

    def _who(self, address: str, parsed: Parsed) -> AddressProblem | None:
        denied = self.denied_domains
        if denied and _matches(parsed.domain, denied, self.match_subdomains):
            return AddressProblem(
                address=address,
                kind="denied",
                reason=f"the domain {parsed.domain} is in denied_domains; not contacted",
            )
        allowed = self.allowed_domains
        if allowed is not None and not _matches(parsed.domain, allowed, self.match_subdomains):
            return AddressProblem(
                address=address,
                kind="not_allowed",
                reason=(
                    f"the domain {parsed.domain} is not in allowed_domains "
                    f"({', '.join(sorted(allowed))}); not contacted"
                ),
            )
        if self.is_suppressed is not None and self.is_suppressed(parsed.address):
            return AddressProblem(
                address=address,
                kind="suppressed",
                reason=(
                    "it is on the suppression list (is_suppressed returned True, e.g. an "
                    "earlier hard bounce); not contacted"
                ),
            )
        return None

    def _deliverability(
        self, address: str, parsed: Parsed, role: Literal["sender", "recipient"]
    ) -> AddressProblem | None:
        if not self.check_deliverability or parsed.literal:
            return None
        if self._has_mail_host(parsed.domain) is False:
            return AddressProblem(
                address=address,
                kind="undeliverable",
                reason=(
                    f"the domain {parsed.domain} has no mail server (no MX, A or AAAA "
                    "record, or a null MX): check the address for a typo"
                ),
                role=role,
            )
        return None

    def _has_mail_host(self, domain: str) -> bool | None:
        cache = self._dns_cache
        hit, answer = cache.get(domain, self.clock())
        if hit:
            return answer
        resolver = self.resolver
        assert resolver is not None  # set in __post_init__ when checking deliverability
        try:
            answer = resolver.has_mail_host(domain, timeout=self.dns_timeout)
        except (TimeoutError, OSError):
            answer = None
        if answer is not None:
            answer = bool(answer)
        cache.put(domain, answer, self.clock())
        return answer
