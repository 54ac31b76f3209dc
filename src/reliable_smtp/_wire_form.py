"""Message bytes the renderer vouches are already in SMTP wire form.

Before a transport sends content it must make sure the bytes have CRLF line
endings only and end in CRLF (RFC 5321 §2.3.8), and for DATA that no line
starts with a dot (RFC 5321 §4.5.2) - three byte counts and a search over the
whole message, ~40% of the CPU of sending a 1 MiB attachment. For bytes that
:func:`~reliable_smtp._message.assembly.render_message` built itself those checks
say nothing new: it writes CRLF only, its base64 lines have no dots, and it
knows whether a text part or a header starts a line with one. So it vouches
for its output here, and the transport's checks trust the vouch
(:func:`wire_form`) and check everything else (stdlib messages, bytes handed to
a transport directly, contents read back from an outbox) in full.

Trust is by identity, never by value: an entry is found by ``id(content)`` and
must name that very object. The registry holds each :class:`WireForm` weakly;
the :class:`~reliable_smtp.RenderedMessage` holds it (and its content), so an
entry answers exactly while its content is alive and its id cannot be reused.
Once the RenderedMessage is gone the vouch is gone too: the content is then
simply checked again. Bytes are immutable, so a vouch can never go stale.
"""

from __future__ import annotations

import weakref

__all__ = ["WireForm", "vouch", "wire_form"]


class WireForm:
    """What the renderer vouches for one content: CRLF line endings only, ending in CRLF,
    and, if ``dot_free``, no line that starts with a dot."""

    __slots__ = ("__weakref__", "content", "dot_free")

    def __init__(self, content: bytes, *, dot_free: bool) -> None:
        self.content = content
        self.dot_free = dot_free


class _Entry(weakref.ref[WireForm]):
    """The registry's weak reference to a form, knowing its key: when the form dies,
    the callback removes exactly this entry (a newer one under a reused id stays)."""

    __slots__ = ("key",)
    key: int


def _forget(entry: _Entry) -> None:
    if _VOUCHED.get(entry.key) is entry:
        # Another thread may have vouched under this id just now: losing that vouch
        # only means its content is checked in full.
        _VOUCHED.pop(entry.key, None)


# id(content) -> a weak reference to its form. A plain dict of weakref.ref subclasses,
# not a WeakValueDictionary, whose Python-level set and get cost 0.8 and 0.25 µs per
# message against 0.5 and 0.1 here.
_VOUCHED: dict[int, _Entry] = {}


def vouch(content: bytes, *, dot_free: bool) -> WireForm:
    """Vouch for ``content`` (canonical CRLF) while the returned form is alive.

    The caller keeps the form next to the content (``RenderedMessage._wire_form``).
    Small contents too: for a 2.4 KB message the checks it spares (three byte counts
    and a two-byte search, ~7 µs on CPython 3.11, whose ``count`` and ``in`` scan
    byte by byte) cost six times what the registry does.
    """
    form = WireForm(content, dot_free=dot_free)
    entry = _Entry(form, _forget)
    entry.key = key = id(content)
    _VOUCHED[key] = entry
    return form


def wire_form(content: bytes) -> WireForm | None:
    """The vouch for exactly this ``content`` object, or ``None`` (check it in full)."""
    entry = _VOUCHED.get(id(content))
    form = entry() if entry is not None else None
    if form is None or form.content is not content:
        return None
    return form
