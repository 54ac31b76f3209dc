"""DNS deliverability: "can this domain receive mail?", and the cache of the answers.

This module owns the :class:`Resolver` contract (so tests inject a fake),
:class:`DNSResolver`, the default on dnspython (MX, then A/AAAA, RFC 5321
§5.1; a null MX means no mail host), and :class:`DomainCache`, the per-policy
LRU of answers with expiry.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import dns.resolver


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


class DomainCache:
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
