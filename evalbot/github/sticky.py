"""The sticky PR comment: the latest verdict, and earlier commits' verdicts in a collapsed section.

The hidden marker is how the publisher finds its own comment again (together with the author), so
a PR carries one evalbot comment however many commits, restarts and publish retries it sees.
"""

from __future__ import annotations

from dataclasses import dataclass

MARKER = "<!-- evalbot:sticky -->"
# GitHub refuses comment bodies over 65 536 characters; keep room for the header and history.
_MAX_VERDICT_CHARS = 50_000
_MAX_HISTORY = 30


@dataclass(frozen=True)
class Outcome:
    """One commit's result as shown on the PR: a verdict, or an evaluation that could not run."""

    sha: str
    label: str | None  # None: the evaluation failed (no verdict)
    summary: str
    markdown: str
    when: str  # ISO time the result was reached


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:200]


def render(current: Outcome, earlier: list[Outcome]) -> str:
    """The comment body for ``current``; ``earlier`` (newest first) go in the history section."""
    if current.label is None:
        head = f"### evalbot: evaluation failed for `{current.sha[:12]}`"
    else:
        head = f"### evalbot: `{current.label}` for `{current.sha[:12]}`"
    body = current.markdown
    if len(body) > _MAX_VERDICT_CHARS:
        body = body[:_MAX_VERDICT_CHARS] + "\n\n… (truncated; the full verdict is in the ledger)"
    parts = [MARKER, head, "", body.strip()]
    if earlier:
        shown = earlier[:_MAX_HISTORY]
        rows = [
            f"| `{o.sha[:12]}` | `{o.label or 'failed'}` | {o.when} | {_cell(o.summary)} |" for o in shown
        ]
        more = len(earlier) - len(shown)
        parts += [
            "",
            f"<details><summary>Earlier commits ({len(earlier)})</summary>",
            "",
            "| commit | label | evaluated | summary |",
            "|---|---|---|---|",
            *rows,
            *(["", f"… and {more} older"] if more else []),
            "",
            "</details>",
        ]
    return "\n".join(parts) + "\n"
