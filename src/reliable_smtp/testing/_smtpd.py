"""The aiosmtpd side of :class:`~reliable_smtp.testing.LocalSMTPServer`: one connection's
protocol and the handler that answers it.

* :class:`ReceivedMessage` - what the server accepted (or received before a scripted fault
  after the dot);
* :class:`Fault` - one scripted misbehaviour: a reply, a dropped connection or a hang, at a
  command (``GREETING`` ... ``DATA_END``), matched once or every time;
* ``_ScriptedSMTP`` - aiosmtpd's protocol with the faults applied where aiosmtpd has no hook
  (the greeting, the reply to the final dot, a drop mid-command) and each connection
  registered with its server so ``stop()`` can end it;
* ``_Handler`` - the aiosmtpd hooks (EHLO, MAIL, RCPT, DATA, AUTH): records commands and
  messages on the owning server and answers with its faults.

The server object (thread, loop, TLS material, records) is :mod:`._server`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

# The one check that the testing extra is installed (the server module imports its
# third-party names from here).
try:
    import trustme as trustme  # for _server
    from aiosmtpd.smtp import SMTP as _AiosmtpdSMTP
    from aiosmtpd.smtp import AuthResult as AuthResult
    from aiosmtpd.smtp import LoginPassword as LoginPassword  # for _server
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "reliable_smtp.testing needs aiosmtpd and trustme: "
        "install them with `pip install 'reliable-smtp[testing]'`"
    ) from exc


if TYPE_CHECKING:
    from ._server import LocalSMTPServer

__all__ = ["Fault", "ReceivedMessage"]


#: Commands a fault can target. ``GREETING`` is the 220 banner; ``DATA_END`` is
#: the reply to the final dot (after the server has received the whole message).
Command = Literal[
    "GREETING", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "DATA_END", "RSET", "NOOP"
]


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message the server accepted (or received before a scripted fault after the dot)."""

    sender: str
    recipients: tuple[str, ...]
    content: bytes
    mail_options: tuple[str, ...]
    connection: int
    """Which connection (1, 2, ...) carried it."""

    @property
    def message(self) -> Any:
        """The message parsed with ``email.policy.default`` (an ``EmailMessage``)."""
        import email
        import email.policy

        return email.message_from_bytes(self.content, policy=email.policy.default)


@dataclass(slots=True)
class Fault:
    """One scripted misbehaviour. Built by :meth:`LocalSMTPServer.script`."""

    command: str
    reply: str | None = None
    disconnect: bool = False
    hang: bool = False
    recipient: str | None = None
    times: int | None = 1
    """How many times it fires; ``None`` means every time."""
    fired: int = field(default=0)

    def matches(self, command: str, arg: str) -> bool:
        if self.command != command:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        return self.recipient is None or f"<{self.recipient.lower()}>" in arg.lower()


#: In a scripted AUTH reply, replaced by what the client sent during AUTH.
_ECHO = "{argument}"

_ALL_AUTH = ("LOGIN", "PLAIN", "XOAUTH2")

#: What the server answers AUTH with when it was started without credentials.
_NO_AUTH = "502 5.5.1 AUTH not available: this server accepts mail without a login"


class _ScriptedSMTP(_AiosmtpdSMTP):
    """aiosmtpd's SMTP with a hook in front of every command for scripted faults."""

    def __init__(self, owner: LocalSMTPServer, number: int, **kwargs: Any) -> None:
        super().__init__(owner._handler, **kwargs)
        self._owner = owner
        self._number = number
        self._greeted = False
        self._echo: str | None = None
        self._auth_said: list[str] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._owner._open.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._owner._forget(self)
        super().connection_lost(error)

    async def push(self, status: Any) -> None:
        if self._echo is not None and isinstance(status, str) and status[:3] in ("235", "535"):
            status, self._echo = self._echo.replace(_ECHO, " ".join(self._auth_said)), None
        if not self._greeted:
            self._greeted = True
            fault = self._owner._take_fault("GREETING", "")
            if fault is not None:
                await self._apply(fault)
                return
        await super().push(status)

    async def _apply(self, fault: Fault) -> bool:
        """Act out ``fault``; return True when the command must not run normally."""
        if fault.hang:
            await self._owner._released.wait()
            return True
        if fault.disconnect:
            self._close_now()
            return True
        if fault.reply is not None:
            await super().push(fault.reply)
            if fault.reply.startswith("421"):
                self._close_now()
            return True
        return False

    def _close_now(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()

    async def _scripted(self, command: str, arg: str | None, run: Any) -> None:
        self._owner._log_command(self._number, command, arg)
        fault = self._owner._take_fault(command, arg or "")
        if fault is not None and await self._apply(fault):
            return
        await run(arg)

    async def smtp_EHLO(self, arg: str) -> None:
        await self._scripted("EHLO", arg, super().smtp_EHLO)

    async def smtp_STARTTLS(self, arg: str) -> None:
        await self._scripted("STARTTLS", arg, super().smtp_STARTTLS)

    async def smtp_AUTH(self, arg: str) -> None:
        # The AUTH line carries credentials: log the mechanism only.
        mechanism, _, initial = (arg or "").partition(" ")
        self._owner._log_command(self._number, "AUTH", mechanism)
        fault = self._owner._take_fault("AUTH", mechanism)
        if fault is not None and fault.reply is not None and _ECHO in fault.reply:
            # A server that echoes what it received: run the mechanism (challenges
            # included), then answer with everything the client sent in it.
            self._echo = fault.reply
            self._auth_said = [initial] if initial else []
        elif fault is not None and await self._apply(fault):
            return
        if not self._owner.requires_auth:
            await self.push(_NO_AUTH)
            return
        await super().smtp_AUTH(arg)

    async def challenge_auth(self, challenge: Any, *args: Any, **kwargs: Any) -> Any:
        answer = await super().challenge_auth(challenge, *args, **kwargs)
        if self._echo is not None and isinstance(answer, bytes):
            self._auth_said.append(base64.b64encode(answer).decode("ascii"))
        return answer

    async def smtp_MAIL(self, arg: str) -> None:
        await self._scripted("MAIL", arg, super().smtp_MAIL)

    async def smtp_RCPT(self, arg: str) -> None:
        await self._scripted("RCPT", arg, super().smtp_RCPT)

    async def smtp_DATA(self, arg: str) -> None:
        await self._scripted("DATA", arg, super().smtp_DATA)

    async def smtp_RSET(self, arg: str) -> None:
        await self._scripted("RSET", arg, super().smtp_RSET)

    async def smtp_NOOP(self, arg: str) -> None:
        await self._scripted("NOOP", arg, super().smtp_NOOP)

    async def smtp_QUIT(self, arg: str) -> None:
        self._owner._log_command(self._number, "QUIT", arg)
        await super().smtp_QUIT(arg)


class _Handler:
    """aiosmtpd handler: records accepted messages and acts out DATA_END faults."""

    def __init__(self, owner: LocalSMTPServer) -> None:
        self._owner = owner

    async def handle_EHLO(
        self,
        server: _ScriptedSMTP,
        session: Any,
        envelope: Any,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if not self._owner.requires_auth:
            # aiosmtpd advertises AUTH even with no mechanism and nobody to log in.
            responses[:] = [line for line in responses if not line.startswith("250-AUTH")]
        if self._owner.pipelining:
            # aiosmtpd reads commands one line at a time, so it copes with pipelined
            # input; it just never says so.
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def auth_XOAUTH2(self, server: _ScriptedSMTP, args: list[str]) -> AuthResult:
        """SASL XOAUTH2 as Google and Microsoft implement it, error challenge included."""
        owner = self._owner
        with owner._lock:
            owner._auth_attempts += 1
        if len(args) > 1:
            initial = args[1].encode("ascii", "replace")
        else:
            answer = await server.challenge_auth("")
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=False)
            initial = answer
        try:
            fields = dict(
                part.split("=", 1)
                for part in base64.b64decode(initial, validate=True).decode().split("\x01")
                if "=" in part
            )
        except (ValueError, UnicodeDecodeError):
            return AuthResult(success=False, handled=False)
        user, bearer = fields.get("user", ""), fields.get("auth", "")
        token = bearer.removeprefix("Bearer ")
        with owner._lock:
            owner._tokens_seen.append(token)
        if user in owner._oauth_tokens and owner._oauth_tokens[user] == token:
            return AuthResult(success=True, auth_data=user)
        # The error challenge: a JSON status, then the client's empty line, then 535.
        await server.challenge_auth(
            json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
        )
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: _ScriptedSMTP, session: Any, envelope: Any) -> str:
        received = ReceivedMessage(
            sender=envelope.mail_from or "",
            recipients=tuple(envelope.rcpt_tos),
            content=bytes(envelope.original_content or b""),
            mail_options=tuple(envelope.mail_options),
            connection=server._number,
        )
        fault = self._owner._take_fault("DATA_END", "")
        if fault is not None and fault.reply is not None and fault.reply[0] != "2":
            # The server refused after the dot: it does not have the message.
            return fault.reply
        # Any other outcome (accepted, or the link breaks before the reply) means
        # the server has the message: that is what makes the post-dot gap ambiguous.
        self._owner._record(received)
        if fault is not None and (fault.hang or fault.disconnect):
            await server._apply(fault)
            # aiosmtpd would push a reply after we return; there is nobody to read it.
            raise asyncio.CancelledError
        return fault.reply if fault is not None and fault.reply else "250 2.0.0 OK: queued"
