"""The connection check as a library function, in-process against real local servers.

Each test points :func:`check_connection` at a :class:`LocalSMTPServer` set up to
fail one way and asserts which step failed, the rule that decided, the cause it
names and the fix it suggests - and that the password is nowhere in the report.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import PASSWORD, USERNAME, free_port
from reliable_smtp import ConfigurationError, MailerSettings, Outcome
from reliable_smtp._diagnostics import CheckReport, check_connection
from reliable_smtp.testing import LocalSMTPServer


@pytest.fixture
def server() -> Iterator[LocalSMTPServer]:
    """A plain local relay, one mode only.

    Overrides conftest's ``server``, which runs every test twice (serial and
    pipelined): the check and the command line never depend on PIPELINING, and
    the delivery tests cover both modes.
    """
    with LocalSMTPServer() as running:
        yield running


def settings_for(server: LocalSMTPServer | None = None, **values: Any) -> MailerSettings:
    values.setdefault("host", "127.0.0.1")
    if server is not None:
        values.setdefault("port", server.port)
    values.setdefault("local_hostname", "client.test")
    values.setdefault("timeout", 5.0)
    values.setdefault("connect_timeout", 5.0)
    return MailerSettings(_env_file=None, **values)


def tls_settings(server: LocalSMTPServer, **values: Any) -> MailerSettings:
    values.setdefault("tls", "implicit" if server.tls == "implicit" else "starttls")
    values.setdefault("ca_file", server.ca_file)
    values.setdefault("username", USERNAME)
    values.setdefault("password", PASSWORD)
    return settings_for(server, **values)


def names(report: CheckReport) -> list[str]:
    return [step.name for step in report.steps]


def assert_no_password(report: CheckReport) -> None:
    assert PASSWORD not in json.dumps(report.to_dict())
    assert PASSWORD not in repr(report)


# -- everything passes ---------------------------------------------------------------------


async def test_starttls_with_auth_passes_every_step(tls_server: LocalSMTPServer) -> None:
    report = await check_connection(tls_settings(tls_server))

    assert report.ok, report.failed
    assert report.failed is None
    assert names(report) == ["dns", "tcp", "greeting", "ehlo", "starttls", "ehlo_tls", "auth"]
    assert report.step("dns").details["addresses"] == ["127.0.0.1"]  # type: ignore[union-attr]
    greeting = report.step("greeting")
    assert greeting is not None
    assert greeting.summary.startswith("220 ")
    ehlo = report.step("ehlo")
    assert ehlo is not None
    assert ehlo.details["starttls"] is True
    assert ehlo.details["size"] == 33_554_432
    starttls = report.step("starttls")
    assert starttls is not None
    assert starttls.details["version"].startswith("TLSv1.")
    assert starttls.details["verified"] is True
    assert "trustme" in starttls.details["issuer"]
    assert starttls.details["days_left"] > 0
    assert "127.0.0.1" in starttls.details["names"]
    after = report.step("ehlo_tls")
    assert after is not None
    assert {"PLAIN", "LOGIN"} <= set(after.details["auth"])
    auth = report.step("auth")
    assert auth is not None
    assert auth.details["mechanism"] == "PLAIN"
    assert all(step.seconds is not None and step.seconds >= 0 for step in report.steps)
    assert not any(step.slow for step in report.steps)
    assert_no_password(report)
    assert tls_server.auth_attempts == 1


async def test_pipelining_is_reported() -> None:
    with LocalSMTPServer(pipelining=True) as pipelining:
        report = await check_connection(settings_for(pipelining, tls="none"))

    ehlo = report.step("ehlo")
    assert ehlo is not None
    assert ehlo.details["pipelining"] is True
    assert "PIPELINING" in ehlo.notes[0]


async def test_implicit_tls_times_handshake_and_greeting_apart(
    smtps_server: LocalSMTPServer,
) -> None:
    report = await check_connection(tls_settings(smtps_server))

    assert report.ok, report.failed
    assert names(report) == ["dns", "tcp", "tls", "greeting", "ehlo", "auth"]
    tls = report.step("tls")
    assert tls is not None
    assert tls.details["cipher"]
    assert tls.details["verified"] is True
    assert tls.seconds is not None
    assert tls.seconds < report.seconds


async def test_send_to_goes_through_the_mailer(server: LocalSMTPServer) -> None:
    report = await check_connection(
        settings_for(server, tls="none"), send_to="bob@example.org", sender="app@example.com"
    )

    assert report.ok, report.failed
    assert names(report)[-2:] == ["auth", "send"]
    auth = report.step("auth")
    assert auth is not None
    assert auth.skipped
    assert auth.seconds is None
    send = report.step("send")
    assert send is not None
    [row] = send.details["recipients"]
    assert row["recipient"] == "bob@example.org"
    assert row["outcome"] == "sent"
    assert row["code"] == 250
    [received] = server.messages
    assert received.recipients == ("bob@example.org",)
    assert received.message["Message-ID"].strip("<>") == send.details["message_id"]
    ehlo = report.step("ehlo")
    assert ehlo is not None
    assert any("tls=none" in w for w in ehlo.warnings)


# -- each way to fail ----------------------------------------------------------------------


async def test_refused_port() -> None:
    report = await check_connection(settings_for(port=free_port(), tls="none"))

    assert not report.ok
    failed = report.failed
    assert failed is not None
    assert failed.name == "tcp"
    assert failed.rule == "connection-refused"
    assert failed.cause is not None
    assert "connection refused" in failed.cause
    assert failed.explanation is not None
    assert "nothing listens" in failed.explanation
    assert failed.hint is not None
    assert "port" in failed.hint
    assert names(report) == ["dns", "tcp"]


async def test_implicit_tls_client_on_a_plaintext_port(server: LocalSMTPServer) -> None:
    report = await check_connection(settings_for(server, tls="implicit"))

    failed = report.failed
    assert failed is not None
    assert failed.name == "tls"
    assert failed.rule == "tls-wrong-port"
    assert failed.outcome is Outcome.AUTH_OR_CONFIG
    assert failed.cause == "this port expects STARTTLS (or plain SMTP), not implicit TLS"
    assert failed.hint is not None
    assert "tls=starttls" in failed.hint
    assert "465" in failed.hint
    assert failed.error is not None
    assert "WRONG_VERSION_NUMBER" in failed.error


async def test_starttls_client_on_an_implicit_tls_port(smtps_server: LocalSMTPServer) -> None:
    settings = tls_settings(smtps_server, tls="starttls", connect_timeout=0.3, timeout=0.3)
    report = await check_connection(settings)

    failed = report.failed
    assert failed is not None
    assert failed.name == "greeting"
    assert failed.rule == "no-greeting"
    assert failed.cause is not None
    assert "implicit TLS" in failed.cause
    assert failed.hint is not None
    assert "tls=implicit" in failed.hint


async def test_no_greeting_after_implicit_tls(smtps_server: LocalSMTPServer) -> None:
    smtps_server.script("GREETING", hang=True)
    report = await check_connection(tls_settings(smtps_server, connect_timeout=0.3))

    assert names(report) == ["dns", "tcp", "tls", "greeting"]
    tls, greeting = report.steps[2:]
    assert tls.ok
    assert not greeting.ok
    assert greeting.rule == "no-greeting-after-tls"
    # The library's "use implicit TLS" advice would be wrong here: we already do.
    assert greeting.explanation is not None
    assert "tls='implicit'" not in greeting.explanation


async def test_missing_starttls(server: LocalSMTPServer) -> None:
    report = await check_connection(settings_for(server, tls="starttls"))

    failed = report.failed
    assert failed is not None
    assert failed.name == "starttls"
    assert failed.rule == "tls-not-offered"
    assert failed.cause == "the server does not offer STARTTLS"
    assert failed.explanation is not None
    assert "never fall back to cleartext" in failed.explanation


async def test_certificate_not_trusted(tls_server: LocalSMTPServer) -> None:
    # No CA file: the system CAs do not know the test CA.
    report = await check_connection(tls_settings(tls_server, ca_file=None))

    failed = report.failed
    assert failed is not None
    assert failed.name == "starttls"
    assert failed.rule == "tls-certificate"
    assert failed.hint is not None
    assert "RELIABLE_SMTP_CA_FILE" in failed.hint
    assert tls_server.auth_attempts == 0


async def test_bad_password(tls_server: LocalSMTPServer) -> None:
    report = await check_connection(tls_settings(tls_server, password=PASSWORD + "-wrong"))

    failed = report.failed
    assert failed is not None
    assert failed.name == "auth"
    assert failed.rule == "bad-credentials"
    assert failed.outcome is Outcome.AUTH_OR_CONFIG
    assert failed.details["reply"]["code"] == 535
    assert failed.hint is not None
    assert "app password" in failed.hint
    assert tls_server.auth_attempts == 1  # one attempt, never a second mechanism
    assert_no_password(report)
    assert PASSWORD + "-wrong" not in json.dumps(report.to_dict())


async def test_relay_denied_on_the_test_message(server: LocalSMTPServer) -> None:
    server.script("RCPT", "554 5.7.1 <bob@example.org>: Relay access denied")
    report = await check_connection(
        settings_for(server, tls="none"), send_to="bob@example.org", sender="app@example.com"
    )

    failed = report.failed
    assert failed is not None
    assert failed.name == "send"
    assert failed.rule == "relay-denied"
    assert failed.cause == "relay denied"
    assert failed.hint is not None
    assert "authenticate" in failed.hint
    [row] = failed.details["recipients"]
    assert (row["code"], row["enhanced_code"]) == (554, "5.7.1")
    assert server.messages == []


async def test_530_starttls_first_names_the_tls_setting(server: LocalSMTPServer) -> None:
    server.script("MAIL", "530 5.7.0 Must issue a STARTTLS command first")
    report = await check_connection(
        settings_for(server, tls="none"), send_to="bob@example.org", sender="app@example.com"
    )

    failed = report.failed
    assert failed is not None
    assert failed.rule == "starttls-required"
    assert failed.cause == "the server requires STARTTLS first"
    assert failed.hint is not None
    assert "RELIABLE_SMTP_TLS" in failed.hint


async def test_530_authentication_required_says_credentials_are_missing(
    server: LocalSMTPServer,
) -> None:
    server.script("MAIL", "530 5.7.0 Authentication required")
    report = await check_connection(
        settings_for(server, tls="none"), send_to="bob@example.org", sender="app@example.com"
    )

    failed = report.failed
    assert failed is not None
    assert failed.rule == "auth-required"
    assert failed.cause == "the server requires a login: credentials are missing"
    assert failed.explanation is not None
    assert "credentials are missing" in failed.explanation
    assert "STARTTLS" not in failed.explanation


async def test_a_slow_reply_times_out_with_the_library_explanation(
    server: LocalSMTPServer,
) -> None:
    server.script("EHLO", hang=True)
    report = await check_connection(settings_for(server, tls="none", timeout=0.3))

    failed = report.failed
    assert failed is not None
    assert failed.name == "ehlo"
    assert failed.rule == "timeout"
    assert failed.explanation is not None
    assert "no reply in time" in failed.explanation
    assert failed.hint is not None
    assert "--timeout" in failed.hint
    assert "RELIABLE_SMTP_TIMEOUT" in failed.explanation


async def test_ehlo_name_rejected(server: LocalSMTPServer) -> None:
    server.script(
        "EHLO", "504 5.5.2 <client>: Helo command rejected: need fully-qualified hostname"
    )
    report = await check_connection(settings_for(server, tls="none"))

    failed = report.failed
    assert failed is not None
    assert failed.name == "ehlo"
    assert failed.rule == "ehlo-name-rejected"
    assert failed.hint is not None
    assert "RELIABLE_SMTP_LOCAL_HOSTNAME" in failed.hint


async def test_old_server_without_esmtp_falls_back_to_helo(server: LocalSMTPServer) -> None:
    server.script("EHLO", "502 5.5.1 EHLO not implemented")
    report = await check_connection(settings_for(server, tls="none"))

    assert report.ok, report.failed
    ehlo = report.step("ehlo")
    assert ehlo is not None
    assert ehlo.details["esmtp"] is False


async def test_no_password_mechanism_offered(server: LocalSMTPServer) -> None:
    server.script("EHLO", "250 localhost")  # no extensions at all
    report = await check_connection(
        settings_for(server, tls="none", username=USERNAME, password=PASSWORD)
    )

    failed = report.failed
    assert failed is not None
    assert failed.name == "auth"
    assert failed.rule == "no-password-auth"
    assert server.auth_attempts == 0


async def test_slow_steps_are_flagged(server: LocalSMTPServer) -> None:
    ticks = itertools.count(step=1.5)
    report = await check_connection(
        settings_for(server, tls="none"), clock=lambda: float(next(ticks))
    )

    assert report.ok
    timed = [step for step in report.steps if not step.skipped]
    assert timed
    assert all(step.slow for step in timed)
    assert all(step.to_dict()["slow"] for step in timed)

    fast = await check_connection(settings_for(server, tls="none"), slow_after=1e9)
    assert not any(step.slow for step in fast.steps)


async def test_dns_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # The resolver is the boundary: no real DNS lookups in tests.
    async def no_such_host(*args: object, **kwargs: object) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_such_host)
    report = await check_connection(settings_for(host="smtp.example.invalid", tls="none"))

    assert names(report) == ["dns"]
    failed = report.failed
    assert failed is not None
    assert failed.rule == "dns-failed"
    assert failed.cause == "the host name does not resolve"
    assert failed.hint is not None
    assert "RELIABLE_SMTP_HOST" in failed.hint


async def test_every_address_is_tried(
    server: LocalSMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = free_port()

    async def two_addresses(*args: object, **kwargs: object) -> list[Any]:
        stream = (socket.AF_INET, socket.SOCK_STREAM, 6, "")
        return [(*stream, ("127.0.0.1", dead)), (*stream, ("127.0.0.1", server.port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", two_addresses)
    report = await check_connection(settings_for(server, tls="none"))

    assert report.ok, report.failed
    tcp = report.step("tcp")
    assert tcp is not None
    assert tcp.details["address"] == f"127.0.0.1:{server.port}"
    assert len(tcp.details["failed"]) == 1
    assert tcp.warnings


async def test_only_smtp_settings_can_be_checked() -> None:
    with pytest.raises(ConfigurationError, match="RELIABLE_SMTP_TRANSPORT"):
        await check_connection(MailerSettings(_env_file=None, transport="memory"))


async def test_a_malformed_test_recipient_is_refused_before_any_io(
    server: LocalSMTPServer,
) -> None:
    with pytest.raises(ConfigurationError, match="test message"):
        await check_connection(settings_for(server, tls="none"), send_to="not an address")
    assert server.connections == 0


async def test_report_json_shape(server: LocalSMTPServer) -> None:
    report = await check_connection(settings_for(server, tls="starttls"))
    data = json.loads(json.dumps(report.to_dict()))

    assert set(data) == {"ok", "target", "seconds", "failed_step", "steps"}
    assert data["ok"] is False
    assert data["failed_step"] == "starttls"
    assert data["target"]["port"] == server.port
    assert data["target"]["tls"] == "starttls"
    assert data["target"]["password_set"] is False
    for step in data["steps"]:
        assert {"name", "ok", "seconds", "details", "error", "explanation"} <= set(step)
    assert data["steps"][-1]["outcome"] == "auth_or_config"


async def test_a_password_echoed_by_the_server_is_redacted(tls_server: LocalSMTPServer) -> None:
    tls_server.script("AUTH", f"535 5.7.8 password {PASSWORD} not accepted")
    report = await check_connection(tls_settings(tls_server))

    failed = report.failed
    assert failed is not None
    assert failed.rule == "bad-credentials"
    assert failed.error == "535 5.7.8 password ******** not accepted"
    assert_no_password(report)


@pytest.mark.parametrize(
    ("error", "cause", "hint"),
    [
        (
            "certificate verify failed: Hostname mismatch, certificate is not valid for "
            "'smtp.example.com'",
            "the certificate is not for '127.0.0.1'",
            "host name the certificate names",
        ),
        ("certificate verify failed: certificate has expired", "has expired", "renew"),
        ("certificate verify failed: self-signed certificate", "did not verify", "--ca-file"),
    ],
)
def test_certificate_causes_are_told_apart(error: str, cause: str, hint: str) -> None:
    from reliable_smtp._diagnostics import CheckTarget
    from reliable_smtp._diagnostics.record import diagnose as _diagnose

    target = CheckTarget.from_settings(settings_for(port=587))
    named, fix = _diagnose("tls-certificate", error, target)
    assert cause in named
    assert fix is not None
    assert hint in fix
