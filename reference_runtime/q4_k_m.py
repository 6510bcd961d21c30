"""The tensor types llama.cpp's Q4_K_M mixture gives each tensor of the basket's architectures.

A transcription of ``llama_tensor_get_type`` (src/llama-quant.cpp) restricted to what decides the
type for qwen3moe and gemma4 at ftype Q4_K_M, so the production basket can write quantized blocks
directly and still hold exactly the types a real Q4_K_M file holds. ``tests/test_q4_k_m.py``
quantizes a narrow, full-depth model of each architecture with llama.cpp itself and compares
every tensor's type with this table.

The rules, in llama.cpp's order:

* Only tensors of two or more dimensions whose names end in ``weight`` are quantized; norms
  (``*_norm.weight``) and routers (``ffn_gate_inp.weight``) keep their source type.
* ``output.weight`` (or ``token_embd.weight`` when the output is tied to it) is Q6_K, or Q8_0 when
  its rows are not a multiple of 256.
* ``attn_v`` is Q6_K on the layers ``use_more_bits`` picks, counted over the attn_v tensors in file
  order (Gemma 4's global layers have none: K doubles as V); Q8_0 on models of exactly 8 experts.
* ``attn_k`` is Q8_0 on models of exactly 8 experts.
* Every ``ffn_down*`` (dense, shared or experts) is Q6_K on the layers ``use_more_bits`` picks, the
  layer read from the tensor's name when the model has experts (else counted).
* ``attn_output`` is Q5_K on models of exactly 8 experts.
* Everything else is the default, Q4_K.
* Finally a row length that is not a multiple of the type's block falls back: Q4_K to Q5_0, Q6_K
  to Q8_0, and F16 when even 32 does not divide it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import gguf

QT = gguf.GGMLQuantizationType

_LAYER = re.compile(r"blk\.(\d+)\.")
_FALLBACK = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of the layers that get more bits: the first and last eighth, and every
    third layer in between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _quantized(name: str, shape: Sequence[int]) -> bool:
    return (len(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name
            and "ffn_gate_inp.weight" not in name)


def _fallback(qtype: QT, n_cols: int) -> QT:
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if n_cols % block == 0:
        return qtype
    demoted = _FALLBACK[qtype]
    return demoted if n_cols % gguf.GGML_QUANT_SIZES[demoted][0] == 0 else QT.F16


def tensor_types(tensors: Iterable[tuple[str, Sequence[int], QT]], *, n_layer: int,
                 n_expert: int) -> dict[str, QT]:
    """Each tensor's Q4_K_M type. ``tensors`` are (name, shape in NumPy order, source type) in the
    order the file lists them: the attn_v rule counts in that order, as the quantizer does."""
    listed = list(tensors)
    names = {name for name, _, _ in listed}
    tied = "output.weight" not in names
    n_attn_v = sum("attn_v.weight" in name for name in names)
    i_attn_v = i_ffn_down = 0
    out: dict[str, QT] = {}
    for name, shape, source in listed:
        if not _quantized(name, shape):
            out[name] = source
            continue
        qtype = QT.Q4_K
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            qtype = QT.Q6_K if shape[-1] % 256 == 0 else QT.Q8_0
        elif "attn_v.weight" in name:
            if use_more_bits(i_attn_v, n_attn_v):
                qtype = QT.Q6_K
            if n_expert == 8:
                qtype = QT.Q8_0
            i_attn_v += 1
        elif "attn_k.weight" in name:
            if n_expert == 8:
                qtype = QT.Q8_0
        elif "ffn_down" in name and "ffn_up" not in name and "ffn_gate" not in name:
            # With experts the layer comes from the name (Mixtral interleaves its experts' tensors).
            layer = i_ffn_down
            if n_expert > 1:
                match = _LAYER.match(name)
                if match is None:
                    raise ValueError(f"cannot read the layer of {name!r}")
                layer = int(match.group(1))
            if use_more_bits(layer, n_layer):
                qtype = QT.Q6_K
            i_ffn_down += 1
        elif "attn_output.weight" in name and n_expert == 8:
            qtype = QT.Q5_K
        out[name] = _fallback(qtype, int(shape[-1]))
    return out
