"""A model's weights on the GPU: every tensor's raw GGML blocks, uploaded once and shared by any
number of runtimes (candidate and frontier measure against the same bytes)."""

from __future__ import annotations

import cupy
import numpy as np

from reference_runtime.gguf_model import GGUFModel


class DeviceModel:
    def __init__(self, model: GGUFModel) -> None:
        self.model = model
        # One allocation per tensor: CuPy's pool hands out 256-byte-aligned blocks, which every
        # block format's alignment needs.
        self.arrays: dict[str, cupy.ndarray] = {
            name: cupy.asarray(np.asarray(model.raw(name))) for name in model.tensors
        }

    def ptr(self, name: str) -> int:
        return int(self.arrays[name].data.ptr)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())
