"""``reliable-smtp explain``: what an SMTP reply means and what to do, from the library's
table (:func:`~reliable_smtp._replies.classify`), as text or JSON.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from typing import Any

from .._replies import Outcome, Phase, Reply, Verdict, classify, likely_phase
from .console import Console, UsageError

_REPLY_LINE = re.compile(r"^\s*(\d{3})(?:[ -](.*))?$")

_OUTCOME_LABELS = {
    Outcome.SENT: "success",
    Outcome.TRANSIENT: "transient - retried with exponential backoff",
    Outcome.THROTTLED: "throttled - retried later, after a longer wait",
    Outcome.PERMANENT: "permanent - never retried",
    Outcome.AUTH_OR_CONFIG: "auth/config - never retried: a setting or the account must change",
    Outcome.AMBIGUOUS: "ambiguous - the server may have the message; not resent",
}


def _parse_reply(words: Sequence[str]) -> Reply:
    """``550 5.1.1 text``, in one argument or several, one line or a pasted multi-line reply."""
    lines = [line for line in " ".join(words).splitlines() if line.strip()] or [""]
    first = _REPLY_LINE.match(lines[0])
    if first is None:
        raise UsageError(
            f"{' '.join(words)!r} does not start with a three-digit reply code "
            "(for example: 550 5.1.1 no such user)"
        )
    texts = [first.group(2) or ""]
    for line in lines[1:]:
        match = _REPLY_LINE.match(line)
        texts.append((match.group(2) or "") if match else line.strip())
    return Reply.from_server(int(first.group(1)), "\n".join(texts).strip())


def _phase(value: str) -> Phase:
    try:
        return Phase(value.strip().lower().replace("-", "_"))
    except ValueError:
        names = ", ".join(phase.value for phase in Phase)
        raise argparse.ArgumentTypeError(f"unknown phase {value!r} (choose from {names})") from None


def _cmd_explain(args: argparse.Namespace, console: Console) -> int:
    reply = _parse_reply(args.reply)
    phase: Phase = args.phase if args.phase is not None else likely_phase(reply)
    verdict = classify(reply, phase)
    if args.json:
        console.out(json.dumps(_verdict_dict(reply, phase, verdict, args.phase is None), indent=2))
        return 0
    assumed = (
        "" if args.phase is not None else " (assumed: where this code is usually seen; set --phase)"
    )
    rows = [
        ("reply", str(reply)),
        ("phase", f"{phase.value}{assumed}"),
        ("outcome", _OUTCOME_LABELS[verdict.outcome]),
        ("meaning", verdict.explanation),
    ]
    if verdict.outcome is not Outcome.SENT:
        rows.append(("retry", "yes, within the call" if verdict.retryable else "no"))
    if verdict.quota:
        rows.append(("quota", "a daily or billing limit: defer for hours, stop sending on it"))
    if verdict.split:
        rows.append(("split", "too many recipients: the rest go at once in a new transaction"))
    if verdict.delay_hint is not None:
        rows.append(("wait", f"the server asks for {verdict.delay_hint:g} s"))
    rows.append(("rule", verdict.rule))
    for label, text in rows:
        for line in console.wrap(f"{label + ':':<10}{text}", 0, hang=10):
            console.out(line)
    return 0


def _verdict_dict(reply: Reply, phase: Phase, verdict: Verdict, assumed: bool) -> dict[str, Any]:
    return {
        "code": reply.code,
        "enhanced_code": reply.enhanced_code,
        "text": reply.text,
        "phase": phase.value,
        "phase_assumed": assumed,
        "outcome": verdict.outcome.value,
        "explanation": verdict.explanation,
        "retryable": verdict.retryable,
        "retry_in_process": verdict.retryable,  # the old name of "retryable", for one release
        "quota": verdict.quota,
        "split": verdict.split,
        "delay_hint": verdict.delay_hint,
        "protocol_error": verdict.protocol_error,
        "rule": verdict.rule,
    }


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    logs: argparse.ArgumentParser,
) -> None:
    """The ``explain`` command's parser."""
    explain = commands.add_parser(
        "explain",
        help="what an SMTP reply means and what to do",
        description="Classify an SMTP reply with the library's table: "
        "reliable-smtp explain 550 5.1.1 no such user",
    )
    explain.add_argument(
        "reply", nargs="+", metavar="CODE [ENHANCED] [TEXT...]", help="the reply, e.g. 535 5.7.8"
    )
    explain.add_argument(
        "--phase",
        type=_phase,
        help="where it came: " + ", ".join(phase.value for phase in Phase),
    )
    explain.add_argument("--json", action="store_true", help="print the verdict as JSON")
    explain.set_defaults(handler=_cmd_explain)
