"""reliable_smtp._checks: one rule per kind of value, the same words wherever it is set.

Each rule is checked on its own, then through every place that sets such a value
(transport keywords, RetryPolicy, RateLimit, RecipientPolicy, MailerSettings), so a
copy that drifts from the rule fails here.
"""

from __future__ import annotations

import math
import re

import pytest

from reliable_smtp import (
    ConfigurationError,
    InvalidAddressError,
    InvalidMessageError,
    MailerSettings,
    Message,
    OutboxSchedule,
    RateLimit,
    RecipientPolicy,
    RetryPolicy,
    SMTPTransport,
)
from reliable_smtp._checks import (
    address_key,
    check_count,
    check_rate,
    check_seconds,
    rate_problem,
    seconds_problem,
)
from reliable_smtp._envelope import Envelope, dedupe_addresses, line_break_problem

NOT_SECONDS = [0, -1, math.inf, -math.inf, math.nan, True, "5", None]


@pytest.mark.parametrize("value", NOT_SECONDS)
def test_a_duration_is_a_positive_finite_number(value: object) -> None:
    with pytest.raises(ConfigurationError, match="positive, finite number of seconds") as caught:
        check_seconds("connect_timeout", value)
    assert caught.value.setting == "connect_timeout"


@pytest.mark.parametrize("value", [0, 0.0, 1, 2.5])
def test_a_wait_may_be_zero_where_zero_means_no_wait(value: float) -> None:
    assert check_seconds("initial_wait", value, allow_zero=True) == float(value)


@pytest.mark.parametrize("value", [-1, math.inf, math.nan, True])
def test_a_wait_is_never_negative_or_endless(value: object) -> None:
    assert seconds_problem(value, allow_zero=True) == "must be a finite number of seconds >= 0"


@pytest.mark.parametrize(
    ("build", "setting"),
    [
        (lambda: SMTPTransport("h", connect_timeout=0), "connect_timeout"),
        (lambda: SMTPTransport("h", pool_timeout=math.inf), "pool_timeout"),
        (lambda: RetryPolicy(deadline=0), "deadline"),
        (lambda: RateLimit(cooldown=math.nan), "cooldown"),
        (lambda: RecipientPolicy(dns_timeout=-1), "dns_timeout"),
    ],
)
def test_every_positive_duration_uses_the_one_rule(build: object, setting: str) -> None:
    with pytest.raises(ConfigurationError, match="must be a positive, finite number of seconds"):
        build()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("build", "setting"),
    [
        (lambda: RetryPolicy(initial_wait=-1), "initial_wait"),
        (lambda: RetryPolicy(jitter=math.nan), "jitter"),
        (lambda: RecipientPolicy(dns_cache_ttl=-1), "dns_cache_ttl"),
        (lambda: OutboxSchedule(lifetime=-1), "lifetime"),
        # A bool is no duration: the schedule's own check let this one through.
        (lambda: OutboxSchedule(throttled_minimum=True), "throttled_minimum"),
    ],
)
def test_every_zero_or_more_duration_uses_the_one_rule(build: object, setting: str) -> None:
    with pytest.raises(ConfigurationError, match="finite number of seconds >= 0") as caught:
        build()  # type: ignore[operator]
    assert caught.value.setting == setting


def test_zero_waits_are_allowed_where_they_mean_none() -> None:
    assert RetryPolicy().without_waits().initial_wait == 0.0
    assert RecipientPolicy(dns_cache_ttl=0).dns_cache_ttl == 0


def test_settings_read_durations_by_the_same_rule() -> None:
    with pytest.raises(ConfigurationError) as caught:
        MailerSettings(_env_file=None, timeout=0)
    assert "RELIABLE_SMTP_TIMEOUT: must be a positive, finite number of seconds" in str(
        caught.value
    )


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_a_count_is_a_whole_number_of_at_least_one(value: object) -> None:
    with pytest.raises(ConfigurationError, match="must be a whole number, at least 1"):
        check_count("max_connections", value)


def test_a_count_may_start_at_zero_or_be_none_where_that_means_something() -> None:
    assert check_count("dns_cache_size", 0, minimum=0) == 0
    assert check_count("max_recipients", None, allow_none=True) is None
    with pytest.raises(ConfigurationError, match=r"at least 1 or None \(no limit\)"):
        check_count("max_recipients", 0, allow_none=True)


@pytest.mark.parametrize(
    "build",
    [
        lambda: SMTPTransport("h", max_connections=0),
        lambda: SMTPTransport("h", max_messages_per_connection=True),
        lambda: RetryPolicy(attempts=0),
        lambda: RateLimit(burst=1.5),
        lambda: RecipientPolicy(max_recipients=0),
        lambda: RecipientPolicy(dns_cache_size=-1),
        lambda: MailerSettings(_env_file=None, max_connections=0),
    ],
)
def test_every_count_uses_the_one_rule(build: object) -> None:
    with pytest.raises(ConfigurationError, match="must be a whole number, at least"):
        build()  # type: ignore[operator]


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan, True, "1"])
def test_a_rate_is_a_positive_finite_number(value: object) -> None:
    with pytest.raises(ConfigurationError, match="messages per second"):
        check_rate("per_transport", value)


def test_a_rate_has_a_floor_of_one_message_a_day() -> None:
    # The difference from a duration: a tiny rate is a unit mistake.
    assert rate_problem(1 / 86_400) is None
    assert rate_problem(1e-9) is not None
    assert "one message a day" in (rate_problem(1e-9) or "")
    # Per minute, the same floor in its own unit.
    assert rate_problem(1 / 1440, per="minute") is None
    assert rate_problem(1e-4, per="minute") is not None
    with pytest.raises(ConfigurationError, match="one message a day"):
        RateLimit(per_transport=1e-9)
    with pytest.raises(
        ConfigurationError, match=r"RELIABLE_SMTP_RATE_PER_MINUTE: .*one message a day"
    ):
        MailerSettings(_env_file=None, rate_per_minute=1e-4)
    with pytest.raises(ConfigurationError, match=r"RELIABLE_SMTP_RATE_PER_SECOND: .*per second"):
        MailerSettings(_env_file=None, rate_per_second=0)


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\x0b", "\u2028"])
def test_one_line_break_rule_for_headers_paths_hosts_and_tokens(char: str) -> None:
    problem = line_break_problem(f"a{char}b")
    assert problem is not None
    with pytest.raises(InvalidAddressError, match=re.escape(problem)):
        Envelope(f"a{char}@example.com", ("b@example.com",))
    with pytest.raises(InvalidMessageError, match=re.escape(problem)):
        Message(sender="a@example.com", to=["b@example.com"], subject=f"x{char}y", text="t")
    with pytest.raises(ConfigurationError, match="not a host name"):
        SMTPTransport(f"mail{char}.example.com")


def test_the_address_key_folds_the_domain_only() -> None:
    assert address_key("Alice@Example.ORG") == "Alice@example.org"
    assert address_key("alice@example.org") != address_key("Alice@example.org")
    assert address_key("postmaster") == "postmaster"
    # Envelope de-duplication and the recipient policy's count read the same key.
    assert dedupe_addresses(["a@X.org", "a@x.org", "A@x.org"]) == ("a@X.org", "A@x.org")
