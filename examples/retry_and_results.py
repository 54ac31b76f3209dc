"""Retries and per-recipient results, against a local server that misbehaves on cue.

1. One recipient is greylisted (451) on the first try: the mailer waits and
   retries *only that recipient*; the others are never sent the message twice.
2. One recipient does not exist (550 5.1.1): the send raises PermanentError,
   and its ``result`` still says who did get the message.

    python examples/retry_and_results.py
"""

from __future__ import annotations

from reliable_smtp import Mailer, Message, PermanentError, RetryPolicy, SMTPTransport
from reliable_smtp.testing import LocalSMTPServer

# Short waits so the example finishes quickly; the defaults start at 1 s and allow 2 min.
FAST = RetryPolicy(attempts=3, initial_wait=0.2, jitter=0.1, throttled_wait=1.0)


def main() -> None:
    with LocalSMTPServer() as server:
        transport = SMTPTransport("127.0.0.1", server.port, tls="none")  # trusted local relay
        with Mailer(transport, retry=FAST) as mailer:
            print("1. A transient failure recovers")
            server.script("RCPT", "451 4.3.0 Temporary lookup failure", recipient="bob@example.org")
            result = mailer.send(
                Message(
                    sender="app@example.com",
                    to=["ann@example.org", "bob@example.org"],
                    subject="Receipt #1001",
                    text="Thank you for your order.",
                )
            )
            print(result.describe())
            for attempt in result.attempts:
                waited = f", then waited {attempt.delay_after:.2f} s" if attempt.delay_after else ""
                print(
                    f"   attempt {attempt.number}: {', '.join(attempt.recipients)} -> "
                    f"{attempt.outcome.value}{waited}"
                )
            print(
                f"   copies received by ann: {server.deliveries_to('ann@example.org')}, "
                f"bob: {server.deliveries_to('bob@example.org')}"
            )

            print()
            print("2. A partial rejection is reported per recipient")
            server.script(
                "RCPT",
                "550 5.1.1 <nobody@example.org>: Recipient address rejected",
                recipient="nobody@example.org",
            )
            try:
                mailer.send(
                    Message(
                        sender="app@example.com",
                        to=["ann@example.org", "nobody@example.org"],
                        subject="Receipt #1002",
                        text="Thank you for your order.",
                    )
                )
            except PermanentError as error:
                print(f"   raised {type(error).__name__}: {error}")
                assert error.result is not None
                print(f"   delivered to: {', '.join(error.result.accepted)}")
                print(f"   not delivered to: {', '.join(error.result.rejected)}")


if __name__ == "__main__":
    main()
