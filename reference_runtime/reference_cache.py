"""The reference's output, cached on disk keyed by (model SHA-256, corpus SHA-256, reference version).

Stored as float32 log-probabilities [n_positions, n_vocab] in a ``.npy`` file (memory-mapped on read)
plus a JSON sidecar naming exactly what it was computed from. float32 keeps each log-probability to
~1e-7 relative, far below any gate tolerance, at half the size of float64 (Gemma 3 270M over the
581-token corpus: 581 × 262144 × 4 B = 609 MB; the synthetic models: 2396 × 1024 × 4 B = 9.8 MB).
A sidecar that does not match its key, or a truncated array, is treated as absent and recomputed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reference_runtime.corpus import Corpus
from reference_runtime.gguf_model import GGUFModel
from reference_runtime.reference import REFERENCE_VERSION, Forward


@dataclass(frozen=True)
class CachedReference:
    logprobs: np.ndarray  # float32 [n_positions, n_vocab], memory-mapped
    path: Path
    seconds: float  # time the computation took (when it was computed)
    hit: bool


def cache_key(model_sha: str, corpus_sha: str) -> str:
    return f"{model_sha[:20]}-{corpus_sha[:20]}-v{REFERENCE_VERSION}"


def _read(npy: Path, meta_path: Path, expect: dict[str, Any]) -> tuple[np.ndarray, float] | None:
    try:
        meta = json.loads(meta_path.read_text())
        if any(meta.get(k) != v for k, v in expect.items()):
            return None
        array = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if array.shape != (expect["n_positions"], meta.get("n_vocab")) or array.dtype != np.float32:
        return None
    return array, float(meta.get("seconds", 0.0))


def reference_logprobs(model: GGUFModel, corpus: Corpus, cache_dir: Path, xp: Any = np,
                       recompute: bool = False, on_layer: Callable[[int, int], None] | None = None
                       ) -> CachedReference:
    model_sha = model.sha256()
    expect = {
        "model_sha256": model_sha,
        "corpus_sha256": corpus.sha256,
        "reference_version": REFERENCE_VERSION,
        "n_positions": len(corpus),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(model_sha, corpus.sha256)
    npy, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if not recompute and (found := _read(npy, meta_path, expect)):
        return CachedReference(found[0], npy, found[1], hit=True)

    start = time.perf_counter()
    logprobs = Forward(model, xp).logprobs(corpus.tokens, on_layer)
    if hasattr(logprobs, "get"):  # CuPy -> host
        logprobs = logprobs.get()
    seconds = time.perf_counter() - start
    # Write under temporary names and rename: a reader never sees half a file.
    tmp_npy, tmp_meta = npy.with_suffix(f".tmp{os.getpid()}.npy"), meta_path.with_suffix(f".tmp{os.getpid()}")
    np.save(tmp_npy, logprobs.astype(np.float32))
    tmp_meta.write_text(json.dumps(expect | {"n_vocab": int(logprobs.shape[1]), "seconds": seconds,
                                             "model": str(model.path), "tokenizer": corpus.tokenizer}))
    os.replace(tmp_npy, npy)
    os.replace(tmp_meta, meta_path)
    return CachedReference(np.load(npy, mmap_mode="r"), npy, seconds, hit=False)
