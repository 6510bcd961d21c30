"""Tiny unquantized models of each synthetic architecture, written on the fly for fast CPU tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from reference_runtime.basket import SPECS, SyntheticSpec, generate_tensors, write_f32

MICRO: dict[str, SyntheticSpec] = {
    "qwen3moe": dataclasses.replace(
        SPECS["qwen3moe-tiny"], key="micro-qwen3moe", n_vocab=64, n_embd=32, n_layer=2, n_head=4,
        n_head_kv=[2, 2], head_dim=16, n_expert=6, n_expert_used=2, n_ff_exp=32,
    ),
    "gemma4": dataclasses.replace(
        SPECS["gemma4-tiny"], key="micro-gemma4", n_vocab=64, n_embd=32, n_layer=3, n_head=2,
        n_head_kv=[2, 1, 2], head_dim=32, head_dim_swa=16, swa_pattern=[True, False, True], n_swa=4,
        n_expert=4, n_expert_used=2, n_ff_exp=16, n_ff_shared=32,
    ),
}


def write_micro(arch: str, directory: Path, drop: tuple[str, ...] = ()) -> Path:
    spec = MICRO[arch]
    tensors = {k: v for k, v in generate_tensors(spec).items() if k not in drop}
    path = directory / f"{spec.key}.gguf"
    write_f32(spec, path, tensors)
    return path
