"""The label function on measurements made by the statistics code from simulated interleaved trials."""

import json
from importlib import resources

import pytest

from evalbot.policy import ALL_LABELS, LABELS, PolicyError, label, load_policy, parse_policy
from harness.measurements import GateResult, Measurements, SpeedCell
from harness.stats import compare_paired
from tests.test_stats import simulate

POLICY = load_policy()
MODELS = ("qwen3moe-tiny", "gemma4-tiny")
CONTEXTS = (128, 4096, 16384)


def cells(effects: dict[tuple[str, int], float], efficiency: float = 0.5, seed: int = 0) -> tuple[SpeedCell, ...]:
    out = []
    for i, (model, ctx) in enumerate(effects):
        frontier, candidate = simulate(300, effects[(model, ctx)], noise=0.005, seed=seed + i)
        t_frontier = float(sorted(frontier)[len(frontier) // 2])
        out.append(SpeedCell(model, ctx, compare_paired(frontier, candidate), t_frontier,
                             float(sorted(candidate)[len(candidate) // 2]), efficiency * t_frontier))
    return tuple(out)


def uniform(effect: float, **kw) -> Measurements:
    return Measurements(True, cells=cells({(m, c): effect for m in MODELS for c in CONTEXTS}, **kw))


def test_default_policy_loads_and_is_hashed():
    assert POLICY.version == 1 and len(POLICY.sha256) == 64
    assert [POLICY.thresholds[x] for x in reversed(LABELS)] == sorted(POLICY.thresholds.values())


def test_build_failure_rejects_with_its_reason():
    d = label(Measurements(False, "slot rmsnorm: error: expected ';'"), POLICY)
    assert d.label == "REJECT" and "slot rmsnorm" in d.reasons[0]


def test_failed_gate_rejects_and_is_named():
    gates = (GateResult("kl_mean", "gemma4-tiny", False, 3e-3, 1e-3, "sliding window off by one?"),
             GateResult("top1", "gemma4-tiny", True, 0.999, 0.995))
    d = label(Measurements(True, gates=gates, cells=uniform(0.2).cells), POLICY)
    assert d.label == "REJECT"
    assert d.reasons == ("gate kl_mean failed on gemma4-tiny: 0.003 (limit 0.001) — sliding window off by one?",)


@pytest.mark.parametrize("seed", range(10))
def test_no_op_never_earns_a_label(seed):
    assert label(uniform(0.0, seed=100 * seed), POLICY).label == "none"


def test_significant_regression_beyond_guard_rejects():
    effects = {(m, c): 0.0 for m in MODELS for c in CONTEXTS}
    effects[("gemma4-tiny", 16384)] = -0.05
    d = label(Measurements(True, cells=cells(effects)), POLICY)
    assert d.label == "REJECT" and "gemma4-tiny at context 16384" in d.reasons[0]


def test_regression_within_guard_is_none_not_reject():
    assert label(uniform(-0.004), POLICY).label == "none"


def test_win_on_one_model_only_is_none():
    effects = {(m, c): (0.2 if m == "qwen3moe-tiny" else 0.0) for m in MODELS for c in CONTEXTS}
    d = label(Measurements(True, cells=cells(effects)), POLICY)
    assert d.label == "none" and "gemma4-tiny" in d.reasons[0]


def test_labels_grow_with_the_effect():
    order = {name: i for i, name in enumerate(reversed(ALL_LABELS[:6]))}  # none < XS < ... < XL
    got = [label(uniform(e), POLICY).label for e in (0.0, 0.03, 0.05, 0.09, 0.15, 0.30)]
    assert got[0] == "none" and got[-1] == "XL"
    assert [order[g] for g in got] == sorted(order[g] for g in got)


def test_same_speedup_closer_to_the_roofline_scores_higher():
    far = label(uniform(0.06, efficiency=0.2), POLICY)
    near = label(uniform(0.06, efficiency=0.8), POLICY)
    assert near.score > far.score


def test_decision_is_reproducible_from_recorded_json():
    m = uniform(0.07)
    again = Measurements.from_dict(json.loads(json.dumps(m.to_dict())))
    assert label(again, POLICY) == label(m, POLICY)


@pytest.mark.parametrize(("text", "needle"), [
    ("version = 2\n", "policy version 2"),
    ("version = 1\n[gates]\n", "[gates] top1_min is missing"),
    ("not toml [", "not valid TOML"),
])
def test_bad_policy_files(text, needle):
    with pytest.raises(PolicyError, match=needle.replace("[", r"\[")):
        parse_policy(text.encode(), "p.toml")


def test_thresholds_must_increase():
    text = resources.files("evalbot").joinpath("policies/v1.toml").read_text()
    bad = text.replace("XL = 0.3051", "XL = 0.01")
    with pytest.raises(PolicyError, match="increase strictly"):
        parse_policy(bad.encode(), "p.toml")


def test_kernel_gate_tolerances_are_read_per_family():
    from harness.kernel_gates import TOLERANCE_FAMILIES

    assert set(POLICY.kernel_tolerances) == set(TOLERANCE_FAMILIES)
    assert all(0 < v < 1e-3 for v in POLICY.kernel_tolerances.values()) and POLICY.kernel_fuzz_cases == 8


@pytest.mark.parametrize(("old", "new", "needle"), [
    ("gemv = 2e-5", "", "[kernel_gates] gemv is missing"),
    ("gemv = 2e-5", "gemv = 2", "[kernel_gates] gemv must be a number in [0.0, 1.0], got 2"),
    ("gemv = 2e-5", 'gemv = "2e-5"', "[kernel_gates] gemv must be a number"),
    ("fuzz_cases = 8", "fuzz_cases = 8.5", "[kernel_gates] fuzz_cases must be an integer in [0, 1000], got 8.5"),
    ("fuzz_cases = 8", "fuzz_cases = -1", "[kernel_gates] fuzz_cases must be an integer"),
    ("fuzz_cases = 8", "fuzz_cases = true", "[kernel_gates] fuzz_cases must be an integer"),
    ("fuzz_cases = 8", "", "[kernel_gates] fuzz_cases is missing"),
    ("fuzz_cases = 8", "fuzz_cases = 8\nembed = 0.0", "[kernel_gates] unknown key 'embed'"),
    ("[kernel_gates]", "[kernel_gate]", "[kernel_gates] is missing"),
])
def test_bad_kernel_gate_sections(old, new, needle):
    text = resources.files("evalbot").joinpath("policies/v1.toml").read_text()
    assert text.count(old) == 1
    with pytest.raises(PolicyError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        parse_policy(text.replace(old, new).encode(), "p.toml")


def test_calibration_rewrites_only_the_gates_of_a_policy() -> None:
    from evalbot.policy import DEFAULT_POLICIES, parse_policy, policy_bytes, with_gates

    text = policy_bytes(basket_set="production")[0].decode()
    # Full-precision proposals, as calibrate makes them: a ratio just above 1 must keep its excess.
    limits = {"top1_min": 0.971619365609, "kl_mean_max": 1.2387981707e-3, "kl_p99_max": 2.72970616e-2,
              "kl_max_max": 0.300733069665, "ppl_ratio_max": 1.00301569938852}
    out = with_gates(text, limits, ["measured here"])
    policy = parse_policy(out.encode(), "v2-calibrated")
    for name, want in limits.items():
        assert getattr(policy, name) == pytest.approx(want, rel=1e-6), name
    assert policy.ppl_ratio_max - 1 == pytest.approx(limits["ppl_ratio_max"] - 1, rel=1e-3)
    assert policy.contexts == load_policy(basket_set="production").contexts == (128, 4096, 16384, 32768)
    added = set(out.splitlines()) - set(text.splitlines())
    removed = set(text.splitlines()) - set(out.splitlines())
    assert added and all(line.startswith(("#", *limits)) for line in added | removed)  # the gates only
    assert "# measured here" in out and set(DEFAULT_POLICIES) == {"tiny", "production"}
    with pytest.raises(PolicyError, match="no \\[gates\\] speedup"):
        with_gates(text, {"speedup": 1.0}, [])


def test_shipped_v2_gates_admit_the_production_baseline_that_v1_would_reject() -> None:
    import json
    from pathlib import Path

    run = json.loads((Path(__file__).parents[1] / "docs/results/production/runtime.json").read_text())
    v1, v2 = load_policy(basket_set="tiny"), load_policy(basket_set="production")

    def passes(policy, c) -> bool:  # type: ignore[no-untyped-def]
        return (c["top1_agreement"] >= policy.top1_min and c["kl_mean"] <= policy.kl_mean_max
                and c["kl_p99"] <= policy.kl_p99_max and c["kl_max"] <= policy.kl_max_max
                and c["ppl_ratio"] <= policy.ppl_ratio_max)

    measured = [m["correctness"] for m in run["models"].values()]
    assert len(measured) == 2 and all(passes(v2, c) for c in measured)
    assert not all(passes(v1, c) for c in measured)


def _guarded(scored_effect: float, guard_effect: float, seed: int = 0) -> Measurements:
    import dataclasses

    scored = cells({(m, c): scored_effect for m in MODELS for c in CONTEXTS}, seed=seed)
    guards = cells({(m, c): guard_effect for m in MODELS for c in (65536, 131072)}, seed=seed + 50)
    return Measurements(True, cells=scored + tuple(dataclasses.replace(c, guard=True) for c in guards))


def test_a_long_context_guard_rejects_a_regression_but_never_adds_to_the_score() -> None:
    win = label(uniform(0.2), POLICY)
    # A big win at the guards leaves the score and label of the scored contexts as they are.
    guarded_win = label(_guarded(0.2, 0.5), POLICY)
    assert guarded_win.label == win.label != "none"
    assert guarded_win.score == pytest.approx(win.score, rel=1e-9)
    assert label(_guarded(0.0, 0.5), POLICY).label == "none"
    slow = label(_guarded(0.2, -0.05), POLICY)
    assert slow.label == "REJECT" and any("at context 131072" in r for r in slow.reasons)


def test_guard_contexts_parse_and_are_checked() -> None:
    from evalbot.policy import guard_rule, policy_bytes

    v2 = load_policy(basket_set="production")
    assert v2.guard_contexts == (65536, 131072) and POLICY.guard_contexts == ()
    rule = guard_rule(v2)
    assert rule.budget_s == v2.guard_budget_s < v2.budget_s and rule.target_halfwidth == v2.guard_halfwidth
    text = policy_bytes(basket_set="production")[0].decode()
    for old, new, match in (
        ("guard_contexts = [65536, 131072]", "guard_contexts = [16384, 131072]", "longer than every scored"),
        ("guard_contexts = [65536, 131072]", "guard_contexts = [65536, 65536]", "distinct positive"),
        ("guard_budget_s = 8.0\n", "", "guard_budget_s is missing"),
    ):
        with pytest.raises(PolicyError, match=match):
            parse_policy(text.replace(old, new).encode(), "p.toml")


def test_a_guard_cell_renders_as_a_guard() -> None:
    from evalbot.verdict import _context

    assert _context({"context": 131072, "guard": True}) == "131072 (guard)"
    assert _context({"context": 4096}) == "4096"


def test_the_printed_gates_snippet_keeps_the_policy_files_precision() -> None:
    import tomllib
    from types import SimpleNamespace

    from evalbot.cli.eval import gates_snippet

    # The production calibration's proposal (docs/results/production-verdicts/calibrate-production.log).
    proposed = SimpleNamespace(top1_min=0.9716194, kl_mean_max=0.001238799, kl_p99_max=0.02729707,
                               kl_max_max=0.3007331, ppl_ratio_max=1.003016)
    parsed = tomllib.loads(gates_snippet(proposed))["gates"]
    assert parsed == pytest.approx(vars(proposed), rel=1e-7)
    assert parsed["ppl_ratio_max"] > 1.003
