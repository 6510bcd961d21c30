"""A build-only verdict as Markdown: what ``evalbot eval --build-only --markdown`` writes, and the
comment the local demo's build-only evaluator posts (``evalbot demo``).

The report's reasons, slot names and compiler output come from a pull request, so every one of them
is quoted with :mod:`evalbot.quote`, as in the full verdict's comment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalbot.quote import block, cell, inline

_MAX_REASONS = 20
_MAX_LOGS = 3


def markdown(report: Mapping[str, Any], note: str = "nothing was gated or measured (build only)") -> str:
    """``report`` is :meth:`evalbot.build.verdict.BuildReport.to_dict`; ``note`` says what was not done."""
    label = "build OK" if report["label"] == "OK" else "REJECT"
    reasons = list(report["reasons"])
    lines = [f"### evalbot: **{label}**", ""]
    lines += [f"- {inline(reason, 600)}" for reason in reasons[:_MAX_REASONS]] or [f"- {note}"]
    if len(reasons) > _MAX_REASONS:
        lines.append(f"- … and {len(reasons) - _MAX_REASONS} more reasons")
    lines += ["", "| slot | result | seconds |", "|---|---|---:|"]
    for slot in report["slots"]:
        result = "cached" if slot["ok"] and slot["cached"] else "built" if slot["ok"] else "**REJECT**"
        lines.append(f"| {cell(slot['slot'], 80)} | {result} | {slot['seconds']:.2f} |")
    failed = [s for s in report["slots"] if not s["ok"] and s.get("log")]
    for slot in failed[:_MAX_LOGS]:
        lines += ["", f"compiler output of slot {inline(slot['slot'], 80)}:", "", block(slot["log"])]
    lines += ["", f"<sub>tree {inline(str(report['tree']), 80)} · {inline(report['arch'], 20)} · "
                  f"backend {inline(report['backend'], 20)}{'' if report['sandboxed'] else ' (not sandboxed)'}</sub>"]
    return "\n".join(lines) + "\n"
