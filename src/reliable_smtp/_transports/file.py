"""The file transport: write each message to a directory instead of sending it.

This module owns :class:`FileTransport`. For every message it writes two files:

* ``<stamp>-<hex>.envelope.json`` - ``{"sender": ..., "recipients": [...]}``, the
  envelope (the only place Bcc recipients appear, as the content never carries them);
* ``<stamp>-<hex>.eml`` - the exact message bytes, readable by any mail client.

``<stamp>`` is the UTC time to the microsecond (``20261129T071500.123456Z``), so
names sort by time; ``<hex>`` is random, so two processes writing to the same
directory never collide. Each file is written to a hidden temporary file in the
same directory, fsynced, then renamed into place, so a reader never sees a partial
file. The sidecar is renamed first: once an ``.eml`` exists, its envelope does too.
Files are created with mode 0600 (messages often hold reset links and codes).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import json
import os
import secrets
import tempfile
from pathlib import Path

from .._envelope import Envelope
from .._errors import AuthOrConfigError, ConfigurationError, DeliveryError, error_for
from .._replies import Outcome, Phase, Reply, Verdict
from .._result import DeliveryReport
from ._commit import before_commit
from .base import Transport

__all__ = ["FileTransport"]

# errno values that an operator must fix (wrong path, permissions, read-only
# mount), as opposed to ones that may pass (a full disk being cleaned up, EINTR...).
_CONFIG_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EEXIST,
        errno.EISDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)
_ONE_MICROSECOND = datetime.timedelta(microseconds=1)


class FileTransport(Transport):
    """Write each message as an ``.eml`` file (plus an envelope sidecar) into ``directory``.

    The directory is created on the first delivery, not here (constructors do no
    I/O). ``paths`` lists the ``.eml`` files this instance wrote, in order.
    """

    marks_final_dot = True

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        if not os.fspath(directory):
            raise ConfigurationError(
                "FileTransport directory must not be empty; give the directory to write "
                "messages to",
                setting="directory",
            )
        self.directory = Path(directory)
        self.paths: list[Path] = []
        self.name = f"file:{self.directory}"
        self._last_stamp: datetime.datetime | None = None

    async def deliver(self, envelope: Envelope, content: bytes) -> DeliveryReport:
        """Write ``content`` and its envelope to the directory; every recipient is ``SENT``."""
        self.ensure_open()
        # The stem is chosen here, on the event loop, so that concurrent deliveries
        # get strictly increasing stamps without a lock.
        stem = self._next_stem()
        sidecar = json.dumps(
            {"sender": envelope.sender, "recipients": list(envelope.recipients)},
            ensure_ascii=False,
            indent=2,
        )
        await before_commit(envelope, transport_name=self.name)
        path = await asyncio.to_thread(self._write, stem, content, sidecar.encode() + b"\n")
        self.paths.append(path)
        return DeliveryReport.all_sent(
            envelope, transport_name=self.name, reply=Reply(250, "2.0.0", f"written to {path.name}")
        )

    def _next_stem(self) -> str:
        now = datetime.datetime.now(datetime.timezone.utc)
        # Never go backwards within one transport (clock steps, same microsecond).
        if self._last_stamp is not None and now <= self._last_stamp:
            now = self._last_stamp + _ONE_MICROSECOND
        self._last_stamp = now
        return f"{now:%Y%m%dT%H%M%S.%f}Z-{secrets.token_hex(4)}"

    def _write(self, stem: str, content: bytes, sidecar: bytes) -> Path:
        # Runs in a worker thread. The one boundary where OSError is translated.
        self._prepare_directory()
        eml = self.directory / f"{stem}.eml"
        envelope_json = self.directory / f"{stem}.envelope.json"
        try:
            self._write_atomically(envelope_json, sidecar)
            try:
                self._write_atomically(eml, content)
            except BaseException:
                with contextlib.suppress(OSError):
                    envelope_json.unlink()
                raise
            self._sync_directory()
        except OSError as exc:
            raise self._error(exc, f"could not write {eml}", Phase.DATA) from exc
        return eml

    def _prepare_directory(self) -> None:
        directory = self.directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(
                exc, f"could not create directory {directory}", Phase.CONNECT
            ) from exc
        if not os.access(directory, os.W_OK | os.X_OK):
            raise AuthOrConfigError(
                f"FileTransport directory {str(directory)!r} is not writable",
                setting="directory",
                phase=Phase.CONNECT,
                transport_name=self.name,
                explanation=(
                    "give the process write permission on it, or point "
                    "FileTransport(directory=...) at a writable directory"
                ),
            )

    def _write_atomically(self, target: Path, data: bytes) -> None:
        # A hidden temporary file in the same directory: os.replace is atomic only
        # within one file system, and "*.eml" globs must not see half-written files.
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def _sync_directory(self) -> None:
        # Make the renames durable. Not every platform can open a directory.
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return
        try:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)

    def _error(self, exc: OSError, summary: str, phase: Phase) -> DeliveryError:
        if exc.errno in _CONFIG_ERRNOS:
            why = (
                "it, or a parent, exists and is not a directory"
                if exc.errno in (errno.EEXIST, errno.ENOTDIR)
                else exc.strerror or str(exc)
            )
            return AuthOrConfigError(
                f"FileTransport {summary}: {why}",
                setting="directory",
                phase=phase,
                transport_name=self.name,
                explanation=(
                    f"point FileTransport(directory=...) at a writable directory "
                    f"(now {str(self.directory)!r})"
                ),
            )
        verdict = Verdict(
            outcome=Outcome.TRANSIENT,
            explanation=f"{exc.strerror or exc}: nothing was written; retried",
            retryable=True,
        )
        return error_for(verdict, f"FileTransport {summary}", phase=phase, transport_name=self.name)
