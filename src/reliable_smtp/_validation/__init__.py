"""Recipient validation (private: the public names are in :mod:`reliable_smtp.validation`
and :mod:`reliable_smtp`).

Layout:

* ``syntax`` - the envelope form of one address (email-validator, cached);
* ``problems`` - why an address was refused, and :class:`RecipientsRejectedError`;
* ``resolver`` - the DNS deliverability lookup and its cache;
* ``policy`` - :class:`RecipientPolicy` and :class:`RecipientCheck`, which use them.

The decisions behind them are documented once, in :mod:`reliable_smtp.validation`.
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
