"""Verdict documents validate against the versioned schema and render the same facts three ways."""

import io
import json
from datetime import UTC, datetime

import jsonschema
from rich.console import Console

from evalbot import verdict
from evalbot.policy import label, load_policy
from harness.measurements import GateResult, Measurements
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
    assert f"**{doc['label']}**" in md and doc["reasons"][0] in md
    assert "gemma4-tiny | 16384" in md and POLICY.sha256[:12] in md and "aaaaaaaaaaaa" in md
    out = io.StringIO()
    verdict.print_report(doc, Console(file=out, width=160))
    text = out.getvalue()
    assert doc["label"] in text and "16384" in text and "gemma4-tiny" in text


def test_rejected_build_renders_without_tables():
    doc = make(Measurements(False, "slot rmsnorm: error: expected ';'"))
    md = verdict.markdown(doc)
    assert "**REJECT**" in md and "slot rmsnorm" in md and "| model |" not in md
