"""Secrets the client sent on the wire, kept out of every server text the library repeats.

A server may echo what it received: ``535 5.7.8 Authentication failed for
AGFwcABzM2NyZXQ=`` puts ``base64("\\0app\\0s3cret")`` into the reply, and from there
into the error's text, the DEBUG transcript and ``reliable-smtp check`` (text and
``--json``). :class:`SecretForms` is every form a credential took on the wire -
the raw password or token, its percent-encoding, and the exact base64 arguments of
AUTH PLAIN, LOGIN and XOAUTH2, with and without padding and in the URL-safe
alphabet - and :meth:`SecretForms.redact` is the one rule that removes them.

It is applied where those replies enter the library: :func:`redacted_response` and
:func:`redacted_failure` turn an aiosmtplib reply or refusal into one whose text is
redacted (a fresh exception, chained to nothing, so the original is not reachable
through ``__cause__`` or ``__context__``). The transport and the check both log in
through :func:`reliable_smtp._transports.smtp.send_credentials`, which uses them;
everything downstream - :func:`~reliable_smtp._transports.smtp.translate_error`, the
transcript, the check's steps - only ever sees redacted text.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

import aiosmtplib
from aiosmtplib.auth import auth_login_encode, auth_plain_encode, auth_xoauth2_encode
from aiosmtplib.response import SMTPResponse

__all__ = ["MIN_RAW_LENGTH", "REDACTED", "SecretForms", "redacted_failure", "redacted_response"]

REDACTED = "********"
"""What a secret is replaced with."""

#: A raw password or token shorter than this is not searched for: blanking every "a"
#: would garble the text (its base64 forms are always searched for).
MIN_RAW_LENGTH = 4


def _raw(secret: str) -> list[str]:
    """The secret as typed, and percent-encoded as in a URL, unless too short to search."""
    if len(secret) < MIN_RAW_LENGTH:
        return []
    return [secret, quote(secret, safe="")]


def _encodings(blob: bytes) -> list[str]:
    """Every way base64 ``blob`` is plausibly written back: padded or not, either alphabet."""
    forms = []
    for encoded in (base64.b64encode(blob), base64.urlsafe_b64encode(blob)):
        text = encoded.decode("ascii")
        forms += [text, text.rstrip("=")]
    return forms


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SecretForms:
    """The texts to remove from anything a server says. Immutable; combine with ``|``."""

    forms: frozenset[str] = frozenset()
    _pattern: re.Pattern[str] | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        if self.forms:
            # Longest first, so a base64 blob goes as a whole, not around a shorter secret
            # inside it; case-insensitive for percent-encoding (%2f / %2F).
            ordered = sorted(self.forms, key=len, reverse=True)
            pattern = re.compile("|".join(re.escape(form) for form in ordered), re.IGNORECASE)
            object.__setattr__(self, "_pattern", pattern)

    @classmethod
    def of(cls, texts: Iterable[str]) -> SecretForms:
        return cls(forms=frozenset(t for t in texts if t))

    @classmethod
    def for_password(cls, username: str, password: str) -> SecretForms:
        """AUTH PLAIN and LOGIN: the password, and every argument either mechanism sends."""
        if not password:
            return cls()
        user, secret = username.encode("utf-8"), password.encode("utf-8")
        plain = base64.b64decode(auth_plain_encode(user, secret))
        login_user, _login_password = auth_login_encode(user, secret)
        return cls.of(
            [
                *_raw(password),
                *_encodings(secret),
                *_encodings(plain),
                # LOGIN sends the user name base64-encoded with the first line; a server
                # echoing it shows the user name only, but it is still what went on the wire.
                login_user.decode("ascii"),
                login_user.decode("ascii").rstrip("="),
            ]
        )

    @classmethod
    def for_token(cls, username: str, token: str) -> SecretForms:
        """AUTH XOAUTH2: the access token and the base64 blob that carries it."""
        if not token:
            return cls()
        blob = base64.b64decode(auth_xoauth2_encode(username.encode("utf-8"), token.encode()))
        return cls.of([*_raw(token), *_encodings(token.encode()), *_encodings(blob)])

    def __or__(self, other: SecretForms) -> SecretForms:
        return SecretForms(forms=self.forms | other.forms)

    def __bool__(self) -> bool:
        return bool(self.forms)

    def __repr__(self) -> str:
        return f"<SecretForms: {len(self.forms)} forms, redacted>"

    def redact(self, text: str) -> str:
        """``text`` with every secret form replaced by :data:`REDACTED`."""
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)


def redacted_response(response: SMTPResponse, secrets: SecretForms) -> SMTPResponse:
    """``response`` with its text redacted (a new object; the code is kept)."""
    return SMTPResponse(response.code, secrets.redact(response.message))


def redacted_failure(
    exc: aiosmtplib.SMTPResponseException, secrets: SecretForms
) -> aiosmtplib.SMTPResponseException:
    """A fresh exception of the same class with the text redacted and no chain.

    Raise it outside the ``except`` block that caught ``exc``: raised inside, Python
    would keep ``exc`` (and its unredacted text) as ``__context__``.
    """
    exc_type = type(exc)
    try:
        fresh = exc_type(exc.code, secrets.redact(exc.message))
    except TypeError:  # a subclass with another signature: keep the common base
        fresh = aiosmtplib.SMTPResponseException(exc.code, secrets.redact(exc.message))
    return fresh
