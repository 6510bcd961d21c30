"""Reading compiler logs: the first error line (for a REJECT reason) and a log trimmed for a report."""

from __future__ import annotations

import re

from evalbot.quote import plain

# nvcc/EDG "file(12): error: ...", gcc "file:12:3: error: ...", "nvcc fatal   : ...", "ptxas error   : ...",
# "ptxas fatal   : ...", "catastrophic error: ...", and "#error" output.
_ERROR = re.compile(r"(\berror\b\s*(?:#\w+-D)?\s*:|\bfatal\b\s*:|catastrophic error)", re.IGNORECASE)
MAX_REASON = 240


def first_error_line(log: str) -> str | None:
    """The first line of ``log`` that reports an error, shortened to :data:`MAX_REASON` characters.

    Control characters in it (a terminal escape sequence printed by an ``#error``) are shown as escapes:
    the reason reaches terminals, the ledger and its exports, not only renderers that quote.
    """
    for line in log.splitlines():
        if _ERROR.search(line):
            return plain(line.strip(), MAX_REASON)
    return None


def trim(log: str, max_lines: int = 60) -> str:
    """The part of a log a reader needs: from the first error on, at most ``max_lines`` lines."""
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if _ERROR.search(line)), 0)
    kept = lines[start : start + max_lines]
    dropped = len(lines) - len(kept)
    if dropped > 0:
        kept.append(f"[... {dropped} more lines in the full log ...]")
    return "\n".join(kept)
