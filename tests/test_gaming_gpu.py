"""Anti-gaming on the GPU, with kernels written to cheat (tests/data/gaming_kernels/): each is a
REJECT and the gate it failed is named.

* a cross-trial cache (attention that copies a stored answer when its input repeats): the kernel
  gate's repeated launches (a stale answer), else audit:repeat;
* a kernel only fast on repeated input (rmsnorm that spins on inputs it has not seen): audit:repeat;
* a softmax without the max shift: the kernel gate's large-score edge case;
* a missing barrier: compute-sanitizer's racecheck, quoting its report.

And the sanitizer passes the baseline kernels and a plain correct one, with its cost printed.
Run with ``python -m pytest -m gpu -s tests/test_gaming_gpu.py``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from evalbot import safe_expr, verdict
from evalbot.build.slot_kernels import ExprDims
from evalbot.config import Config
from evalbot.policy import load_policy
from harness import kernel_gates as kg
from harness.kernel_gates.sanitize import find_sanitizer, sanitize
from reference_runtime import basket
from reference_runtime.runtime import kernels as rk
from reference_runtime.runtime.compile import compile_cubin
from reference_runtime.runtime.kernels import Const, LaunchSpec, SlotKernel
from tests.runtime_support import basket_dir, quick_tiny_policy, tiny_eval_config

pytestmark = pytest.mark.gpu
pytest.importorskip("cupy")

GAMING = Path(__file__).parent / "data" / "gaming_kernels"
COMMITS = verdict.Commits("example/kernels", "b" * 40, None, None)
SEED = 0x5A41_7E57
AUDIT_SEED = 0x5A41_7E5A
ATTN = "attn_decode_hd128"  # qwen3moe-tiny's attention: 16 query heads over 2 KV heads
SLOT_OF = {"attn": ATTN, "rmsnorm": "rmsnorm"}
GEOMETRY = {"attn": ('["n_head"]', "[128]"), "rmsnorm": ("[1]", "[64]")}
SOURCE = {"attn": "attn_simple.cu", "rmsnorm": "rmsnorm_gaming.cu"}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return tiny_eval_config(tmp_path_factory)


@pytest.fixture(scope="module")
def quick_policy():
    return quick_tiny_policy()


def tree(tmp_path: Path, kind: str, entry: str) -> Path:
    root = tmp_path / entry
    root.mkdir()
    (root / SOURCE[kind]).write_bytes((GAMING / SOURCE[kind]).read_bytes())
    grid, block = GEOMETRY[kind]
    (root / "kernels.toml").write_text(
        f'version = 1\n[slots.{SLOT_OF[kind]}]\nsource = "{SOURCE[kind]}"\n'
        f'[[slots.{SLOT_OF[kind]}.launch]]\nkernel = "{entry}"\ngrid = {grid}\nblock = {block}\n')
    return root


def failed_gates(outcome) -> dict[str, str]:
    return {g.name: g.detail for g in outcome.measurements.gates if not g.passed}


@pytest.mark.parametrize(("kind", "entry"), [("attn", "attn_cached"), ("rmsnorm", "rmsnorm_repeat_fast")])
def test_a_kernel_that_gains_from_repeated_inputs_fails_the_repeat_audit(config: Config, quick_policy,
                                                                         tmp_path: Path, kind: str, entry: str,
                                                                         monkeypatch: pytest.MonkeyPatch):
    from evalbot.evaluator import evaluate_trees

    # The private seed picks the audited context; this one picks the longest (16384), where the
    # cache skips the most work. At 128 positions its gain (a few us a step) is inside the margin:
    # there only the fresh inputs keep it from being paid (its cells show no speedup).
    assert AUDIT_SEED % len(quick_policy.contexts) == quick_policy.contexts.index(max(quick_policy.contexts))
    monkeypatch.setenv(config.basket.holdout_seed_env, str(AUDIT_SEED))
    outcome = evaluate_trees(config, tree(tmp_path, kind, entry), None, COMMITS, policy=quick_policy)
    failed = failed_gates(outcome)
    speedups = {f"{c.model}@{c.context}": round(c.comparison.speedup, 4) for c in outcome.measurements.cells}
    print(f"\n{entry}: {outcome.document['label']} {outcome.document['reasons']}; failed {failed}; {speedups}")
    assert outcome.document["label"] == "REJECT"
    audit = [name for name in failed if name.startswith("audit:repeat")]
    if kind == "rmsnorm":  # right every time: only the audit can see it
        assert not any(name.startswith(("kernel:", "sanitizer:")) for name in failed), failed
        assert audit, failed
    # A cache has to guess from part of its input whether the answer is still right. The gates'
    # repeated launches on inputs that share that part catch a stale answer ("outputs differ
    # between its 3 launches", seen on the H200 with this seed); a cache that guesses well enough
    # to pass them meets the audit.
    stale = [n for n, d in failed.items() if n.startswith("kernel:") and "outputs differ between its" in d]
    assert audit or stale, failed
    if audit:
        assert "one input repeated runs" in failed[audit[0]], failed[audit[0]]


def test_a_softmax_without_the_max_shift_fails_its_kernel_gate(config: Config, quick_policy, tmp_path: Path):
    from evalbot.evaluator import evaluate_trees

    outcome = evaluate_trees(config, tree(tmp_path, "attn", "attn_unshifted"), None, COMMITS, policy=quick_policy)
    failed = failed_gates(outcome)
    print(f"\nattn_unshifted: failed {failed}")
    assert outcome.document["label"] == "REJECT"
    assert f"kernel:{ATTN}" in failed, failed


def test_a_missing_barrier_is_a_reject(config: Config, quick_policy, tmp_path: Path):
    from evalbot.evaluator import evaluate_trees

    outcome = evaluate_trees(config, tree(tmp_path, "rmsnorm", "rmsnorm_race"), None, COMMITS, policy=quick_policy)
    failed = failed_gates(outcome)
    print(f"\nrmsnorm_race: failed {failed}")
    assert outcome.document["label"] == "REJECT"
    # Racecheck sees it whenever the plain gate does not already (a race that went wrong on the day).
    assert "sanitizer:racecheck:rmsnorm" in failed or "kernel:rmsnorm" in failed, failed


# -- the sanitizer on its own --------------------------------------------------------------------
@pytest.fixture(scope="module")
def arch() -> str:
    from reference_runtime.runtime.decode import device_arch

    return device_arch()


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    models = basket_dir(tmp_path_factory)
    return kg.basket_envs([basket.model_path(models, key) for key in basket.SPECS], {ATTN, "rmsnorm"})


def gaming_kernel(arch: str, tmp_path: Path, kind: str, entry: str) -> SlotKernel:
    # Geometry as a manifest gives it: the sanitizer's child process unpickles it.
    grid = ExprDims((safe_expr.parse("n_head", ["n_head"]),)) if kind == "attn" else Const((1,))
    block = Const((128,)) if kind == "attn" else Const((64,))
    return SlotKernel(compile_cubin(GAMING / SOURCE[kind], arch, tmp_path), (LaunchSpec(entry, grid, block),),
                      Const(0), origin="candidate")


def test_racecheck_names_the_missing_barrier(arch: str, fixed: dict, tmp_path: Path) -> None:
    if find_sanitizer() is None:
        pytest.fail("compute-sanitizer is not installed on this GPU box")
    gates = sanitize({"rmsnorm": gaming_kernel(arch, tmp_path, "rmsnorm", "rmsnorm_race")}, fixed, SEED,
                     ("racecheck", "memcheck"), 1, timeout_s=600.0)
    by_name = {g.name: g for g in gates}
    print("\n" + "\n".join(f"{g.name}: {g.passed} {g.detail}" for g in gates))
    race = by_name["sanitizer:racecheck:rmsnorm"]
    assert not race.passed and race.value >= 1
    assert "race" in race.detail.lower() or "hazard" in race.detail.lower(), race.detail
    assert by_name["sanitizer:memcheck:rmsnorm"].passed  # no access leaves a buffer


def test_the_baseline_and_a_plain_correct_kernel_are_clean(arch: str, fixed: dict, tmp_path: Path) -> None:
    if find_sanitizer() is None:
        pytest.fail("compute-sanitizer is not installed on this GPU box")
    kernels = {ATTN: gaming_kernel(arch, tmp_path, "attn", "attn_simple"),
               "rmsnorm": rk.baseline_kernels(arch)["rmsnorm"]}
    started = time.monotonic()
    gates = sanitize(kernels, fixed, SEED, ("memcheck", "racecheck", "synccheck"), 2, timeout_s=900.0)
    print(f"\nsanitizer, 2 slots x 3 tools: {time.monotonic() - started:.1f} s")
    for g in gates:
        print(f"  {g.name}: {g.detail}")
    assert len(gates) == 6 and all(g.passed for g in gates), [g for g in gates if not g.passed]
    # The plain kernel the gaming ones start from is right: what fails them is their gaming.
    policy = load_policy(basket_set="tiny")
    (plain,) = kg.run_kernel_gates({ATTN: kernels[ATTN]}, fixed, SEED, policy.kernel_tolerances,
                                   policy.kernel_fuzz_cases, repeats=policy.kernel_repeats)
    print(f"  {plain.name}: {plain.detail}")
    assert plain.passed, plain.detail
