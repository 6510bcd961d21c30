"""The runtime's CPU side: the header is the ABI the catalogue names, every step a plan builds uses
slots with their exact argument lists, and the plan run by the NumPy slot oracles reproduces the
fp64 reference (so the GPU graph captured from the same plan is wired right)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.divergence import compare, normalize
from reference_runtime import basket, corpus
from reference_runtime import slots as catalogue
from reference_runtime.gguf_model import GGUFModel
from reference_runtime.reference import Forward
from reference_runtime.runtime.abi import ABIError, header_path, parse_header, slot_abis
from reference_runtime.runtime.emulate import Emulator
from reference_runtime.runtime.kernels import baseline_slot_names
from reference_runtime.runtime.plan import INTERNAL, PlanError, build_plan
from tests.runtime_support import basket_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return basket_dir(tmp_path_factory)


def test_header_defines_every_catalogue_slot_verbatim() -> None:
    abis = slot_abis()
    assert set(abis) == set(catalogue.SLOTS)
    for name, slot in catalogue.SLOTS.items():
        assert slot.signature == abis[name].text, name


def test_header_parser_rejects_untagged_and_malformed_lists() -> None:
    with pytest.raises(ABIError, match="no @slots tag"):
        parse_header("#define EVALBOT_X_ARGS \\\n    int a, int b\n")
    with pytest.raises(ABIError, match="unsupported type"):
        parse_header("/* @slots x */\n#define EVALBOT_X_ARGS \\\n    double a\n")
    with pytest.raises(ABIError, match="two argument lists"):
        parse_header("/* @slots x */\n#define EVALBOT_X_ARGS \\\n    int a\n/* @slots x */\n#define EVALBOT_Y_ARGS \\\n"
                     "    int b\n")


def test_scratch_and_pointer_parameters_are_typed() -> None:
    attn = slot_abis()["attn_decode_hd128"]
    assert attn.params[attn.index("scratch")].is_pointer
    assert attn.params[attn.index("n_swa")].scalar_dtype == "int32"
    moe = slot_abis()["moe_ffn_swiglu"]
    assert moe.params[moe.index("stride_down")].scalar_dtype == "int64"
    assert "KV CACHE" in header_path().read_text()


def test_baseline_serves_every_catalogue_slot() -> None:
    assert baseline_slot_names() == set(catalogue.SLOTS)


@pytest.mark.parametrize("key", sorted(basket.SPECS))
def test_plan_calls_slots_with_their_abi(models: Path, key: str) -> None:
    with GGUFModel.open(basket.model_path(models, key)) as model:
        plan = build_plan(model, n_ctx=64)
    assert plan.ops[0].name == "rt_prologue" and plan.ops[-1].name == "rt_record"
    for op in plan.ops:
        if op.internal:
            assert list(op.args) == [p for p, _ in INTERNAL[op.name]]
            continue
        assert list(op.args) == [p.name for p in slot_abis()[op.name].params], op.label
        assert set(op.env) == set(catalogue.SLOTS[op.name].symbols), op.label
        for arg in op.args.values():  # every buffer an op names exists in the plan
            assert not hasattr(arg, "name") or arg.name == "scratch" or arg.name in plan.buffers
    expected = {"qwen3moe-tiny": {"attn_decode_hd128", "moe_ffn_swiglu", "rmsnorm_residual"},
                "gemma4-tiny": {"attn_decode_swa_hd256", "attn_decode_hd512", "moe_ffn_geglu", "rmsnorm_post_add"}}
    assert expected[key] <= set(plan.slots_used())


def test_plan_rejects_empty_cache(models: Path) -> None:
    with GGUFModel.open(basket.model_path(models, "qwen3moe-tiny")) as model, pytest.raises(PlanError):
        build_plan(model, n_ctx=0)


@pytest.mark.slow
@pytest.mark.parametrize("key,n_tokens", [("qwen3moe-tiny", 48), ("gemma4-tiny", 150)])
def test_emulated_plan_matches_reference(models: Path, key: str, n_tokens: int) -> None:
    """Token-by-token through the plan (fp16 KV cache, everything else float64) against the prefill
    reference; gemma4's 150 tokens cross its 128-position sliding window. A ring shorter than the
    sequence exercises the recorder's wrap-around."""
    with GGUFModel.open(basket.model_path(models, key)) as model:
        tokens = corpus.for_model(model).tokens[:n_tokens]
        plan = build_plan(model, n_ctx=n_tokens + 3, history=32)
        logits = Emulator(model, plan).teacher_forced(tokens)
        ref = Forward(model).logprobs(tokens)
    d = compare(ref, normalize(logits))
    assert d.top1_agreement == 1.0
    assert d.kl_max < 1e-4, d
    assert np.isfinite(logits).all()
