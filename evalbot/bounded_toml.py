"""TOML parsing with a bound on nesting, for files written by someone else (``kernels.toml``, configs).

The standard parser handles deep nesting badly: it recurses a few frames per level of nested arrays
and inline tables (about 300 levels raise ``RecursionError``), and its bookkeeping for one dotted key
grows with the square of the key's parts (4,000 parts take 76 MB; the 128k that fit in a manifest
exhaust the host's memory). So before parsing, one linear scan refuses a document whose arrays and
inline tables nest deeper than :data:`MAX_DEPTH` or which has a dotted key of more parts than that.
The scan skips strings and comments exactly as TOML delimits them; where it and the parser could
still disagree (text the parser refuses anyway), a ``RecursionError`` is caught and refused the same way.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

# Far above what either file needs (a manifest nests 5 levels deep, its keys have at most 3 parts).
MAX_DEPTH = 32

# One token per match; anything between tokens cannot open or close a level. Multi-line strings
# first (their content may hold up to two quotes in a row, and up to two more may precede the
# closing delimiter), then single-line ones (which the parser ends at a newline, or refuses).
_TOKEN = re.compile(
    r'"""(?:\\.|[^\\])*?"""(?:"{1,2}(?!"))?'
    r"|'''.*?'''(?:'{1,2}(?!'))?"
    r'|"(?:\\.|[^"\\\n])*"'
    r"|'[^'\n]*'"
    r"|#[^\n]*"
    r"|[\[\]{}\n,=.]",
    re.DOTALL,
)


class NestingError(ValueError):
    """The document nests deeper than the bound; the message says where."""


def loads(text: str, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """``tomllib.loads(text)`` after :func:`check_nesting`; raises ``NestingError`` or ``TOMLDecodeError``."""
    check_nesting(text, max_depth)
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise NestingError(f"nested deeper than {max_depth} levels of arrays and inline tables") from None


def check_nesting(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse nesting of arrays / inline tables, or a dotted key, deeper than ``max_depth``."""
    depth = 0
    dots = 0  # the '.'s since the last '=', ',', bracket or newline: a key's parts less one
    for token in _TOKEN.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise NestingError(f"line {_line(text, token.start())}: nested deeper than {max_depth} levels "
                                   "of arrays and inline tables")
            dots = 0
        elif char in "]}":
            depth = max(depth - 1, 0)
            dots = 0
        elif char == ".":
            dots += 1
            if dots >= max_depth:
                raise NestingError(f"line {_line(text, token.start())}: a dotted key of more than {max_depth} "
                                   "parts")
        elif char in "=,\n":
            dots = 0


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1
