"""Envelope: pure checks, no I/O."""

from __future__ import annotations

import pytest

from reliable_smtp.envelope import Envelope, dedupe_addresses
from reliable_smtp.errors import InvalidAddressError, InvalidMessageError


def test_build_dedupes_with_case_insensitive_domain() -> None:
    envelope = Envelope.build(
        "a@example.com", ["b@Example.org", "b@example.ORG", "B@example.org", "c@example.org"]
    )
    # The local part may be case-sensitive (RFC 5321 §2.4): B@ and b@ stay distinct.
    assert envelope.recipients == ("b@Example.org", "B@example.org", "c@example.org")


def test_only_keeps_order_and_subset() -> None:
    envelope = Envelope.build("a@example.com", ["x@e.org", "y@e.org", "z@e.org"])
    assert envelope.only(["z@e.org", "x@e.org"]).recipients == ("x@e.org", "z@e.org")


def test_null_sender_is_allowed() -> None:
    assert Envelope("", ("b@example.org",)).sender == ""


def test_needs_smtputf8() -> None:
    assert not Envelope("a@example.com", ("b@example.org",)).needs_smtputf8
    assert Envelope("a@example.com", ("jörg@example.org",)).needs_smtputf8


@pytest.mark.parametrize(
    ("sender", "recipients"),
    [
        ("a@example.com\r\nRCPT TO:<evil@x.org>", ("b@example.org",)),
        ("a@example.com", ("b@example.org\n",)),
        ("a@example.com", ("b@exam\x00ple.org",)),
        ("not-an-address", ("b@example.org",)),
        ("a@example.com", ("nobody",)),
        ("a@example.com", ("",)),
    ],
)
def test_unsafe_or_malformed_addresses_are_rejected(
    sender: str, recipients: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidAddressError):
        Envelope(sender, recipients)


def test_no_recipients() -> None:
    with pytest.raises(InvalidMessageError, match="at least one"):
        Envelope("a@example.com", ())


def test_dedupe_addresses_keeps_first() -> None:
    assert dedupe_addresses(["a@X.org", "a@x.org", "b@x.org"]) == ("a@X.org", "b@x.org")
