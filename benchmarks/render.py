"""How long rendering one message takes: reliable_smtp.render() against the stdlib.

Run: .venv/bin/python benchmarks/render.py [--number N] [--rounds R]

Measures microseconds per message (best of R rounds of N messages each) for the
same ~2.4 KB text+HTML message with one recipient, built and serialized three ways:

* ``Message(...)`` + ``render()`` (reliable_smtp; also ``render()`` alone);
* ``EmailMessage()`` with ``email.policy.default``, ``set_content`` +
  ``add_alternative`` and ``as_bytes()`` - what most applications write;
* compat32 ``email.mime`` (``MIMEMultipart`` + ``MIMEText``), for reference.

Every variant gets a Message-ID and a Date, as ``render()`` always writes them.
Nothing is asserted: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid

from reliable_smtp import Message, render

SENDER = "Example Shop <no-reply@example.com>"
RECIPIENT = "Alice Example <alice@example.org>"
SUBJECT = "Your order #10432 has shipped"
PARAGRAPH = (
    "Thank you for shopping with us. Your order #10432 is on its way and should\n"
    "arrive within three working days. You can follow the parcel with the link below.\n\n"
)
TEXT = "Hello Alice,\n\n" + PARAGRAPH * 8 + "Kind regards,\nThe Example Shop team\n"
HTML = (
    "<html><body><p>Hello Alice,</p>\n"
    + "<p>Thank you for shopping with us. Your order <b>#10432</b> is on its way.</p>\n" * 12
    + "<p>Kind regards,<br>The Example Shop team</p></body></html>\n"
)


def ours() -> bytes:
    return render(
        Message(sender=SENDER, to=RECIPIENT, subject=SUBJECT, text=TEXT, html=HTML)
    ).content


PREBUILT = Message(sender=SENDER, to=RECIPIENT, subject=SUBJECT, text=TEXT, html=HTML)


def ours_render_only() -> bytes:
    return render(PREBUILT).content


def stdlib_default() -> bytes:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = RECIPIENT
    message["Subject"] = SUBJECT
    message["Date"] = formatdate(usegmt=True)
    # An explicit domain: make_msgid() would otherwise call socket.getfqdn().
    message["Message-ID"] = make_msgid(domain="example.com")
    message.set_content(TEXT)
    message.add_alternative(HTML, subtype="html")
    return message.as_bytes()


def stdlib_compat32_mime() -> bytes:
    message = MIMEMultipart("alternative")
    message["From"] = SENDER
    message["To"] = RECIPIENT
    message["Subject"] = SUBJECT
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="example.com")
    message.attach(MIMEText(TEXT, "plain", "utf-8"))
    message.attach(MIMEText(HTML, "html", "utf-8"))
    return message.as_bytes()


def best_microseconds(func: Callable[[], bytes], number: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            func()
        best = min(best, time.perf_counter() - start)
    return best / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the best one counts)")
    args = parser.parse_args()

    cases: list[tuple[str, Callable[[], bytes]]] = [
        ("reliable_smtp: Message(...) + render()", ours),
        ("reliable_smtp: render() of a built Message", ours_render_only),
        ("stdlib EmailMessage (policy.default) + as_bytes()", stdlib_default),
        ("stdlib compat32 email.mime + as_bytes()", stdlib_compat32_mime),
    ]
    print(f"Python {platform.python_version()} on {platform.machine()}")
    print(
        f"message: {len(ours())} bytes rendered (text {len(TEXT)} + html {len(HTML)} characters), "
        f"best of {args.rounds} rounds x {args.number} messages\n"
    )
    results = {}
    width = max(len(name) for name, _ in cases)
    print(f"{'variant':<{width}}  {'µs/message':>10}  {'messages/s':>10}")
    for name, func in cases:
        func()  # warm up: imports, mimetypes tables, regex caches
        micros = best_microseconds(func, args.number, args.rounds)
        results[name] = micros
        print(f"{name:<{width}}  {micros:>10.1f}  {1e6 / micros:>10,.0f}")
    ratio = results[cases[2][0]] / results[cases[0][0]]
    print(f"\nstdlib EmailMessage / reliable_smtp (build + render): {ratio:.1f}x")
    ratio = results[cases[3][0]] / results[cases[0][0]]
    print(f"compat32 email.mime / reliable_smtp (build + render): {ratio:.1f}x")


if __name__ == "__main__":
    main()
