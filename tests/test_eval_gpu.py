"""The whole evaluation on a GPU (local build backend, a short benchmark budget): a tree that overrides
nothing is `none` against the runtime's baselines with every gate passed; a correct alternative
kernel passes its gates; a kernel that faults or is wrong is a REJECT naming what failed."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from evalbot import verdict
from evalbot.config import Config
from reference_runtime import basket
from tests.runtime_support import quick_tiny_policy, real_gemma3, tiny_eval_config

pytestmark = pytest.mark.gpu
pytest.importorskip("cupy")

KERNELS = Path(__file__).parent / "data" / "runtime_kernels"
COMMITS = verdict.Commits("example/kernels", "a" * 40, None, None)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return tiny_eval_config(tmp_path_factory)


@pytest.fixture(scope="module")
def quick_policy():
    return quick_tiny_policy()


def tree(tmp_path: Path, kernel: str | None) -> Path:
    root = tmp_path / (kernel or "empty")
    root.mkdir()
    manifest = "version = 1\n"
    if kernel:
        shutil.copy(KERNELS / f"{kernel}.cu", root / f"{kernel}.cu")
        manifest += (f'[slots.rmsnorm]\nsource = "{kernel}.cu"\n[[slots.rmsnorm.launch]]\n'
                     f'kernel = "{kernel}"\ngrid = [1]\nblock = [32]\n')
    (root / "kernels.toml").write_text(manifest)
    return root


def test_nothing_overridden_is_none_with_every_gate_passed(config: Config, quick_policy, tmp_path: Path):
    from evalbot.evaluator import evaluate_trees

    outcome = evaluate_trees(config, tree(tmp_path, None), None, COMMITS, policy=quick_policy)
    gates = outcome.measurements.gates
    assert gates and all(g.passed for g in gates), [g for g in gates if not g.passed]
    assert outcome.document["label"] == "none", outcome.document["reasons"]
    assert {c.model for c in outcome.measurements.cells} == set(basket.SPECS)
    assert {c.context for c in outcome.measurements.cells} == set(quick_policy.contexts)


def test_long_context_guards_are_measured_checked_and_left_out_of_the_score(config: Config, quick_policy,
                                                                             tmp_path: Path):
    from evalbot.evaluator import evaluate_trees
    from evalbot.policy import label

    policy = replace(quick_policy, guard_contexts=(65536,), guard_budget_s=1.0, guard_halfwidth=0.004)
    outcome = evaluate_trees(config, tree(tmp_path, "rmsnorm_warp"), None, COMMITS, policy=policy)
    m = outcome.measurements
    assert all(g.passed for g in m.gates), [g for g in m.gates if not g.passed]
    guards = [c for c in m.cells if c.guard]
    assert {(c.model, c.context) for c in guards} == {(k, 65536) for k in basket.SPECS}
    # The guard cells had their own spot check and KV-integrity gate, at 64k positions.
    names = {g.name for g in m.gates if g.model == "gemma4-tiny"}
    assert names >= {"benchmark_spot_check@65536", "benchmark_kv_integrity@65536"}
    scored = replace(m, cells=tuple(c for c in m.cells if not c.guard))
    assert label(m, policy).score == pytest.approx(label(scored, policy).score, rel=1e-12)
    assert "65536 (guard)" in verdict.markdown(outcome.document)


def test_a_correct_alternative_kernel_passes_the_gates(config: Config, quick_policy, tmp_path: Path):
    from evalbot.evaluator import evaluate_trees

    outcome = evaluate_trees(config, tree(tmp_path, "rmsnorm_warp"), None, COMMITS, policy=quick_policy)
    failed = [g for g in outcome.measurements.gates if not g.passed]
    assert not failed, failed
    assert any(g.name.startswith("kernel:") for g in outcome.measurements.gates)


def test_a_faulting_kernel_is_a_reject_not_a_crash(config: Config, quick_policy, tmp_path: Path):
    from evalbot.evaluator import evaluate_trees

    outcome = evaluate_trees(config, tree(tmp_path, "rmsnorm_fault"), None, COMMITS, policy=quick_policy)
    assert outcome.document["label"] == "REJECT"
    assert any(not g.passed for g in outcome.measurements.gates)
    assert "rmsnorm" in " ".join(outcome.document["reasons"]) or "runtime" in " ".join(outcome.document["reasons"])


def test_the_real_gemma3_is_gated_end_to_end_but_never_timed(config: Config, quick_policy, tmp_path: Path,
                                                              tmp_path_factory: pytest.TempPathFactory):
    from evalbot.evaluator import evaluate_trees

    real = real_gemma3(tmp_path_factory)
    with_real = replace(config, basket=replace(config.basket, correctness=[str(real)]))
    outcome = evaluate_trees(with_real, tree(tmp_path, "rmsnorm_warp"), None, COMMITS, policy=quick_policy)
    m, doc = outcome.measurements, outcome.document
    assert all(g.passed for g in m.gates), [g for g in m.gates if not g.passed]
    real_gates = {g.name for g in m.gates if g.model == basket.REAL_MODEL}
    assert real_gates == {"top1", "kl_mean", "kl_p99", "kl_max", "ppl_ratio"}
    assert {c.model for c in m.cells} == set(basket.SPECS)  # never benchmarked
    roles = {model["key"]: model["role"] for model in doc["models"]}
    assert roles == {basket.REAL_MODEL: "correctness", **{k: "benchmark" for k in basket.SPECS}}
    assert basket.REAL_MODEL not in doc["run"]["basket"]
    assert f"gated only: `{basket.REAL_MODEL}`" in verdict.markdown(doc)
    # The real weights reach the reference's limits by orders of magnitude: baseline-grade numerics.
    divergence = doc["details"]["models"][basket.REAL_MODEL]["divergence"]
    assert divergence["top1_agreement"] >= 0.99 and divergence["kl_mean"] < 1e-4
