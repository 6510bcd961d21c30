"""The production basket's code at reduced size: the Q4_K_M type map against llama.cpp's own
quantizer, the direct block generator's statistics and determinism, pins and verification, and the
generated file as our reader and llama.cpp read it. The production models themselves are never
generated in CI; their narrow variants keep every tensor name, depth and row-length remainder."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from reference_runtime import basket, blockgen, production, q4_k_m
from reference_runtime.gguf_model import GGUFModel

QT = gguf.GGMLQuantizationType
NARROW = {key: production.narrow(spec) for key, spec in production.SPECS.items()}


def splitmix64(key: int, counter: int) -> int:
    """The published SplitMix64 step, in Python integers: the oracle for the vectorised one."""
    z = (key + counter * 0x9E3779B97F4A7C15) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return z ^ (z >> 31)


def test_random_words_are_splitmix64_of_the_counter() -> None:
    assert int(blockgen.random_u64(0, 1)[0]) == 0xE220A8397B1DCDAF  # the reference sequence from seed 0
    key = blockgen.tensor_key(7, "blk.0.attn_q.weight")
    words = blockgen.random_u64(key, 1000)
    assert [int(w) for w in words[[0, 1, 499, 999]]] == [splitmix64(key, c) for c in (1, 2, 500, 1000)]
    assert blockgen.tensor_key(7, "a") != blockgen.tensor_key(7, "b") != blockgen.tensor_key(8, "b")


@pytest.mark.parametrize("qtype", [QT.Q4_K, QT.Q6_K, QT.Q5_0, QT.Q8_0, QT.F32])
def test_blocks_dequantize_to_mean_zero_and_the_asked_spread(qtype: QT) -> None:
    std, shape = 0.02, (64, 4096)
    data = blockgen.quantized_tensor(blockgen.tensor_key(1, qtype.name), qtype, shape, std)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    assert data.nbytes == shape[0] * shape[1] // block * size
    values = gguf.quants.dequantize(data.reshape(shape[0], -1), qtype).astype(np.float64)
    assert values.shape == shape
    assert abs(values.mean()) < 0.01 * std
    assert values.std() == pytest.approx(std, rel=0.02)
    assert np.abs(values.mean(axis=1)).max() < 0.1 * std  # every row centred, not only on average


def test_q4_k_sub_blocks_are_centred_exactly() -> None:
    """dmin = 7.5 d and m = sc: each sub-block's offset cancels the mean of its 4-bit values."""
    data = blockgen.quantized_tensor(5, QT.Q4_K, (8, 1024), 0.05).reshape(-1, 144)
    d = data[:, 0:2].copy().view(np.float16).astype(np.float64)
    dmin = data[:, 2:4].copy().view(np.float16).astype(np.float64)
    assert np.allclose(dmin, 7.5 * d, rtol=1e-3)
    q = data[:, 4:16].astype(np.int64)
    sc = np.concatenate([q[:, 0:4] & 63, (q[:, 8:12] & 15) | ((q[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([q[:, 4:8] & 63, (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)], axis=1)
    assert np.array_equal(sc, m) and sc.min() >= 48 and sc.max() <= 63
    assert len(np.unique(sc)) == 16  # every scale value drawn


def test_llama_cpp_more_bits_layers() -> None:
    chosen = [i for i in range(48) if q4_k_m.use_more_bits(i, 48)]
    assert chosen[:8] == [0, 1, 2, 3, 4, 5, 8, 11] and chosen[-7:] == [41, 42, 43, 44, 45, 46, 47]


@pytest.mark.parametrize("key", sorted(production.SPECS))
def test_narrow_variant_has_the_production_type_map(key: str) -> None:
    """Same names, depth and row-length remainders: the narrow map is the production map."""
    full = {t.plan.name: t.qtype for t in production.layout(production.SPECS[key])}
    small = {t.plan.name: t.qtype for t in production.layout(NARROW[key])}
    assert small == full
    kinds = set(full.values())
    assert {QT.Q4_K, QT.Q6_K, QT.F32} <= kinds
    if key.startswith("gemma4"):
        assert {QT.Q5_0, QT.Q8_0} <= kinds  # expert FFN 704 and shared FFN 2112 are not multiples of 256


def test_production_sizes_are_those_of_real_q4_k_m_files() -> None:
    sizes = {key: sum(t.nbytes for t in production.layout(spec)) for key, spec in production.SPECS.items()}
    # Published Q4_K_M GGUFs: Qwen3-30B-A3B 18.6 GB; Gemma 4 26B-A4B about 16-17 GB with its
    # tied embedding (ours stores a separate LM head: +0.4 GB).
    assert 17.0e9 < sizes["qwen3moe-30b-a3b"] < 19.5e9, sizes
    assert 15.0e9 < sizes["gemma4-26b-a4b"] < 18.5e9, sizes


@pytest.mark.llama
@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(production.SPECS))
def test_type_map_matches_llama_cpps_quantizer(key: str, tmp_path: Path) -> None:
    spec = NARROW[key]
    f32, quantized = tmp_path / "f32.gguf", tmp_path / "q.gguf"
    basket.write_f32(spec, f32)
    basket.quantize_q4_k_m(f32, quantized)
    got = {t.name: QT(int(t.tensor_type)) for t in gguf.GGUFReader(str(quantized)).tensors}
    ours = {t.plan.name: t.qtype for t in production.layout(spec)}
    wrong = {name: (ours.get(name), got[name]) for name in got if ours.get(name) != got[name]}
    assert not wrong, f"ours vs llama.cpp: {wrong}"
    assert set(ours) == set(got)


@pytest.fixture(scope="module")
def narrow_files(tmp_path_factory) -> dict[str, production.Generated]:
    directory = tmp_path_factory.mktemp("production-narrow")
    return {key: production.write(spec, directory / f"{key}.gguf", use_gpu=False) for key, spec in NARROW.items()}


@pytest.mark.parametrize("key", sorted(NARROW))
def test_numpy_generation_reproduces_the_pins(key: str, narrow_files) -> None:
    """The pins of the narrow variants were made by this generator; the GPU test holds CuPy to them."""
    pinned = production.pins()[NARROW[key].key]
    assert production.differences(production.pin_record(narrow_files[key]), pinned) == ""


@pytest.mark.parametrize("key", sorted(NARROW))
def test_generated_file_reads_back_as_planned(key: str, narrow_files) -> None:
    generated = narrow_files[key]
    planned = production.layout(NARROW[key])
    with GGUFModel.open(generated.path) as model:
        assert model.arch == NARROW[key].arch
        assert list(model.tensors) == [t.plan.name for t in planned]
        for t in planned[:40]:
            assert model.spec(t.plan.name).qtype == t.qtype
            assert np.array_equal(model.raw(t.plan.name), production.tensor_bytes(NARROW[key], t)), t.plan.name
    assert production.verify_file(generated.path, production.pin_record(generated)) == []


def test_verify_names_the_tensor_that_differs(narrow_files, tmp_path: Path) -> None:
    generated = narrow_files["qwen3moe-30b-a3b"]
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(generated.path.read_bytes())
    target = next(t for t in gguf.GGUFReader(str(generated.path)).tensors if t.name == "blk.17.ffn_down_exps.weight")
    at = int(target.data_offset) + 1000
    with broken.open("r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    problems = production.verify_file(broken, production.pin_record(generated), workers=2)
    assert [p.what for p in problems] == ["blk.17.ffn_down_exps.weight"]
    broken.write_bytes(generated.path.read_bytes()[:-10])
    assert [p.what for p in production.verify_file(broken, production.pin_record(generated))] == ["file"]
    assert [p.what for p in production.verify_file(tmp_path / "absent.gguf", {})] == ["file"]


@pytest.mark.llama
@pytest.mark.parametrize("key", sorted(NARROW))
def test_llama_cpp_reads_the_generated_blocks_as_our_reference_does(key: str, narrow_files) -> None:
    from harness.divergence import compare, normalize
    from reference_runtime import corpus, llama_cpp_logits
    from reference_runtime.reference import Forward

    path = narrow_files[key].path
    with GGUFModel.open(path) as model:
        tokens = corpus.for_model(model).tokens[:96] % NARROW[key].n_vocab
        ref = Forward(model).logprobs(tokens)
    cand = normalize(llama_cpp_logits.logits(path, tokens))
    d = compare(ref[:-1], cand[:-1], targets=tokens[1:])
    print(key, d)
    # llama.cpp's CPU path rounds activations to 8 bits for its dot products, with kernels picked by
    # the CPU's SIMD (0.9625 on one AMD EPYC box, 0.97 or more on the boxes CI ran on); a misread block or type
    # would agree on ~1/n_vocab of the positions and put the KL in the units.
    assert d.top1_agreement_confident >= 0.9
    assert d.kl_mean <= 0.02
    # Peaked next-token distributions, as the basket's scaling intends.
    assert float(np.exp(ref.max(axis=1)).mean()) > 0.2


@pytest.mark.parametrize("key", sorted(NARROW))
def test_a_gpu_too_small_is_refused_naming_the_memory_needed(key: str, narrow_files) -> None:
    from reference_runtime.errors import DeviceTooSmall
    from reference_runtime.runtime.plan import DEVICE_HEADROOM_BYTES, build_plan, require_fits

    with GGUFModel.open(narrow_files[key].path) as model:
        tensor_bytes = sum(int(model.raw(name).nbytes) for name in model.tensors)
        plan = build_plan(model, 4096)
    working = plan.working_bytes(runtimes=2)
    assert 0 < plan.working_bytes(runtimes=1) < working  # each runtime has its own logits history
    kv = sum(b.count * np.dtype(b.dtype).itemsize for b in plan.buffers.values() if b.kind == "kv")
    assert kv > 0 and working > kv  # the KV cache at n_ctx 4096 is counted once: the runtimes share it
    need = tensor_bytes + working + DEVICE_HEADROOM_BYTES
    require_fits(plan, tensor_bytes, key, need, 2 * need)
    with pytest.raises(DeviceTooSmall, match=rf"{key}: the evaluation needs .* GiB of GPU memory .* n_ctx 4096"):
        require_fits(plan, tensor_bytes, key, need - 1, 2 * need)


@pytest.mark.parametrize("key", sorted(NARROW))
def test_reference_at_selected_positions_equals_those_rows_of_the_whole(key: str, narrow_files) -> None:
    """The long-context probe projects only its last positions through the output head: the same
    rows, to float64 rounding, as the whole forward's."""
    from reference_runtime import corpus
    from reference_runtime.reference import Forward

    with GGUFModel.open(narrow_files[key].path) as model:
        tokens = corpus.for_model(model).tokens[:80] % NARROW[key].n_vocab
        whole = Forward(model).logprobs(tokens)
        at = [3, 41, 79]
        picked = Forward(model).logprobs(tokens, at=at)
    assert picked.shape == (3, whole.shape[1])
    np.testing.assert_allclose(picked, whole[at], rtol=0, atol=1e-9)


def test_a_corrupt_production_model_is_an_evaluation_error_naming_the_tensor(narrow_files, tmp_path: Path,
                                                                            monkeypatch) -> None:
    """Before every evaluation the production files are checked against their pins: a flipped byte
    is an infrastructure error that names the tensor and the command that regenerates it."""
    from evalbot.config import load_config
    from evalbot.errors import EvalbotError
    from evalbot.evaluator import _resolve
    from reference_runtime import basket

    spec = NARROW["gemma4-26b-a4b"]
    monkeypatch.setitem(production.SPECS, spec.key, spec)  # the narrow variant stands in for the full one
    cfg = load_config(None, environ={"EVALBOT_PATHS__DATA_DIR": str(tmp_path)})
    target = basket.model_path(tmp_path / "models", spec.key)
    target.parent.mkdir(parents=True)
    data = bytearray(narrow_files["gemma4-26b-a4b"].path.read_bytes())
    target.write_bytes(data)
    assert _resolve(cfg, [spec.key], "models") == {spec.key: target}

    tensor = next(t for t in gguf.GGUFReader(str(target)).tensors if t.name == "blk.5.attn_q.weight")
    data[int(tensor.data_offset) + 17] ^= 0x01
    target.write_bytes(data)
    with pytest.raises(EvalbotError, match=r"blk\.5\.attn_q\.weight: expected .*evalbot models build --set production"):
        _resolve(cfg, [spec.key], "models")
