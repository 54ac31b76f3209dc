"""RecipientPolicy: pure checks, no I/O, no DNS (the resolver is always a fake)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pickle
import threading
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import dns.exception
import dns.name
import dns.resolver
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reliable_smtp._checks import address_key
from reliable_smtp._envelope import Envelope
from reliable_smtp._errors import (
    ConfigurationError,
    InvalidAddressError,
    InvalidMessageError,
    ReliableSMTPError,
)
from reliable_smtp._replies import Outcome, Phase
from reliable_smtp._validation import (
    AddressProblem,
    DNSResolver,
    RecipientCheck,
    RecipientPolicy,
    RecipientsRejectedError,
    Resolver,
)
from reliable_smtp._validation import policy as policy_module
from reliable_smtp._validation import syntax as syntax_module
from reliable_smtp._validation.syntax import SYNTAX_CACHE_SIZE, _plain_address, _validated
from reliable_smtp._validation.syntax import parse_address as _parse

SENDER = "app@example.com"
OK = "ok@example.org"

# --------------------------------------------------------------------------- the corpus

# (address, policy options, envelope form, needs SMTPUTF8)
VALID: list[tuple[str, dict[str, Any], str, bool]] = [
    ("alice@example.org", {}, "alice@example.org", False),
    ("alice+receipts@example.org", {}, "alice+receipts@example.org", False),
    ("first.last@mail.example.co.uk", {}, "first.last@mail.example.co.uk", False),
    ("o'brien@example.ie", {}, "o'brien@example.ie", False),
    # The domain is lowercased; the local part may be case-sensitive (RFC 5321 §2.4).
    ("Alice@Example.ORG", {}, "Alice@example.org", False),
    # RFC 2142 role mailboxes are case-insensitive: email-validator lowercases them.
    ("Postmaster@example.org", {}, "postmaster@example.org", False),
    ("a" * 64 + "@example.org", {}, "a" * 64 + "@example.org", False),
    # IDN domains go out in IDNA form and need no SMTPUTF8.
    ("user@bücher.example", {}, "user@xn--bcher-kva.example", False),
    ("user@BÜCHER.example", {}, "user@xn--bcher-kva.example", False),
    ("user@xn--bcher-kva.example", {}, "user@xn--bcher-kva.example", False),
    ("user@bücher.example", {"allow_smtputf8": False}, "user@xn--bcher-kva.example", False),
    ("user@ＥＸＡＭＰＬＥ.com", {}, "user@example.com", False),  # fullwidth letters
    # Unicode local parts need SMTPUTF8; they are NFC-normalized.
    ("jörg@example.org", {}, "jörg@example.org", True),
    ("jo\u0308rg@example.org", {}, "jörg@example.org", True),
    ("用户@例子.广告", {}, "用户@xn--fsqu00a.xn--4rr70v", True),
    # Quoted local parts and IP literals, when the policy allows them.
    ('"abc"@example.com', {"allow_quoted_local": True}, "abc@example.com", False),
    ('"john doe"@example.com', {"allow_quoted_local": True}, '"john doe"@example.com', False),
    ("user@[192.0.2.1]", {"allow_domain_literal": True}, "user@[192.0.2.1]", False),
    (
        "user@[IPv6:2001:db8::1]",
        {"allow_domain_literal": True},
        "user@[ipv6:2001:db8::1]",
        False,
    ),
    # Dotless domains only when the policy does not require global deliverability.
    ("ops@intranet", {"globally_deliverable": False}, "ops@intranet", False),
]

# (address, policy options, kind, a fragment of the reason)
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ('"john doe"@example.com', {}, "syntax", "Quoting"),
    ('"abc"@example.com', {}, "syntax", "Quoting"),
    ("user@[192.0.2.1]", {}, "syntax", "bracketed IP"),
    ("user@[300.1.1.1]", {"allow_domain_literal": True}, "syntax", "brackets"),
    ("jörg@example.org", {"allow_smtputf8": False}, "smtputf8", "allow_smtputf8=False"),
    ("alice@example.org.", {}, "syntax", "period"),
    ("alice.@example.org", {}, "syntax", "period"),
    (".alice@example.org", {}, "syntax", "period"),
    ("al..ice@example.org", {}, "syntax", "two periods"),
    ("alice@example..org", {}, "syntax", "two periods"),
    ("alice@-example.org", {}, "syntax", "hyphen"),
    ("a" * 65 + "@example.org", {}, "syntax", "too long before the @-sign"),
    ("a@" + ".".join(["b" * 60] * 5) + ".com", {}, "syntax", "too long"),
    ("a@" + "b" * 64 + ".com", {}, "syntax", "periods cannot be separated"),
    ("a" * 2000 + "@example.org", {}, "syntax", "2012 characters long"),
    ("alice.example.org", {}, "syntax", "@-sign"),
    ("alice@bob@example.org", {}, "syntax", ""),
    ("", {}, "syntax", "empty"),
    (" alice@example.org", {}, "syntax", "whitespace"),
    ("alice@example.org ", {}, "syntax", "whitespace"),
    ("alice @example.org", {}, "syntax", "SPACE"),
    ("alice@exa mple.org", {}, "syntax", "SPACE"),
    ("alice@example.org,bob@example.org", {}, "syntax", ""),
    # Display names: recipients are bare addresses.
    ('"a@b.com" <evil@x.com>', {}, "syntax", "not a bare address"),
    ("Alice <alice@example.org>", {}, "syntax", "not a bare address"),
    ("<alice@example.org>", {}, "syntax", "not a bare address"),
    # Injection attempts.
    ("alice@example.org\r\nRCPT TO:<evil@x.org>", {}, "syntax", "CR"),
    ("alice\n@example.org", {}, "syntax", "LF"),
    ("ali\x00ce@example.org", {}, "syntax", "NUL"),
    ("alice@example.org\tx", {}, "syntax", ""),
    ("\ud800@example.org", {}, "syntax", "U+D800"),
    # Never globally deliverable.
    ("alice@localhost", {}, "syntax", "period"),
    ("alice@intranet", {}, "syntax", "period"),
    ("alice@example.invalid", {}, "syntax", "special-use"),
    ("alice@localhost", {"globally_deliverable": False}, "syntax", "special-use"),
]


def ids(rows: list[tuple[Any, ...]]) -> list[str]:
    return [f"{i}:{row[0][:40]!r}:{row[1]}" for i, row in enumerate(rows)]


@pytest.mark.parametrize(("address", "options", "envelope", "smtputf8"), VALID, ids=ids(VALID))
def test_valid_addresses(
    address: str, options: dict[str, Any], envelope: str, smtputf8: bool
) -> None:
    checked = RecipientPolicy(**options).check(SENDER, [address])
    assert checked.recipients == (envelope,)
    assert checked.originals == {envelope: address}
    assert checked.needs_smtputf8 is smtputf8
    assert not checked.refused
    # The envelope form is a fixed point: checking it again changes nothing.
    assert RecipientPolicy(**options).check(SENDER, [envelope]).recipients == (envelope,)


@pytest.mark.parametrize(("address", "options", "kind", "reason"), INVALID, ids=ids(INVALID))
def test_invalid_addresses_reject(
    address: str, options: dict[str, Any], kind: str, reason: str
) -> None:
    with pytest.raises(RecipientsRejectedError) as caught:
        RecipientPolicy(**options).check(SENDER, [OK, address])
    [problem] = caught.value.problems
    assert (problem.address, problem.kind, problem.role) == (address, kind, "recipient")
    assert reason in problem.reason
    assert repr(address) in str(caught.value)


@pytest.mark.parametrize(("address", "options", "kind", "reason"), INVALID, ids=ids(INVALID))
def test_invalid_addresses_skip(
    address: str, options: dict[str, Any], kind: str, reason: str
) -> None:
    checked = RecipientPolicy(**options, on_invalid="skip").check(SENDER, [address, OK])
    assert checked.recipients == (OK,)
    assert list(checked.refused) == [address]
    assert checked.refused[address].kind == kind


# '' is the null sender (MAIL FROM:<>), valid as a sender.
INVALID_SENDERS = [row for row in INVALID if row[0]]


@pytest.mark.parametrize(
    ("address", "options", "kind", "reason"), INVALID_SENDERS, ids=ids(INVALID_SENDERS)
)
def test_invalid_sender_is_refused_in_both_modes(
    address: str, options: dict[str, Any], kind: str, reason: str
) -> None:
    for mode in ("reject", "skip"):
        with pytest.raises(RecipientsRejectedError) as caught:
            RecipientPolicy(**options, on_invalid=mode).check(address, [OK])
        [problem] = caught.value.problems
        assert (problem.kind, problem.role) == (kind, "sender")
        assert str(caught.value).startswith("the recipient policy refused the sender;")


@pytest.mark.parametrize("value", [None, 42, b"alice@example.org", ["alice@example.org"]])
def test_non_str_addresses(value: object) -> None:
    policy = RecipientPolicy(on_invalid="skip")
    with pytest.raises(InvalidAddressError, match="must be a str") as caught:
        policy.check(SENDER, [OK, value])  # type: ignore[list-item]
    assert caught.value.reason == "not a str"
    with pytest.raises(InvalidAddressError, match="the sender must be a str"):
        policy.check(value, [OK])  # type: ignore[arg-type]


@pytest.mark.parametrize("recipients", ["alice@example.org", b"a@b.com", None, 42])
def test_recipients_must_be_a_list(recipients: object) -> None:
    with pytest.raises(InvalidMessageError, match="list of addresses"):
        RecipientPolicy().check(SENDER, recipients)  # type: ignore[arg-type]


def test_no_recipients() -> None:
    with pytest.raises(InvalidMessageError, match="at least one"):
        RecipientPolicy().check(SENDER, [])


def test_str_subclass_input_is_taken_by_value() -> None:
    class Sneaky(str):
        __slots__ = ()

        def __str__(self) -> str:
            return "evil@x.com"

        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return 0

    checked = RecipientPolicy().check(Sneaky("App@Example.com"), (Sneaky("bob@example.org"),))
    assert checked.sender == "App@example.com"
    assert checked.recipients == ("bob@example.org",)
    assert type(checked.recipients[0]) is str


def test_accepts_any_iterable_of_addresses() -> None:
    checked = RecipientPolicy().check(SENDER, (a for a in ["a@example.org", "b@example.org"]))  # type: ignore[arg-type]
    assert checked.recipients == ("a@example.org", "b@example.org")


# --------------------------------------------------------------------------- the sender


def test_sender_is_normalized_and_may_need_smtputf8() -> None:
    checked = RecipientPolicy().check("Jörg@Bücher.example", [OK])
    assert checked.sender == "Jörg@xn--bcher-kva.example"
    assert checked.needs_smtputf8
    assert checked.envelope().needs_smtputf8


def test_null_sender_is_allowed() -> None:
    checked = RecipientPolicy().check("", [OK])
    assert checked.sender == ""
    assert checked.envelope() == Envelope("", (OK,))


def test_sender_is_never_suppressed_or_domain_listed() -> None:
    policy = RecipientPolicy(
        denied_domains=["example.com"],
        allowed_domains=["example.org"],
        is_suppressed=lambda address: True,
        on_invalid="skip",
    )
    with pytest.raises(RecipientsRejectedError) as caught:
        policy.check(SENDER, [OK])
    # Only the recipient was refused (suppressed); the sender passed.
    assert [(p.role, p.kind) for p in caught.value.problems] == [("recipient", "suppressed")]


def test_sender_smtputf8_refused_when_not_allowed() -> None:
    with pytest.raises(RecipientsRejectedError) as caught:
        RecipientPolicy(allow_smtputf8=False).check("jörg@example.com", [OK])
    assert [(p.role, p.kind) for p in caught.value.problems] == [("sender", "smtputf8")]


def test_refused_sender_is_listed_first_with_the_recipients() -> None:
    with pytest.raises(RecipientsRejectedError) as caught:
        RecipientPolicy(on_invalid="skip").check("bad sender", ["x", OK])
    assert [(p.role, p.address) for p in caught.value.problems] == [
        ("sender", "bad sender"),
        ("recipient", "x"),
    ]
    assert "refused the sender and 1 recipient;" in str(caught.value)


# --------------------------------------------------------------------------- dedupe, limits


def test_dedupe_with_case_insensitive_domain_keeps_first_in_order() -> None:
    checked = RecipientPolicy().check(
        SENDER,
        [
            "b@Example.org",
            "c@example.org",
            "b@example.ORG",
            "B@example.org",
            "user@bücher.example",
            "user@xn--bcher-kva.example",
            "c@example.org",
        ],
    )
    # The local part may be case-sensitive (RFC 5321 §2.4): B@ and b@ stay distinct.
    assert checked.recipients == (
        "b@example.org",
        "c@example.org",
        "B@example.org",
        "user@xn--bcher-kva.example",
    )
    assert checked.originals["b@example.org"] == "b@Example.org"
    assert checked.originals["user@xn--bcher-kva.example"] == "user@bücher.example"


def test_repeated_refused_address_is_reported_once() -> None:
    policy = RecipientPolicy(on_invalid="skip", denied_domains=["x.org"])
    checked = policy.check(SENDER, ["bad", "bad", "a@x.org", "a@X.ORG", OK])
    assert list(checked.refused) == ["bad", "a@x.org"]
    assert checked.recipients == (OK,)


def test_max_recipients_counts_distinct_addresses() -> None:
    policy = RecipientPolicy(max_recipients=3)
    recipients = ["a@example.org", "b@example.org", "c@example.org"]
    assert policy.check(SENDER, [*recipients, "A@EXAMPLE.org".replace("A@", "a@")]).recipients
    with pytest.raises(InvalidMessageError, match=r"4 distinct .*max_recipients=3") as caught:
        policy.check(SENDER, [*recipients, "d@example.org"])
    assert not isinstance(caught.value, InvalidAddressError)


def test_max_recipients_is_checked_before_validation() -> None:
    # A huge list fails on its size, not after validating every entry.
    with pytest.raises(InvalidMessageError, match="max_recipients=2"):
        RecipientPolicy(max_recipients=2).check(SENDER, ["x", "y", "z"])


def test_max_recipients_per_transaction_default_and_validation() -> None:
    assert RecipientPolicy().max_recipients_per_transaction == 100
    assert (
        RecipientPolicy(max_recipients_per_transaction=None).max_recipients_per_transaction is None
    )
    with pytest.raises(ConfigurationError) as caught:
        RecipientPolicy(max_recipients_per_transaction=0)
    assert caught.value.setting == "max_recipients_per_transaction"


# --------------------------------------------------------------------------- who may be mailed


@pytest.mark.parametrize(
    ("address", "subdomains", "allowed"),
    [
        ("dev@ourcompany.com", True, True),
        ("dev@OurCompany.COM", True, True),
        ("dev@mail.ourcompany.com", True, True),
        ("dev@a.b.ourcompany.com", True, True),
        ("dev@mail.ourcompany.com", False, False),
        ("dev@badourcompany.com", True, False),
        ("dev@ourcompany.com.evil.org", True, False),
        ("dev@ourcompany.co", True, False),
        ("user@BÜCHER.example", True, True),
        ("user@xn--bcher-kva.example", False, True),
    ],
)
def test_allowed_domains(address: str, subdomains: bool, allowed: bool) -> None:
    policy = RecipientPolicy(
        allowed_domains=["OurCompany.com", "bücher.example"], match_subdomains=subdomains
    )
    if allowed:
        assert len(policy.check(SENDER, [address]).recipients) == 1
    else:
        with pytest.raises(RecipientsRejectedError) as caught:
            policy.check(SENDER, [address])
        [problem] = caught.value.problems
        assert problem.kind == "not_allowed"
        assert "ourcompany.com, xn--bcher-kva.example" in problem.reason


def test_domain_lists_are_normalized() -> None:
    policy = RecipientPolicy(allowed_domains=["Bücher.Example"], denied_domains=("X.org",))
    assert policy.allowed_domains == frozenset({"xn--bcher-kva.example"})
    assert policy.denied_domains == frozenset({"x.org"})
    assert RecipientPolicy().allowed_domains is None


@pytest.mark.parametrize(
    ("address", "subdomains", "denied"),
    [
        ("a@competitor.com", True, True),
        ("a@eu.Competitor.com", True, True),
        ("a@eu.competitor.com", False, False),
        ("a@notcompetitor.com", True, False),
    ],
)
def test_denied_domains(address: str, subdomains: bool, denied: bool) -> None:
    policy = RecipientPolicy(
        denied_domains=["competitor.com"], match_subdomains=subdomains, on_invalid="skip"
    )
    checked = policy.check(SENDER, [address, OK])
    assert (address in checked.refused) is denied
    if denied:
        assert checked.refused[address].kind == "denied"
        assert "denied_domains" in checked.refused[address].explanation


def test_denied_wins_over_allowed() -> None:
    policy = RecipientPolicy(
        allowed_domains=["ourcompany.com"], denied_domains=["x.ourcompany.com"]
    )
    with pytest.raises(RecipientsRejectedError) as caught:
        policy.check(SENDER, ["a@x.ourcompany.com"])
    assert caught.value.problems[0].kind == "denied"


def test_empty_allow_list_allows_nobody() -> None:
    with pytest.raises(RecipientsRejectedError) as caught:
        RecipientPolicy(allowed_domains=[], on_invalid="skip").check(SENDER, [OK])
    assert caught.value.problems[0].kind == "not_allowed"


def test_suppression_hook_gets_envelope_form_and_only_what_survived() -> None:
    calls: list[str] = []
    suppressed = {"bounced@example.org"}

    def is_suppressed(address: str) -> bool:
        calls.append(address)
        return address in suppressed

    policy = RecipientPolicy(
        is_suppressed=is_suppressed, denied_domains=["x.org"], on_invalid="skip"
    )
    checked = policy.check(
        SENDER,
        ["bad", "a@x.org", "bounced@Example.ORG", "bounced@example.org", "Fine@Example.org"],
    )
    assert calls == ["bounced@example.org", "Fine@example.org"]
    assert checked.recipients == ("Fine@example.org",)
    assert {a: p.kind for a, p in checked.refused.items()} == {
        "bad": "syntax",
        "a@x.org": "denied",
        "bounced@Example.ORG": "suppressed",
    }


def test_set_membership_works_as_a_suppression_hook() -> None:
    policy = RecipientPolicy(is_suppressed={"gone@example.org"}.__contains__)
    with pytest.raises(RecipientsRejectedError, match="is suppressed"):
        policy.check(SENDER, ["gone@example.org"])


# --------------------------------------------------------------------------- reject vs skip


def test_reject_lists_every_problem_in_order() -> None:
    policy = RecipientPolicy(denied_domains=["x.org"], is_suppressed={"s@example.org"}.__contains__)
    given = ["ok1@example.org", "bad", "a@x.org", "jörg@[1.2.3.4]", "s@example.org", OK]
    with pytest.raises(RecipientsRejectedError) as caught:
        policy.check(SENDER, given)
    error = caught.value
    assert [(p.address, p.kind) for p in error.problems] == [
        ("bad", "syntax"),
        ("a@x.org", "denied"),
        ("jörg@[1.2.3.4]", "syntax"),
        ("s@example.org", "suppressed"),
    ]
    text = str(error)
    assert text.startswith("the recipient policy refused 4 recipients; nothing was sent:")
    for problem in error.problems:
        assert problem.explanation in text
    assert (error.address, error.reason) == ("bad", error.problems[0].reason)


def test_skip_returns_valid_ones_and_reports_the_rest() -> None:
    policy = RecipientPolicy(on_invalid="skip", denied_domains=["x.org"])
    checked = policy.check(SENDER, ["bad", "a@example.org", "z@x.org", "b@example.org"])
    assert checked.recipients == ("a@example.org", "b@example.org")
    assert [p.address for p in checked.problems] == ["bad", "z@x.org"]


def test_skip_with_nothing_left_raises() -> None:
    with pytest.raises(RecipientsRejectedError) as caught:
        RecipientPolicy(on_invalid="skip").check(SENDER, ["bad", "worse"])
    assert [p.address for p in caught.value.problems] == ["bad", "worse"]


def test_refused_become_permanent_never_contacted_statuses() -> None:
    checked = RecipientPolicy(on_invalid="skip").check(SENDER, ["bad", OK])
    statuses = checked.refused_statuses(transport_name="recipient-policy")
    status = statuses["bad"]
    assert status.recipient == "bad"
    assert status.outcome is Outcome.PERMANENT
    assert status.phase is Phase.RCPT
    assert status.reply is None
    assert status.attempts == 0
    assert not status.retryable
    assert not status.accepted
    assert status.transport_name == "recipient-policy"
    assert status.explanation == checked.refused["bad"].explanation
    assert status.explanation.startswith("recipient 'bad' is not a valid address: ")


def test_problem_explanation_and_str() -> None:
    problem = AddressProblem(address="a@x.org", kind="denied", reason="the domain x.org is denied")
    assert str(problem) == problem.explanation
    assert (
        problem.explanation
        == "recipient 'a@x.org' is in a denied domain: the domain x.org is denied"
    )


def test_error_is_typed_and_picklable() -> None:
    with pytest.raises(RecipientsRejectedError) as caught:
        RecipientPolicy().check(SENDER, ["bad", "x@y"])
    error = caught.value
    assert isinstance(error, InvalidAddressError)
    assert isinstance(error, InvalidMessageError)
    assert isinstance(error, ValueError)
    assert isinstance(error, ReliableSMTPError)
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problems == error.problems
    assert str(copy) == str(error)
    with pytest.raises(ValueError, match="at least one"):
        RecipientsRejectedError([])


def test_check_result_envelope_agrees_on_smtputf8() -> None:
    checked = RecipientPolicy().check(SENDER, ["jörg@example.org", OK])
    assert isinstance(checked, RecipientCheck)
    envelope = checked.envelope()
    assert envelope.recipients == checked.recipients
    assert envelope.needs_smtputf8 is checked.needs_smtputf8 is True
    assert RecipientPolicy().check(SENDER, [OK]).envelope().needs_smtputf8 is False


def test_check_result_is_frozen() -> None:
    checked = RecipientPolicy(on_invalid="skip").check(SENDER, ["bad", OK])
    with pytest.raises(dataclasses.FrozenInstanceError):
        checked.recipients = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        checked.refused["x"] = checked.refused["bad"]  # type: ignore[index]


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"allow_smtputf8": 1}, "allow_smtputf8"),
        ({"check_deliverability": "yes"}, "check_deliverability"),
        ({"on_invalid": "drop"}, "on_invalid"),
        ({"max_recipients": 0}, "max_recipients"),
        ({"max_recipients": True}, "max_recipients"),
        ({"max_recipients": 2.5}, "max_recipients"),
        ({"dns_timeout": 0}, "dns_timeout"),
        ({"dns_timeout": float("nan")}, "dns_timeout"),
        ({"dns_timeout": float("inf")}, "dns_timeout"),
        ({"dns_cache_ttl": -1}, "dns_cache_ttl"),
        ({"dns_cache_size": -1}, "dns_cache_size"),
        ({"allowed_domains": "ourcompany.com"}, "allowed_domains"),
        ({"allowed_domains": ["*.ourcompany.com"]}, "allowed_domains"),
        ({"allowed_domains": [".ourcompany.com"]}, "allowed_domains"),
        ({"denied_domains": ["exa mple.com"]}, "denied_domains"),
        ({"denied_domains": [42]}, "denied_domains"),
        ({"denied_domains": 42}, "denied_domains"),
        ({"is_suppressed": "bounces"}, "is_suppressed"),
        ({"resolver": object()}, "resolver"),
        ({"clock": 0.0}, "clock"),
    ],
)
def test_configuration_errors_name_the_setting(options: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RecipientPolicy(**options)
    assert caught.value.setting == setting
    assert setting in str(caught.value)


def test_policy_is_a_hashable_value() -> None:
    a = RecipientPolicy(allowed_domains=["a.org", "b.org"])
    b = RecipientPolicy(allowed_domains=("B.org", "a.org"))
    assert a == b
    assert hash(a) == hash(b)
    assert a != RecipientPolicy()


def test_policy_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        RecipientPolicy(True)  # type: ignore[call-arg]


# --------------------------------------------------------------------------- deliverability


class FakeResolver:
    """Answers from a table; records every lookup; never touches the network."""

    def __init__(self, answers: dict[str, bool | BaseException | None]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, float]] = []
        self.threads: list[int] = []

    def has_mail_host(self, domain: str, *, timeout: float) -> bool | None:
        self.calls.append((domain, timeout))
        self.threads.append(threading.get_ident())
        answer = self.answers.get(domain, True)
        if isinstance(answer, BaseException):
            raise answer
        return answer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def dns_policy(
    resolver: FakeResolver, clock: Callable[[], float] | None = None, **options: Any
) -> RecipientPolicy:
    if clock is not None:
        options["clock"] = clock
    return RecipientPolicy(check_deliverability=True, resolver=resolver, **options)


def test_deliverability_is_off_by_default() -> None:
    resolver = FakeResolver({"example.org": False})
    assert RecipientPolicy(resolver=resolver).check(SENDER, [OK]).recipients == (OK,)
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("answer", "accepted"),
    [(True, True), (False, False), (None, True), (TimeoutError("slow"), True), (OSError(), True)],
)
def test_deliverability_answers(answer: bool | BaseException | None, accepted: bool) -> None:
    resolver = FakeResolver({"nomail.example": answer})
    policy = dns_policy(resolver, on_invalid="skip", dns_timeout=2.5)
    checked = policy.check(SENDER, ["a@NoMail.example", OK])
    assert ("a@nomail.example" in checked.recipients) is accepted
    if not accepted:
        problem = checked.refused["a@NoMail.example"]
        assert problem.kind == "undeliverable"
        assert "nomail.example has no mail server" in problem.reason
    assert ("nomail.example", 2.5) in resolver.calls


def test_resolver_bugs_are_not_swallowed() -> None:
    policy = dns_policy(FakeResolver({"example.org": RuntimeError("bug")}))
    with pytest.raises(RuntimeError, match="bug"):
        policy.check(SENDER, [OK])


def test_deliverability_cache_hits() -> None:
    resolver = FakeResolver({"gone.example": False})
    policy = dns_policy(resolver, on_invalid="skip")
    for _ in range(3):
        policy.check(SENDER, ["a@example.org", "b@Example.ORG", "c@gone.example"])
    # One lookup per domain (sender's included), whatever the spelling or the repeats.
    assert sorted(d for d, _ in resolver.calls) == ["example.com", "example.org", "gone.example"]


def test_unknown_answers_are_cached_too() -> None:
    resolver = FakeResolver({"example.org": TimeoutError()})
    policy = dns_policy(resolver)
    policy.check(SENDER, [OK])
    policy.check(SENDER, [OK])
    assert [d for d, _ in resolver.calls].count("example.org") == 1


def test_deliverability_cache_expires() -> None:
    resolver, clock = FakeResolver({}), FakeClock()
    policy = dns_policy(resolver, clock, dns_cache_ttl=60)
    policy.check("", [OK])
    clock.now += 59
    policy.check("", [OK])
    assert len(resolver.calls) == 1
    clock.now += 1
    policy.check("", [OK])
    assert len(resolver.calls) == 2


def test_deliverability_cache_is_a_bounded_lru() -> None:
    resolver = FakeResolver({})
    policy = dns_policy(resolver, dns_cache_size=2)
    for domain in ["a.org", "b.org", "a.org", "c.org", "a.org", "b.org"]:
        policy.check("", [f"x@{domain}"])
    # a, b miss; a hits; c evicts b; a hits; b misses (evicted).
    assert [d for d, _ in resolver.calls] == ["a.org", "b.org", "c.org", "b.org"]
    assert len(policy._dns_cache) == 2


def test_deliverability_cache_can_be_disabled() -> None:
    resolver = FakeResolver({})
    policy = dns_policy(resolver, dns_cache_size=0)
    policy.check("", [OK])
    policy.check("", [OK])
    assert len(resolver.calls) == 2


def test_replaced_policy_gets_its_own_cache() -> None:
    first = FakeResolver({"example.org": False})
    policy = dns_policy(first, on_invalid="skip")
    assert policy.check("", ["a@example.org", "b@example.net"]).refused
    second = FakeResolver({"example.org": True})
    other = dataclasses.replace(policy, resolver=second)
    assert other.check("", ["a@example.org"]).recipients == ("a@example.org",)
    assert second.calls == [("example.org", 5.0)]


def test_no_lookup_for_refused_duplicate_or_literal_addresses() -> None:
    resolver = FakeResolver({})
    policy = dns_policy(
        resolver,
        on_invalid="skip",
        denied_domains=["denied.org"],
        allow_domain_literal=True,
        is_suppressed={"s@suppressed.org"}.__contains__,
    )
    policy.check("", ["bad", "a@denied.org", "s@suppressed.org", "u@[192.0.2.1]", OK, OK])
    assert resolver.calls == [("example.org", 5.0)]


def test_undeliverable_sender_is_refused() -> None:
    policy = dns_policy(FakeResolver({"nomail.example": False}), on_invalid="skip")
    with pytest.raises(RecipientsRejectedError) as caught:
        policy.check("app@nomail.example", [OK])
    assert [(p.role, p.kind) for p in caught.value.problems] == [("sender", "undeliverable")]


def test_default_resolver_is_dns_but_unused_in_tests() -> None:
    policy = RecipientPolicy(check_deliverability=True)
    assert isinstance(policy.resolver, DNSResolver)
    assert isinstance(DNSResolver(), Resolver)
    assert isinstance(FakeResolver({}), Resolver)
    assert RecipientPolicy().resolver is None


def _dns_error(cls: type[BaseException]) -> BaseException:
    # dnspython's exception constructors are untyped; build them through BaseException's.
    return cls()


class _MX:
    def __init__(self, exchange: str) -> None:
        self.exchange = dns.name.from_text(exchange)


class FakeDNS:
    """Stands in for dnspython's Resolver inside DNSResolver: answers per record type."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.queries: list[tuple[str, str, float]] = []

    def resolve(self, domain: str, rdtype: str, *, lifetime: float, search: bool) -> object:
        assert search is False
        self.queries.append((domain, rdtype, lifetime))
        answer = self.answers.get(rdtype, _dns_error(dns.resolver.NoAnswer))
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.mark.parametrize(
    ("answers", "expected", "types"),
    [
        ({"MX": [_MX("mx1.example.org."), _MX("mx2.example.org.")]}, True, ["MX"]),
        ({"MX": [_MX(".")]}, False, ["MX"]),  # null MX, RFC 7505
        ({"A": ["192.0.2.1"]}, True, ["MX", "A"]),
        ({"AAAA": ["2001:db8::1"]}, True, ["MX", "A", "AAAA"]),
        ({}, False, ["MX", "A", "AAAA"]),
        ({"MX": _dns_error(dns.resolver.NXDOMAIN)}, False, ["MX"]),
        ({"MX": _dns_error(dns.exception.Timeout)}, None, ["MX"]),
        ({"A": _dns_error(dns.resolver.NoNameservers)}, None, ["MX", "A"]),
    ],
)
def test_dns_resolver_logic_without_network(
    answers: dict[str, object], expected: bool | None, types: list[str]
) -> None:
    fake = FakeDNS(answers)
    resolver = DNSResolver()
    resolver._resolver = fake  # type: ignore[assignment]
    assert resolver.has_mail_host("example.org", timeout=3.0) is expected
    assert [t for _, t, _ in fake.queries] == types
    assert all(0 < lifetime <= 3.0 for _, _, lifetime in fake.queries)


async def test_acheck_runs_dns_in_a_worker_thread() -> None:
    resolver = FakeResolver({})
    loop_thread = threading.get_ident()
    checked = await dns_policy(resolver).acheck(SENDER, [OK])
    assert checked.recipients == (OK,)
    assert resolver.threads
    assert loop_thread not in resolver.threads
    # Without DNS there is nothing to block on: no thread hop.
    assert (await RecipientPolicy().acheck(SENDER, [OK])).recipients == (OK,)
    await asyncio.sleep(0)


# --------------------------------------------------------------------------- syntax cache


def test_syntax_cache_is_bounded_and_shared_by_policies() -> None:
    assert _parse.cache_info().maxsize == SYNTAX_CACHE_SIZE
    RecipientPolicy().check(SENDER, ["cache-probe@example.org"])
    before = _parse.cache_info().hits
    RecipientPolicy().check(SENDER, ["cache-probe@example.org"])
    assert _parse.cache_info().hits == before + 2  # sender and recipient, for another policy


def test_overlong_input_is_not_cached() -> None:
    size = _parse.cache_info().currsize
    with pytest.raises(RecipientsRejectedError):
        RecipientPolicy().check(SENDER, ["x" * 5000 + "@example.org"])
    assert _parse.cache_info().currsize <= size + 1  # the sender, at most


def test_a_policy_remembers_the_addresses_it_accepted() -> None:
    policy = RecipientPolicy(on_invalid="skip")
    policy.check(SENDER, ["Memo-Probe@Example.ORG", "not an address"])
    # Accepted addresses as given, with their envelope form; refusals are not kept.
    assert policy._accepted == {
        SENDER: _parse(SENDER, False, False, True),
        "Memo-Probe@Example.ORG": _parse("Memo-Probe@Example.ORG", False, False, True),
    }
    before = _parse.cache_info()
    checked = policy.check(SENDER, ["Memo-Probe@Example.ORG"])
    assert _parse.cache_info() == before  # answered by the policy, not the LRU
    assert checked.recipients == ("Memo-Probe@example.org",)


def test_remembered_addresses_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_module, "ACCEPTED_CACHE_SIZE", 4)
    policy = RecipientPolicy()
    for i in range(10):
        assert policy.check(SENDER, [f"bounded{i}@example.org"]).recipients
        assert len(policy._accepted) <= 4
    assert f"bounded{i}@example.org" in policy._accepted  # cleared when full, then refilled


def test_a_replaced_policy_remembers_nothing_of_the_old_one() -> None:
    policy = RecipientPolicy()
    assert policy.check(SENDER, ["jörg@example.org"]).needs_smtputf8
    strict = dataclasses.replace(policy, allow_smtputf8=False)
    assert strict._accepted == {}
    with pytest.raises(RecipientsRejectedError, match="SMTPUTF8"):
        strict.check(SENDER, ["jörg@example.org"])


def test_a_check_is_what_the_constructor_makes() -> None:
    checked = RecipientPolicy(on_invalid="skip").check(SENDER, [OK, "bad", "ok@Example.ORG"])
    assert checked == RecipientCheck(
        sender=checked.sender,
        recipients=checked.recipients,
        refused=dict(checked.refused),
        originals=dict(checked.originals),
        needs_smtputf8=checked.needs_smtputf8,
    )
    assert list(checked.refused) == ["bad"]
    assert dict(checked.originals) == {OK: OK}
    for mapping in (checked.refused, checked.originals):
        assert isinstance(mapping, MappingProxyType)
        with pytest.raises(TypeError):
            mapping["x"] = "y"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        checked.sender = "x"  # type: ignore[misc]
    clean = RecipientPolicy().check(SENDER, [OK])
    assert clean.refused == {}
    assert clean.problems == ()
    assert isinstance(clean.refused, MappingProxyType)


def test_a_falsy_suppression_hook_is_still_asked() -> None:
    class Hook:
        def __len__(self) -> int:
            return 0

        def __call__(self, address: str) -> bool:
            return True

    with pytest.raises(RecipientsRejectedError, match="suppress"):
        RecipientPolicy(is_suppressed=Hook()).check(SENDER, [OK])


# --------------------------------------------------------------------------- properties

POLICIES = [
    RecipientPolicy(),
    RecipientPolicy(on_invalid="skip"),
    RecipientPolicy(
        on_invalid="skip",
        allow_smtputf8=False,
        allow_quoted_local=True,
        allow_domain_literal=True,
        globally_deliverable=False,
        allowed_domains=["example.org"],
        match_subdomains=False,
    ),
    RecipientPolicy(on_invalid="skip", denied_domains=["example.com"], max_recipients=5),
]


def _swap_domain_case(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.swapcase()}"


addresses = st.one_of(
    st.text(),
    st.emails(),
    st.emails().map(_swap_domain_case),
    st.sampled_from([OK, "Ok@Example.ORG", "jörg@example.org", "user@bücher.example", "a@b"]),
)


def _domain_key(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    sender=st.one_of(st.text(), st.emails()),
    recipients=st.lists(addresses, max_size=8),
)
def test_check_returns_or_raises_only_library_errors(
    policy: RecipientPolicy, sender: str, recipients: list[str]
) -> None:
    try:
        checked = policy.check(sender, recipients)
    except ReliableSMTPError:
        return
    keys = [_domain_key(r) for r in checked.recipients]
    assert len(keys) == len(set(keys))
    assert checked.recipients
    assert set(checked.originals) == set(checked.recipients)
    assert set(checked.originals.values()) <= set(recipients)
    assert set(checked.refused) <= set(recipients)
    # Valid output is valid input, unchanged (normalization is idempotent).
    again = policy.check(checked.sender, list(checked.recipients))
    assert again.recipients == checked.recipients
    assert again.sender == checked.sender
    assert Envelope(checked.sender, checked.recipients).needs_smtputf8 is checked.needs_smtputf8


@settings(max_examples=100, deadline=None)
@given(value=st.text())
def test_any_single_text_is_handled(value: str) -> None:
    for policy in POLICIES[:3]:
        with contextlib.suppress(ReliableSMTPError):
            policy.check(value, [value])


# --------------------------------------------------------------------------- the plain-address path

# parse_address answers plain ASCII addresses itself, without email-validator: its answer
# must be email-validator's under every option, and it must leave every doubt to it.
_FLAGS = [(q, lit, g) for q in (False, True) for lit in (False, True) for g in (False, True)]
_ATEXT_CHARS = "abcXYZ019_!#$%&'*+-/=?^`{|}~"
_local_parts = st.one_of(
    st.lists(st.text(_ATEXT_CHARS, min_size=1, max_size=12), min_size=1, max_size=4).map(".".join),
    st.text(_ATEXT_CHARS + ".", min_size=0, max_size=70),
    st.sampled_from(
        ["postmaster", "PostMaster", "ABUSE", "info", "Www", "nobody", "a" * 64, "a" * 65]
    ),
)
_labels = st.one_of(
    st.text("abcXYZ019-", min_size=1, max_size=10),
    st.sampled_from(["xn--bcher-kva", "xn--abc", "ab--cd", "a" * 63, "a" * 64, "-a", "a-", "1"]),
)
_hostnames = st.tuples(
    st.lists(
        st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True),
        min_size=1,
        max_size=4,
    ),
    st.from_regex(r"[a-zA-Z0-9-]{0,3}[a-zA-Z]", fullmatch=True),
).map(lambda parts: ".".join([*parts[0], parts[1]]))
_domains = st.one_of(
    _hostnames,
    st.lists(_labels, min_size=1, max_size=5).map(".".join),
    st.tuples(
        _labels, st.sampled_from(["test", "invalid", "local", "localhost", "onion", "arpa"])
    ).map(".".join),
    st.sampled_from(
        ["localhost", "Example.ORG", "x." * 126 + "com", "x." * 125 + "com", "a..b", "b."]
    ),
)


def _agree(address: str) -> bool:
    """Whether the plain path took ``address``; asserts it agrees with email-validator."""
    plain = _plain_address(address)
    if plain is not None:
        for flags in _FLAGS:
            assert _validated(address, *flags) == plain, (address, flags)
    return plain is not None


@settings(max_examples=1500, deadline=None)
@given(local=_local_parts, domain=_domains)
def test_plain_address_path_gives_email_validators_answer(local: str, domain: str) -> None:
    _agree(f"{local}@{domain}")


@pytest.mark.parametrize(
    ("address", "plain"),
    [
        ("alice@example.org", True),
        ("Alice.O'Brien+x@Mail.Example.CO.UK", True),
        ("Postmaster@example.org", True),  # lowercased (RFC 2142), as email-validator does
        ("a" * 64 + "@example.org", True),
        ("a" * 65 + "@example.org", False),  # too long before the @-sign: its reason
        ("x@" + "a" * 63 + ".com", True),
        ("x@" + "a" * 64 + ".com", False),
        ("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com", True),  # 254
        ("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".com", False),  # 255
        ("x@xn--bcher-kva.example", False),  # Punycode: email-validator decodes it
        ("x@ab--cd.example", False),  # R-LDH label: email-validator refuses it
        ("x@example", False),  # dotless: depends on globally_deliverable
        ("x@example.c0m1", False),  # numeric TLD end: depends on globally_deliverable
        ("x@mail.test", False),  # special-use
        ("x@localhost", False),
        ("x@bücher.example", False),  # non-ASCII
        ('"x y"@example.org', False),
        ("x@[192.0.2.1]", False),
        ("x..y@example.org", False),
        (" x@example.org", False),
        ("Name <x@example.org>", False),
    ],
)
def test_plain_address_path_takes_only_what_it_can_decide(address: str, plain: bool) -> None:
    assert _agree(address) is plain


def test_plain_address_path_reads_the_special_use_list_at_call_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import email_validator

    assert _plain_address("x@corp.example.org") is not None
    monkeypatch.setattr(
        email_validator,
        "SPECIAL_USE_DOMAIN_NAMES",
        [*email_validator.SPECIAL_USE_DOMAIN_NAMES, "example.org"],
    )
    assert _plain_address("x@corp.example.org") is None
    assert isinstance(_validated("x@corp.example.org", False, False, True), str)


def test_plain_address_path_remembers_domains_in_a_bounded_dict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(syntax_module, "DOMAIN_CACHE_SIZE", 4)
    for i in range(10):
        assert _plain_address(f"x@host{i}.example.org") is not None
        assert len(syntax_module._special_use.domains) <= 4
    assert syntax_module._special_use.domains["host9.example.org"] == "host9.example.org"
    assert _plain_address("x@Host9.Example.ORG") is not None
    assert syntax_module._special_use.domains["Host9.Example.ORG"] == "host9.example.org"
    assert _plain_address("x@mail.test") is None
    assert syntax_module._special_use.domains["mail.test"] is None


@settings(max_examples=300, deadline=None)
@given(domain=_domains)
def test_a_remembered_domain_answer_is_the_answer(domain: str) -> None:
    syntax_module._special_use.domains.pop(domain, None)
    first = syntax_module._plain_domain(domain)  # computed, then remembered
    assert syntax_module._special_use.domains[domain] == first
    assert syntax_module._plain_domain(domain) == first
    if len(domain) <= 252:  # "x@" + domain within the 254 of an address
        assert _agree(f"x@{domain}") is (first is not None)


def test_plain_address_path_sees_the_special_use_list_changed_in_place() -> None:
    import email_validator

    names = email_validator.SPECIAL_USE_DOMAIN_NAMES
    assert _plain_address("x@corp.example.org") is not None
    names.append("example.org")
    try:
        assert _plain_address("x@corp.example.org") is None
        assert _plain_address("x@example.org") is None
        assert _plain_address("x@badexample.org") is not None  # a label boundary only
    finally:
        names.remove("example.org")
    assert _plain_address("x@corp.example.org") is not None


# --------------------------------------------------------------------------- remembered verdicts


@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    sender=st.one_of(st.text(), st.emails()),
    recipients=st.lists(addresses, max_size=8),
)
def test_a_remembered_verdict_is_the_verdict(
    policy: RecipientPolicy, sender: str, recipients: list[str]
) -> None:
    def outcome(checker: RecipientPolicy) -> object:
        try:
            return checker.check(sender, recipients)
        except ReliableSMTPError as exc:
            return (type(exc), str(exc))

    fresh = dataclasses.replace(policy)  # nothing remembered yet
    first = outcome(fresh)
    assert outcome(fresh) == first  # now from what it remembered
    assert outcome(dataclasses.replace(policy)) == first
    for address, parsed in fresh._accepted.items():
        flags = (policy.allow_quoted_local, policy.allow_domain_literal)
        assert parsed == _parse(address, *flags, policy.globally_deliverable)


@settings(max_examples=300, deadline=None)
@given(address=addresses, flags=st.sampled_from(_FLAGS))
def test_an_envelope_form_is_its_own_dedupe_key(
    address: str, flags: tuple[bool, bool, bool]
) -> None:
    # check() dedupes on envelope forms without address_key: their domain is lowercase.
    parsed = _parse(address, *flags)
    if not isinstance(parsed, str):
        assert address_key(parsed.address) == parsed.address
        assert parsed.domain == parsed.domain.lower()
