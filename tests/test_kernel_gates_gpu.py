"""Kernel gates on the GPU: every baseline kernel passes its gates (basket shapes and fuzzed ones),
a correct alternative kernel passes, deliberately wrong kernels fail with the gate and the shape
named, and a faulting or hanging kernel is a failed gate, not a crash.

Run with ``python -m pytest -m gpu -s tests/test_kernel_gates_gpu.py``: ``-s`` shows each gate's
measured worst error against its limit (what the policy's tolerances are set from)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from evalbot.policy import load_policy
from harness import kernel_gates as kg
from harness.measurements import GateResult
from reference_runtime import basket
from reference_runtime.runtime import kernels as rk
from reference_runtime.runtime.compile import compile_cubin
from reference_runtime.runtime.kernels import Const, LaunchSpec, SlotKernel
from tests.runtime_support import basket_dir

pytestmark = pytest.mark.gpu

POLICY = load_policy()
TOL = POLICY.kernel_tolerances
SEED = 0x6A7E_5EED  # any integer: a validator's own stays private
DATA = Path(__file__).parent / "data"
NO_SCRATCH = Const(0)


@pytest.fixture(scope="module")
def arch() -> str:
    from reference_runtime.runtime.decode import device_arch

    return device_arch()


@pytest.fixture(scope="module")
def base(arch: str) -> dict[str, SlotKernel]:
    return rk.baseline_kernels(arch)


@pytest.fixture(scope="module")
def build(arch: str, tmp_path_factory: pytest.TempPathFactory):
    # A private cubin cache: the attention wrappers include kernels/attention.cu, which the shared
    # cache's key (source + headers) does not cover.
    cache = tmp_path_factory.mktemp("cubins")

    def make(source: Path, launches: Iterable[LaunchSpec], scratch: rk.Size = NO_SCRATCH) -> SlotKernel:
        return SlotKernel(compile_cubin(source, arch, cache), tuple(launches), scratch, origin="candidate")

    return make


def rmsnorm_like(build, source: Path, entry: str) -> SlotKernel:
    return build(source, [LaunchSpec(entry, Const((1,)), Const((32,)))])


def report(gates: Iterable[GateResult]) -> None:
    for g in gates:
        print(f"{g.name:32s} {'pass' if g.passed else 'FAIL'} value {g.value:.3g} limit {g.limit:.3g}  [{g.model}] "
              f"{g.detail}")


# -- the baseline passes ----------------------------------------------------------------------------
def test_every_baseline_kernel_passes_on_fuzzed_shapes(base: dict[str, SlotKernel]) -> None:
    gates = kg.run_kernel_gates(base, {}, SEED, TOL, 2 * POLICY.kernel_fuzz_cases, timeout_s=600)
    report(gates)
    assert [g.name for g in gates] == [f"kernel:{s}" for s in sorted(base)]
    assert all(g.passed for g in gates), [g for g in gates if not g.passed]


def test_the_baseline_passes_one_row_dot_products_that_cancel(base: dict[str, SlotKernel]) -> None:
    # A one-row lm_head_q6_k failed the H100 calibration at 2.5e-3 (a logit that cancelled to ~0):
    # every run now has a row that cancels, judged against its rounding floor.
    slots = sorted(s for s in base if s.startswith(("gemv_", "lm_head_")))
    for seed in range(4):
        fixed = {}
        for slot in slots:
            dims = ("n_rows", "n_cols") if slot.startswith("gemv_") else ("n_vocab", "n_embd")
            caps = [{}] if slot.startswith("gemv_") else [{"softcap": 0.0}, {"softcap": 30.0}]
            fixed[slot] = [kg.FixedShape.make("one-row", {dims[0]: 1, dims[1]: cols}, cap)
                           for cols in (512, 4096) for cap in caps]
        gates = kg.run_kernel_gates({s: base[s] for s in slots}, fixed, SEED + seed, TOL, 0, timeout_s=600)
        report(gates)
        assert all(g.passed for g in gates), [g for g in gates if not g.passed]


def test_every_baseline_kernel_passes_on_the_basket_shapes(base: dict[str, SlotKernel],
                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    models = basket_dir(tmp_path_factory)
    fixed = kg.basket_envs([basket.model_path(models, k) for k in sorted(basket.SPECS)])
    used = {s: base[s] for s in fixed}
    gates = kg.run_kernel_gates(used, fixed, SEED, TOL, 0, timeout_s=600)
    report(gates)
    assert {g.model for g in gates} <= set(basket.SPECS)
    assert all(g.passed for g in gates), [g for g in gates if not g.passed]


def test_a_correct_alternative_kernel_passes(build) -> None:
    warp = rmsnorm_like(build, DATA / "runtime_kernels" / "rmsnorm_warp.cu", "rmsnorm_warp")
    (gate,) = kg.run_kernel_gates({"rmsnorm": warp}, {}, SEED, TOL, POLICY.kernel_fuzz_cases, timeout_s=300)
    report([gate])
    assert gate.passed and gate.value > 0  # a different summation order: not bit-identical, within tolerance


# -- wrong kernels fail, named --------------------------------------------------------------------
GEMMA_SWA = kg.FixedShape.make("gemma4-tiny", {"n_head": 4, "n_head_kv": 2, "head_dim": 256, "n_ctx": 4096,
                                               "n_swa": 128}, {"scale": 1.0, "n_swa": 128})
QWEN_ATTN = kg.FixedShape.make("qwen3moe-tiny", {"n_head": 16, "n_head_kv": 2, "head_dim": 128, "n_ctx": 4096},
                               {"scale": 128 ** -0.5})


def test_sliding_window_off_by_one_fails_naming_the_slot_and_position(build) -> None:
    k = build(DATA / "kernel_gates" / "attn_swa_off_by_one.cu",
              [LaunchSpec("attn_swa_off_by_one_partial", rk.attn_partial_grid, Const((128,))),
               LaunchSpec("attn_decode_swa_hd256_combine", rk.attn_combine_grid, Const((1024,)))], rk.attn_scratch)
    slot = "attn_decode_swa_hd256"
    gate = kg.check_slot(slot, k, kg.cases(slot, [GEMMA_SWA], SEED, 4), TOL)
    report([gate])
    assert gate.name == f"kernel:{slot}" and not gate.passed and gate.value > 100 * gate.limit
    assert "pos=" in gate.detail and "relative error" in gate.detail
    # Below the window's length both windows are the whole prefix: those positions pass.
    early = kg.FixedShape.make("gemma4-tiny", dict(GEMMA_SWA.env), dict(GEMMA_SWA.scalars), points=[0, 5, 126])
    assert kg.check_slot(slot, k, kg.cases(slot, [early], SEED, 0), TOL).passed


def test_missing_scale_on_one_kv_head_fails_naming_the_head(build) -> None:
    k = build(DATA / "kernel_gates" / "attn_unscaled_head.cu",
              [LaunchSpec("attn_unscaled_head_partial", rk.attn_partial_grid, Const((128,))),
               LaunchSpec("attn_decode_hd128_combine", rk.attn_combine_grid, Const((1024,)))], rk.attn_scratch)
    gate = kg.check_slot("attn_decode_hd128", k, kg.cases("attn_decode_hd128", [QWEN_ATTN], SEED, 2), TOL)
    report([gate])
    assert not gate.passed and "out head" in gate.detail


def test_unwritten_outputs_fail_as_non_finite(build) -> None:
    k = build(DATA / "kernel_gates" / "glu_short.cu", [LaunchSpec("glu_swiglu_short", rk.glu_grid, Const((256,)))])
    gate = kg.check_slot("glu_swiglu", k, kg.cases("glu_swiglu", [], SEED, 3), TOL)
    report([gate])
    assert not gate.passed and "not finite" in gate.detail and gate.name == "kernel:glu_swiglu"


@pytest.mark.parametrize(("entry", "needle"), [("rmsnorm_overrun", "wrote outside y"),
                                               ("rmsnorm_clobber", "modified the const input x")])
def test_writes_outside_the_outputs_fail(build, entry: str, needle: str) -> None:
    k = rmsnorm_like(build, DATA / "kernel_gates" / "rmsnorm_misbehave.cu", entry)
    fixed = [kg.FixedShape.make("qwen3moe-tiny", {"n_embd": 256}, {"eps": 1e-6})]  # never aliased
    gate = kg.check_slot("rmsnorm", k, kg.cases("rmsnorm", fixed, SEED, 2), TOL)
    report([gate])
    assert not gate.passed and needle in gate.detail


# -- faults and hangs -----------------------------------------------------------------------------
def test_a_faulting_kernel_is_a_failed_gate_and_the_other_slots_still_pass(build,
                                                                          base: dict[str, SlotKernel]) -> None:
    fault = rmsnorm_like(build, DATA / "runtime_kernels" / "rmsnorm_fault.cu", "rmsnorm_fault")
    gates = {g.name: g for g in kg.run_kernel_gates({"rmsnorm": fault, "glu_geglu": base["glu_geglu"]}, {}, SEED,
                                                    TOL, 2, timeout_s=300)}
    report(gates.values())
    norm = gates["kernel:rmsnorm"]
    assert not norm.passed and "illegal memory access" in norm.detail.lower()
    assert gates["kernel:glu_geglu"].passed


def test_a_hanging_kernel_is_a_failed_gate_after_the_timeout(build) -> None:
    warp = rmsnorm_like(build, DATA / "runtime_kernels" / "rmsnorm_warp.cu", "rmsnorm_warp")
    start = time.monotonic()
    assert kg.run_kernel_gates({"rmsnorm": warp}, {}, SEED, TOL, 2, timeout_s=300)[0].passed
    timeout = max(20.0, 3 * (time.monotonic() - start))  # well past a healthy run of the same gate
    hang = rmsnorm_like(build, DATA / "runtime_kernels" / "rmsnorm_hang.cu", "rmsnorm_hang")
    start = time.monotonic()
    (gate,) = kg.run_kernel_gates({"rmsnorm": hang}, {}, SEED, TOL, 2, timeout_s=timeout)
    assert time.monotonic() - start < timeout + 30
    assert not gate.passed and gate.detail == f"hung > {timeout:g} s: the gate worker was killed"
    # the GPU is usable afterwards
    assert kg.run_kernel_gates({"rmsnorm": warp}, {}, SEED, TOL, 2, timeout_s=300)[0].passed
