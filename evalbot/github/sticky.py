"""The sticky PR comment: the latest verdict, and earlier commits' verdicts in a collapsed section.

The hidden marker is how the publisher finds its own comment again (together with the author), so
a PR carries one evalbot comment however many commits, restarts and publish retries it sees. It is
the body's first line: quoted contributor text further down may spell it, but never begins a body.

``Outcome.markdown`` comes from a renderer that quotes what it shows (:func:`evalbot.verdict.markdown`);
everything else here is quoted as it is placed (:mod:`evalbot.quote`).
"""

from __future__ import annotations

from dataclasses import dataclass

from evalbot.quote import cell, inline

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


def render(current: Outcome, earlier: list[Outcome]) -> str:
    """The comment body for ``current``; ``earlier`` (newest first) go in the history section."""
    if current.label is None:
        head = f"### evalbot: evaluation failed for {inline(current.sha[:12])}"
    else:
        head = f"### evalbot: {inline(current.label, 16)} for {inline(current.sha[:12])}"
    body = current.markdown
    if len(body) > _MAX_VERDICT_CHARS:
        # Cutting Markdown anywhere could leave a fence, a span or a <details> open, and with it the
        # text after the cut (the history) rendered as something else: show none of it instead.
        body = (f"The verdict ({len(body)} characters) is too long for a comment and is not shown; "
                "the full verdict is in the ledger.")
    return "\n".join([MARKER, head, "", body.strip(), *_history(earlier)]) + "\n"


def render_pending(sha: str, lines: list[str], earlier: list[Outcome]) -> str:
    """The comment body of a head still being evaluated: one line per GPU class (its queue
    position, or the worker running it), then the history as in :func:`render`.

    ``lines`` are evalbot's own text (states, positions, worker names): no contributor text."""
    parts = [MARKER, f"### evalbot: evaluating {inline(sha[:12])}", "", *(f"- {line}" for line in lines)]
    return "\n".join([*parts, *_history(earlier)]) + "\n"


def _history(earlier: list[Outcome]) -> list[str]:
    parts: list[str] = []
    if earlier:
        shown = earlier[:_MAX_HISTORY]
        rows = [
            f"| {cell(o.sha[:12])} | {cell(o.label or 'failed', 16)} | {cell(o.when, 40)} | {cell(o.summary)} |"
            for o in shown
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
    return parts
