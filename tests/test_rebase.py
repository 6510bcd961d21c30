"""Needs-rebase: a PR's slot whose implementation the frontier changed after the PR's base."""

from __future__ import annotations

from pathlib import Path

from evalbot.rebase import implementations, needs_rebase

MANIFEST = """version = 1
include = ["include"]
{slots}"""
SLOT = """
[slots.{name}]
source = "src/{name}.cu"
[[slots.{name}.launch]]
kernel = "{name}_k"
grid = ["n_sm"]
block = [128]
"""


def tree(root: Path, slots: dict[str, str], header: str = "// common\n") -> Path:
    (root / "src").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "common.h").write_text(header)
    (root / "kernels.toml").write_text(MANIFEST.format(slots="".join(SLOT.format(name=n) for n in slots)))
    for name, code in slots.items():
        (root / "src" / f"{name}.cu").write_text(code)
    return root


def test_a_slot_the_frontier_changed_since_the_base_needs_a_rebase(tmp_path):
    base = tree(tmp_path / "base", {})
    frontier = tree(tmp_path / "frontier", {"gemv_q4_k": "// A's gemv\n"})  # A merged a gemv
    b = tree(tmp_path / "b", {"gemv_q4_k": "// B's gemv\n", "rmsnorm": "// B's norm\n"})
    assert needs_rebase(b, base, frontier) == ["gemv_q4_k"]  # not rmsnorm: still the baseline in both
    assert needs_rebase(b, frontier, frontier) == []  # rebased onto the frontier
    c = tree(tmp_path / "c", {"rmsnorm": "// C's norm\n"})
    assert needs_rebase(c, base, frontier) == []  # a slot the merge did not touch


def test_an_implementation_is_its_manifest_entry_source_and_headers(tmp_path):
    one = implementations(tree(tmp_path / "one", {"rmsnorm": "// x\n"}))
    assert one == implementations(tree(tmp_path / "same", {"rmsnorm": "// x\n"}))  # content, not identity
    assert one != implementations(tree(tmp_path / "src", {"rmsnorm": "// y\n"}))
    assert one != implementations(tree(tmp_path / "hdr", {"rmsnorm": "// x\n"}, header="// changed\n"))
    assert implementations(tmp_path / "nothing") == {} == implementations(None)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "kernels.toml").write_text("version = [")
    assert implementations(broken) == {}  # a malformed manifest overrides nothing here (the build REJECTs it)
