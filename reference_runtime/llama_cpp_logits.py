"""llama.cpp's own tokenizer and logits: the independent implementation the reference is
cross-checked against. Needs the ``llama`` extra (llama-cpp-python); uses its low-level C API.

Two deliberate settings: the KV cache is F32 (llama.cpp's default F16 cache would add an error the
reference does not have), and the CPU "extra buffer types" (weight repacking, AMX) are off — their
kernels compute the same products, and the AMX one crashes on the synthetic models' small matrices.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from reference_runtime.errors import ReferenceRuntimeError

GGML_TYPE_F32 = 0
_LOG_CALLBACK: Any = None


def llama_lib() -> Any:
    global _LOG_CALLBACK
    try:
        import llama_cpp
    except ImportError:
        raise ReferenceRuntimeError("this needs llama.cpp: pip install 'evalbot[llama]' (llama-cpp-python)") from None
    if _LOG_CALLBACK is None:  # llama.cpp logs every tensor it loads; keep the terminal for our report
        _LOG_CALLBACK = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp


@contextmanager
def _model(path: Path, vocab_only: bool = False) -> Iterator[Any]:
    lib = llama_lib()
    params = lib.llama_model_default_params()
    params.n_gpu_layers = 0
    params.use_extra_bufts = False
    params.vocab_only = vocab_only
    model = lib.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ReferenceRuntimeError(f"{path}: llama.cpp could not load this model")
    try:
        yield model
    finally:
        lib.llama_model_free(model)


def tokenize(model_path: Path, text: str) -> np.ndarray:
    """Token ids of ``text`` by the model's own tokenizer, with the BOS token the model expects."""
    lib = llama_lib()
    data = text.encode("utf-8")
    with _model(model_path, vocab_only=True) as model:
        vocab = lib.llama_model_get_vocab(model)
        capacity = len(data) + 16
        buf = (lib.llama_token * capacity)()
        n = lib.llama_tokenize(vocab, data, len(data), buf, capacity, True, False)
        if n < 0:
            raise ReferenceRuntimeError(f"{model_path}: llama.cpp tokenizer needs {-n} tokens, more than expected")
        return np.array(buf[:n], dtype=np.int32)


def logits(model_path: Path, tokens: np.ndarray, n_threads: int = 2) -> np.ndarray:
    """float32 logits [n_tokens, n_vocab] from llama.cpp's CPU path, every position in one context."""
    lib = llama_lib()
    n = len(tokens)
    with _model(model_path) as model:
        n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
        params = lib.llama_context_default_params()
        params.n_ctx = n
        params.n_batch = n
        params.n_ubatch = min(n, 512)
        params.n_threads = params.n_threads_batch = n_threads
        params.type_k = params.type_v = GGML_TYPE_F32
        ctx = lib.llama_init_from_model(model, params)
        if not ctx:
            raise ReferenceRuntimeError(f"{model_path}: llama.cpp could not create a context of {n} tokens")
        batch = lib.llama_batch_init(n, 0, 1)
        try:
            for i, token in enumerate(tokens):
                batch.token[i] = int(token)
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1
            batch.n_tokens = n
            if (rc := lib.llama_decode(ctx, batch)) != 0:
                raise ReferenceRuntimeError(f"{model_path}: llama_decode failed with code {rc}")
            out = np.ctypeslib.as_array(lib.llama_get_logits(ctx), shape=(n, n_vocab))
            return np.array(out, dtype=np.float32)
        finally:
            lib.llama_batch_free(batch)
            lib.llama_free(ctx)
