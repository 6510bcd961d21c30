"""How an evaluation orders its basket members, without a GPU: correctness-only members are gated end
to end first and never benchmarked; a failure there spares the benchmark; the verdict names each
member's role. The model's GPU work (``evalbot.evaluator._session``, a worker process on a GPU) is
replaced by a recorder that returns what a session returns; the rest is evalbot's own code. The same
path on a GPU: ``tests/test_eval_gpu.py::test_the_real_gemma3_is_gated_end_to_end_but_never_timed``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from evalbot import evaluator, verdict
from evalbot.build.verdict import BuildReport
from evalbot.config import BasketConfig, Config, PathsConfig
from evalbot.policy import load_policy
from harness.divergence import Divergence
from harness.gates import GateLimits, end_to_end
from tests.test_policy import cells

COMMITS = verdict.Commits("example/kernels", "a" * 40, None, None)
POLICY = load_policy()
LIMITS = GateLimits(POLICY.top1_min, POLICY.kl_mean_max, POLICY.kl_p99_max, POLICY.kl_max_max, POLICY.ppl_ratio_max)


@dataclass(frozen=True)
class Run:  # the fields of harness.session.ModelRun the evaluator reads
    key: str
    divergence: Divergence
    sha256: str = "c" * 64
    corpus_sha256: str = "d" * 64
    reference_version: int = 1
    contexts: tuple[Any, ...] = ()
    teacher_forced_s: float = 0.5
    stages_s: dict[str, float] = field(default_factory=lambda: {"upload": 1.5, "teacher_forced": 0.5})


@dataclass(frozen=True)
class Result:  # harness.session.SessionResult's fields the evaluator reads
    gates: tuple[Any, ...]
    cells: tuple[Any, ...]
    models: tuple[Run, ...]
    peak_bytes_per_s: float = 4.2e12


@dataclass
class Sessions:
    broken: str = ""  # this member's end-to-end gates fail
    calls: list[tuple[str, bool]] = field(default_factory=list)

    def __call__(self, config: Config, policy: Any, key: str, path: Path, candidate: Any, frontier: Any,
                 peak: float, benchmark: bool) -> Any:
        self.calls.append((key, benchmark))
        kl = 0.5 if key == self.broken else 1e-6
        d = Divergence(581, 1.0, kl, kl, kl, 0.5, 500, 1.0, 13.2, 13.2 * (1 + kl))
        speed = cells({(key, c): 0.0 for c in policy.contexts}) if benchmark else ()
        return Result(end_to_end(key, d, LIMITS), speed, (Run(key, d),))


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Config, Sessions, Path]:
    models = []
    for name in ("qwen3moe-tiny", "gemma4-tiny", "gemma3-270m"):
        (tmp_path / f"{name}.Q4_K_M.gguf").write_bytes(b"GGUF")
        models.append(str(tmp_path / f"{name}.Q4_K_M.gguf"))
    config = Config(paths=PathsConfig(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache")),
                    basket=BasketConfig(set="tiny", models=models[:2], correctness=models[2:]))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "kernels.toml").write_text("version = 1\n")
    sessions = Sessions()
    monkeypatch.setattr(evaluator, "gpu_available", lambda: True)
    monkeypatch.setattr(evaluator, "device_arch", lambda: "sm_90")
    monkeypatch.setattr(evaluator, "_gpu_identity", lambda: ("NVIDIA H200", "580.159.04 (CUDA 13.0)"))
    monkeypatch.setattr(evaluator, "_build", lambda t, *a: BuildReport(
        t, "sm_90", "local", False, "Cuda compilation tools, release 13.0, V13.0.88", (), (), 0.0))
    monkeypatch.setattr(evaluator, "_session", sessions)
    return config, sessions, tree


def test_correctness_members_go_first_and_are_never_benchmarked(setup) -> None:
    config, sessions, tree = setup
    outcome = evaluator.evaluate_trees(config, tree, None, COMMITS, policy=POLICY)
    assert sessions.calls == [("gemma3-270m", False), ("qwen3moe-tiny", True), ("gemma4-tiny", True)]
    doc = outcome.document
    jsonschema.validate(doc, verdict.schema())
    assert [(m["key"], m["role"]) for m in doc["models"]] == [
        ("gemma3-270m", "correctness"), ("qwen3moe-tiny", "benchmark"), ("gemma4-tiny", "benchmark")]
    assert doc["run"]["basket"] == "qwen3moe-tiny+gemma4-tiny"
    assert {c.model for c in outcome.measurements.cells} == {"qwen3moe-tiny", "gemma4-tiny"}
    assert doc["label"] == "none" and "gemma3-270m" not in doc["per_model_score"]
    assert doc["details"]["models"]["gemma3-270m"]["contexts"] == {}
    # The verdict's latency by stage: the build, then one session per member in the order they ran.
    assert list(doc["details"]["stages_s"]) == ["build", "model:gemma3-270m", "model:qwen3moe-tiny",
                                                "model:gemma4-tiny"]
    assert doc["details"]["models"]["qwen3moe-tiny"]["stages_s"] == {"upload": 1.5, "teacher_forced": 0.5}


def test_a_failure_on_real_weights_is_a_reject_before_any_benchmark(setup) -> None:
    config, sessions, tree = setup
    sessions.broken = "gemma3-270m"
    outcome = evaluator.evaluate_trees(config, tree, None, COMMITS, policy=POLICY)
    assert sessions.calls == [("gemma3-270m", False), ("qwen3moe-tiny", False), ("gemma4-tiny", False)]
    assert outcome.document["label"] == "REJECT" and not outcome.measurements.cells
    assert any("gate kl_mean failed on gemma3-270m" in r for r in outcome.document["reasons"])
