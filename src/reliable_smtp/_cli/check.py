"""``reliable-smtp check``: run :func:`~reliable_smtp.check_connection` and print
its report, a line per step with its time, and the cause and fix of a failure (or JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

from .._diagnostics import CheckReport, CheckStep, check_connection
from .console import Console
from .options import add_connection_options, settings_from_args


def _cmd_check(args: argparse.Namespace, console: Console) -> int:
    settings = settings_from_args(args, console)
    report = asyncio.run(check_connection(settings, send_to=args.send_to, sender=args.sender))
    if args.json:
        console.out(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_report(report, console)
    return 0 if report.ok else 1


def _print_report(report: CheckReport, console: Console) -> None:
    target = report.target
    facts = [f"tls {target.tls.value}"]
    facts.append(f"user {target.username}" if target.username else "no AUTH")
    if target.ca_file:
        facts.append(f"CA file {target.ca_file}")
    facts.append(f"timeout {target.connect_timeout:g} s")
    console.out(f"Checking {target.url} ({', '.join(facts)})")
    console.out()
    title_width = max([20, *(len(step.title) for step in report.steps)])
    any_slow = any(step.slow for step in report.steps)
    indent = 2 + console.mark_width + 1 + title_width + 2 + 9 + (5 if any_slow else 0) + 2
    for step in report.steps:
        _print_step(step, console, title_width, indent, any_slow)
    console.out()
    failed = report.failed
    steps = sum(not step.skipped for step in report.steps)
    if failed is None:
        console.out(f"{console.mark(True)} all {steps} steps passed in {report.seconds:.2f} s")
    else:
        console.out(f"{console.mark(False)} {failed.title} failed: {failed.cause}")


def _print_step(
    step: CheckStep, console: Console, title_width: int, indent: int, any_slow: bool
) -> None:
    mark = console.mark(None if step.skipped else step.ok)
    timing = "skipped".rjust(9) if step.seconds is None else f"{step.seconds:7.3f} s"
    if any_slow:
        timing += " slow" if step.slow else "     "
    head = f"  {mark:<{console.mark_width}} {step.title:<{title_width}}  {timing}  "
    summary = console.wrap(step.summary, indent)
    console.out(head + summary[0])
    pad = " " * indent
    for line in summary[1:]:
        console.out(pad + line)
    for note in step.notes:
        # "label:   value" notes keep their value column when they wrap.
        column = re.match(r"[\w ]+:\s+", note)
        for line in console.wrap(note, indent, hang=column.end() if column else 2):
            console.out(pad + line)
    for warning in step.warnings:
        for line in console.wrap(f"warning: {warning}", indent, hang=9):
            console.out(pad + line)
    if step.ok:
        return
    for label, text in (
        ("cause", step.cause),
        ("meaning", step.explanation),
        ("fix", step.hint),
    ):
        if not text:
            continue
        lines = console.wrap(f"{label + ':':<9}{text}", indent, hang=9)
        for line in lines:
            console.out(pad + line)


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    logs: argparse.ArgumentParser,
) -> None:
    """The ``check`` command's parser."""
    check = commands.add_parser(
        "check",
        parents=[logs],
        help="connect step by step and say what fails and how to fix it",
        description="Connect to the configured SMTP server step by step (DNS, TCP, TLS, "
        "greeting, EHLO, STARTTLS, AUTH) and report each step with its time; on failure, "
        "the likely cause and the fix. Exit status 0 only when every step passed.",
    )
    add_connection_options(check)
    check.add_argument(
        "--send-to", metavar="ADDRESS", help="also send a test message to ADDRESS (one attempt)"
    )
    check.add_argument(
        "--from", dest="sender", metavar="ADDRESS", help="sender of the test message"
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=_cmd_check)
