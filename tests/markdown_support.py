"""Reading rendered Markdown the way a CommonMark parser does, to check what contributor text became.

GitHub runs mentions, issue references and bare-URL links over the text it rendered, skipping code:
so "inert" means a contributor's text reaches the token stream only as the content of a code span or
a fenced block, never as text, a heading, a link, an image or HTML.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from markdown_it import MarkdownIt
from markdown_it.token import Token

# GitHub's dialect as far as these checks need it: CommonMark with raw HTML, plus GFM tables.
_PARSER = MarkdownIt("commonmark").enable("table")
CODE = frozenset({"code_inline", "fence", "code_block"})


def tokens(text: str) -> list[Token]:
    """Every token, block and inline, in document order."""

    def walk(items: list[Token]) -> Iterator[Token]:
        for tok in items:
            yield tok
            if tok.children:
                yield from walk(tok.children)

    return list(walk(_PARSER.parse(text)))


def headings(text: str) -> list[str]:
    toks = tokens(text)
    return [toks[i + 1].content for i, tok in enumerate(toks) if tok.type == "heading_open"]


def html(text: str) -> list[str]:
    return [tok.content.strip() for tok in tokens(text) if tok.type in ("html_block", "html_inline")]


def assert_inert(text: str, needle: str, allowed_html: set[str] | None = None) -> list[Token]:
    """``needle`` (marking every hostile string) occurs only inside code; no links or images at all,
    only the ``allowed_html`` patterns (matched whole) as HTML, and no control, format or separator
    character anywhere but a newline. Returns the code tokens holding ``needle``."""
    hidden = {ch for ch in text if ch != "\n" and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")}
    assert not hidden, f"hidden characters {sorted(hidden)!r}"
    toks = tokens(text)
    where = [tok for tok in toks if needle in tok.content and tok.type not in ("inline",)]
    outside = [(tok.type, tok.content[:80]) for tok in where if tok.type not in CODE]
    assert not outside, f"contributor text outside code: {outside}"
    for tok in toks:
        assert tok.type not in ("link_open", "image"), f"{tok.type} {tok.attrs}"
        assert needle not in str(tok.attrs), tok
    allowed = allowed_html or set()
    for fragment in html(text):
        assert any(re.fullmatch(pattern, fragment, re.DOTALL) for pattern in allowed), f"HTML {fragment!r}"
    return where
