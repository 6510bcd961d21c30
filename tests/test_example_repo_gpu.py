"""The example repository's gemv_q4_k kernels on a GPU. Each branch is fetched, exported and built by
the contributor build path (local backend, this GPU's arch) and run through the kernel gates'
machinery (harness/kernel_gates.py: run_slot launches, guarded and poisoned buffers, the float64
oracle of reference_runtime/runtime/slot_math.py), as in test_slot_kernels_gpu.py:

- main (the runtime's kernel, copied) and faster agree with the oracle at the baseline's own precision
  on every shape the basket models run plus edge shapes, and pass the policy's fuzzed gate;
- wrong fails on every one of those shapes, each by more than 1000x the policy's gemv limit.

Speed is not asserted here: benchmarks/example_repo_bench.py measures it. Run with ``-s`` to see the
errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalbot.example_repo import SLOT, branch_kernels, write_example_repo
from evalbot.policy import load_policy
from harness import kernel_gates as kg
from tests.build_support import make_config, require_nvcc

pytestmark = pytest.mark.gpu

SEED = 11
BASELINE_PRECISION = {"gemv": 2e-6}  # test_slot_kernels_gpu.py's bar for the runtime's GEMV kernels
# (n_rows, n_cols): every gemv_q4_k shape of the two basket models, then edges: a single row, rows
# that do not fill a block, 3 and 11 Q4_K blocks per row (idle threads / two passes), the widest rows.
SHAPES = [(256, 256), (512, 256), (1024, 256), (2048, 256), (256, 512), (256, 1024), (256, 2048),
          (1, 256), (37, 512), (129, 768), (9, 2816), (3, 8192)]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_nvcc()
    from reference_runtime.runtime.decode import device_arch

    root: Path = tmp_path_factory.mktemp("example-gpu")
    write_example_repo(root / "kernels")
    cfg = make_config(root / "cache", backend="local", timeout_s=300.0)
    return branch_kernels(root / "kernels", ("main", "faster", "wrong"), device_arch(), cfg, root / "trees")


def fixed_cases() -> list[kg.Case]:
    shapes = [kg.FixedShape.make("example", {"n_rows": r, "n_cols": c}) for r, c in SHAPES]
    return kg.cases(SLOT, shapes, SEED, 0)


@pytest.mark.parametrize("branch", ["main", "faster"])
def test_correct_branches_match_the_oracle(kernels: dict, branch: str) -> None:
    gate = kg.check_slot(SLOT, kernels[branch], fixed_cases(), BASELINE_PRECISION)
    print(f"{branch}: worst relative error {gate.value:.3g} (bar {gate.limit:.3g}) {gate.detail}")
    assert gate.passed, gate
    policy = load_policy()
    fuzzed = kg.check_slot(SLOT, kernels[branch], kg.cases(SLOT, [], SEED, max(20, policy.kernel_fuzz_cases)),
                           policy.kernel_tolerances)
    assert fuzzed.passed, fuzzed


def test_wrong_fails_every_shape_by_a_wide_margin(kernels: dict) -> None:
    policy = load_policy()
    limit = kg.gate_limit(SLOT, policy.kernel_tolerances)
    for case in fixed_cases():
        gate = kg.check_slot(SLOT, kernels["wrong"], [case], policy.kernel_tolerances)
        print(f"wrong at {case.env}: relative error {gate.value:.3g} ({gate.value / limit:.3g}x the limit)")
        assert not gate.passed and gate.value > 1000 * limit, (case.env, gate)
