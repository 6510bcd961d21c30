"""The production basket's generator on a GPU: CuPy draws the same bytes as NumPy, tensor for
tensor (the narrow variants, whose NumPy bytes are pinned), and a production-shape model runs in
the decode runtime against the fp64 reference on the GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reference_runtime import production

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")

NARROW = {key: production.narrow(spec) for key, spec in production.SPECS.items()}


@pytest.mark.parametrize("key", sorted(NARROW))
def test_cupy_draws_the_bytes_numpy_draws(key: str) -> None:
    spec = NARROW[key]
    for t in production.layout(spec):
        on_gpu = production.tensor_bytes(spec, t, cupy).get()
        assert np.array_equal(on_gpu, production.tensor_bytes(spec, t, np)), t.plan.name


@pytest.mark.parametrize("key", sorted(NARROW))
def test_gpu_generation_reproduces_the_pins(key: str, tmp_path: Path) -> None:
    generated = production.write(NARROW[key], tmp_path / "model.gguf", use_gpu=True)
    assert generated.device == "cupy"
    assert production.differences(production.pin_record(generated), production.pins()[NARROW[key].key]) == ""


@pytest.mark.parametrize("key", sorted(NARROW))
def test_runtime_decodes_a_narrow_production_model_like_the_gpu_reference(key: str, tmp_path: Path) -> None:
    from harness.divergence import compare, normalize
    from reference_runtime import corpus
    from reference_runtime.gguf_model import GGUFModel
    from reference_runtime.reference import Forward
    from reference_runtime.runtime.decode import DecodeRuntime
    from reference_runtime.runtime.device import DeviceModel

    path = production.write(NARROW[key], tmp_path / "model.gguf", use_gpu=True).path
    with GGUFModel.open(path) as model:
        tokens = corpus.for_model(model).tokens[:160] % NARROW[key].n_vocab
        ref = Forward(model, xp=cupy).logprobs(tokens).get()
        rt = DecodeRuntime(DeviceModel(model), n_ctx=len(tokens))
        logits = rt.teacher_forced(tokens)
    d = compare(ref[:-1], normalize(logits)[:-1], targets=tokens[1:])
    print(key, d)
    assert d.top1_agreement_confident >= 0.99
    assert d.kl_mean <= 0.01
