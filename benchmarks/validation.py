"""How long recipient validation takes per recipient: cold, cached, and raw email-validator.

Run: .venv/bin/python benchmarks/validation.py [--recipients N] [--rounds R]

Prints microseconds per recipient (best of R rounds) for:

* ``cold`` - ``RecipientPolicy().check()`` on addresses it has never seen (a new
  batch of distinct addresses every round, so every one misses the syntax cache);
* ``cached`` - the same call on one batch repeated (bulk sends: every address hits
  the syntax LRU);
* ``email_validator`` - ``email_validator.validate_email()`` alone on distinct
  addresses, with the options the policy passes: the floor ``cold`` builds on.

Batches are 50 recipients per ``check()`` call (a typical large transactional
fan-out); the sender is validated too and is not counted as a recipient. No DNS:
deliverability is off, as it is by default. Nothing is asserted: the figures depend
on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time
from collections.abc import Callable

from email_validator import validate_email

from reliable_smtp import RecipientPolicy
from reliable_smtp._validation.syntax import SYNTAX_CACHE_SIZE

SENDER = "no-reply@example.com"
BATCH = 50
_fresh = itertools.count()


def distinct_addresses(count: int) -> list[str]:
    # Realistic shapes: plus tags, mixed-case domains, an IDN domain now and then.
    domains = ("example.org", "Example.COM", "mail.example.net", "bücher.example")
    return [
        f"user{n}+tag{n % 7}@{domains[n % len(domains)]}"
        for n in (next(_fresh) for _ in range(count))
    ]


def batches(addresses: list[str]) -> list[list[str]]:
    return [addresses[i : i + BATCH] for i in range(0, len(addresses), BATCH)]


def best_per_recipient(
    run: Callable[[], None], prepare: Callable[[], None], recipients: int, rounds: int
) -> float:
    best = float("inf")
    for _ in range(rounds):
        prepare()
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / recipients * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=2000, help="recipients per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the best is reported")
    args = parser.parse_args()
    count: int = args.recipients
    policy = RecipientPolicy()

    state: dict[str, list[list[str]]] = {}

    def new_batches() -> None:
        state["batches"] = batches(distinct_addresses(count))

    def check_all() -> None:
        for batch in state["batches"]:
            policy.check(SENDER, batch)

    cold = best_per_recipient(check_all, new_batches, count, args.rounds)

    # Fits the LRU, so after one warm-up round every address is a hit.
    repeated = batches(distinct_addresses(min(count, SYNTAX_CACHE_SIZE // 2)))
    cached_count = sum(map(len, repeated))

    def warm() -> None:
        state["batches"] = repeated

    warm()
    check_all()
    cached = best_per_recipient(check_all, warm, cached_count, args.rounds)

    raw_state: dict[str, list[str]] = {}

    def new_addresses() -> None:
        raw_state["addresses"] = distinct_addresses(count)

    def raw() -> None:
        for address in raw_state["addresses"]:
            validate_email(
                address,
                allow_smtputf8=True,
                allow_empty_local=False,
                allow_quoted_local=False,
                allow_domain_literal=False,
                allow_display_name=True,
                strict=True,
                check_deliverability=False,
                test_environment=False,
                globally_deliverable=True,
                timeout=1,
                dns_resolver=None,
            )

    baseline = best_per_recipient(raw, new_addresses, count, args.rounds)

    print(
        f"Python {platform.python_version()} on {platform.machine()}; "
        f"{count} recipients per round, {BATCH} per check(), best of {args.rounds} rounds"
    )
    print(f"{'variant':<18}{'us/recipient':>14}")
    print(f"{'cold':<18}{cold:>14.2f}")
    print(f"{'cached':<18}{cached:>14.2f}   ({cached_count} addresses, all LRU hits)")
    print(f"{'email_validator':<18}{baseline:>14.2f}   (validate_email alone, distinct)")
    print(f"cached is {cold / cached:.0f}x faster than cold")


if __name__ == "__main__":
    main()
