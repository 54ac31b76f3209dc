"""Recipient validation: which addresses a message may go to, and in what form.

This module owns the checks made on envelope addresses before anything is sent:

* :class:`RecipientPolicy` - an immutable policy: address syntax and normalization
  (through email-validator), SMTPUTF8, quoted local parts and IP literals,
  allowed and denied domains, a suppression hook, deduplication, recipient limits,
  an optional DNS deliverability check, and what to do with bad addresses
  (``on_invalid``);
* :meth:`RecipientPolicy.check` - the entry point, pure except for the optional
  resolver: ``(sender, recipients)`` in, a :class:`RecipientCheck` out;
* :class:`RecipientCheck` - the envelope sender and recipients in the form to
  send, every refused address with its :class:`AddressProblem`, and whether the
  transaction needs SMTPUTF8;
* :class:`RecipientsRejectedError` - raised when the policy refuses the message:
  it lists every refused address and why;
* :class:`Resolver` (the lookup contract, so tests inject a fake) and
  :class:`DNSResolver` (the default, on dnspython).

Decisions, documented once:

* **Bare addresses only.** The policy receives envelope addresses
  (``local@domain``); :class:`~reliable_smtp.Message` already takes the display
  names off. ``Name <a@b.com>`` here is refused with a reason that says so: a
  display name that looks like an address (``"a@b.com" <evil@x.com>``) is a
  phishing trick, and silently picking either address would be wrong.
* **Envelope form.** The local part as email-validator normalizes it (Unicode NFC,
  needless quotes removed, RFC 2142 role names such as ``Postmaster`` lowercased);
  the domain in its ASCII (IDNA) form, lowercased: ``user@bücher.example`` goes out
  as ``user@xn--bcher-kva.example``. :attr:`RecipientCheck.originals` maps each
  envelope recipient back to the address as given.
* **SMTPUTF8** is needed only for a non-ASCII local part (an IDN domain has an
  ASCII form). :attr:`RecipientCheck.needs_smtputf8` says so; the SMTP transport
  already refuses before MAIL, with an explained permanent error, when the server
  lacks the extension.
* **Domain lists** hold domains in any form (Unicode or IDNA, any case); they are
  compared in IDNA form, case-insensitively. An entry matches that domain and,
  with ``match_subdomains=True`` (the default), every subdomain at a label
  boundary: ``example.com`` matches ``mail.example.com`` but never
  ``badexample.com``. Subdomains belong to the zone's owner, so this is what
  "our company's domain" means for an allow list and what a deny list needs to
  be hard to dodge. A domain in both lists is denied.
* **Order of checks** per recipient: syntax (and SMTPUTF8), denied, not allowed,
  suppressed, deliverable. The costly checks run last, after deduplication, so a
  refused or repeated address never reaches the suppression hook or DNS.
* **Caches.** Syntax results live in one module-level LRU
  (:func:`functools.lru_cache`, :data:`SYNTAX_CACHE_SIZE` entries, thread-safe)
  keyed by the address and the options that change the answer; inputs longer than
  :data:`MAX_ADDRESS_INPUT` characters are refused before it, so the cache stays
  small whatever callers send. DNS answers live in a per-policy LRU (bounded by
  ``dns_cache_size``, entries expire after ``dns_cache_ttl`` seconds, guarded by a
  lock), created with the policy: build the policy once and reuse it.
  ``dataclasses.replace`` gives the new policy an empty DNS cache, so answers from
  one resolver never leak into a policy that uses another.
* **Deliverability** (off by default) asks the resolver whether the domain has a
  mail host: MX, falling back to A/AAAA (RFC 5321 §5.1). ``False`` refuses the
  recipient (``"undeliverable"``); ``None`` (could not tell: timeout, no answer
  from any server) lets it through - the server will decide, as it would without
  the check. Every answer, ``None`` included, is cached for ``dns_cache_ttl``, so
  a DNS outage costs one timeout per domain, not one per send. The check blocks:
  from async code use :meth:`RecipientPolicy.acheck`, which runs it in a thread.
* **Refused recipients** become :class:`~reliable_smtp.RecipientStatus` entries via
  :meth:`AddressProblem.to_status`: outcome PERMANENT, phase RCPT (the recipient
  was refused where RCPT TO would have named it - by us, not a server),
  ``reply=None`` and ``attempts=0`` (never contacted).
* **Errors.** Whatever it is given, :meth:`RecipientPolicy.check` raises only
  :class:`~reliable_smtp.InvalidMessageError` and its subclasses (and
  :class:`~reliable_smtp.ConfigurationError` from the constructor). The
  suppression hook and resolver are the caller's code: what they raise passes
  through, except that a resolver's ``TimeoutError``/``OSError`` counts as "could
  not tell".
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

from email_validator import EmailNotValidError, validate_email

from ._checks import address_key, check_count, check_seconds
from .envelope import Envelope
from .errors import ConfigurationError, InvalidAddressError, InvalidMessageError
from .replies import Outcome, Phase
from .result import RecipientStatus

if TYPE_CHECKING:
    import dns.resolver

__all__ = [
    "MAX_ADDRESS_INPUT",
    "SYNTAX_CACHE_SIZE",
    "AddressProblem",
    "DNSResolver",
    "OnInvalid",
    "ProblemKind",
    "RecipientCheck",
    "RecipientPolicy",
    "RecipientsRejectedError",
    "Resolver",
]

ProblemKind: TypeAlias = Literal[
    "syntax", "smtputf8", "denied", "not_allowed", "suppressed", "undeliverable"
]
"""Why an address was refused (:attr:`AddressProblem.kind`)."""

OnInvalid: TypeAlias = Literal["reject", "skip"]
"""``"reject"``: refuse the whole message; ``"skip"``: send to the valid recipients."""

SYNTAX_CACHE_SIZE = 4096
"""How many syntax results the module-level LRU keeps (shared by every policy)."""

MAX_ADDRESS_INPUT = 1024
"""Inputs longer than this are refused without parsing or caching (an address is at
most 254 octets, RFC 5321 §4.5.3.1.3; the margin leaves email-validator's precise
"too long" reasons for near misses)."""

_CONTROLS = {"\r": "CR", "\n": "LF", "\x00": "NUL"}

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


# --------------------------------------------------------------------------- problems


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

    def to_status(self, *, server: str = "") -> RecipientStatus:
        """This refusal as a recipient status: PERMANENT, phase RCPT, no reply, 0 attempts."""
        return RecipientStatus(
            recipient=self.address,
            outcome=Outcome.PERMANENT,
            phase=Phase.RCPT,
            reply=None,
            explanation=self.explanation,
            server=server,
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


# --------------------------------------------------------------------------- syntax


@dataclass(frozen=True, slots=True)
class _Parsed:
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
def _parse(
    address: str,
    allow_quoted_local: bool,
    allow_domain_literal: bool,
    globally_deliverable: bool,
) -> _Parsed | str:
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
    return _Parsed(
        address=f"{result.local_part}@{domain}",
        domain=domain,
        smtputf8=bool(result.smtputf8),
        literal=domain.startswith("["),
    )


def _as_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidAddressError(
            f"{what} must be a str such as 'alice@example.org', got {type(value).__name__}",
            address=repr(value),
            reason="not a str",
        )
    # A str subclass may redefine __eq__/__hash__ (the cache key) or __str__: take the value.
    return value if type(value) is str else str.__str__(value)


# --------------------------------------------------------------------------- DNS


@runtime_checkable
class Resolver(Protocol):
    """Answers "can this domain receive mail?" for the deliverability check.

    ``domain`` is in ASCII (IDNA) form, lowercase. Return ``True`` when the
    domain has a mail host (MX, or failing that A/AAAA), ``False`` when it surely
    has none (NXDOMAIN, null MX, no records), ``None`` when it could not tell
    (timeout, no server answered). Give up after ``timeout`` seconds. Prefer
    returning ``None`` to raising; ``TimeoutError`` and ``OSError`` are read as
    ``None``, anything else propagates.
    """

    def has_mail_host(self, domain: str, *, timeout: float) -> bool | None: ...


class DNSResolver:
    """The default :class:`Resolver`, on dnspython (installed with email-validator).

    MX first (a null MX, RFC 7505, means no mail host); with no MX, an A or AAAA
    record (RFC 5321 §5.1). ``timeout`` bounds the whole lookup. The system's
    resolver configuration is read once, on first use.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resolver: dns.resolver.Resolver | None = None

    def __repr__(self) -> str:
        return "DNSResolver()"

    def _get(self) -> dns.resolver.Resolver:
        import dns.resolver

        with self._lock:
            if self._resolver is None:
                self._resolver = dns.resolver.Resolver()
            return self._resolver

    def has_mail_host(self, domain: str, *, timeout: float) -> bool | None:
        import dns.exception
        import dns.resolver

        deadline = time.monotonic() + timeout
        try:
            resolver = self._get()
            try:
                answer = resolver.resolve(domain, "MX", lifetime=timeout, search=False)
            except dns.resolver.NoAnswer:
                pass
            else:
                exchanges: list[Any] = [getattr(r, "exchange", None) for r in answer]
                return any(str(x) not in (".", "") for x in exchanges if x is not None)
            for rdtype in ("A", "AAAA"):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    resolver.resolve(domain, rdtype, lifetime=left, search=False)
                except dns.resolver.NoAnswer:
                    continue
                return True
        except dns.resolver.NXDOMAIN:
            return False
        except dns.exception.DNSException:
            return None
        return False


class _DomainCache:
    """A small thread-safe LRU of ``domain -> has_mail_host`` answers, with expiry."""

    __slots__ = ("_entries", "_lock", "_maxsize", "_ttl")

    def __init__(self, maxsize: int, ttl: float) -> None:
        self._entries: OrderedDict[str, tuple[float, bool | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._maxsize = maxsize
        self._ttl = ttl

    def get(self, domain: str, now: float) -> tuple[bool, bool | None]:
        with self._lock:
            entry = self._entries.get(domain)
            if entry is None:
                return False, None
            expires, answer = entry
            if now >= expires:
                del self._entries[domain]
                return False, None
            self._entries.move_to_end(domain)
            return True, answer

    def put(self, domain: str, answer: bool | None, now: float) -> None:
        if self._maxsize == 0:
            return
        with self._lock:
            self._entries[domain] = (now + self._ttl, answer)
            self._entries.move_to_end(domain)
            while len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# --------------------------------------------------------------------------- the policy


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

    def refused_statuses(self, *, server: str = "") -> dict[str, RecipientStatus]:
        """A PERMANENT, never-contacted status per refused address, keyed as given.

        See :meth:`AddressProblem.to_status`.
        """
        return {address: p.to_status(server=server) for address, p in self.refused.items()}


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
        parsed = _parse(f"postmaster@{entry}", False, True, False)
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
    _dns_cache: _DomainCache = field(init=False, repr=False, compare=False)

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
        object.__setattr__(
            self, "_dns_cache", _DomainCache(self.dns_cache_size, self.dns_cache_ttl)
        )

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
        sender_text = _as_str(sender, "the sender")
        problems: list[AddressProblem] = []

        envelope_sender = ""
        needs_smtputf8 = False
        if sender_text:
            parsed_sender = self._syntax(sender_text, "sender")
            if isinstance(parsed_sender, AddressProblem):
                problems.append(parsed_sender)
            else:
                envelope_sender = parsed_sender.address
                needs_smtputf8 = parsed_sender.smtputf8
                problem = self._deliverability(sender_text, parsed_sender, "sender")
                if problem is not None:
                    problems.append(problem)

        refused: dict[str, AddressProblem] = {}
        seen: set[str] = set()  # dedupe keys of envelope forms, accepted or refused
        originals: dict[str, str] = {}  # envelope form -> as given, in order
        for address in given:
            # Fast path for a repeat: an envelope form parses to itself, so a given address
            # equal to one already accepted is that same mailbox.
            if address in refused or address in originals:
                continue
            parsed = self._syntax(address, "recipient")
            if isinstance(parsed, AddressProblem):
                refused[address] = parsed
                continue
            key = address_key(parsed.address)
            if key in seen:
                # Another spelling of a mailbox already decided: same verdict, not a new one.
                continue
            seen.add(key)
            problem = self._who(address, parsed) or self._deliverability(
                address, parsed, "recipient"
            )
            if problem is not None:
                refused[address] = problem
                continue
            originals[parsed.address] = address
            needs_smtputf8 = needs_smtputf8 or parsed.smtputf8

        if problems or (refused and self.on_invalid == "reject") or not originals:
            raise RecipientsRejectedError([*problems, *refused.values()])
        return RecipientCheck(
            sender=envelope_sender,
            recipients=tuple(originals),
            refused=refused,
            originals=originals,
            needs_smtputf8=needs_smtputf8,
        )

    async def acheck(self, sender: str, recipients: Sequence[str]) -> RecipientCheck:
        """:meth:`check` for async code: in a worker thread when it may do DNS lookups."""
        if not self.check_deliverability:
            return self.check(sender, recipients)
        return await asyncio.to_thread(self.check, sender, recipients)

    # -- the steps ------------------------------------------------------------------------

    def _recipient_list(self, recipients: object) -> list[str]:
        if isinstance(recipients, (str, bytes)) or not isinstance(recipients, Iterable):
            raise InvalidMessageError(
                "recipients must be a list of addresses such as ['alice@example.org'], "
                f"got {type(recipients).__name__}"
                + (": wrap a single address in a list" if isinstance(recipients, str) else "")
            )
        given = [_as_str(r, "a recipient") for r in recipients]
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
    ) -> _Parsed | AddressProblem:
        if len(address) > MAX_ADDRESS_INPUT:
            return AddressProblem(
                address=address,
                kind="syntax",
                reason=f"it is {len(address)} characters long; an address is at most 254 octets",
                role=role,
            )
        parsed = _parse(
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
        return parsed

    def _who(self, address: str, parsed: _Parsed) -> AddressProblem | None:
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
        self, address: str, parsed: _Parsed, role: Literal["sender", "recipient"]
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
