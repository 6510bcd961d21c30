"""Quoting text a pull request controls, so that it renders inert in GitHub Markdown and plain text.

Slot, kernel and file names from a manifest, compiler output, and the REJECT reasons that quote
either reach the sticky PR comment. Pasted bare, a newline starts any block the author likes (a fake
``### evalbot: XL`` heading), ``[x](http://…)`` is a link, ``@org/team`` notifies people,
``org/repo#1`` cross-references another project's issue, and an unclosed ``<!--`` hides the rest of
the comment.

Names and reasons go in a code span, compiler output in a fenced code block, rather than being
backslash-escaped. CommonMark takes a code span's content literally: no emphasis, links, autolinks,
entity references or HTML (``<!--`` inside one is four characters, not a comment), and GitHub's own
passes over the rendered text (mentions, issue references, emoji, bare-URL links) skip code.
Backslash escapes reach only CommonMark's syntax: a mention or a bare URL survives them. A span ends
only at a backtick run of its opening length, and a fenced block only at a line of at least as many
fence characters as it opened with, so a fence longer than any run in the text cannot be closed from
inside (CommonMark's own rule). Neither a span nor a table row may hold a line break, so ``inline``
shows one as ``\\n``; it also shows control characters, Unicode line and paragraph separators and
format characters (bidi overrides that reorder what a reader sees, zero-width characters that make
two names look alike) as escapes such as ``\\u202e``, instead of passing them on or dropping them
unseen.

The callers' part: a quoted piece goes where Markdown is parsed (never inside an HTML block, where
backticks are literal and the text would be raw HTML), and a :func:`block` starts on a line of its own.
"""

from __future__ import annotations

import re
import unicodedata

# Control, format, separator, surrogate, private-use and unassigned characters.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_BACKTICKS = re.compile(r"`+")
_ELLIPSIS = "…"


def _shown(ch: str) -> str:
    if ch == "\t":
        return " "
    if unicodedata.category(ch) in _HIDDEN:
        return ch.encode("unicode_escape").decode("ascii")
    return ch


def plain(text: str, max_len: int | None = None) -> str:
    """``text`` as one line of plain text: hidden characters shown as escapes, at most ``max_len`` characters.

    For sinks that are not Markdown but must stay one readable line: a commit status description,
    a terminal.
    """
    flat = "".join(_shown(ch) for ch in text)
    if max_len is not None and len(flat) > max_len:
        flat = flat[: max_len - 1] + _ELLIPSIS
    return flat


def inline(text: str, max_len: int = 200) -> str:
    """``text`` as an inert Markdown code span, its content at most ``max_len`` characters."""
    flat = plain(text, max_len)
    if not flat.strip(" "):
        return f"`{flat or ' '}`"  # only spaces: CommonMark keeps them as they are
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(flat)), default=0) + 1)
    # A span's content that starts or ends with a backtick needs a space beside the fence, and one
    # space is stripped from each end of content that both starts and ends with one: pad both sides.
    pad = " " if flat[0] in "` " or flat[-1] in "` " else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def cell(text: str, max_len: int = 200) -> str:
    """:func:`inline` for a GFM table cell: a ``|`` is shown as ``¦``.

    GFM splits a row at each ``|`` before it sees code spans; ``\\|`` escapes one, but only where no
    backslash precedes it (cmark-gfm reads ``\\\\|`` as an escaped backslash and a cell boundary), so
    no spelling keeps every ``|`` of arbitrary text literal inside a cell.
    """
    return inline(text.replace("|", "¦"), max_len)


def block(text: str, max_lines: int = 60, max_bytes: int = 8_192) -> str:
    """``text`` as a fenced code block that nothing inside can close: at most ``max_lines`` lines and
    about ``max_bytes`` bytes of it (UTF-8), then a line saying how much was left out. No trailing newline."""
    lines = text.splitlines()
    kept: list[str] = []
    used = 0
    for line in lines[:max_lines]:
        shown = "".join(_shown(ch) for ch in line).encode("utf-8")
        if len(shown) > max_bytes - used:
            if max_bytes > used:
                kept.append(shown[: max_bytes - used].decode("utf-8", errors="ignore") + _ELLIPSIS)
            break
        kept.append(shown.decode("utf-8"))
        used += len(shown) + 1
    if left := len(lines) - len(kept):
        kept.append(f"[{_ELLIPSIS} {left} more lines not shown]")
    body = "\n".join(kept)
    fence = "`" * max(3, max((len(run) for run in _BACKTICKS.findall(body)), default=0) + 1)
    return f"{fence}\n{body}\n{fence}" if body else f"{fence}\n{fence}"
