"""A mailer configured entirely from a .env file (as in a container or PaaS deployment).

Writes a .env like the one you would deploy - the connection as one URL, the
password in its own variable (from your secret store), pool and rate settings -
into a temporary directory, and sends through an embedded local server (SMTPS,
AUTH) with ``Mailer.from_env()``.

    python examples/from_env.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from reliable_smtp import Mailer, MailerSettings, Message
from reliable_smtp.testing import LocalSMTPServer


def main() -> None:
    with (
        LocalSMTPServer(tls="implicit", auth={"app@example.com": "s3cret!"}) as server,
        tempfile.TemporaryDirectory() as directory,
    ):
        env_file = Path(directory) / ".env"
        env_file.write_text(
            # The user name is percent-encoded in the URL: @ becomes %40.
            f"RELIABLE_SMTP_URL=smtps://app%40example.com@127.0.0.1:{server.port}"
            "?max_connections=2&rate_per_minute=600\n"
            "RELIABLE_SMTP_PASSWORD=s3cret!\n"
            f"RELIABLE_SMTP_CA_FILE={server.ca_file}\n"  # trust the local test CA
            "RELIABLE_SMTP_RETRY_ATTEMPTS=3\n"
        )
        previous = Path.cwd()
        os.chdir(directory)  # .env is read from the working directory
        try:
            settings = MailerSettings()
            print("Settings (secrets hidden):")
            for name in (
                "url",
                "transport",
                "host",
                "port",
                "tls",
                "username",
                "password",
                "max_connections",
                "rate_per_minute",
                "retry_attempts",
            ):
                print(f"  {name:<16} {getattr(settings, name)}")
            with Mailer.from_env() as mailer:
                result = mailer.send(
                    Message(
                        sender="App <app@example.com>",
                        to=["ops@example.org"],
                        subject="Deployed",
                        text="Configured from .env.",
                    )
                )
        finally:
            os.chdir(previous)
        print()
        print(result.describe())
        print(
            f"server received {len(server.messages)} message(s) over {server.connections} "
            "connection(s)"
        )


if __name__ == "__main__":
    main()
