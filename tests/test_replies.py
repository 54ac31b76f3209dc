"""Reply classification: the rule table, delay hints and explanations.

Pure tests, no I/O. The cases are tables: RFC 5321 codes in the phases where they
occur, real provider replies (reference ``smtp-semantics.md`` A.3, quoted as
written there, "…" included), Postfix texts, enhanced-code edge cases. A coverage
test checks that every rule of the table is exercised by some case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reliable_smtp._replies import (
    RULES,
    Outcome,
    Phase,
    Reply,
    Rule,
    Verdict,
    classify,
    classify_connection_loss,
    classify_tls_failure,
    explain,
    parse_delay_hint,
)

SENT = Outcome.SENT
TRANSIENT = Outcome.TRANSIENT
THROTTLED = Outcome.THROTTLED
PERMANENT = Outcome.PERMANENT
CONFIG = Outcome.AUTH_OR_CONFIG
AMBIGUOUS = Outcome.AMBIGUOUS

NOW = datetime(2024, 6, 4, 13, 0, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Case:
    """A reply in a phase and the verdict it must get."""

    id: str
    code: int
    text: str
    phase: Phase
    outcome: Outcome
    rule: str | None = None
    split: bool = False
    quota: bool = False
    protocol_error: bool = False
    retry: bool | None = None
    """Expected ``retryable``; ``None``: the default for the outcome."""
    delay: float | None = None

    @property
    def reply(self) -> Reply:
        return Reply.from_server(self.code, self.text)

    def check(self, verdict: Verdict) -> None:
        assert verdict.outcome is self.outcome, verdict
        if self.rule is not None:
            assert verdict.rule == self.rule, verdict
        assert verdict.split is self.split, verdict
        assert verdict.quota is self.quota, verdict
        assert verdict.protocol_error is self.protocol_error, verdict
        retry = self.retry
        if retry is None:
            retry = self.outcome in (TRANSIENT, THROTTLED) and not self.quota
        assert verdict.retryable is retry, verdict
        assert verdict.delay_hint == self.delay, verdict
        assert verdict.explanation
        assert "\n" not in verdict.explanation


def params(cases: list[Case]) -> list[object]:
    return [pytest.param(case, id=case.id) for case in cases]


# --------------------------------------------------------------------------------------
# RFC 5321 §4.2.2 / §4.2.3 codes, with their RFC texts, in the phases of §4.3.2
# --------------------------------------------------------------------------------------

RFC_TEXT = {
    211: "System status, or system help reply",
    214: "Help message",
    220: "mail.example.com Service ready",
    221: "mail.example.com Service closing transmission channel",
    250: "Requested mail action okay, completed",
    251: "User not local; will forward to <forward-path>",
    252: "Cannot VRFY user, but will accept message and attempt delivery",
    354: "Start mail input; end with <CRLF>.<CRLF>",
    421: "mail.example.com Service not available, closing transmission channel",
    450: "Requested mail action not taken: mailbox unavailable",
    451: "Requested action aborted: local error in processing",
    452: "Requested action not taken: insufficient system storage",
    455: "Server unable to accommodate parameters",
    500: "Syntax error, command unrecognized",
    501: "Syntax error in parameters or arguments",
    502: "Command not implemented",
    503: "Bad sequence of commands",
    504: "Command parameter not implemented",
    550: "Requested action not taken: mailbox unavailable",
    551: "User not local; please try <forward-path>",
    552: "Requested mail action aborted: exceeded storage allocation",
    553: "Requested action not taken: mailbox name not allowed",
    554: "Transaction failed",
    555: "MAIL FROM/RCPT TO parameters not recognized or not implemented",
}

C, T, E, A, M, R, D, DE = (
    Phase.CONNECT,
    Phase.TLS,
    Phase.EHLO,
    Phase.AUTH,
    Phase.MAIL,
    Phase.RCPT,
    Phase.DATA,
    Phase.DATA_END,
)


def rfc(
    code: int,
    phase: Phase,
    outcome: Outcome,
    *,
    rule: str | None = None,
    split: bool = False,
    protocol_error: bool = False,
) -> Case:
    """A case with the RFC's own text for ``code``."""
    return Case(
        f"{code}-{phase}",
        code,
        RFC_TEXT[code],
        phase,
        outcome,
        rule=rule,
        split=split,
        protocol_error=protocol_error,
    )


RFC_CASES = [
    *(rfc(code, phase, SENT) for code in (211, 214, 221) for phase in (E, M, DE)),
    rfc(220, C, SENT, rule="accepted"),
    rfc(220, T, SENT),
    *(rfc(250, phase, SENT, rule="accepted") for phase in (E, A, M, R)),
    # DATA expects 354: a 2xx there is out of step, and no body was sent (issue 11 B2).
    rfc(250, D, PERMANENT, protocol_error=True, rule="data-without-354"),
    rfc(250, DE, SENT, rule="delivered"),
    rfc(251, R, SENT),
    rfc(252, R, SENT),
    rfc(354, D, SENT, rule="ready-for-data"),
    # After the final dot a reply that is not 2xx/4xx/5xx may hide an accepted message.
    rfc(354, DE, AMBIGUOUS, rule="not-a-final-reply"),
    rfc(354, R, PERMANENT, protocol_error=True),
    *(rfc(421, phase, TRANSIENT, rule="closing-connection") for phase in Phase),
    rfc(450, R, TRANSIENT, rule="mailbox-busy"),
    rfc(450, DE, TRANSIENT),
    *(rfc(451, phase, TRANSIENT, rule="server-error") for phase in (M, R, DE)),
    rfc(452, M, TRANSIENT, rule="insufficient-storage"),
    rfc(452, R, TRANSIENT, split=True, rule="too-many-recipients-452"),
    rfc(452, DE, TRANSIENT, rule="insufficient-storage"),
    rfc(455, M, TRANSIENT, rule="parameters-not-accommodated"),
    rfc(455, R, TRANSIENT),
    *(rfc(500, phase, PERMANENT, protocol_error=True) for phase in (E, A, M, R, D, DE)),
    *(rfc(501, phase, PERMANENT, protocol_error=True) for phase in (E, A, M, R, D)),
    rfc(502, E, PERMANENT, protocol_error=True, rule="not-implemented"),
    rfc(502, A, PERMANENT, protocol_error=True),
    *(rfc(503, phase, PERMANENT, protocol_error=True, rule="bad-sequence") for phase in (M, R, D)),
    rfc(504, M, PERMANENT, protocol_error=True, rule="not-implemented"),
    rfc(504, R, PERMANENT, protocol_error=True),
    # An AUTH mechanism the server does not support is a setting (deviation from row 14).
    rfc(504, A, CONFIG, rule="auth-mechanism-unsupported"),
    rfc(550, M, PERMANENT, rule="mailbox-unavailable"),
    rfc(550, R, PERMANENT, rule="recipient-refused"),
    rfc(550, DE, PERMANENT, rule="mailbox-unavailable"),
    rfc(551, R, PERMANENT, rule="user-not-local"),
    rfc(552, M, PERMANENT, rule="message-exceeds-storage"),
    rfc(552, DE, PERMANENT, rule="message-exceeds-storage"),
    # A bare 552 on RCPT stays permanent (Postfix, A.1); it splits only with 5.5.3 or text.
    rfc(552, R, PERMANENT, rule="recipient-storage-exceeded"),
    rfc(553, M, PERMANENT, rule="mailbox-name-not-allowed"),
    rfc(553, R, PERMANENT),
    Case("554-connect", 554, "No SMTP service here", C, PERMANENT, rule="no-service"),
    rfc(554, D, PERMANENT, rule="transaction-failed"),
    rfc(554, DE, PERMANENT),
    rfc(555, M, PERMANENT, protocol_error=True, rule="parameters-not-recognized"),
    rfc(555, R, PERMANENT, protocol_error=True),
    # RFC 4954 AUTH replies.
    Case("235-auth", 235, "2.7.0 Authentication successful", A, SENT),
    Case("334-auth", 334, "VXNlcm5hbWU6", A, SENT, rule="auth-challenge"),
    Case("334-mail", 334, "VXNlcm5hbWU6", M, PERMANENT, protocol_error=True),
    Case("399-data", 399, "odd", D, PERMANENT, protocol_error=True),
    Case(
        "432-auth",
        432,
        "4.7.12 A password transition is needed",
        A,
        TRANSIENT,
        rule="auth-password-transition",
    ),
    Case(
        "454-auth",
        454,
        "4.7.0 Temporary authentication failure",
        A,
        TRANSIENT,
        rule="auth-temporary",
    ),
    Case(
        "500-auth-line-too-long",
        500,
        "5.5.6 Authentication Exchange line is too long",
        A,
        PERMANENT,
        protocol_error=True,
    ),
    Case(
        "530-auth",
        530,
        "5.7.0 Authentication required",
        A,
        CONFIG,
        rule="auth-required",
    ),
    Case(
        "530-mail-starttls",
        530,
        "5.7.0 Must issue a STARTTLS command first",
        M,
        CONFIG,
        rule="starttls-required",
    ),
    Case(
        "534-auth",
        534,
        "5.7.9 Authentication mechanism is too weak",
        A,
        CONFIG,
        rule="app-password-required",
    ),
    Case(
        "535-auth",
        535,
        "5.7.8 Authentication credentials invalid",
        A,
        CONFIG,
        rule="bad-credentials",
    ),
    Case(
        "538-auth",
        538,
        "5.7.11 Encryption required for requested authentication mechanism",
        A,
        CONFIG,
        rule="encryption-required",
    ),
    Case(
        "504-auth-5.7.4",
        504,
        "5.7.4 Unrecognized authentication type",
        A,
        CONFIG,
    ),
    Case("554-auth-5.7.0", 554, "5.7.0 Login refused", A, CONFIG, rule="auth-refused"),
    # Unknown codes with a valid first digit are read by that digit (RFC 5321 §4.2).
    Case("299-mail", 299, "", M, SENT),
    Case("499-rcpt", 499, "", R, TRANSIENT, rule="temporary"),
    Case("599-rcpt", 599, "", R, PERMANENT, rule="permanent"),
]


@pytest.mark.parametrize("case", params(RFC_CASES))
def test_rfc_codes(case: Case) -> None:
    case.check(classify(case.reply, case.phase))


# --------------------------------------------------------------------------------------
# Real provider replies (reference A.3), texts as quoted there
# --------------------------------------------------------------------------------------

GMAIL_421_EHLO = "4.7.0 Try again later, closing connection. (EHLO) … - gsmtp"

PROVIDER_CASES = [
    # Gmail / Google Workspace
    Case("gmail-421-4.7.0-ehlo", 421, GMAIL_421_EHLO, E, THROTTLED, rule="throttled"),
    Case(
        "gmail-421-4.7.0-reputation",
        421,
        "4.7.0 … very low reputation of the sending IP … temporarily rate limited",
        DE,
        THROTTLED,
    ),
    Case(
        "gmail-421-4.7.28-unusual-rate",
        421,
        "4.7.28 … unusual rate of unsolicited mail … temporarily rate limited",
        DE,
        THROTTLED,
    ),
    Case(
        "gmail-450-4.2.1-recipient-rate",
        450,
        "4.2.1 The user you are trying to contact is receiving mail at a rate that "
        "prevents additional messages…",
        R,
        THROTTLED,
        rule="recipient-rate-limit",
    ),
    Case(
        "gmail-450-4.2.1-peak-relay",
        450,
        "4.2.1 Peak SMTP relay limit exceeded for this customer",
        M,
        THROTTLED,
    ),
    # "recipient inbox out of storage / over quota": Gmail's two wordings.
    Case(
        "gmail-452-4.2.2-out-of-storage",
        452,
        "4.2.2 The recipient's inbox is out of storage space.",
        R,
        TRANSIENT,
        retry=False,
        rule="mailbox-full-temporary",
    ),
    Case(
        "gmail-452-4.2.2-over-quota",
        452,
        "4.2.2 The email account that you tried to reach is over quota.",
        R,
        TRANSIENT,
        retry=False,
        rule="mailbox-full-temporary",
    ),
    Case(
        "gmail-454-too-many-logins",
        454,
        "4.7.0 Too many login attempts, please try again later.",
        A,
        THROTTLED,
        rule="too-many-logins",
    ),
    Case(
        "gmail-535-bad-credentials",
        535,
        "5.7.8 Username and Password not accepted … BadCredentials",
        A,
        CONFIG,
        rule="bad-credentials",
    ),
    Case(
        "gmail-534-app-password",
        534,
        "5.7.9 Application-specific password required … InvalidSecondFactor",
        A,
        CONFIG,
        rule="app-password-required",
    ),
    Case(
        "gmail-550-5.7.1-ip-blocked",
        550,
        "5.7.1 … unusual rate of unsolicited mail … mail sent from your IP address has "
        "been blocked",
        DE,
        PERMANENT,
        rule="policy-rejection",
    ),
    Case(
        "gmail-550-5.4.5-quota",
        550,
        "5.4.5 Daily user sending quota exceeded",
        D,
        THROTTLED,
        quota=True,
        rule="quota-daily-sending",
    ),
    Case(
        "gmail-550-5.4.5-limit",
        550,
        "5.4.5 Daily user sending limit exceeded",
        DE,
        THROTTLED,
        quota=True,
    ),
    # Microsoft 365 / Exchange Online
    Case(
        "m365-535-5.7.139-tenant",
        535,
        "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant",
        A,
        CONFIG,
        rule="smtp-auth-disabled",
    ),
    Case(
        "m365-535-5.7.139-basic",
        535,
        "5.7.139 Authentication unsuccessful, basic authentication is disabled",
        A,
        CONFIG,
        rule="smtp-auth-disabled",
    ),
    Case(
        "m365-535-5.7.3",
        535,
        "5.7.3 Authentication unsuccessful",
        A,
        CONFIG,
        rule="bad-credentials",
    ),
    Case(
        "m365-550-5.7.30-auth",
        550,
        "5.7.30 Basic authentication is not supported for Client Submission.",
        A,
        CONFIG,
        rule="basic-auth-retired",
    ),
    Case(
        "m365-550-5.7.30-mail",
        550,
        "5.7.30 Basic authentication is not supported for Client Submission.",
        M,
        CONFIG,
        rule="basic-auth-retired",
    ),
    # The basic code for 5.7.57 is "typically 530 [U]"; both ways are AUTH_OR_CONFIG.
    Case(
        "m365-530-5.7.57",
        530,
        "5.7.57 Client was not authenticated to send anonymous mail during MAIL FROM",
        M,
        CONFIG,
        rule="auth-required",
    ),
    Case(
        "m365-550-5.7.57",
        550,
        "5.7.57 Client was not authenticated to send anonymous mail during MAIL FROM",
        M,
        CONFIG,
        rule="auth-required-m365",
    ),
    Case(
        "m365-554-5.2.252-send-as",
        554,
        "5.2.252 SendAsDenied; x not allowed to send as y; "
        "STOREDRV.Submission.Exception:SendAsDeniedException…",
        DE,
        CONFIG,
        rule="send-as-denied",
    ),
    Case(
        "m365-554-5.2.0-send-as",
        554,
        "5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
        D,
        CONFIG,
        rule="send-as-denied",
    ),
    Case(
        "m365-554-5.2.0-submission-quota",
        554,
        "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
        DE,
        THROTTLED,
        quota=True,
        rule="quota-submission",
    ),
    Case(
        "m365-432-4.3.2-thread-limit",
        432,
        "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
        DE,
        THROTTLED,
        rule="concurrency-limit",
    ),
    Case(
        "m365-432-4.3.2-thread-limit-auth",
        432,
        "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
        A,
        THROTTLED,
        rule="concurrency-limit",
    ),
    # "451 4.7.500-699": both ends of the range.
    Case(
        "m365-451-4.7.500",
        451,
        "4.7.500 (ASxxx) Access denied, please try again later",
        DE,
        THROTTLED,
    ),
    Case(
        "m365-451-4.7.699",
        451,
        "4.7.699 (ASxxx) Access denied, please try again later",
        M,
        THROTTLED,
    ),
    Case(
        "m365-451-4.7.650",
        451,
        "4.7.650 … temporarily rate limited due to IP reputation",
        DE,
        THROTTLED,
    ),
    Case(
        "m365-452-4.5.3-too-many",
        452,
        "4.5.3 Too many recipients",
        R,
        TRANSIENT,
        split=True,
        rule="too-many-recipients",
    ),
    Case(
        "m365-550-5.7.708",
        550,
        "5.7.708 Access denied, traffic not accepted from this IP",
        M,
        CONFIG,
        rule="sender-blocked",
    ),
    Case(
        "m365-550-5.7.705",
        550,
        "5.7.705 … tenant has exceeded threshold",
        M,
        CONFIG,
        rule="sender-blocked",
    ),
    Case(
        "m365-550-5.1.8",
        550,
        "5.1.8 Access denied, bad outbound sender",
        M,
        CONFIG,
        rule="sender-blocked",
    ),
    *(
        Case(
            f"m365-550-5.7.{n}",
            550,
            f"5.7.{n} … banned sender",
            DE,
            CONFIG,
            rule="sender-blocked",
        )
        for n in (501, 502, 503)
    ),
    Case(
        "m365-550-5.1.90",
        550,
        "5.1.90 … daily limit for message recipients",
        M,
        THROTTLED,
        quota=True,
        rule="quota-daily-recipients",
    ),
    Case(
        "m365-554-5.2.2-submission",
        554,
        "5.2.2 Submission quota exceeded",
        DE,
        THROTTLED,
        quota=True,
        rule="quota-submission",
    ),
    # Amazon SES
    *(
        Case(
            f"ses-454-max-rate-{phase}",
            454,
            "Throttling failure: Maximum sending rate exceeded",
            phase,
            THROTTLED,
            rule="throttled",
        )
        for phase in (A, M, DE)
    ),
    *(
        Case(
            f"ses-454-daily-quota-{phase}",
            454,
            "Throttling failure: Daily message quota exceeded",
            phase,
            THROTTLED,
            quota=True,
            rule="quota",
        )
        for phase in (A, M, DE)
    ),
    Case(
        "ses-554-not-verified",
        554,
        "Message rejected: Email address is not verified. The following identities failed "
        "the check in region …",
        DE,
        CONFIG,
        rule="sender-not-verified",
    ),
    # SendGrid
    Case(
        "sendgrid-451-credits",
        451,
        "Authentication failed: Maximum credits exceeded",
        A,
        THROTTLED,
        quota=True,
        rule="quota-credits",
    ),
    Case(
        "sendgrid-451-messaging-limits",
        451,
        "You've exceeded your messaging limits",
        DE,
        THROTTLED,
        quota=True,
        rule="quota",
    ),
    Case(
        "sendgrid-403-not-authorized",
        403,
        "You are not authorized to send from that email address",
        M,
        CONFIG,
        rule="sender-not-authorized",
    ),
    # Mailgun
    Case(
        "mailgun-421-not-activated",
        421,
        "Domain sandbox….mailgun.org is not allowed to send: Please activate your Mailgun account…",
        M,
        CONFIG,
        rule="account-not-activated",
    ),
    # The SMTP form may be 421 [U]: an explicit retry time, 300 s after NOW.
    Case(
        "mailgun-421-try-again-after-date",
        421,
        "Domain X is not allowed to send: recipient limit exceeded, try again after "
        "Tue, 04 Jun 2024 13:05:00 UTC",
        M,
        THROTTLED,
        delay=300.0,
        rule="delay-requested",
    ),
    # Others
    Case(
        "relay-422-try-again-in",
        422,
        "try again in 15 seconds",
        R,
        THROTTLED,
        delay=15.0,
        rule="delay-requested",
    ),
    # "actually a rate limit", but a 5xx: the first digit stays authoritative.
    Case(
        "relay-550-try-again-later",
        550,
        "… Failure sending mail. Try again later.",
        DE,
        PERMANENT,
        rule="permanent-try-later",
    ),
    Case(
        "mailcow-451-4.7.1-ratelimit",
        451,
        '4.7.1 Ratelimit "user" exceeded',
        DE,
        THROTTLED,
    ),
    # "retrying makes it worse": AUTH_OR_CONFIG although the first digit is 4.
    Case(
        "oracle-421-auth-failures",
        421,
        "Too many auth failures, try again later",
        A,
        CONFIG,
        rule="too-many-auth-failures",
    ),
    Case(
        "oracle-421-auth-failures-mail",
        421,
        "Too many auth failures, try again later",
        M,
        CONFIG,
        rule="too-many-auth-failures",
    ),
    # DJB's greeting example (cr.yp.to/smtp/greeting.html).
    Case(
        "djb-421-come-back",
        421,
        "Please come back in 2040 seconds",
        C,
        THROTTLED,
        delay=2040.0,
        rule="delay-requested",
    ),
]

# Postfix server texts (A.3, after the table, and A.2's anvil limits), from smtpd.c.
POSTFIX_CASES = [
    Case(
        "postfix-452-too-many-recipients",
        452,
        "4.5.3 Error: too many recipients",
        R,
        TRANSIENT,
        split=True,
        rule="too-many-recipients",
    ),
    Case(
        "postfix-554-no-valid-recipients",
        554,
        "5.5.1 Error: no valid recipients",
        D,
        PERMANENT,
        rule="no-valid-recipients",
    ),
    Case(
        "postfix-503-nested-mail",
        503,
        "5.5.1 Error: nested MAIL command",
        M,
        PERMANENT,
        protocol_error=True,
        rule="bad-sequence",
    ),
    Case(
        "postfix-552-5.3.4-size",
        552,
        "5.3.4 Message size exceeds file system imposed limit",
        DE,
        PERMANENT,
        rule="message-too-large",
    ),
    Case(
        "postfix-552-5.3.4-size-mail",
        552,
        "5.3.4 Message size exceeds file system imposed limit",
        M,
        PERMANENT,
        rule="message-too-large",
    ),
    Case(
        "postfix-555-unsupported-option",
        555,
        "5.5.4 Unsupported option: SMTPUTF8",
        M,
        PERMANENT,
        protocol_error=True,
        rule="parameters-not-recognized",
    ),
    Case(
        "postfix-553-smtputf8",
        553,
        "5.6.7 Must declare SMTPUTF8 to send unicode address",
        R,
        PERMANENT,
        rule="smtputf8-required",
    ),
    Case(
        "postfix-454-tls-unavailable",
        454,
        "4.7.0 TLS not available due to local problem",
        T,
        TRANSIENT,
        rule="starttls-unavailable",
    ),
    Case(
        "postfix-421-idle-timeout",
        421,
        "4.4.2 mail.example.com Error: timeout exceeded",
        R,
        TRANSIENT,
        rule="closing-connection",
    ),
    Case(
        "postfix-421-too-many-errors",
        421,
        "4.7.0 mail.example.com Error: too many errors",
        M,
        TRANSIENT,
        rule="too-many-errors",
    ),
    # anvil rate limits: "too many recipients from <client>" is a rate, not a split.
    Case(
        "postfix-450-anvil-recipients",
        450,
        "4.7.1 Error: too many recipients from unknown[192.0.2.1]",
        R,
        THROTTLED,
        rule="throttled",
    ),
    Case(
        "postfix-450-anvil-recipients-no-enhanced",
        450,
        "Error: too many recipients from unknown[192.0.2.1]",
        R,
        THROTTLED,
        rule="throttled",
    ),
    Case(
        "postfix-450-anvil-mail",
        450,
        "4.7.1 Error: too much mail from unknown[192.0.2.1]",
        M,
        THROTTLED,
        rule="throttled",
    ),
    Case(
        "postfix-421-anvil-connections",
        421,
        "4.7.0 mail.example.com Error: too many connections from unknown[192.0.2.1]",
        C,
        THROTTLED,
        rule="concurrency-limit",
    ),
    Case(
        "postfix-554-relay-denied",
        554,
        "5.7.1 <user@example.org>: Relay access denied",
        R,
        CONFIG,
        rule="relay-denied",
    ),
    Case(
        "postfix-550-user-unknown",
        550,
        "5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in local "
        "recipient table",
        R,
        PERMANENT,
        rule="mailbox-does-not-exist",
    ),
    Case(
        "postfix-504-helo-fqdn",
        504,
        "5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname",
        R,
        CONFIG,
        rule="ehlo-name-rejected",
    ),
    Case(
        "postfix-553-sender-login-mismatch",
        553,
        "5.7.1 <a@example.org>: Sender address rejected: not owned by user b@example.org",
        M,
        CONFIG,
        rule="send-as-denied",
    ),
    Case(
        "postfix-553-sender-domain-not-found",
        553,
        "5.1.8 <a@nowhere.invalid>: Sender address rejected: Domain not found",
        M,
        CONFIG,
    ),
    Case(
        "postfix-450-unverified-recipient",
        450,
        "4.1.1 <a@example.org>: Recipient address rejected: unverified address: mailbox "
        "not verified yet",
        R,
        TRANSIENT,
        rule="mailbox-busy",
    ),
    Case(
        "postfix-550-undeliverable-recipient",
        550,
        "5.1.1 <a@example.org>: Recipient address rejected: undeliverable address: not verified",
        R,
        PERMANENT,
        rule="mailbox-does-not-exist",
    ),
    Case(
        "postfix-450-greylisted",
        450,
        "4.7.1 <a@example.org>: Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/",
        R,
        THROTTLED,
        rule="throttled",
    ),
]


@pytest.mark.parametrize("case", params(PROVIDER_CASES + POSTFIX_CASES))
def test_real_replies(case: Case) -> None:
    case.check(classify(case.reply, case.phase, now=NOW))


# --------------------------------------------------------------------------------------
# Table boundaries: mailbox full, splits, quotas, and the rest of the rules
# --------------------------------------------------------------------------------------

EDGE_CASES = [
    # Mailbox full (A.4 row 12): 5xx permanent by default, 4xx transient but not now.
    Case(
        "552-5.2.2-mailbox-full",
        552,
        "5.2.2 <a@example.org>: Mailbox full",
        R,
        PERMANENT,
        rule="mailbox-full",
    ),
    Case(
        "552-5.2.2-quota-exceeded-is-mailbox-full",
        552,
        "5.2.2 <a@example.org> Quota exceeded (mailbox for user is full)",
        DE,
        PERMANENT,
        rule="mailbox-full",
    ),
    Case(
        "452-mailbox-quota-text",
        452,
        "Mailbox quota exceeded",
        R,
        TRANSIENT,
        retry=False,
        rule="mailbox-full-temporary",
    ),
    # 552 on RCPT splits only with 5.5.3 or the text (A.1, A.4 row 9).
    Case(
        "552-5.5.3-rcpt",
        552,
        "5.5.3 Too many recipients",
        R,
        TRANSIENT,
        split=True,
        rule="too-many-recipients",
    ),
    Case(
        "552-text-rcpt",
        552,
        "Too many recipients",
        R,
        TRANSIENT,
        split=True,
        rule="too-many-recipients-text",
    ),
    Case(
        "452-text-rcpt-no-enhanced",
        452,
        "Too many recipients",
        R,
        TRANSIENT,
        split=True,
        rule="too-many-recipients-text",
    ),
    Case(
        "452-per-hour-is-a-rate",
        452,
        "Too many recipients this hour",
        R,
        THROTTLED,
        rule="throttled",
    ),
    Case("552-rcpt-5.2.3", 552, "5.2.3 Message length exceeds limit", R, PERMANENT),
    Case(
        "452-too-many-recipients-at-mail",
        452,
        "4.5.3 Too many recipients",
        M,
        THROTTLED,
        rule="throttled",
    ),
    Case(
        "451-4.4.5-congestion",
        451,
        "4.4.5 Mail system congestion",
        DE,
        THROTTLED,
        rule="throttled",
    ),
    Case("451-try-again-later", 451, "Please try again later", DE, THROTTLED),
    Case(
        "421-4.3.2-service-not-available",
        421,
        "4.3.2 Service not available, closing transmission channel",
        DE,
        TRANSIENT,
        rule="closing-connection",
    ),
    Case("550-5.1.2-bad-domain", 550, "5.1.2 Bad destination system address", R, PERMANENT),
    Case(
        "501-5.1.3-bad-syntax",
        501,
        "5.1.3 Bad recipient address syntax",
        R,
        PERMANENT,
        rule="bad-address-syntax",
    ),
    Case(
        "550-5.1.0-address-refused",
        550,
        "5.1.0 Address rejected",
        R,
        PERMANENT,
        rule="address-refused",
    ),
    Case(
        "550-5.1.7-sender-at-mail",
        550,
        "5.1.7 Invalid sender address",
        M,
        CONFIG,
        rule="sender-refused",
    ),
    Case(
        "550-5.7.26-dmarc",
        550,
        "5.7.26 Unauthenticated email from example.com is not accepted due to domain's "
        "DMARC policy",
        DE,
        PERMANENT,
        rule="sender-authentication-failed",
    ),
    Case(
        "550-5.7.60-send-as",
        550,
        "5.7.60 SMTP; Client does not have permissions to send as this sender",
        M,
        CONFIG,
        rule="send-as-denied",
    ),
    Case(
        "550-5.7.750-unregistered-domain",
        550,
        "5.7.750 Service unavailable. Client blocked from sending from unregistered domains",
        M,
        CONFIG,
        rule="sender-blocked",
    ),
    Case("552-message-too-big-text", 552, "Message too big", DE, PERMANENT),
    Case(
        "554-5.6.0-content", 554, "5.6.0 Content rejected", DE, PERMANENT, rule="transaction-failed"
    ),
]


@pytest.mark.parametrize("case", params(EDGE_CASES))
def test_edge_cases(case: Case) -> None:
    case.check(classify(case.reply, case.phase, now=NOW))


# --------------------------------------------------------------------------------------
# Enhanced codes: first line only; the basic code wins a disagreement
# --------------------------------------------------------------------------------------


def test_enhanced_code_comes_from_the_first_line_only() -> None:
    # Gmail continuation lines have been logged with placeholders (A.2).
    reply = Reply.from_server(
        421,
        "4.7.28 [192.0.2.1] Our system has detected an unusual rate of\n"
        "x.x.xx unsolicited mail originating from your IP address. To protect our\n"
        "x.x.xx users from spam, mail sent from your IP address has been temporarily\n"
        "x.x.xx rate limited. - gsmtp",
    )
    assert reply.enhanced_code == "4.7.28"
    assert reply.enhanced_parts == (4, 7, 28)
    assert reply.text.startswith("[192.0.2.1] Our system")
    assert "x.x.xx rate limited" in reply.text
    assert classify(reply, Phase.DATA_END).outcome is THROTTLED


def test_enhanced_code_on_a_continuation_line_is_ignored() -> None:
    reply = Reply.from_server(550, "Requested action not taken\n5.1.1 user unknown")
    assert reply.enhanced_code is None
    # The text still names the problem.
    assert classify(reply, Phase.RCPT).rule == "mailbox-does-not-exist"


def test_gmail_multiline_with_repeated_codes() -> None:
    reply = Reply.from_server(
        450,
        "4.2.1 The user you are trying to contact is receiving mail at a rate that\n"
        "4.2.1 prevents additional messages from being delivered. Please resend your\n"
        "4.2.1 message at a later time. - gsmtp",
    )
    assert reply.enhanced_code == "4.2.1"
    assert classify(reply, Phase.RCPT).rule == "recipient-rate-limit"


@pytest.mark.parametrize(
    ("code", "text", "phase", "outcome"),
    [
        pytest.param(250, "5.1.1 looks like an error", DE, SENT, id="250-with-5.1.1"),
        pytest.param(451, "5.7.1 policy", DE, THROTTLED, id="451-with-5.7.1"),
        pytest.param(421, "5.7.0 closing", C, THROTTLED, id="421-with-5.7.0"),
        pytest.param(550, "4.2.2 mailbox full", R, PERMANENT, id="550-with-4.2.2"),
        pytest.param(452, "5.2.2 mailbox full", R, TRANSIENT, id="452-with-5.2.2"),
        pytest.param(550, "4.7.1 try later", DE, PERMANENT, id="550-with-4.7.1"),
        pytest.param(550, "2.0.0 OK", DE, PERMANENT, id="550-with-2.0.0"),
        pytest.param(535, "4.7.8 bad", A, CONFIG, id="535-with-4.7.8"),
        pytest.param(454, "5.7.0 temporary", A, TRANSIENT, id="454-with-5.7.0-at-auth"),
        pytest.param(452, "5.5.3 too many", R, TRANSIENT, id="452-with-5.5.3"),
        pytest.param(450, "5.4.5 congestion", DE, THROTTLED, id="450-with-5.4.5"),
    ],
)
def test_basic_code_wins_over_enhanced_class(
    code: int, text: str, phase: Phase, outcome: Outcome
) -> None:
    reply = Reply.from_server(code, text)
    assert reply.enhanced_code is not None
    assert classify(reply, phase).outcome is outcome


@pytest.mark.parametrize("code", [0, 1, 99, 100, 199, 600, 999, 1000, -1, -250])
@pytest.mark.parametrize(
    "text",
    ["", "2.0.0 Ok", "5.4.5 Daily user sending quota exceeded", "4.7.0 Try again later"],
)
def test_garbage_codes_are_protocol_errors(code: int, text: str) -> None:
    verdict = classify(Reply.from_server(code, text), Phase.MAIL)
    assert verdict.outcome is PERMANENT
    assert verdict.protocol_error
    assert verdict.rule == "not-smtp"
    assert not verdict.retryable
    assert "not SMTP" in verdict.explanation


# --------------------------------------------------------------------------------------
# Delay hints
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("try again in 15 seconds", 15.0, id="seconds"),
        pytest.param("Try again in 1 second", 1.0, id="one-second"),
        pytest.param("in 2 minutes", 120.0, id="minutes"),
        pytest.param("please retry in 5 min", 300.0, id="min"),
        pytest.param("Please come back in 2040 seconds", 2040.0, id="djb"),
        pytest.param("try again in 30s", 30.0, id="30s"),
        pytest.param("try again in 1.5 seconds", 1.5, id="fraction"),
        pytest.param("try again in a minute", 60.0, id="a-minute"),
        pytest.param("retry after 10 secs", 10.0, id="after-secs"),
        pytest.param("TRY AGAIN IN 45 SECONDS", 45.0, id="upper-case"),
        pytest.param("try again in 0 seconds", 1.0, id="clamped-low"),
        pytest.param("try again in 0.2 seconds", 1.0, id="clamped-fraction"),
        pytest.param("try again in 2 hours", 3600.0, id="clamped-high"),
        pytest.param("try again in 24 hours", 3600.0, id="clamped-day"),
        pytest.param("try again in " + "9" * 400 + " hours", 3600.0, id="clamped-huge"),
        pytest.param("try again after Tue, 04 Jun 2024 13:05:00 UTC", 300.0, id="rfc1123-utc"),
        pytest.param("try again after Tue, 04 Jun 2024 13:05:00 GMT", 300.0, id="rfc1123-gmt"),
        pytest.param("try again after Tue, 04 Jun 2024 15:05:00 +0200", 300.0, id="rfc1123-offset"),
        pytest.param("try again after 04 Jun 2024 13:00:30 GMT", 30.0, id="no-weekday"),
        pytest.param("try again after Tue, 04 Jun 2024 13:05:00", 300.0, id="naive-is-utc"),
        pytest.param(
            "try again after Tue, 04 Jun 2024 12:00:00 UTC", 1.0, id="date-in-past-clamped"
        ),
        pytest.param(
            "try again after Wed, 05 Jun 2024 13:00:00 UTC", 3600.0, id="date-clamped-high"
        ),
    ],
)
def test_parse_delay_hint(text: str, seconds: float) -> None:
    assert parse_delay_hint(text, now=NOW) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "try again later",
        "Please try again in a few minutes",
        "4.7.0 Try again later, closing connection.",
        "Requested action aborted: local error in processing",
        "try again after Tue, 04 Foo 2024 13:05:00 UTC",
        "in 3 messages",
    ],
)
def test_parse_delay_hint_none(text: str) -> None:
    assert parse_delay_hint(text, now=NOW) is None


def test_parse_delay_hint_naive_now_is_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_delay_hint("try again after Tue, 04 Jun 2024 13:01:00 UTC", now=naive) == 60.0


def test_parse_delay_hint_defaults_to_the_current_time() -> None:
    later = datetime.now(timezone.utc) + timedelta(minutes=10)
    text = "try again after " + later.strftime("%a, %d %b %Y %H:%M:%S") + " UTC"
    hint = parse_delay_hint(text)
    assert hint is not None
    assert 590.0 <= hint <= 600.0


def test_delay_hint_only_for_retryable_outcomes() -> None:
    transient = classify(Reply(451, "4.3.0", "try again in 20 seconds"), Phase.DATA_END)
    assert transient.delay_hint == 20.0
    assert "20 s" in transient.explanation
    permanent = classify(Reply(550, "5.7.1", "try again in 20 seconds"), Phase.DATA_END)
    assert permanent.delay_hint is None
    sent = classify(Reply(250, None, "try again in 20 seconds"), Phase.DATA_END)
    assert sent.delay_hint is None


def test_quota_keeps_the_hint_but_is_not_retried_now() -> None:
    verdict = classify(
        Reply(454, None, "Throttling failure: Daily message quota exceeded, retry in 2 hours"),
        Phase.MAIL,
    )
    assert verdict.outcome is THROTTLED
    assert verdict.quota
    assert not verdict.retryable
    assert verdict.delay_hint == 3600.0


# --------------------------------------------------------------------------------------
# Explanations
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "phase", "words"),
    [
        pytest.param(
            535, "5.7.8 bad", A, ["username", "password", "app password", "OAuth2"], id="535"
        ),
        pytest.param(
            534, "5.7.9 Application-specific password required", A, ["app password"], id="534"
        ),
        pytest.param(
            530,
            "5.7.0 Authentication required",
            M,
            ["credentials are missing", "RELIABLE_SMTP_USERNAME", "RELIABLE_SMTP_PASSWORD"],
            id="530",
        ),
        pytest.param(
            530,
            "5.7.0 Must issue a STARTTLS command first",
            M,
            ["STARTTLS", "RELIABLE_SMTP_TLS", "465"],
            id="530-starttls",
        ),
        pytest.param(538, "5.7.11 Encryption required", A, ["STARTTLS", "465"], id="538"),
        pytest.param(
            550,
            "5.1.1 unknown",
            R,
            ["does not exist", "check the address", "do not retry"],
            id="550-5.1.1",
        ),
        pytest.param(
            421, "Service not available", M, ["closing the connection", "new connection"], id="421"
        ),
        pytest.param(
            452, "4.5.3 Too many recipients", R, ["too many recipients", "split"], id="452-4.5.3"
        ),
        pytest.param(552, "5.3.4 Message too big", DE, ["too large"], id="552-5.3.4"),
        pytest.param(
            554,
            "5.7.1 <a@b>: Relay access denied",
            R,
            ["authenticate", "sender domain"],
            id="554-relay",
        ),
        pytest.param(
            550, "5.4.5 Daily user sending quota exceeded", DE, ["quota", "24 h"], id="550-5.4.5"
        ),
        pytest.param(
            554,
            "Message rejected: Email address is not verified.",
            DE,
            ["verify", "sender"],
            id="ses-not-verified",
        ),
        pytest.param(
            535, "5.7.139 Authentication unsuccessful", A, ["SMTP AUTH", "OAuth2"], id="5.7.139"
        ),
        pytest.param(
            550, "5.7.30 Basic authentication is not supported", A, ["basic", "OAuth2"], id="5.7.30"
        ),
        pytest.param(
            451, "4.7.1 slow down", DE, ["too fast", "reputation", "retried later"], id="4.7.x"
        ),
        pytest.param(452, "4.2.2 over quota", R, ["mailbox is full", "hours"], id="452-4.2.2"),
        pytest.param(454, "4.7.0 Too many login attempts", A, ["login", "reuse"], id="454-logins"),
        pytest.param(503, "5.5.1 bad sequence", M, ["reset or reconnect"], id="503"),
        pytest.param(499, "", DE, ["temporary"], id="4xx-fallback"),
        pytest.param(599, "", DE, ["permanent"], id="5xx-fallback"),
        pytest.param(250, "2.0.0 Ok: queued", DE, ["accepted"], id="250"),
    ],
)
def test_explanations_name_the_fix(code: int, text: str, phase: Phase, words: list[str]) -> None:
    explanation = classify(Reply.from_server(code, text), phase).explanation
    for word in words:
        assert word.lower() in explanation.lower(), explanation


@pytest.mark.parametrize(
    ("code", "text", "words"),
    [
        pytest.param(535, "5.7.8 Authentication credentials invalid", ["password"], id="535-auth"),
        pytest.param(354, "go ahead", ["ready for the message"], id="354-data"),
        pytest.param(334, "VXNlcm5hbWU6", ["challenge"], id="334-auth"),
        pytest.param(452, "4.5.3 Too many recipients", ["split"], id="452-rcpt"),
        pytest.param(550, "5.1.1 user unknown", ["does not exist"], id="550-rcpt"),
        pytest.param(250, "2.0.0 Ok", ["message"], id="250-data-end"),
        pytest.param(454, "4.7.0 TLS not available due to local problem", ["TLS"], id="454-tls"),
        pytest.param(220, "mail.example.com ESMTP", ["accepted"], id="220-connect"),
    ],
)
def test_explain_without_phase_uses_the_likely_phase(
    code: int, text: str, words: list[str]
) -> None:
    explanation = explain(Reply.from_server(code, text))
    for word in words:
        assert word.lower() in explanation.lower(), explanation


def test_explain_with_phase_matches_classify() -> None:
    reply = Reply.from_server(452, "4.5.3 Too many recipients")
    assert explain(reply, Phase.MAIL) == classify(reply, Phase.MAIL).explanation
    assert explain(reply, Phase.MAIL) != explain(reply)


# --------------------------------------------------------------------------------------
# The table itself
# --------------------------------------------------------------------------------------

ALL_CASES = RFC_CASES + PROVIDER_CASES + POSTFIX_CASES + EDGE_CASES


def test_rule_names_are_unique() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))


def test_every_rule_is_exercised() -> None:
    hit = {classify(case.reply, case.phase, now=NOW).rule for case in ALL_CASES}
    hit.add(classify(Reply(999), Phase.MAIL).rule)
    assert {rule.name for rule in RULES} - hit == set()


def test_only_the_last_rule_is_unfiltered() -> None:
    # Every rule but the row-18 catch-all filters on the code, so that a text rule can
    # never promote a non-SMTP code (A.1: codes outside 2-5 are fatal).
    *rest, last = RULES
    assert last.name == "not-smtp"
    assert last.codes is None
    assert last.severities is None
    for rule in rest:
        assert rule.codes is not None or rule.severities is not None, rule.name
        if rule.codes is not None:
            assert all(200 <= code <= 599 for code in rule.codes), rule.name


def test_rules_are_consistent() -> None:
    for rule in RULES:
        assert rule.explanation, rule.name
        assert "\n" not in rule.explanation, rule.name
        assert re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", rule.name), rule.name
        if rule.outcome in (PERMANENT, CONFIG, SENT):
            assert not rule.retryable, rule.name


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="split"):
        Rule(name="x", outcome=PERMANENT, explanation="x", split=True)
    with pytest.raises(ValueError, match="quota"):
        Rule(name="x", outcome=TRANSIENT, explanation="x", quota=True)
    with pytest.raises(ValueError, match="quota"):
        Rule(name="x", outcome=THROTTLED, explanation="x", quota=True, retryable=True)
    with pytest.raises(ValueError, match="enhanced pattern"):
        Rule(name="x", outcome=PERMANENT, explanation="x", enhanced=("5.7.1",))
    with pytest.raises(ValueError, match="name"):
        Rule(name="", outcome=PERMANENT, explanation="x")


def test_custom_table_and_first_digit_fallback() -> None:
    # A caller who wants RFC 3463 semantics for a 5xx mailbox-full (A.4 row 12).
    lenient = Rule(
        name="mailbox-full-retry",
        severities=frozenset({5}),
        enhanced=("X.2.2",),
        outcome=TRANSIENT,
        retryable=True,
        explanation="mailbox full: retried",
    )
    reply = Reply.from_server(552, "5.2.2 Mailbox full")
    assert classify(reply, Phase.RCPT).outcome is PERMANENT
    assert classify(reply, Phase.RCPT, rules=(lenient, *RULES)).outcome is TRANSIENT
    # An empty table falls back to the first digit (A.1).
    for code, outcome in [(250, SENT), (354, PERMANENT), (451, TRANSIENT), (550, PERMANENT)]:
        assert classify(Reply(code), Phase.MAIL, rules=()).outcome is outcome
    assert classify(Reply(999), Phase.MAIL, rules=()).protocol_error


# --------------------------------------------------------------------------------------
# Failures without a reply
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("timed_out", [False, True], ids=["lost", "timeout"])
@pytest.mark.parametrize("phase", list(Phase), ids=str)
def test_connection_loss(phase: Phase, timed_out: bool) -> None:
    verdict = classify_connection_loss(phase, timed_out=timed_out)
    assert verdict.explanation
    assert "\n" not in verdict.explanation
    if phase is Phase.DATA_END:
        assert verdict.outcome is Outcome.AMBIGUOUS
        assert not verdict.retryable
        assert "may have accepted" in verdict.explanation
    else:
        assert verdict.outcome is TRANSIENT
        assert verdict.retryable
        assert "retried" in verdict.explanation
    assert ("no reply in time" in verdict.explanation) is timed_out


def test_connection_loss_explanations_name_the_fix() -> None:
    connect = classify_connection_loss(Phase.CONNECT, timed_out=True).explanation
    assert "host and port" in connect
    assert "firewall" in connect
    tls = classify_connection_loss(Phase.TLS, timed_out=False).explanation
    assert "TLS handshake failed" in tls
    assert "465" in tls


@pytest.mark.parametrize(
    ("reason", "outcome", "rule", "words"),
    [
        pytest.param(
            "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1000)",
            CONFIG,
            "tls-wrong-port",
            ["STARTTLS", "465"],
            id="wrong-version",
        ),
        pytest.param(
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get "
            "local issuer certificate (_ssl.c:1000)",
            CONFIG,
            "tls-certificate",
            ["CA bundle", "hostname", "never disable verification"],
            id="verify-failed",
        ),
        pytest.param(
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, "
            "certificate is not valid for 'smtp.example.com'.",
            CONFIG,
            "tls-certificate",
            ["hostname"],
            id="hostname-mismatch",
        ),
        pytest.param(
            "[SSL: UNSUPPORTED_PROTOCOL] unsupported protocol (_ssl.c:1000)",
            CONFIG,
            "tls-no-common-protocol",
            ["TLS version"],
            id="unsupported-protocol",
        ),
        pytest.param(
            "SMTP STARTTLS extension not supported by server.",
            CONFIG,
            "tls-not-offered",
            ["465", "cleartext"],
            id="starttls-not-offered",
        ),
        pytest.param(
            "[Errno 104] Connection reset by peer",
            TRANSIENT,
            "tls-handshake-failed",
            ["retried"],
            id="reset",
        ),
        pytest.param("", TRANSIENT, "tls-handshake-failed", ["TLS"], id="empty"),
    ],
)
def test_tls_failures(reason: str, outcome: Outcome, rule: str, words: list[str]) -> None:
    verdict = classify_tls_failure(reason)
    assert verdict.outcome is outcome
    assert verdict.rule == rule
    assert verdict.retryable is (outcome is TRANSIENT)
    assert "\n" not in verdict.explanation
    for word in words:
        assert word in verdict.explanation


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------

enhanced_codes = st.one_of(
    st.none(),
    st.builds(
        "{}.{}.{}".format,
        st.sampled_from([2, 4, 5]),
        st.integers(0, 999),
        st.integers(0, 999),
    ),
)
texts = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [case.text for case in ALL_CASES] + ["try again in 7 seconds", "rate", "quota exceeded"]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    code=st.integers(0, 999),
    enhanced=enhanced_codes,
    text=texts,
    phase=st.sampled_from(list(Phase)),
)
def test_classify_is_total_and_keeps_the_first_digit(
    code: int, enhanced: str | None, text: str, phase: Phase
) -> None:
    for reply in (Reply(code, enhanced, text), Reply.from_server(code, text)):
        verdict = classify(reply, phase, now=NOW)
        assert verdict.explanation
        assert "\n" not in verdict.explanation
        assert verdict.rule
        assert explain(reply)
        if verdict.split:
            assert verdict.outcome is TRANSIENT
            assert verdict.retryable
        if verdict.quota:
            assert verdict.outcome is THROTTLED
            assert not verdict.retryable
        if verdict.protocol_error:
            assert verdict.outcome is PERMANENT
        if verdict.delay_hint is not None:
            assert 1.0 <= verdict.delay_hint <= 3600.0
        # The first digit decides, except for the documented overrides (A.1).
        severity = code // 100
        if phase is Phase.DATA_END and severity not in (2, 4, 5):
            # After the final dot, only a 2xx/4xx/5xx decides: the rest may hide a
            # message the server kept (issue 11 B2).
            assert verdict.outcome is AMBIGUOUS
            assert not verdict.protocol_error
        elif phase is Phase.DATA and severity == 2:
            assert verdict.outcome is PERMANENT  # DATA expects 354
            assert verdict.protocol_error
        elif severity == 2:
            assert verdict.outcome is SENT
        elif severity == 3:
            assert verdict.outcome in (SENT, PERMANENT)
        elif severity == 4:
            assert verdict.outcome in (TRANSIENT, THROTTLED, CONFIG)
        elif severity == 5:
            assert (
                verdict.outcome in (PERMANENT, CONFIG)
                or (verdict.outcome is THROTTLED and verdict.quota)
                or (verdict.outcome is TRANSIENT and verdict.split)
            )
        else:
            assert verdict.outcome is PERMANENT
            assert verdict.protocol_error


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200), amount=st.integers(0, 10**6))
def test_parse_delay_hint_is_total_and_clamped(text: str, amount: int) -> None:
    for candidate in (text, f"{text} try again in {amount} seconds"):
        hint = parse_delay_hint(candidate, now=NOW)
        assert hint is None or 1.0 <= hint <= 3600.0


def test_retry_in_process_is_the_deprecated_spelling_of_retryable() -> None:
    with pytest.warns(DeprecationWarning, match="retryable"):
        old = Verdict(outcome=Outcome.TRANSIENT, explanation="x", retry_in_process=True)
    assert old == Verdict(outcome=Outcome.TRANSIENT, explanation="x", retryable=True)
    with pytest.warns(DeprecationWarning, match=r"Verdict\.retryable"):
        assert old.retry_in_process is True
    # The rule table's own field too: a custom table written with the old name still works.
    with pytest.warns(DeprecationWarning, match=r"Rule\(retryable"):
        rule = Rule(name="x", outcome=TRANSIENT, explanation="x", retry_in_process=True)
    assert rule.retryable is True
    assert rule.verdict().retryable is True
    with pytest.warns(DeprecationWarning, match=r"Rule\.retryable"):
        assert rule.retry_in_process is True


def test_failures_without_a_reply_say_so_on_the_verdict() -> None:
    lost = classify_connection_loss(Phase.MAIL, timed_out=False)
    slow = classify_connection_loss(Phase.MAIL, timed_out=True)
    after_dot = classify_connection_loss(Phase.DATA_END, timed_out=True)
    assert (lost.connection_lost, lost.timed_out) == (True, False)
    assert (slow.connection_lost, slow.timed_out) == (False, True)
    assert (after_dot.outcome, after_dot.timed_out) == (Outcome.AMBIGUOUS, True)
    assert classify_tls_failure("connection reset by peer").connection_lost
    mismatch = classify_tls_failure("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert (mismatch.outcome, mismatch.setting) == (Outcome.AUTH_OR_CONFIG, "tls")
