"""The production basket: Qwen3-30B-A3B and Gemma 4 26B-A4B at their full dimensions.

Kernels are measured where SN74's models run: weights far beyond the L2 cache, decode bound by
HBM bandwidth. Each model has the real architecture's depth, widths, head layout, expert count
and vocabulary (docs/basket.md cites the public configs), and every tensor the type llama.cpp's
Q4_K_M mixture gives it (:mod:`reference_runtime.q4_k_m`), so kernels read the bytes a real
Q4_K_M file holds.

The files are generated, never downloaded: the blocks are drawn directly by
:mod:`reference_runtime.blockgen` (no float32 copy of 30 B parameters, no quantizer run), on
CuPy when a GPU is present and NumPy otherwise, with identical bytes. Weights follow the tiny
basket's scaling plan (:func:`reference_runtime.basket.tensor_plan`), so next-token
distributions are peaked and the router has clear winners. Every tensor is pinned by SHA-256
(``production_pins.json``): verification hashes tensors in parallel and names the one that differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import gguf
import numpy as np

from reference_runtime import blockgen, q4_k_m
from reference_runtime.basket import SyntheticSpec, TensorPlan, add_metadata, model_path, tensor_plan
from reference_runtime.errors import ReferenceRuntimeError

QT = gguf.GGMLQuantizationType

# Gemma 4 26B-A4B: one global layer after every five sliding ones (layers 5, 11, ..., 29).
_GEMMA4_SWA = [il % 6 != 5 for il in range(30)]

SPECS: dict[str, SyntheticSpec] = {
    # Qwen3-30B-A3B (config.json of Qwen/Qwen3-30B-A3B): the GGUF stand-in for Qwen3.5-35B-A3B.
    "qwen3moe-30b-a3b": SyntheticSpec(
        key="qwen3moe-30b-a3b", arch="qwen3moe", seed=0x5174_1001, n_vocab=151936, n_embd=2048, n_layer=48,
        n_head=32, n_head_kv=[4] * 48, head_dim=128, n_expert=128, n_expert_used=8, n_ff_exp=768,
        rope_base=1_000_000.0, context_length=40960,
    ),
    # Gemma 4 26B-A4B (config.json of google/gemma-4-26B-A4B): sliding layers of head_dim 256 with
    # 8 KV heads, global layers of head_dim 512 with 2 KV heads and K as V, 128 routed experts
    # top-8 beside the dense shared FFN.
    "gemma4-26b-a4b": SyntheticSpec(
        key="gemma4-26b-a4b", arch="gemma4", seed=0x5174_1002, n_vocab=262144, n_embd=2816, n_layer=30,
        n_head=16, n_head_kv=[8 if swa else 2 for swa in _GEMMA4_SWA], head_dim=512, head_dim_swa=256,
        swa_pattern=_GEMMA4_SWA, n_swa=1024, rope_base=1_000_000.0, rope_base_swa=10_000.0,
        n_expert=128, n_expert_used=8, n_ff_exp=704, n_ff_shared=2112, partial_rotary=0.25, softcap=30.0,
        context_length=262144,
    ),
}


def narrow(spec: SyntheticSpec, *, n_embd: int = 256, n_vocab: int = 512, n_expert: int = 4) -> SyntheticSpec:
    """The same architecture at full depth, with its attention heads, and narrow elsewhere: what
    CI can quantize and run.

    FFN widths keep the production ones' remainder modulo 256 (704 = 2*256 + 192 becomes
    256 + 192), so the Q4_K_M type map, fallbacks included, is the production one."""
    def width(production: int, small: int) -> int:
        return small + production % 256

    return dataclasses.replace(
        spec, key=spec.key + "-narrow", n_embd=n_embd, n_vocab=n_vocab,
        n_expert=n_expert, n_expert_used=min(spec.n_expert_used, n_expert),
        n_ff_exp=width(spec.n_ff_exp, 256), n_ff_shared=width(spec.n_ff_shared, 512) if spec.n_ff_shared else 0,
    )


@dataclass(frozen=True)
class PlannedTensor:
    plan: TensorPlan
    qtype: QT

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return int(np.prod(self.plan.shape)) // block * size


def layout(spec: SyntheticSpec) -> list[PlannedTensor]:
    """Every tensor in file order with its Q4_K_M type."""
    plan = tensor_plan(spec)
    types = q4_k_m.tensor_types(((t.name, t.shape, QT.F32) for t in plan), n_layer=spec.n_layer,
                                n_expert=spec.n_expert)
    return [PlannedTensor(t, types[t.name]) for t in plan]


def tensor_bytes(spec: SyntheticSpec, tensor: PlannedTensor, xp: ModuleType = np) -> Any:
    """The raw bytes (flat ``xp`` uint8) of one tensor; the same on NumPy and CuPy."""
    t = tensor.plan
    key = blockgen.tensor_key(spec.seed, t.name)
    n = int(np.prod(t.shape))
    if t.kind == "const":
        return xp.asarray(np.array(t.values, np.float32).view(np.uint8))
    if t.kind == "norm":
        if tensor.qtype != QT.F32:
            raise ReferenceRuntimeError(f"{t.name}: norm vectors stay F32, the map gave {tensor.qtype.name}")
        return blockgen.f32_values(key, n, 0.1 * t.centre, t.centre, xp=xp).view(xp.uint8)
    return blockgen.quantized_tensor(key, tensor.qtype, t.shape, t.std, xp=xp)


def array_module(use_gpu: bool | None) -> ModuleType:
    """CuPy when asked for (True) or when a device is usable (None); NumPy otherwise."""
    if use_gpu is False:
        return np
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception as exc:  # no CuPy, no driver, no device: all mean "generate on the CPU"
        if use_gpu:
            raise ReferenceRuntimeError(f"CuPy with a CUDA device was asked for but is not usable: {exc}") from exc
    if use_gpu:
        raise ReferenceRuntimeError("CuPy with a CUDA device was asked for, but no device is visible")
    return np


def _host(array: Any) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


@dataclass(frozen=True)
class Generated:
    path: Path
    header_sha256: str
    tensors: dict[str, str]  # name -> SHA-256 of its bytes
    seconds: float
    nbytes: int
    device: str  # "numpy" or "cupy"


def write(spec: SyntheticSpec, path: Path, *, use_gpu: bool | None = None,
          on_tensor: Callable[[int, int, str], None] = lambda _i, _n, _name: None) -> Generated:
    """Write the Q4_K_M GGUF of ``spec`` to ``path`` tensor by tensor; returns the digests.

    Hashing runs on a thread pool beside generation and writing (hashlib releases the GIL), with a
    few tensors in flight at most, so host memory stays bounded by the largest tensors."""
    xp = array_module(use_gpu)
    start = time.perf_counter()
    tensors = layout(spec)
    writer = gguf.GGUFWriter(str(path), spec.arch)
    add_metadata(writer, spec)
    for t in tensors:
        block, size = gguf.GGML_QUANT_SIZES[t.qtype]
        # gguf-py takes a quantized tensor's shape as its byte shape: rows x row bytes.
        byte_shape = (*t.plan.shape[:-1], t.plan.shape[-1] // block * size)
        writer.add_tensor_info(t.plan.name, byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=t.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    digests: dict[str, Future[str]] = {}
    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        pending: list[Future[str]] = []
        for i, t in enumerate(tensors):
            on_tensor(i, len(tensors), t.plan.name)
            data = _host(tensor_bytes(spec, t, xp))
            if data.nbytes != t.nbytes:
                raise ReferenceRuntimeError(f"{t.plan.name}: generated {data.nbytes} bytes, expected {t.nbytes}")
            digests[t.plan.name] = future = pool.submit(_sha256, data)
            writer.write_tensor_data(data)
            pending = [f for f in [*pending, future] if not f.done()]
            while len(pending) > 4:
                pending.pop(0).result()
    writer.close()
    return Generated(path, _header_digest(path), {name: f.result() for name, f in digests.items()},
                     time.perf_counter() - start, path.stat().st_size, xp.__name__)


def _sha256(data: np.ndarray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _header_digest(path: Path, reader: gguf.GGUFReader | None = None) -> str:
    """SHA-256 of everything before the first tensor's data: metadata and tensor records."""
    reader = reader or gguf.GGUFReader(str(path))
    start = min((int(t.data_offset) for t in reader.tensors), default=path.stat().st_size)
    with path.open("rb") as f:
        return hashlib.sha256(f.read(start)).hexdigest()


# -- pins and verification ------------------------------------------------------------------------
PINS_FILE = "production_pins.json"


def pins() -> dict[str, dict[str, Any]]:
    text = resources.files("reference_runtime").joinpath(PINS_FILE).read_text()
    return dict(json.loads(text))


def pin_record(generated: Generated) -> dict[str, Any]:
    return {"header": generated.header_sha256, "bytes": generated.nbytes, "tensors": generated.tensors}


@dataclass(frozen=True)
class Mismatch:
    what: str  # "file", "header", "pin" or a tensor's name
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.what}: expected {self.expected}, found {self.found}"


def verify_file(path: Path, pinned: dict[str, Any], *, workers: int | None = None) -> list[Mismatch]:
    """Re-hash the header and every tensor of ``path`` in parallel against ``pinned``."""
    if not path.is_file():
        return [Mismatch("file", "present", "missing")]
    if path.stat().st_size != pinned["bytes"]:
        return [Mismatch("file", f"{pinned['bytes']} bytes", f"{path.stat().st_size} bytes")]
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # gguf-py raises bare ValueErrors and struct errors on corrupt files
        return [Mismatch("header", "a readable GGUF", f"unreadable ({exc})")]
    problems: list[Mismatch] = []
    if (header := _header_digest(path, reader)) != pinned["header"]:
        problems.append(Mismatch("header", pinned["header"], header))
    found = {t.name: t for t in reader.tensors}
    expected: dict[str, str] = pinned["tensors"]
    problems += [Mismatch(name, sha, "absent") for name, sha in expected.items() if name not in found]
    problems += [Mismatch(name, "absent", "present") for name in found if name not in expected]
    with ThreadPoolExecutor(max_workers=workers or max(2, min(16, os.cpu_count() or 2))) as pool:
        hashed = {name: pool.submit(_sha256, memoryview(np.ascontiguousarray(found[name].data)).cast("B"))
                  for name in expected if name in found}
        for name, future in hashed.items():
            if (sha := future.result()) != expected[name]:
                problems.append(Mismatch(name, expected[name], sha))
    return problems


def build(models_dir: Path, keys: list[str] | None = None, *, use_gpu: bool | None = None,
          check_pins: bool = True, on_step: Callable[[str], None] = lambda _msg: None) -> dict[str, Generated]:
    """Generate and install the production models; a digest that differs from its pin is an error
    and installs nothing."""
    models_dir.mkdir(parents=True, exist_ok=True)
    pinned = pins() if check_pins else {}
    built: dict[str, Generated] = {}
    for key in keys or list(SPECS):
        if key not in SPECS:
            raise ReferenceRuntimeError(f"unknown production model {key!r} (known: {', '.join(SPECS)})")
        target = model_path(models_dir, key)
        with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
            partial = Path(tmp) / target.name
            generated = write(SPECS[key], partial, use_gpu=use_gpu,
                              on_tensor=lambda i, n, name, key=key: on_step(f"{key}: tensor {i + 1}/{n} {name}"))
            if check_pins and (wrong := differences(pin_record(generated), pinned.get(key))):
                raise ReferenceRuntimeError(f"{key}: generated bytes differ from the pins ({wrong}); nothing was "
                                            "installed")
            partial.replace(target)
        built[key] = dataclasses.replace(generated, path=target)
    return built


def differences(record: dict[str, Any], pinned: dict[str, Any] | None) -> str:
    """What differs between a generated model's record and its pin, in words; empty if nothing."""
    if pinned is None:
        return "no pin"
    if record["header"] != pinned["header"]:
        return "the header: metadata or tensor records"
    names = [n for n, sha in record["tensors"].items() if pinned["tensors"].get(n) != sha]
    if names:
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        return "tensor " + ", ".join(names[:3]) + more
    return ""


def status(models_dir: Path, *, hash_tensors: bool = True) -> Iterator[tuple[str, Path, list[Mismatch]]]:
    """(key, path, mismatches) per production model; an empty list means the file matches its pins.
    Without ``hash_tensors`` only presence and size are checked (a listing, not a verification)."""
    pinned = pins()
    for key in SPECS:
        path = model_path(models_dir, key)
        if key not in pinned:
            yield key, path, [Mismatch("pin", "present", "absent")]
        elif not hash_tensors:
            size = path.stat().st_size if path.is_file() else None
            yield key, path, [] if size == pinned[key]["bytes"] else [Mismatch("file", "present", "missing or resized")]
        else:
            yield key, path, verify_file(path, pinned[key])
