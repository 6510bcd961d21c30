"""Verdict documents validate against the versioned schema and render the same facts three ways."""

import dataclasses
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
from markdown_support import assert_inert, headings, tokens
from rich.console import Console

from evalbot import quote, verdict
from evalbot.build import diagnostics
from evalbot.build.builder import build_tree
from evalbot.build.verdict import BuildReport, SlotBuild
from evalbot.github.sticky import MARKER, Outcome, render
from evalbot.policy import label, load_policy
from harness.measurements import GateResult, Measurements
from tests.build_support import KERNELS, make_config, require_nvcc, tree_with
from tests.test_policy import uniform

POLICY = load_policy()
RUN = verdict.RunIdentity("NVIDIA H100 80GB HBM3", "580.159.04", "13.0", datetime(2026, 11, 23, 8, tzinfo=UTC),
                          datetime(2026, 11, 23, 8, 2, tzinfo=UTC))
COMMITS = verdict.Commits("sn74/kernels", "a" * 40, "b" * 40, 7)
MODELS = (verdict.ModelIdentity("qwen3moe-tiny", "c" * 64, "d" * 64, 1),)


def make(measurements: Measurements) -> dict:
    return verdict.document(label(measurements, POLICY), measurements, POLICY, RUN, COMMITS, MODELS)


def test_documents_validate_against_the_schema():
    for m in (uniform(0.2), uniform(0.0), Measurements(False, "slot x: error"),
              Measurements(True, gates=(GateResult("top1", "gemma4-tiny", False, 0.9, 0.995),))):
        doc = json.loads(verdict.to_json(make(m)))
        jsonschema.validate(doc, verdict.schema())


def test_schema_rejects_a_wrong_label_and_unknown_fields():
    doc = make(uniform(0.2))
    bad_commit = {**doc["commits"], "candidate": "xyz"}
    for bad in ({**doc, "label": "XXL"}, {**doc, "extra": 1}, {**doc, "commits": bad_commit}):
        try:
            jsonschema.validate(bad, verdict.schema())
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"schema accepted {bad!r}")


def test_markdown_and_terminal_carry_label_reasons_and_identity():
    doc = make(uniform(0.2))
    md = verdict.markdown(doc)
    assert f"**`{doc['label']}`**" in md and doc["reasons"][0] in md
    assert "`gemma4-tiny` | 16384" in md and POLICY.sha256[:12] in md and "aaaaaaaaaaaa" in md
    # The basket and the policy file are named: a verdict compares only within one basket.
    assert "basket `qwen3moe-tiny`" in md and f"policy `{Path(POLICY.source).stem}`" in md
    out = io.StringIO()
    verdict.print_report(doc, Console(file=out, width=160))
    text = out.getvalue()
    assert doc["label"] in text and "16384" in text and "gemma4-tiny" in text


def test_rejected_build_renders_without_tables():
    doc = make(Measurements(False, "slot rmsnorm: error: expected ';'"))
    md = verdict.markdown(doc)
    assert "**`REJECT`**" in md and "slot rmsnorm" in md and "| model |" not in md


# -- contributor text renders inert ------------------------------------------------------------------
# Every hostile string carries PWN, so a test can tell where contributor text ended up.
SLOT = "rmsnorm\n\n### evalbot: XL PWN\n[prize PWN](http://x.example) @org/team <!--"
LOG = "\n".join([
    "src/rmsnorm.cu(1): error: #error directive: <img src=x onerror=alert(1)> PWN @octocat",
    "```", "</details> PWN", "<!-- PWN", "### evalbot: XL PWN", "\u202ePWN\u2028www.evil.example",
    "~~~~~~", "````````` PWN",
])
VERDICT_HTML = {r"<details><summary>(gates|compiler output)</summary>", "</details>", "</?sub>"}


def hostile_build_doc(slot: str = SLOT, log: str = LOG) -> dict:
    """A build REJECT the way evaluate_trees records one: reasons from the report, the report in details."""
    reason = f"slot {slot}: {diagnostics.first_error_line(log)}"
    built = SlotBuild(slot, False, False, 0.1, None, ("rmsnorm_f32",), reason, log)
    report = BuildReport(Path("/cache/t"), "sm_90", "docker", True, "nvcc 13.0", (built,), (reason,), 0.2, "abc")
    m = Measurements(False, build_reason="; ".join(report.reasons))
    return verdict.document(label(m, POLICY), m, POLICY, RUN, COMMITS, MODELS, {"build": report.to_dict()})


def test_hostile_build_reject_renders_inert():
    doc = hostile_build_doc()
    md = verdict.markdown(doc)
    assert headings(md) == ["evalbot: **`REJECT`**"]
    code = assert_inert(md, "PWN", VERDICT_HTML)
    (fence,) = [t for t in code if t.type == "fence"]
    assert fence.content.splitlines() == [quote.plain(line) for line in LOG.splitlines()]
    assert sum(t.type == "list_item_open" for t in tokens(md)) == 1  # no list item of the contributor's
    (reason,) = doc["reasons"]
    assert quote.plain(reason) in [t.content for t in code]  # shown whole, as one span
    assert reason.startswith("build failed: slot rmsnorm\n\n### evalbot: XL PWN\n[prize PWN](http://x.example)")


def test_hostile_gates_and_cells_render_inert():
    name = "kernel:x | PWN\n### evalbot: XL <!--"
    gates = (GateResult(name, "gemma4-tiny\u202ePWN", False, 0.9, 0.995, detail="@org/team <img src=x> PWN"),)
    m = Measurements(True, gates=gates, cells=tuple(
        dataclasses.replace(c, model="qwen3moe | PWN @x") for c in uniform(0.2).cells))
    md = verdict.markdown(verdict.document(label(m, POLICY), m, POLICY, RUN, COMMITS, MODELS))
    assert headings(md) == ["evalbot: **`REJECT`**"]
    assert_inert(md, "PWN", VERDICT_HTML)
    toks = tokens(md)
    assert sum(t.type == "tr_open" for t in toks) == 1 + len(m.cells) + 1 + len(gates)  # + 2 header rows
    assert sum(t.type == "td_open" for t in toks) == 7 * len(m.cells) + 5 * len(gates)  # no cell split


def test_many_reasons_and_long_logs_stay_bounded():
    doc = hostile_build_doc(log="x.cu(1): error: PWN " + "y" * 100_000 + "\n" * 5_000)
    doc["reasons"] = [f"reason {i} PWN " + "z" * 5_000 for i in range(500)]
    md = verdict.markdown(doc)
    assert len(md) < 30_000 and "480 more reasons" in md
    assert_inert(md, "PWN", VERDICT_HTML)


def test_real_nvcc_error_directive_renders_inert(tmp_path):
    require_nvcc()
    cfg = make_config(tmp_path / "cache", backend="local", timeout_s=60.0)
    source = ("#error <img src=x onerror=alert(1)> PWN @org/team [x](http://x.example) <!-- ### evalbot: XL\n"
              'extern "C" __global__ void rmsnorm_f32(float* x) { x[0] = 1.0f; }\n')
    report = build_tree(tree_with(tmp_path, rmsnorm_source=source), cfg, "sm_90", name="abc")
    assert not report.ok and "PWN" in report.reasons[0]
    m = Measurements(False, build_reason="; ".join(report.reasons))
    md = verdict.markdown(verdict.document(label(m, POLICY), m, POLICY, RUN, COMMITS, MODELS,
                                           {"build": report.to_dict()}))
    code = assert_inert(md, "PWN", VERDICT_HTML)
    assert {t.type for t in code} == {"code_inline", "fence"}  # the reason, and the log in its fence


def test_manifest_slot_name_with_newlines_renders_inert(tmp_path):
    # The manifest accepts only the ABI's slot names, but its REJECT reason quotes the name it refused.
    manifest = (KERNELS / "kernels.toml").read_text() + (
        '\n[slots."rmsnorm\\n\\n### evalbot: XL PWN\\n@org/team [x](http://x.example) <!--"]\n'
        'source = "src/rmsnorm.cu"\n')
    report = build_tree(tree_with(tmp_path, manifest=manifest), make_config(tmp_path / "cache", backend="local"),
                        "sm_90", name="abc")
    (reason,) = report.reasons
    assert reason.startswith("abc:kernels.toml: slot rmsnorm") and "PWN" in reason and "not a slot" in reason
    m = Measurements(False, build_reason="; ".join(report.reasons))
    md = verdict.markdown(verdict.document(label(m, POLICY), m, POLICY, RUN, COMMITS, MODELS,
                                           {"build": report.to_dict()}))
    assert headings(md) == ["evalbot: **`REJECT`**"]
    assert_inert(md, "PWN", VERDICT_HTML)


def test_sticky_comment_of_a_hostile_verdict_hides_nothing():
    md = verdict.markdown(hostile_build_doc())
    earlier = [Outcome("e" * 40, None, "evaluation could not be completed: | PWN <!-- @org/team\n### x", "x",
                       "2026-01-01 00:00 UTC")]
    body = render(Outcome("f" * 40, "REJECT", SLOT, md, "2026-01-02 00:00 UTC"), earlier)
    assert body.startswith(MARKER + "\n")
    assert headings(body) == ["evalbot: `REJECT` for `ffffffffffff`", "evalbot: **`REJECT`**"]
    assert_inert(body, "PWN", {re.escape(MARKER), *VERDICT_HTML, r"<details><summary>Earlier commits \(1\)</summary>"})
    # The history table is still there after the verdict: nothing above it swallowed it.
    assert [t.content for t in tokens(body) if t.type == "inline"][-4:-1] == ["`eeeeeeeeeeee`", "`failed`",
                                                                              "`2026-01-01 00:00 UTC`"]


def test_terminal_report_passes_no_control_characters_or_markup():
    m = Measurements(False, "slot rmsnorm: x.cu(1): error: \x1b[2J\x1b]8;;http://x.example\x07PWN [red]red[/red]")
    out = io.StringIO()
    verdict.print_report(make(m), Console(file=out, width=400))
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J\\x1b]8;;http://x.example\\x07PWN [red]red[/red]" in text


def test_a_pr_that_needs_a_rebase_says_which_slots_the_frontier_changed():
    doc = make(uniform(0.2))
    doc["details"] = {"needs_rebase": ["gemv_q4_k", "x`y\n### evalbot: XL"]}
    md = verdict.markdown(doc)
    assert "- needs rebase: the frontier changed `gemv_q4_k`" in md
    assert headings(md) == headings(verdict.markdown(make(uniform(0.2))))  # the hostile name adds no heading
    assert "needs rebase" not in verdict.markdown(make(uniform(0.2)))


def test_a_correctness_only_member_is_named_but_not_part_of_the_basket():
    real = verdict.ModelIdentity("gemma3-270m", "e" * 64, "f" * 64, 1, "correctness")
    m = uniform(0.2)
    doc = verdict.document(label(m, POLICY), m, POLICY, RUN, COMMITS, (*MODELS, real))
    jsonschema.validate(json.loads(verdict.to_json(doc)), verdict.schema())
    assert doc["run"]["basket"] == "qwen3moe-tiny"  # the frontier's key: what was timed
    assert [x["role"] for x in doc["models"]] == ["benchmark", "correctness"]
    assert "basket `qwen3moe-tiny` (+ gated only: `gemma3-270m`)" in verdict.markdown(doc)
    wrong = {**doc, "models": [{**doc["models"][1], "role": "decorative"}]}
    try:
        jsonschema.validate(wrong, verdict.schema())
    except jsonschema.ValidationError:
        return
    raise AssertionError("schema accepted an unknown role")
