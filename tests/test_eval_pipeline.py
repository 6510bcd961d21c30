"""The evaluation's CPU-side parts: end-to-end gate logic, calibration arithmetic, a build loaded as
runtime kernels (geometry from the manifest, picklable for the worker), the verdict document with
details and non-finite values, and `evalbot eval` on a machine without a GPU."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from evalbot import verdict
from evalbot.build.slot_kernels import slot_kernels
from evalbot.build.verdict import BuildReport, SlotBuild
from evalbot.errors import EvalbotError
from evalbot.manifest import parse_manifest
from evalbot.policy import PolicyError, gate_limits, label, load_policy, parse_policy, sampling_rule
from harness.calibrate import noise_floor, propose_kernel_tolerances, propose_limits
from harness.divergence import compare, normalize
from harness.gates import end_to_end, spot_check
from harness.measurements import Measurements

POLICY = load_policy()
LIMITS = gate_limits(POLICY)


def logprobs(seed: int, n: int = 200, vocab: int = 64, peak: float = 6.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, vocab))
    logits[np.arange(n), rng.integers(0, vocab, n)] += peak
    return normalize(logits)


def test_identical_outputs_pass_every_end_to_end_gate():
    ref = logprobs(0)
    gates = end_to_end("m", compare(ref, ref, np.zeros(len(ref), dtype=int)), LIMITS)
    assert [g.name for g in gates] == ["top1", "kl_mean", "kl_p99", "kl_max", "ppl_ratio"]
    assert all(g.passed for g in gates)


def test_a_wrong_model_fails_and_names_the_gates():
    ref, other = logprobs(0), logprobs(1)
    gates = end_to_end("gemma4-tiny", compare(ref, other, np.zeros(len(ref), dtype=int)), LIMITS)
    failed = {g.name for g in gates if not g.passed}
    assert {"top1", "kl_mean"} <= failed
    assert all(g.model == "gemma4-tiny" for g in gates)
    decision = label(Measurements(True, gates=gates), POLICY)
    assert decision.label == "REJECT" and "gate top1 failed on gemma4-tiny" in decision.reasons[0]


def test_nan_output_fails_instead_of_passing_silently():
    ref = logprobs(0)
    cand = ref.copy()
    cand[5] = np.nan
    gates = end_to_end("m", compare(ref, cand, np.zeros(len(ref), dtype=int)), LIMITS)
    assert not all(g.passed for g in gates)
    assert not spot_check("m", 128, compare(ref, cand), LIMITS).passed


def test_spot_check_tolerates_rounding_but_not_a_different_function():
    ref = logprobs(3)
    rounded = normalize(ref + np.random.default_rng(4).normal(0, 1e-4, ref.shape))
    assert spot_check("m", 4096, compare(ref, rounded), LIMITS).passed
    assert not spot_check("m", 4096, compare(ref, logprobs(5)), LIMITS).passed


def test_calibration_puts_limits_margin_times_beyond_the_noise():
    ref = logprobs(0)
    noisy = [compare(ref, normalize(ref + np.random.default_rng(s).normal(0, 1e-3, ref.shape)),
                     np.zeros(len(ref), dtype=int)) for s in range(3)]
    floor = noise_floor(noisy)
    assert floor.n_observations == 3 and floor.kl_mean_max == max(d.kl_mean for d in noisy)
    limits = propose_limits(floor, margin=4)
    assert math.isclose(limits.kl_mean_max, 4 * floor.kl_mean_max)
    assert limits.top1_min <= floor.top1_min and limits.ppl_ratio_max >= floor.ppl_ratio_max
    # every observation passes the proposed limits; a wrong model does not
    assert all(all(g.passed for g in end_to_end("m", d, limits)) for d in noisy)
    assert not all(g.passed for g in end_to_end("m", compare(ref, logprobs(9), np.zeros(200, dtype=int)), limits))
    with pytest.raises(ValueError):
        propose_limits(floor, margin=0.5)


def test_kernel_tolerances_by_family_keep_exact_slots_exact():
    got = propose_kernel_tolerances([("gemv_q4_k", 1e-6), ("gemv_q8_0", 3e-6), ("embed_q4_k", 0.0)],
                                    {"gemv_q4_k": "gemv", "gemv_q8_0": "gemv", "embed_q4_k": "embed"}, margin=10)
    assert got == {"embed": 0.0, "gemv": pytest.approx(3e-5)}


def test_policy_speed_section_is_validated():
    text = (Path(__file__).parents[1] / "evalbot" / "policies" / "v1.toml").read_text()
    assert POLICY.contexts == (128, 4096, 16384)
    rule = sampling_rule(POLICY)
    assert rule.budget_s == POLICY.budget_s and rule.confidence == POLICY.confidence
    for bad in ("contexts = []", "contexts = [128, 128]", "contexts = [0]", 'contexts = "128"'):
        with pytest.raises(PolicyError, match=r"\[speed\] contexts"):
            parse_policy(text.replace("contexts = [128, 4096, 16384]", bad).encode(), "p.toml")
    with pytest.raises(PolicyError, match="budget_s"):
        parse_policy(text.replace("budget_s = 20.0", "budget_s = -1").encode(), "p.toml")


MANIFEST = """
version = 1
[slots.rmsnorm]
source = "norm.cu"
scratch_bytes = "n_embd * 4"
[[slots.rmsnorm.launch]]
kernel = "my_norm"
grid = [1]
block = ["min(1024, ceil_div(n_embd, 32) * 32)"]
shared_bytes = "n_embd * 4"
"""


def test_a_build_becomes_runtime_kernels_with_manifest_geometry(tmp_path: Path):
    (tmp_path / "norm.cu").write_text("// stub\n")
    manifest = parse_manifest(MANIFEST, root=tmp_path, label="kernels.toml")
    cubin = tmp_path / "norm.cubin"
    report = BuildReport(tmp_path, "sm_90", "local", False, "nvcc 13.0",
                         (SlotBuild("rmsnorm", True, False, 0.1, cubin, ("my_norm",)),), (), 0.1)
    table = slot_kernels(manifest, report, "candidate")
    kernel = pickle.loads(pickle.dumps(table["rmsnorm"]))  # the worker receives it pickled
    env = {"n_embd": 640, "n_sm": 132}
    (spec,) = kernel.launches
    assert kernel.cubin == cubin and kernel.origin == "candidate" and spec.kernel == "my_norm"
    assert spec.grid(env) == (1, 1, 1) and spec.block(env) == (640, 1, 1) and spec.shared_bytes(env) == 2560
    assert kernel.scratch_bytes(env) == 2560
    failed = replace(report, slots=(), reasons=("slot rmsnorm: error",))
    with pytest.raises(EvalbotError, match="failed build"):
        slot_kernels(manifest, failed, "candidate")


def test_verdict_document_with_details_and_a_nan_gate_is_valid_json():
    ref = logprobs(0)
    cand = ref.copy()
    cand[:] = np.nan
    gates = end_to_end("m", compare(ref, cand, np.zeros(len(ref), dtype=int)), LIMITS)
    m = Measurements(True, gates=gates)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    run = verdict.RunIdentity("GPU", "driver", "13.0", at, at)
    doc = verdict.document(label(m, POLICY), m, POLICY, run, verdict.Commits("r", "a" * 40, None, None), (),
                           {"peak_bytes_per_s": math.inf, "build": {"label": "OK"}})
    text = verdict.to_json(doc)
    parsed = json.loads(text)
    jsonschema.validate(parsed, verdict.schema())
    assert parsed["details"]["peak_bytes_per_s"] is None
    assert any(g["value"] is None for g in parsed["measurements"]["gates"])
    assert "NaN" in verdict.markdown(parsed)


def test_eval_without_a_gpu_says_so_and_exits_2(tmp_path: Path):
    repo = tmp_path / "k"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "kernels.toml").write_text("version = 1\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
                   check=True)
    env = {"EVALBOT_PATHS__CACHE_DIR": str(tmp_path / "cache"), "EVALBOT_PATHS__DATA_DIR": str(tmp_path / "data"),
           "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    done = subprocess.run([sys.executable, "-m", "evalbot", "eval", "HEAD", "--repo", str(repo)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no CUDA GPU" in done.stderr and "--build-only" in done.stderr


def test_eval_of_a_missing_commit_is_a_one_line_error(tmp_path: Path):
    repo = tmp_path / "k"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    env = {"EVALBOT_PATHS__CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin:/usr/local/bin"}
    done = subprocess.run([sys.executable, "-m", "evalbot", "eval", "nope", "--repo", str(repo), "--build-only"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr
    assert "'nope' is not a commit" in done.stderr


def test_watch_loads_the_real_evaluator_by_default():
    from evalbot.config import Config
    from evalbot.evaluator import WatchEvaluator
    from evalbot.pipeline import DEFAULT_EVALUATOR, load_evaluator

    assert isinstance(load_evaluator(DEFAULT_EVALUATOR, Config()), WatchEvaluator)


def test_outcome_becomes_the_pollers_verdict():
    from evalbot.evaluator import Outcome, to_pipeline_verdict
    from tests.test_policy import uniform

    m = uniform(0.2)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    decision = label(m, POLICY)
    doc = verdict.document(decision, m, POLICY, verdict.RunIdentity("GPU", "d", "13.0", at, at),
                           verdict.Commits("o/r", "a" * 40, "b" * 40, 3), ())
    v = to_pipeline_verdict(Outcome(decision, doc, m, None), POLICY)
    assert v.label == decision.label != "REJECT" and v.policy_hash == POLICY.sha256 and v.gpu == "GPU"
    assert {r.model for r in v.models} == {c.model for c in m.cells}
    worst = {r.model: r.speedup for r in v.models}
    for model, speedup in worst.items():
        assert speedup == min(c.comparison.speedup for c in m.cells if c.model == model)
    assert f"**`{decision.label}`**" in v.markdown


def test_nvcc_release_is_one_short_line():
    from evalbot.evaluator import nvcc_release

    text = ("local /usr/local/cuda-13.0/bin/nvcc\nnvcc: NVIDIA (R) Cuda compiler driver\n"
            "Cuda compilation tools, release 13.0, V13.0.88\nBuild cuda_13.0.r13.0/compiler.36424714_0\n")
    assert nvcc_release(text) == "13.0 (V13.0.88)"
    assert nvcc_release("some image\nnvcc 12") == "nvcc 12" and nvcc_release("") == "unknown"


def test_eval_takes_the_ledgers_frontier_as_its_default_baseline(tmp_path: Path):
    from evalbot.cli.eval import ledger_frontier
    from evalbot.config import Config, LedgerConfig
    from evalbot.ledger_recorder import basket_id
    from ledger.api import Ledger
    from tests.test_ledger_support import advance, new_signer

    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    assert ledger_frontier(Config()) is None  # no [ledger] url: the merge-base is used
    cfg = Config(ledger=LedgerConfig(url=url, gpu_class="h200"))
    ledger = Ledger.open(url, signer=new_signer(tmp_path), create=True)
    assert ledger_frontier(cfg) is None  # a ledger without a frontier yet
    ledger.record_frontier_advance(replace(advance(1, None), basket=basket_id(cfg), gpu_class="h200",
                                           commit_sha="c" * 40))
    ledger.record_frontier_advance(replace(advance(2, None), basket="other", gpu_class="h200"))
    assert ledger_frontier(cfg) == "c" * 40


def test_eval_build_only_on_the_example_repo(tmp_path: Path):
    from tests.build_support import require_nvcc

    require_nvcc()
    repo = tmp_path / "kernels"
    env = {"EVALBOT_PATHS__CACHE_DIR": str(tmp_path / "cache"), "EVALBOT_BUILD__BACKEND": "local",
           "PATH": "/usr/local/cuda/bin:/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "evalbot", "example-repo", str(repo)], check=True, env=env,
                   capture_output=True)
    ok = subprocess.run([sys.executable, "-m", "evalbot", "eval", "faster", "--repo", str(repo), "--build-only",
                         "--json", str(tmp_path / "ok.json")], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "build OK" in ok.stdout and json.loads((tmp_path / "ok.json").read_text())["label"] == "OK"
    bad = subprocess.run([sys.executable, "-m", "evalbot", "eval", "broken", "--repo", str(repo), "--build-only"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1 and "rows_per_blok" in bad.stdout and "slot gemv_q4_k" in bad.stdout
    # Reasons and reports name the commit, never the exported tree's place in the cache.
    faster = subprocess.run(["git", "-C", str(repo), "rev-parse", "faster"], capture_output=True, text=True,
                            check=True).stdout.strip()
    report = json.loads((tmp_path / "ok.json").read_text())
    assert report["tree"] == faster[:12] and all("/" not in s["cubin"] for s in report["slots"])
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "checkout", "-q", "-b", "typo", "faster"], check=True)
    manifest = repo / "kernels.toml"
    manifest.write_text(manifest.read_text().replace("[slots.gemv_q4_k]", "[slots.gemv_q4_kk]", 1))
    subprocess.run([*git, "commit", "-qam", "typo"], check=True)
    typo = subprocess.run(["git", "-C", str(repo), "rev-parse", "typo"], capture_output=True, text=True,
                          check=True).stdout.strip()
    malformed = subprocess.run([sys.executable, "-m", "evalbot", "eval", "typo", "--repo", str(repo), "--build-only"],
                               capture_output=True, text=True, env=env, timeout=300)
    out = " ".join(malformed.stdout.split())  # rich wraps long lines
    assert malformed.returncode == 1, malformed.stdout + malformed.stderr
    assert f"{typo[:12]}:kernels.toml: slot gemv_q4_kk" in out and "did you mean 'gemv_q4_k'" in out, out
    assert str(tmp_path / "cache") not in out
