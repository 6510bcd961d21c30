"""What a copier does to a kernel before submitting it as their own (tests and benchmarks/copy_similarity.py)."""

from __future__ import annotations

import re


def disguise(code: str) -> str:
    """What a copier does: rename every identifier the author declared, drop and rewrite the
    comments, reflow the whitespace."""
    declared = set(re.findall(r"\b(?:int|float|float4|uint2|uint4|uint32_t|auto|void|__half2)\s*[*&]?\s*"
                              r"([A-Za-z_]\w*)", code))
    declared |= set(re.findall(r"constexpr int ([A-Za-z_]\w*)", code))
    out = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    out = re.sub(r"//[^\n]*", "// mine", out)
    for i, name in enumerate(sorted(declared, key=len, reverse=True)):
        out = re.sub(rf"\b{re.escape(name)}\b", f"v{i}_renamed", out)
    out = re.sub(r";\s*", ";\n    ", out)  # one statement per line, re-indented
    return re.sub(r"\{\s*", "{\n\t", out)
