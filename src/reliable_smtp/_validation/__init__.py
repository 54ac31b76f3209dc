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

Layout:

* ``syntax`` - the envelope form of one address (email-validator, cached);
* ``problems`` - why an address was refused, and :class:`RecipientsRejectedError`;
* ``resolver`` - the DNS deliverability lookup and its cache;
* ``policy`` - :class:`RecipientPolicy` and :class:`RecipientCheck`, which use them.

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
  small whatever callers send. Behind it, the plain-address path remembers its
  verdict on each recent domain (``syntax.DOMAIN_CACHE_SIZE``, dropped when
  email-validator's special-use list changes); in front of it, each policy
  remembers the addresses it accepted (at most ``policy.ACCEPTED_CACHE_SIZE``),
  so that a repeat - the sender, on nearly every message - costs one lookup. Both
  are plain dicts, cleared when full. DNS answers live in a per-policy LRU
  (bounded by ``dns_cache_size``, entries expire after ``dns_cache_ttl`` seconds,
  guarded by a lock). The per-policy caches are created with the policy: build
  the policy once and reuse it. ``dataclasses.replace`` gives the new policy empty
  ones, so answers from one resolver never leak into a policy that uses another,
  nor verdicts into a policy with other options.
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

from .policy import OnInvalid, RecipientCheck, RecipientPolicy
from .problems import AddressProblem, ProblemKind, RecipientsRejectedError
from .resolver import DNSResolver, Resolver
from .syntax import MAX_ADDRESS_INPUT, SYNTAX_CACHE_SIZE

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
