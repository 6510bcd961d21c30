"""Shared by the GPU tests: the basket models (built once, or taken from EVALBOT_BASKET_DIR)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from reference_runtime import basket


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
