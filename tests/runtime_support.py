"""Shared by the runtime tests: the basket models (built once, or taken from EVALBOT_BASKET_DIR) and
random weight blocks with sane scales."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from reference_runtime import basket, quants

QT = gguf.GGMLQuantizationType


def basket_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding both basket models: EVALBOT_BASKET_DIR if it has them (a GPU box without
    llama.cpp gets them carried), else built here with llama.cpp's quantizer, else the test skips."""
    given = os.environ.get("EVALBOT_BASKET_DIR")
    if given and all(basket.model_path(Path(given), k).is_file() for k in basket.SPECS):
        return Path(given)
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("no basket models: set EVALBOT_BASKET_DIR or install llama-cpp-python to build them")
    out = tmp_path_factory.mktemp("basket")
    basket.build(out)
    return out


def random_blocks(qtype: QT, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Raw bytes of a [rows, cols] tensor: random quants and scale bits, with every fp16 block scale
    replaced by a small positive value (random scale bits would include infinities and NaNs)."""
    if qtype == QT.F32:
        return rng.standard_normal(rows * cols).astype(np.float32).view(np.uint8)
    block, size = quants.block_layout(qtype)
    n = rows * cols // block
    raw = rng.integers(0, 256, (n, size), dtype=np.uint8)
    offsets = {QT.Q4_K: (0, 2), QT.Q6_K: (208,), QT.Q8_0: (0,), QT.Q5_0: (0,)}[qtype]
    for off in offsets:
        raw[:, off : off + 2] = rng.uniform(0.002, 0.02, n).astype(np.float16).view(np.uint8).reshape(n, 2)
    return raw.reshape(-1)
