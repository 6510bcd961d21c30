"""The interleaved benchmark on a GPU: every pair decodes a fresh input from its own start, the
spot check covers several pairs, the history below the band is untouched, and the repeat audit of
two identical runtimes finds nothing to gain from repetition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.stats import SamplingRule
from harness.trial_inputs import band
from reference_runtime import basket
from reference_runtime.gguf_model import GGUFModel
from tests.runtime_support import basket_dir

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")

from harness.benchmark import interleaved, repeat_audit  # noqa: E402 - needs CuPy (skipped above)
from reference_runtime.runtime.decode import DecodeRuntime  # noqa: E402
from reference_runtime.runtime.device import DeviceModel  # noqa: E402


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory: pytest.TempPathFactory):
    models: Path = basket_dir(tmp_path_factory)
    with GGUFModel.open(basket.model_path(models, "qwen3moe-tiny")) as model:
        weights = DeviceModel(model)
        frontier = DecodeRuntime(weights, n_ctx=4096 + 512)
        candidate = DecodeRuntime(weights, n_ctx=4096 + 512, share_from=frontier)
        yield frontier, candidate


@pytest.mark.parametrize("context", [128, 4096])
def test_no_pair_repeats_an_input_and_the_checks_hold(runtimes, context: int) -> None:
    frontier, candidate = runtimes
    rule = SamplingRule(target_halfwidth=1e-9, min_pairs=200, max_pairs=200, budget_s=20.0, block_pairs=10)
    run = interleaved(frontier, candidate, context, rule, seed=0xC0FFEE)
    print(f"context {context}: {len(run.starts)} pairs, {len(set(run.starts))} distinct starts, "
          f"{run.checked_pairs} checked, speedup {run.comparison.speedup:.4f} "
          f"[{run.comparison.ci_low:.4f}, {run.comparison.ci_high:.4f}], spot KL {run.spot_check.kl_mean:.2e}")
    assert len(run.starts) == len(run.frontier_s) >= 20
    assert min(run.starts) >= context - band(context) and max(run.starts) <= context
    assert len(set(run.starts)) > 1
    assert run.kv_intact
    assert run.checked_pairs >= 2  # the last pair and at least one drawn at random over 200 pairs
    assert run.spot_check.n_positions == run.checked_pairs * run.steps_per_trial
    assert run.spot_check.kl_mean < 1e-9 and run.spot_check.top1_agreement == pytest.approx(1.0)  # identical kernels
    assert abs(np.log(run.comparison.speedup)) < 0.03  # A/A


def test_the_repeat_audit_of_identical_runtimes_is_within_its_margin(runtimes) -> None:
    frontier, candidate = runtimes
    audit = repeat_audit(frontier, candidate, 4096, seed=0xC0FFEE, pairs=16)
    print(f"repeat audit at 4096: frontier {audit.frontier_ratio:.4f}, candidate {audit.candidate_ratio:.4f}, "
          f"excess {audit.excess:+.4f}")
    assert abs(audit.excess) < 0.05
