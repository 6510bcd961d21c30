"""The whole evaluation on a GPU (local build backend, a short benchmark budget): a tree that overrides
nothing is `none` against the runtime's baselines with every gate passed; a correct alternative
kernel passes its gates; a kernel that faults or is wrong is a REJECT naming what failed."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from evalbot import verdict
from evalbot.config import BasketConfig, Config, PathsConfig
from evalbot.policy import parse_policy
from reference_runtime import basket
from tests.runtime_support import basket_dir

pytestmark = pytest.mark.gpu
pytest.importorskip("cupy")

KERNELS = Path(__file__).parent / "data" / "runtime_kernels"
COMMITS = verdict.Commits("example/kernels", "a" * 40, None, None)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    models = basket_dir(tmp_path_factory)
    root = tmp_path_factory.mktemp("evalbot")
    (root / "data" / "models").mkdir(parents=True)
    for key in basket.SPECS:
        os.symlink(basket.model_path(models, key), basket.model_path(root / "data" / "models", key))
    cfg = Config(paths=PathsConfig(data_dir=str(root / "data"), cache_dir=str(root / "cache")),
                 basket=BasketConfig(set="tiny"))
    return replace(cfg, build=replace(cfg.build, backend="local"))


@pytest.fixture(scope="module")
def quick_policy():
    """The shipped policy with a short benchmark budget (the labels and gates are unchanged)."""
    data = Path(__file__).parents[1].joinpath("evalbot", "policies", "v1.toml").read_text()
    assert "budget_s = 20.0" in data
    return parse_policy(data.replace("budget_s = 20.0", "budget_s = 1.0").encode(), "quick.toml")


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
