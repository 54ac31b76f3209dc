"""What the server offered, as notes for people and details as data: the TLS session
(version, cipher, certificate names, issuer and expiry) and the EHLO capabilities; and
the transport's TLS context with the end of the handshake timed.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from .._transports._session import tls_context
from .report import CheckTarget

# Certificates that expire sooner than this get a warning (renewal usually runs 30 days ahead).
_EXPIRY_WARNING_DAYS = 14

# The capabilities worth showing, in the order shown, as EHLO keywords.
_CAPABILITIES = (
    "SIZE",
    "PIPELINING",
    "STARTTLS",
    "AUTH",
    "SMTPUTF8",
    "8BITMIME",
    "CHUNKING",
    "ENHANCEDSTATUSCODES",
)


def timed_tls_context(
    target: CheckTarget, marks: list[float], clock: Callable[[], float]
) -> ssl.SSLContext:
    # The same context SMTPTransport builds from these settings, timed.
    context = tls_context(ca_file=target.ca_file)

    class _TimedSSLObject(ssl.SSLObject):
        # asyncio drives the handshake through SSLContext.wrap_bio(), which makes objects
        # of this class: the moment do_handshake() first succeeds is when TLS was up.
        def do_handshake(self) -> None:
            super().do_handshake()
            marks.append(clock())

    context.sslobject_class = _TimedSSLObject
    return context


def _name(rdns: Any) -> str:
    """``O=Example, CN=mail.example.com`` from getpeercert()'s tuple of RDNs."""
    short = {
        "commonName": "CN",
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "countryName": "C",
        "localityName": "L",
        "stateOrProvinceName": "ST",
    }
    parts = []
    for rdn in rdns or ():
        for key, value in rdn:
            parts.append(f"{short.get(key, key)}={value}")
    return ", ".join(parts)


def tls_facts(
    ssl_object: Any, target: CheckTarget, now: datetime
) -> tuple[str, list[str], list[str], dict[str, Any]]:
    """Summary, notes, warnings and details of an established TLS session."""
    version = ssl_object.version() if ssl_object is not None else None
    cipher = ssl_object.cipher() if ssl_object is not None else None
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    details: dict[str, Any] = {
        "version": version,
        "cipher": cipher[0] if cipher else None,
        "bits": cipher[2] if cipher else None,
    }
    summary = " ".join(str(x) for x in (version, details["cipher"]) if x)
    if details["bits"]:
        summary += f" ({details['bits']} bits)"
    notes: list[str] = []
    warnings: list[str] = []
    if cert:
        subject = _name(cert.get("subject"))
        issuer = _name(cert.get("issuer"))
        names = [value for _name_type, value in cert.get("subjectAltName", ())]
        details.update(
            subject=subject,
            issuer=issuer,
            names=names,
            not_before=cert.get("notBefore"),
            not_after=cert.get("notAfter"),
        )
        notes.append(f"subject:  {subject or '(empty)'}")
        if names:
            notes.append(f"names:    {', '.join(dict.fromkeys(names))}")
        notes.append(f"issuer:   {issuer}")
        not_after = cert.get("notAfter")
        if not_after:
            expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), timezone.utc)
            days = (expires - now).days
            details["expires"] = expires.isoformat()
            details["days_left"] = days
            notes.append(f"expires:  {expires:%Y-%m-%d %H:%M} UTC (in {days} days)")
            if days < _EXPIRY_WARNING_DAYS:
                warnings.append(
                    f"the certificate expires in {days} days: the server's operator must renew it"
                )
        trusted = "the CA file" if target.ca_file else "the system's CAs"
        details["verified"] = True
        notes.append(f"verified: yes ({target.host} matches; signed by {trusted})")
    else:
        # Verification is always on here, so an empty certificate means no certificate.
        details["verified"] = False
        notes.append("verified: no certificate details available")
    return summary, notes, warnings, details


def capabilities(smtp: aiosmtplib.SMTP) -> tuple[list[str], dict[str, Any]]:
    """Notes and details for what EHLO advertised."""
    extensions = smtp.esmtp_extensions
    offered: list[str] = []
    lacking: list[str] = []
    details: dict[str, Any] = {}
    for keyword in _CAPABILITIES:
        key = keyword.lower()
        present = key in extensions
        if keyword == "SIZE":
            limit = extensions.get("size", "")
            details["size"] = int(limit) if limit.isdigit() else (0 if present else None)
            if present:
                shown = f"SIZE {limit}" if limit.isdigit() and int(limit) else "SIZE (no limit)"
                if limit.isdigit() and int(limit) >= 1 << 20:
                    shown += f" ({int(limit) / (1 << 20):.0f} MiB)"
                offered.append(shown)
        elif keyword == "AUTH":
            mechanisms = [m.upper() for m in smtp.server_auth_methods]
            details["auth"] = mechanisms
            if mechanisms:
                offered.append("AUTH " + " ".join(mechanisms))
            present = bool(mechanisms)
        else:
            details[key] = present
        if not present:
            lacking.append(keyword)
        elif keyword not in ("SIZE", "AUTH"):
            offered.append(keyword)
    details["extensions"] = {k.upper(): v for k, v in extensions.items()}
    notes = [f"offers:   {', '.join(offered) or 'nothing'}"]
    if lacking:
        notes.append(f"lacks:    {', '.join(lacking)}")
    return notes, details


def first_line(response: SMTPResponse) -> str:
    return f"{response.code} {response.message.splitlines()[0] if response.message else ''}".strip()
