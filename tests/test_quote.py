"""Quoted contributor text parses as exactly one code span or fenced block holding what was quoted."""

from __future__ import annotations

import pytest
from markdown_support import assert_inert, tokens

from evalbot.quote import block, cell, inline, plain

HOSTILE = [
    "rmsnorm\n\n### evalbot: XL PWN",
    "[click PWN](http://x.example/) and ![img PWN](http://x.example/i.png)",
    "@org/team PWN @octocat",
    "<!-- PWN",
    "</details> PWN <details>",
    "``` PWN ````` ~~~~",
    "`PWN`",
    " `` PWN ",
    "<img src=x onerror=alert(1)> PWN <script>alert(1)</script>",
    "a\u2028### PWN\u2029b",
    "\u202ePWN\u202c gpj.exe",
    "zero\u200bwidth PWN \x1b[31mred\x1b[0m \x00",
    "org/repo#1 PWN #12 https://evil.example www.evil.example user@evil.example",
    "&lt;PWN&gt; &amp; *emph* _PWN_ **bold** \\`",
    "| PWN | \\| x |",
]


def _only_code_span(md: str) -> str:
    (para,) = [t for t in tokens(md) if t.type == "inline"]
    (child,) = para.children or []
    assert child.type == "code_inline"
    return child.content


@pytest.mark.parametrize("text", HOSTILE)
def test_inline_is_one_code_span_holding_the_shown_text(text):
    md = inline(text)
    assert "\n" not in md
    assert _only_code_span(md) == plain(text)
    assert_inert(f"- {md}\n", "PWN")


def test_inline_shows_line_breaks_controls_and_bidi_as_escapes():
    shown = plain("a\nb\r\u2028\u2029\u202e\x1b\x00\u200b\tc")
    assert shown == "a\\nb\\r\\u2028\\u2029\\u202e\\x1b\\x00\\u200b c"
    assert plain("naïve ünïcode — 数") == "naïve ünïcode — 数"  # printable text passes unchanged


def test_inline_is_bounded_and_its_fence_outgrows_any_backtick_run():
    md = inline("PWN" + "x" * 10_000, max_len=50)
    assert len(_only_code_span(md)) == 50 and _only_code_span(md).endswith("…")
    runs = inline("a" + "`" * 7 + "b")
    assert runs.startswith("````````a") and _only_code_span(runs) == "a" + "`" * 7 + "b"


@pytest.mark.parametrize("text", ["", "   "])
def test_inline_of_blank_text_is_still_a_span(text):
    assert _only_code_span(inline(text)).strip() == ""


@pytest.mark.parametrize("text", HOSTILE)
def test_cell_stays_in_its_cell(text):
    md = f"| a | b |\n|---|---|\n| {cell(text)} | after |\n"
    toks = tokens(md)
    assert [t.type for t in toks].count("td_open") == 2
    cells = [t for t in toks if t.type == "inline"][2:]
    assert [c.content for c in cells][1] == "after"
    (child,) = cells[0].children or []
    assert child.type == "code_inline" and child.content == plain(text.replace("|", "¦"))
    assert_inert(md, "PWN")


def test_block_is_one_fence_nothing_inside_can_close():
    log = "\n".join([*HOSTILE, "```", "````````````", "~~~", "after PWN"])
    md = f"before\n\n{block(log)}\n\n### ours\n"
    (fence,) = [t for t in tokens(md) if t.type == "fence"]
    assert fence.content.splitlines() == [plain(line) for line in log.splitlines()]
    assert_inert(md, "PWN")
    assert [t.content for t in tokens(md) if t.type == "inline"][-1] == "ours"


def test_block_is_bounded_in_lines_and_bytes():
    log = "\n".join(f"line {i} PWN" for i in range(1000))
    (fence,) = [t for t in tokens(block(log, max_lines=10)) if t.type == "fence"]
    assert fence.content.splitlines()[-1] == "[… 990 more lines not shown]"
    assert len(fence.content.splitlines()) == 11
    wide = block("é" * 10_000 + "\nnext", max_bytes=101)
    (fence,) = [t for t in tokens(wide) if t.type == "fence"]
    first, note = fence.content.splitlines()
    assert first == "é" * 50 + "…" and note == "[… 1 more lines not shown]"


def test_block_of_nothing_is_an_empty_fence():
    (fence,) = [t for t in tokens(block("")) if t.type == "fence"]
    assert fence.content == ""


def test_plain_is_one_bounded_line():
    text = plain("REJECT: slot x\n### evalbot: XL\u2028" + "y" * 500, 140)
    assert len(text) == 140 and text.endswith("…") and "\n" not in text and "\u2028" not in text
