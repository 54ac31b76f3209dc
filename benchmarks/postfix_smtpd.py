"""Postfix's own smtpd on 127.0.0.1, in a private configuration, discarding every message.

A server nobody here wrote that offers PIPELINING and CHUNKING (Postfix >= 3.4):
``benchmarks/throughput.py`` measures against it, ``tests/test_chunking.py`` proves
the BDAT dialogue against it. ``postfix_smtpd()`` writes a minimal ``main.cf`` and
``master.cf`` into a fresh directory (queue, data and log there too), runs
``postfix -c <dir> start-fg``, waits until the port answers, and stops Postfix with
``postfix -c <dir> stop`` afterwards. Every message is accepted for any recipient
from 127.0.0.1 and handed to the ``discard`` transport; the mail log (``maillog``
in that directory) says what was received (``bdat=1`` on each disconnect line) and
delivered (``status=sent``).

``postfix_smtpd(tls=(cert_pem, key_pem))`` also offers STARTTLS with that
certificate and key (PEM files; e.g. issued by ``trustme``).

Postfix's master runs as root and drops to the ``postfix`` user: ``available()`` is
false unless this process is root and Postfix is installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Postfix", "available", "postfix_smtpd"]

POSTFIX = "/usr/sbin/postfix"

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
default_transport = discard
relay_transport = discard
local_transport = discard
virtual_transport = discard
alias_maps =
alias_database =
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
smtpd_banner = $myhostname ESMTP
smtpd_peername_lookup = no
smtpd_client_connection_rate_limit = 0
smtpd_client_connection_count_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = 100
biff = no
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000 0 flush
proxymap  unix - - n - - proxymap
discard   unix - - n - - discard
error     unix - - n - - error
retry     unix - - n - - error
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
tlsmgr    unix - - n 1000 1 tlsmgr
postlog   unix-dgram n - n - 1 postlogd
"""


def available() -> bool:
    """Postfix is installed and this process may start its master (root)."""
    return Path(POSTFIX).exists() and shutil.which("postconf") is not None and os.geteuid() == 0


def version() -> str:
    done = subprocess.run(
        ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class Postfix:
    """A running private Postfix: its smtpd's port and its mail log."""

    port: int
    directory: Path

    def log(self) -> str:
        path = self.directory / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, predicate: Callable[[str], bool], *, timeout: float = 15.0) -> str:
        """The log once ``predicate(log)`` holds (Postfix delivers after it replies)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            if predicate(text) or time.monotonic() > deadline:
                return text
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"postfix exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.recv(100)  # the banner: smtpd itself is up, not only master's socket
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"postfix smtpd does not answer on 127.0.0.1:{port}")


@contextmanager
def postfix_smtpd(
    *, timeout: float = 20.0, tls: tuple[Path, Path] | None = None
) -> Iterator[Postfix]:
    """Run a private Postfix (see the module docstring); stopped and removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="reliable-smtp-postfix-"))
    root.chmod(0o755)  # the postfix user walks into data/ and queue/
    config = root / "conf"
    config.mkdir()
    (root / "queue").mkdir()
    (root / "data").mkdir()
    shutil.chown(root / "data", user="postfix")
    port = _free_port()
    main = MAIN_CF.format(root=root)
    if tls is not None:
        cert, key = tls
        main += (
            f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {cert}\n"
            f"smtpd_tls_key_file = {key}\n"
        )
    (config / "main.cf").write_text(main)
    (config / "master.cf").write_text(MASTER_CF.format(port=port))
    process = subprocess.Popen(
        [POSTFIX, "-c", str(config), "start-fg"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process, timeout)
        yield Postfix(port=port, directory=root)
    finally:
        subprocess.run(
            [POSTFIX, "-c", str(config), "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=30,
        )
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
