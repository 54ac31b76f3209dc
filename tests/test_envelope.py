"""Envelope: pure checks, no I/O, plus one send through a real server with the policy off."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import relay_transport
from reliable_smtp import Mailer, Message
from reliable_smtp import _envelope as envelope_module
from reliable_smtp._envelope import Envelope, dedupe_addresses
from reliable_smtp._errors import InvalidAddressError, InvalidMessageError
from reliable_smtp.testing import LocalSMTPServer


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


# --------------------------------------------------------------------------- path injection

# Each would change the MAIL FROM / RCPT TO line if written as <path>: end the
# path early, add ESMTP parameters, or split the line.
UNSAFE_PATHS = [
    "alice@example.org> NOTIFY=SUCCESS ORCPT=rfc822;x@evil.example",
    "<x@example.org>",
    "x@example.org>",
    "<x@example.org",
    "a b@example.org",
    "a@example.org SIZE=1",
    "a\t@example.org",
    "a@example.org\u2028",
    "a@example.org\u2029RCPT TO:<evil@x.org>",
    "a@example.org\x85",
    "a@example.org\x0bx",
    "a@example.org\x0c",
    "a@example.org\x1c",
    "a@example.org\x1d",
    "a@example.org\x1e",
    "a@exam\x7fple.org",
    "a@exam\x1bple.org",
    "a@exam\x9bple.org",  # C1 control (CSI)
    "a@example.org\u00a0",  # no-break space
    "a@example.org\u3000",  # ideographic space
    "a@b@example.org",
    "@example.org",
    "a@",
    "a",
    '"unclosed@example.org',
    'a"b@example.org',
    '"a b"@example.org',  # quoted, but a space is still a space on the command line
    '"a>b"@example.org',
    "a@exa\\mple.org",
    "a@\ud800.example",  # a lone surrogate
    "a" * 250 + "@example.org",
]

SAFE_PATHS = [
    "alice@example.org",
    "first.last+tag@example.org",
    "user@xn--bcher-kva.example",
    "user@bücher.example",  # IDNA U-label, sent as given (the policy converts when on)
    "jörg@example.de",  # SMTPUTF8 local part
    "用户@例子.广告",
    '"a@b"@example.org',  # '@' inside a quoted local part
    '"john.doe"@example.org',
    '"a\\"b"@example.org',
    '""@example.org',
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "a" * 64 + "@" + "b" * 177 + ".example",  # 254 octets
]


@pytest.mark.parametrize("path", UNSAFE_PATHS)
def test_every_unsafe_path_is_refused_as_a_recipient_and_as_the_sender(path: str) -> None:
    with pytest.raises(InvalidAddressError) as as_recipient:
        Envelope("app@example.com", ("ok@example.org", path))
    assert as_recipient.value.address == path
    assert "envelope recipient" in str(as_recipient.value)
    assert "\n" not in str(as_recipient.value)
    with pytest.raises(InvalidAddressError) as as_sender:
        Envelope(path, ("ok@example.org",))
    assert as_sender.value.address == path
    assert "null sender" in str(as_sender.value)


@pytest.mark.parametrize("path", SAFE_PATHS)
def test_valid_paths_including_utf8_idna_and_quoted_local_parts_pass(path: str) -> None:
    assert Envelope(path, (path,)).recipients == (path,)


def test_the_error_says_what_is_wrong_and_what_to_give() -> None:
    with pytest.raises(InvalidAddressError) as caught:
        Envelope("app@example.com", ("alice@example.org> NOTIFY=SUCCESS",))
    message = str(caught.value)
    assert "'>'" in message
    assert "bare address (local@domain)" in message
    with pytest.raises(InvalidAddressError, match="LINE SEPARATOR"):
        Envelope("app@example.com", ("a@example.org\u2028",))
    with pytest.raises(InvalidAddressError, match="one '@'"):
        Envelope("app@example.com", ("a@b@example.org",))
    with pytest.raises(InvalidAddressError, match="254"):
        Envelope("app@example.com", ("a" * 250 + "@example.org",))


def test_only_rechecks_nothing_new_and_keeps_the_null_sender() -> None:
    envelope = Envelope("", ("a@example.org", "b@example.org"))
    assert envelope.only(["b@example.org"]) == Envelope("", ("b@example.org",))


PATH_PIECES = st.sampled_from(
    ["a", "example.org", "@", '"', "\\", "<", ">", " ", "\t", "\u2028", "\x85", "\x0c", "\r\n"]
)


@settings(max_examples=200, deadline=None)
@given(path=st.lists(PATH_PIECES | st.text(max_size=4), max_size=8).map("".join))
def test_an_accepted_path_cannot_change_the_command_line(path: str) -> None:
    try:
        Envelope("app@example.com", (path,))
    except InvalidAddressError:
        return
    line = f"RCPT TO:<{path}>"
    assert len(line.splitlines()) == 1
    assert line.count("<") == 1
    assert line.count(">") == 1
    assert not any(char.isspace() for char in path)
    local, _, domain = path.rpartition("@")
    assert local
    assert domain
    assert "@" not in domain
    assert "@" not in local or (local.startswith('"') and local.endswith('"'))


def test_policy_off_an_injected_recipient_never_reaches_the_server(
    server: LocalSMTPServer,
) -> None:
    message = Message(sender="app@example.com", to="alice@example.org")
    with Mailer(relay_transport(server), recipient_policy=None) as mailer:
        with pytest.raises(InvalidAddressError):
            mailer.send(
                message,
                envelope=Envelope(
                    "app@example.com",
                    ("alice@example.org> NOTIFY=SUCCESS ORCPT=rfc822;x@evil.example",),
                ),
            )
        # A good envelope still goes out, exactly as given.
        mailer.send(message, envelope=Envelope("app@example.com", ("bücher@example.org",)))
    assert [m.recipients for m in server.messages] == [("bücher@example.org",)]
    assert [c[2] for c in server.commands if c[1] == "RCPT"] == ["TO:<bücher@example.org>"]


def test_only_keeps_a_checked_subset_in_order_and_refuses_an_empty_one() -> None:
    envelope = Envelope.build("app@example.com", ["a@example.org", "b@example.org", "c@x.org"])
    subset = envelope.only(["c@x.org", "a@example.org", "nobody@example.org"])
    assert subset == Envelope("app@example.com", ("a@example.org", "c@x.org"))
    assert subset.recipients == ("a@example.org", "c@x.org")  # envelope order
    with pytest.raises(InvalidMessageError, match="no recipients"):
        envelope.only(["nobody@example.org"])


# --------------------------------------------------------------------------- build's shortcut


def test_build_makes_what_the_constructor_makes() -> None:
    built = Envelope.build("a@example.com", ["b@example.org", "b@EXAMPLE.org", "c@example.org"])
    assert type(built) is Envelope
    assert built == Envelope("a@example.com", ("b@example.org", "c@example.org"))
    assert Envelope.build("", ["b@example.org"]) == Envelope("", ("b@example.org",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.sender = "x"  # type: ignore[misc]


@pytest.mark.parametrize("path", UNSAFE_PATHS)
def test_build_refuses_what_the_constructor_refuses(path: str) -> None:
    for sender, recipients in [("app@example.com", (path,)), (path, ("ok@example.org",))]:
        with pytest.raises(InvalidAddressError) as via_build:
            Envelope.build(sender, recipients)
        with pytest.raises(InvalidAddressError) as via_constructor:
            Envelope(sender, recipients)
        assert str(via_build.value) == str(via_constructor.value)


def test_build_refuses_no_recipients_and_non_str_paths() -> None:
    with pytest.raises(InvalidMessageError, match="at least one"):
        Envelope.build("a@example.com", [])
    with pytest.raises(InvalidAddressError, match="sender must be a str"):
        Envelope.build(b"a@example.com", ["b@example.org"])  # type: ignore[arg-type]
    for recipients in ([None], ["b@example.org", None]):  # alone, or among others
        with pytest.raises(InvalidAddressError, match="recipient must be a str"):
            Envelope.build("a@example.com", recipients)  # type: ignore[arg-type]


def test_build_of_a_subclass_goes_through_its_constructor() -> None:
    built: list[Envelope] = []

    class Recorded(Envelope):
        __slots__ = ()

        def __post_init__(self) -> None:
            super().__post_init__()
            built.append(self)

    envelope = Recorded.build("a@example.com", ["b@example.org"])
    assert type(envelope) is Recorded
    assert built == [envelope]


# --------------------------------------------------------------------------- remembered paths


def test_valid_paths_are_remembered_in_a_bounded_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envelope_module, "_VALID_PATHS", set())
    monkeypatch.setattr(envelope_module, "_VALID_PATHS_SIZE", 3)
    for i in range(10):
        Envelope("app@example.com", (f"user{i}@example.org",))
        assert len(envelope_module._VALID_PATHS) <= 3
    assert "user9@example.org" in envelope_module._VALID_PATHS  # cleared when full
    with pytest.raises(InvalidAddressError):
        Envelope("app@example.com", ("a b@example.org",))
    assert "a b@example.org" not in envelope_module._VALID_PATHS


def test_a_str_subclass_is_never_answered_from_memory() -> None:
    Envelope("app@example.com", ("ok@example.org",))  # remembered

    class LooksValid(str):
        __slots__ = ()

        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return hash("ok@example.org")

    with pytest.raises(InvalidAddressError):
        Envelope("app@example.com", (LooksValid("ok@example.org> NOTIFY=SUCCESS"),))
    assert not any(type(path) is not str for path in envelope_module._VALID_PATHS)


@settings(max_examples=300, deadline=None)
@given(path=st.lists(PATH_PIECES | st.text(max_size=4), max_size=8).map("".join))
def test_a_remembered_path_verdict_is_the_verdict(path: str) -> None:
    envelope_module._VALID_PATHS.discard(path)
    first = envelope_module._path_problem(path)  # remembered if valid
    assert (path in envelope_module._VALID_PATHS) is (first is None)
    assert envelope_module._path_problem(path) == first
