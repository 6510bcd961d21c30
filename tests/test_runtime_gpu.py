"""The CUDA-graph decode runtime end to end on a GPU: teacher-forced decode against the fp64
reference over the frozen corpus, graph replay identical to eager launches, a candidate kernel
mixed into one runtime beside a baseline runtime in the same process, and deliberately broken
kernels (an illegal address, an endless loop) contained by the watchdog worker."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from harness.divergence import RowStats, block_stats, compare, normalize, summarize
from reference_runtime import basket, corpus
from reference_runtime.gguf_model import GGUFModel
from reference_runtime.reference import Forward
from tests.runtime_support import basket_dir

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")

from reference_runtime.runtime.compile import compile_cubin  # noqa: E402 - needs CuPy (skipped above)
from reference_runtime.runtime.decode import DecodeRuntime, device_arch, teacher_forced_job  # noqa: E402
from reference_runtime.runtime.device import DeviceModel  # noqa: E402
from reference_runtime.runtime.kernels import Const, LaunchSpec, SlotKernel  # noqa: E402
from reference_runtime.runtime.worker import KernelFault, KernelHang, run_contained  # noqa: E402

KERNELS = Path(__file__).parent / "data" / "runtime_kernels"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return basket_dir(tmp_path_factory)


def rmsnorm_override(name: str, origin: str = "candidate") -> SlotKernel:
    cubin = compile_cubin(KERNELS / f"{name}.cu", device_arch())
    return SlotKernel(cubin, (LaunchSpec(name, Const((1,)), Const((32,))),), origin=origin)


@pytest.mark.parametrize("key", sorted(basket.SPECS))
def test_teacher_forced_decode_matches_fp64_reference(models: Path, key: str) -> None:
    with GGUFModel.open(basket.model_path(models, key)) as model:
        tokens = corpus.for_model(model).tokens
        runtime = DecodeRuntime(DeviceModel(model), n_ctx=len(tokens))
        logits = runtime.teacher_forced(tokens)
        ref = Forward(model, xp=cupy).logprobs(tokens).get()
    targets = np.append(tokens[1:], tokens[0])
    d = compare(ref, normalize(logits), targets)
    assert d.n_positions == len(tokens) == 2396
    assert d.top1_agreement >= 0.995, d
    assert d.kl_mean <= 1e-3, d
    # What a session does: each history block compared on the device as it fills, from raw logits.
    stats = [block_stats(cupy.asarray(ref[i : i + len(b)]), b, targets[i : i + len(b)], raw=True)
             for i, b in runtime.teacher_forced_blocks(tokens)]
    on_device = summarize(RowStats.concat(stats))
    assert len(stats) > 1 and on_device.n_positions == d.n_positions
    assert (on_device.top1_agreement, on_device.n_confident) == (d.top1_agreement, d.n_confident)
    for field in ("kl_mean", "kl_p99", "kl_max", "ppl_ref", "ppl_cand"):
        assert getattr(on_device, field) == pytest.approx(getattr(d, field), rel=1e-9, abs=1e-15), field


@pytest.mark.parametrize("key", sorted(basket.SPECS))
def test_long_context_probe_stays_at_the_fp64_reference(models: Path, key: str) -> None:
    """16k positions of history (the corpus cycled), the last 8 steps against fp64: within v1's gates."""
    from harness.long_context import ProbeSpec, run_probe

    r = run_probe(ProbeSpec(basket.model_path(models, key), 16384, 8))
    print(key, r)
    assert r.positions == tuple(range(16376, 16384)) and r.divergence.n_positions == 8
    assert r.divergence.top1_agreement >= 0.75, r
    assert r.divergence.kl_mean <= 3e-4, r


@pytest.mark.parametrize("key", sorted(basket.SPECS))
def test_graph_replay_equals_eager_launches(models: Path, key: str) -> None:
    with GGUFModel.open(basket.model_path(models, key)) as model:
        tokens = corpus.for_model(model).tokens[:300]
        weights = DeviceModel(model)
        runtime = DecodeRuntime(weights, n_ctx=320, history=128)
        graph = runtime.teacher_forced(tokens)
        eager = runtime.teacher_forced(tokens, eager=True)
        serial = DecodeRuntime(weights, n_ctx=320, history=128, pdl=False)
        without_pdl = serial.teacher_forced(tokens)
    assert all(launch.prepared.pdl for launch in runtime.launches)
    assert not any(launch.prepared.pdl for launch in serial.launches)
    assert np.isfinite(graph).all()
    np.testing.assert_array_equal(graph, eager)
    np.testing.assert_array_equal(graph, without_pdl)  # overlapped launches wait for their inputs


def test_candidate_and_frontier_runtimes_share_one_process(models: Path) -> None:
    with GGUFModel.open(basket.model_path(models, "gemma4-tiny")) as model:
        tokens = corpus.for_model(model).tokens[:200]
        weights = DeviceModel(model)
        frontier = DecodeRuntime(weights, n_ctx=256)
        candidate = DecodeRuntime(weights, n_ctx=256, overrides={"rmsnorm": rmsnorm_override("rmsnorm_warp")})
        assert candidate.kernels["rmsnorm"].origin == "candidate" and frontier.kernels["rmsnorm"].origin == "baseline"
        assert any(launch.kernel == "rmsnorm_warp" for launch in candidate.launches)
        assert not any(launch.kernel == "rmsnorm_warp" for launch in frontier.launches)
        runs = [rt.teacher_forced(tokens) for rt in (candidate, frontier, candidate, frontier)]  # ABAB
    np.testing.assert_array_equal(runs[0], runs[2])
    np.testing.assert_array_equal(runs[1], runs[3])
    assert not np.array_equal(runs[0], runs[1])  # a different reduction order: different rounding
    d = compare(normalize(runs[1]), normalize(runs[0]))
    assert d.top1_agreement >= 0.99 and d.kl_mean < 1e-5, d


def test_faulting_and_hanging_kernels_are_contained(models: Path) -> None:
    path = str(basket.model_path(models, "qwen3moe-tiny"))
    with GGUFModel.open(path) as model:
        tokens = corpus.for_model(model).tokens[:32].tolist()
    start = time.monotonic()
    good = run_contained(teacher_forced_job, path, tokens, 64, timeout_s=300)
    setup_s = time.monotonic() - start
    assert good.shape == (32, 1024) and np.isfinite(good).all()

    with pytest.raises(KernelFault, match=r"(?i)illegal"):
        run_contained(teacher_forced_job, path, tokens, 64, {"rmsnorm": rmsnorm_override("rmsnorm_fault")},
                      timeout_s=300)

    deadline = 2 * setup_s + 10  # well past a healthy run of the same job
    start = time.monotonic()
    with pytest.raises(KernelHang):
        run_contained(teacher_forced_job, path, tokens, 64, {"rmsnorm": rmsnorm_override("rmsnorm_hang")},
                      timeout_s=deadline)
    assert time.monotonic() - start < deadline + 30

    # The GPU and this process are fine afterwards: the same job gives the same logits.
    np.testing.assert_array_equal(run_contained(teacher_forced_job, path, tokens, 64, timeout_s=300), good)
