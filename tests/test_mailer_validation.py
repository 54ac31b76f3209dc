"""The recipient policy inside a real send: nothing reaches the wire when validation fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import relay_transport, serial_only
from reliable_smtp import (
    InvalidMessageError,
    Mailer,
    MemoryTransport,
    Message,
    Outcome,
    PermanentError,
    ReliableSMTPError,
    SendResult,
)
from reliable_smtp._validation import RecipientPolicy, RecipientsRejectedError
from reliable_smtp.testing import LocalSMTPServer


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LocalSMTPServer]:
    with LocalSMTPServer() as running:
        yield running


@serial_only
def test_reject_lists_every_bad_address_and_sends_nothing(server: LocalSMTPServer) -> None:
    bad = ["a..b@example.org", "user@exa_mple.org", "x@localhost"]
    with (
        Mailer(relay_transport(server)) as mailer,
        pytest.raises(RecipientsRejectedError) as caught,
    ):
        mailer.send(Message(sender="app@example.com", to=["ok@example.org", *bad]))
    error = caught.value
    assert isinstance(error, InvalidMessageError)
    assert [p.address for p in error.problems] == bad
    assert all(address in str(error) for address in bad)
    assert server.connections == 0


def test_skip_sends_to_the_valid_ones_and_reports_the_rest(server: LocalSMTPServer) -> None:
    policy = RecipientPolicy(on_invalid="skip", denied_domains=["blocked.example"])
    with (
        Mailer(relay_transport(server), recipient_policy=policy) as mailer,
        pytest.raises(PermanentError) as caught,
    ):
        mailer.send(
            Message(sender="app@example.com", to=["ok@example.org", "someone@blocked.example"])
        )
    result = caught.value.result
    assert result is not None
    assert result.accepted == ("ok@example.org",)
    refused = result.recipients["someone@blocked.example"]
    assert refused.outcome is Outcome.PERMANENT
    assert refused.attempts == 0
    assert "blocked.example" in refused.explanation or "denied" in refused.explanation
    assert [m.recipients for m in server.messages] == [("ok@example.org",)]


def test_staging_allow_list_and_suppression_never_contact_the_server(
    server: LocalSMTPServer,
) -> None:
    policy = RecipientPolicy(
        allowed_domains=["ourcompany.example"],
        is_suppressed=lambda a: a == "bounced@ourcompany.example",
    )
    with Mailer(relay_transport(server), recipient_policy=policy) as mailer:
        with pytest.raises(RecipientsRejectedError) as caught:
            mailer.send(
                Message(
                    sender="app@example.com",
                    to=["dev@ourcompany.example", "customer@gmail.example"],
                )
            )
        assert server.connections == 0
        with pytest.raises(RecipientsRejectedError):
            mailer.send(Message(sender="app@example.com", to=["bounced@ourcompany.example"]))
        assert server.connections == 0
        assert mailer.send(Message(sender="app@example.com", to=["dev@ourcompany.example"])).ok
    kinds = {p.kind for p in caught.value.problems}
    assert kinds == {"not_allowed"}


def test_idn_domains_go_out_in_ascii_form(server: LocalSMTPServer) -> None:
    with Mailer(relay_transport(server)) as mailer:
        result = mailer.send(Message(sender="app@example.com", to=["user@bücher.example"]))
    assert result.accepted == ("user@xn--bcher-kva.example",)
    [rcpt] = list(server.commands_named("RCPT"))
    assert rcpt[2] == "TO:<user@xn--bcher-kva.example>"
    [mail] = list(server.commands_named("MAIL"))
    assert "SMTPUTF8" not in mail[2]  # an IDN domain alone does not need SMTPUTF8


def test_transactions_are_split_by_the_policy(server: LocalSMTPServer) -> None:
    policy = RecipientPolicy(max_recipients_per_transaction=2)
    recipients = [f"user{i}@example.org" for i in range(5)]
    with Mailer(relay_transport(server), recipient_policy=policy) as mailer:
        result = mailer.send(Message(sender="app@example.com", to=recipients))
    assert result.accepted == tuple(recipients)
    assert [len(m.recipients) for m in server.messages] == [2, 2, 1]
    assert len(result.attempts) == 1


def test_policy_off_allows_local_addresses() -> None:
    outbox = MemoryTransport()
    with Mailer(outbox, recipient_policy=None) as mailer:
        assert mailer.send(Message(sender="app@localhost", to=["dev@localhost"])).ok
    with Mailer(MemoryTransport()) as mailer, pytest.raises(RecipientsRejectedError):
        mailer.send(Message(sender="app@localhost", to=["dev@localhost"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipient=st.text(max_size=80), display=st.text(max_size=20))
def test_any_input_raises_only_typed_errors_and_nothing_reaches_the_wire(
    shared_server: LocalSMTPServer, recipient: str, display: str
) -> None:
    before = len(shared_server.messages)
    commands_before = len(shared_server.commands)
    transport = relay_transport(shared_server)
    with Mailer(transport) as mailer:
        try:
            result = mailer.send(Message(sender="app@example.com", to=[recipient], subject=display))
        except ReliableSMTPError:
            assert len(shared_server.messages) == before
            assert all(
                c[1] not in ("MAIL", "RCPT", "DATA")
                for c in shared_server.commands[commands_before:]
            )
        else:
            assert isinstance(result, SendResult)
            assert len(shared_server.messages) == before + 1
