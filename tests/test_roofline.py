import pytest

from harness.roofline import headroom_closed, kv_bytes, token_bytes
from reference_runtime.arch import read_config
from reference_runtime.gguf_model import GGUFModel
from tests.micro_models import MICRO, write_micro


def test_active_weights_count_routed_experts_only(tmp_path):
    spec = MICRO["qwen3moe"]
    with GGUFModel.open(write_micro("qwen3moe", tmp_path)) as model:
        cfg = read_config(model)
        got = token_bytes(model, cfg, context=1).weights
        experts = sum(s.n_bytes for n, s in model.tensors.items() if "_exps." in n)
        embd = model.spec("token_embd.weight").n_bytes
        rest = sum(s.n_bytes for s in model.tensors.values()) - experts - embd
    # F32 micro model: exact byte counts; one embedding row (untied head), top-k of n experts.
    assert got == rest + embd // spec.n_vocab + experts * spec.n_expert_used // spec.n_expert


def test_kv_bytes_stop_growing_past_the_window_on_sliding_layers(tmp_path):
    with GGUFModel.open(write_micro("gemma4", tmp_path)) as model:
        cfg = read_config(model)
    spec = MICRO["gemma4"]
    per_pos = {layer.index: 2 * layer.n_head_kv * layer.head_dim * 4 for layer in cfg.layers}
    ctx = 100
    expected = sum(per_pos[i] * (min(ctx, spec.n_swa) if spec.swa_pattern[i] else ctx) for i in per_pos)
    assert kv_bytes(cfg, ctx, 4) == expected
    assert kv_bytes(cfg, 200, 4) - kv_bytes(cfg, 100, 4) == 100 * per_pos[1]  # only the global layer grows


def test_headroom_closed():
    assert headroom_closed(2.0, 1.5, 1.0) == 0.5
    assert headroom_closed(2.0, 2.2, 1.0) == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="roofline"):
        headroom_closed(1.0, 0.9, 1.0)
