"""The reliable_smtp pytest plugin, run on small test files with pytester."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from reliable_smtp import Mailer, RetryPolicy
from reliable_smtp.testing import Outbox, pytest_plugin

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_testing_section() -> str:
    """README's "Testing your application" section: its snippets are real test files."""
    text = README.read_text(encoding="utf-8")
    start = text.index("## Testing your application")
    end = text.index("\n## ", start + 1)
    return text[start:end]


# Inner runs skip hypothesis's plugin: its end-of-session summary costs a second per run.
INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
addopts = --strict-markers -p no:cacheprovider -p no:hypothesispytest
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    return pytester


def test_the_plugin_is_registered_through_the_entry_point(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.get_plugin("reliable_smtp") is pytest_plugin


def test_this_suite_can_use_the_fixtures(smtp_outbox: Outbox, outbox_mailer: Mailer) -> None:
    # The repo's own conftest defines server, tls_server, smtps_server and clock; the
    # plugin's names live beside them.
    assert outbox_mailer.transport is smtp_outbox
    assert outbox_mailer.retry == RetryPolicy().without_waits()


def test_outbox_fixtures(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        textwrap.dedent(
            """
            import pytest
            from reliable_smtp import AsyncMailer, Mailer, Message, RetryPolicy
            from reliable_smtp._errors import TransportClosedError
            from reliable_smtp.testing import Outbox

            MAILERS = []

            def hello(to):
                return Message(sender="app@example.com", to=[to], subject="Hello", text="hi")

            def test_sync(smtp_outbox, outbox_mailer):
                assert isinstance(smtp_outbox, Outbox)
                assert isinstance(outbox_mailer, Mailer)
                assert outbox_mailer.transport is smtp_outbox
                assert outbox_mailer.retry == RetryPolicy().without_waits()
                outbox_mailer.send(hello("ann@example.org"))
                smtp_outbox.one(to="ann@example.org", subject="Hello")
                MAILERS.append(outbox_mailer)

            async def test_async(smtp_outbox, async_outbox_mailer):
                assert isinstance(async_outbox_mailer, AsyncMailer)
                assert async_outbox_mailer.retry == RetryPolicy().without_waits()
                await async_outbox_mailer.send(hello("bob@example.org"))
                assert [m.recipients for m in smtp_outbox] == [("bob@example.org",)]
                MAILERS.append(async_outbox_mailer)

            def test_both_share_one_fresh_outbox(smtp_outbox, outbox_mailer, async_outbox_mailer):
                smtp_outbox.assert_nothing_sent()
                assert async_outbox_mailer.transport is outbox_mailer.transport is smtp_outbox

            async def test_mailers_were_closed_after_their_tests():
                sync_mailer, async_mailer = MAILERS
                with pytest.raises(TransportClosedError):
                    sync_mailer.send(hello("cat@example.org"))
                with pytest.raises(TransportClosedError):
                    await async_mailer.send(hello("cat@example.org"))
            """
        )
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=4)


def test_smtp_server_fixture(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        textwrap.dedent(
            """
            import pytest
            from reliable_smtp import Mailer, Message, PermanentError, SMTPTransport
            from reliable_smtp.testing import LocalSMTPServer

            PORTS = []

            def hello(to):
                return Message(sender="app@example.com", to=[to], subject="Hello", text="hi")

            def test_plain(smtp_server):
                assert isinstance(smtp_server, LocalSMTPServer)
                assert (smtp_server.host, smtp_server.tls) == ("127.0.0.1", "none")
                with Mailer(SMTPTransport("127.0.0.1", smtp_server.port, tls="none")) as mailer:
                    mailer.send(hello("ann@example.org"))
                assert smtp_server.messages[0].recipients == ("ann@example.org",)
                PORTS.append(smtp_server.port)

            def test_scripted_per_test(smtp_server):
                assert smtp_server.messages == []  # a fresh server for every test
                smtp_server.script("RCPT", "550 5.1.1 no such user")
                transport = SMTPTransport("127.0.0.1", smtp_server.port, tls="none")
                with Mailer(transport) as mailer, pytest.raises(PermanentError) as error:
                    mailer.send(hello("bob@example.org"))
                assert error.value.code == 550

            @pytest.mark.smtp_server(tls="starttls", auth={"app": "secret"}, size_limit=1000)
            def test_tls_and_auth(smtp_server):
                assert smtp_server.tls == "starttls"
                transport = SMTPTransport(
                    "127.0.0.1", smtp_server.port, tls="starttls",
                    ssl_context=smtp_server.client_ssl_context(),
                    username="app", password="secret",
                )
                with Mailer(transport) as mailer:
                    mailer.send(hello("cat@example.org"))
                assert smtp_server.auth_attempts == 1
                assert len(smtp_server.messages) == 1

            @pytest.mark.smtp_server(tls="implicit")
            class TestMarkedClass:
                def test_inherits_the_marker(self, smtp_server):
                    assert smtp_server.tls == "implicit"

            def test_stopped_after_its_test():
                import socket
                with pytest.raises(OSError):
                    socket.create_connection(("127.0.0.1", PORTS[0]), timeout=1).close()
            """
        )
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=5)


def test_the_marker_is_registered(inner: pytest.Pytester) -> None:
    result = inner.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.smtp_server(tls='none', auth=None, *"])


def test_marker_misuse_fails_with_the_fix(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.smtp_server(tls="starttls", pasword="typo")
            def test_unknown_option(smtp_server):
                pass

            @pytest.mark.smtp_server("starttls")
            def test_positional(smtp_server):
                pass
            """
        )
    )
    result = inner.runpytest()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*@pytest.mark.smtp_server got pasword; it takes auth, hostname, size_limit, "
            "smtputf8, tls*",
            "*@pytest.mark.smtp_server takes keyword arguments only*",
        ]
    )


def test_without_the_testing_extra(pytester: pytest.Pytester) -> None:
    # A separate interpreter in which aiosmtpd and trustme cannot be imported: the outbox
    # fixtures work, smtp_server fails with the install command.
    pytester.makeini(INI)
    pytester.makeconftest(
        textwrap.dedent(
            """
            import sys
            sys.modules["aiosmtpd"] = None
            sys.modules["trustme"] = None
            """
        )
    )
    pytester.makepyfile(
        textwrap.dedent(
            """
            from reliable_smtp import Message

            def test_outbox(smtp_outbox, outbox_mailer):
                outbox_mailer.send(Message(sender="a@example.com", to=["b@example.org"]))
                assert len(smtp_outbox) == 1

            def test_server(smtp_server):
                pass
            """
        )
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.re_match_lines(
        [
            r"^the smtp_server fixture needs aiosmtpd and trustme: install them with "
            r"`pip install 'reliable-smtp\[testing\]'` \(import of \w+ halted",
        ]
    )
    result.stdout.no_fnmatch_line("*During handling*")


def test_the_plugin_can_be_disabled(inner: pytest.Pytester) -> None:
    inner.makepyfile("def test_uses(smtp_outbox):\n    pass\n")
    result = inner.runpytest("-p", "no:reliable_smtp")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'smtp_outbox' not found*"])


def test_the_documented_examples_pass(inner: pytest.Pytester) -> None:
    text = readme_testing_section()
    blocks = re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)
    assert len(blocks) >= 5
    tests = 0
    for number, block in enumerate(blocks):
        inner.makepyfile(**{f"test_doc_{number}": block})
        tests += len(re.findall(r"^(?:async )?def test_", block, flags=re.MULTILINE))
    result = inner.runpytest()
    result.assert_outcomes(passed=tests)
