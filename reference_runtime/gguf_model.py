"""A GGUF file, memory-mapped: metadata, the tensor table, raw tensor bytes and exact float64 weights.

The header is parsed here rather than with ``gguf.GGUFReader``: the reader builds a numpy view per
metadata array element, which costs ~8 s on Gemma 3's 262k-token vocabulary, against ~0.1 s for
this walk that decodes a value only when asked for it. Owning the parser also lets every malformed
or truncated file fail with one line that says where and what. The ``gguf`` package still supplies
the type enums and block sizes, and ``gguf.quants`` is the oracle the dequantization is tested against.

Format (little-endian): ``GGUF`` magic, u32 version, u64 tensor count, u64 metadata count; the
metadata (u64-length string key, u32 value type, value); the tensor infos (name, u32 n_dims, u64 ne
per dim innermost first, u32 type, u64 offset); padding to ``general.alignment`` (default 32); data.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self

import gguf
import numpy as np

from reference_runtime import quants
from reference_runtime.errors import ReferenceRuntimeError
from reference_runtime.file_digest import sha256_file

VT = gguf.GGUFValueType

_SCALARS: dict[gguf.GGUFValueType, struct.Struct] = {
    VT.UINT8: struct.Struct("<B"),
    VT.INT8: struct.Struct("<b"),
    VT.UINT16: struct.Struct("<H"),
    VT.INT16: struct.Struct("<h"),
    VT.UINT32: struct.Struct("<I"),
    VT.INT32: struct.Struct("<i"),
    VT.FLOAT32: struct.Struct("<f"),
    VT.BOOL: struct.Struct("<B"),
    VT.UINT64: struct.Struct("<Q"),
    VT.INT64: struct.Struct("<q"),
    VT.FLOAT64: struct.Struct("<d"),
}
_U32 = _SCALARS[VT.UINT32]
_U64 = _SCALARS[VT.UINT64]
_SUPPORTED_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS
# Smallest encodings, used to reject absurd counts before looping over them.
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8

_MISSING: Any = object()


class GGUFError(ReferenceRuntimeError):
    """A GGUF file that cannot be used; the message names the file and what is wrong, on one line."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    qtype: gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # numpy order (outermost first): GGUF's ne reversed
    n_bytes: int


class _Header:
    """Bounds-checked little-endian reads from the mapped file, worded as GGUF errors."""

    def __init__(self, buf: mmap.mmap, path: Path) -> None:
        self.buf = buf
        self.size = len(buf)
        self.path = path

    def fail(self, problem: str) -> GGUFError:
        return GGUFError(f"{self.path}: {problem}")

    def need(self, pos: int, n: int, what: str) -> None:
        if n < 0 or pos + n > self.size:
            raise self.fail(
                f"truncated header: {what} at byte {pos} needs {n} bytes "
                f"but the file ends at byte {self.size}"
            )

    def scalar(self, pos: int, kind: gguf.GGUFValueType, what: str) -> int | float | bool:
        fmt = _SCALARS[kind]
        self.need(pos, fmt.size, what)
        value = fmt.unpack_from(self.buf, pos)[0]
        return bool(value) if kind == VT.BOOL else value

    def u32(self, pos: int, what: str) -> int:
        return int(self.scalar(pos, VT.UINT32, what))

    def u64(self, pos: int, what: str) -> int:
        return int(self.scalar(pos, VT.UINT64, what))

    def string(self, pos: int, what: str) -> tuple[str, int]:
        """The string at ``pos`` and the position after it."""
        n = self.u64(pos, f"length of {what}")
        self.need(pos + 8, n, what)
        raw = self.buf[pos + 8 : pos + 8 + n]
        try:
            return raw.decode("utf-8"), pos + 8 + n
        except UnicodeDecodeError:
            raise self.fail(f"{what} at byte {pos} is not valid UTF-8") from None

    def value_type(self, pos: int, what: str) -> gguf.GGUFValueType:
        raw = self.u32(pos, f"type of {what}")
        try:
            return VT(raw)
        except ValueError:
            raise self.fail(f"{what} has unknown value type {raw} at byte {pos}") from None

    def check_count(self, pos: int, count: int, min_bytes: int, what: str) -> None:
        # A count that cannot fit in the rest of the file means truncation or garbage; reject it
        # before looping over it.
        if count * min_bytes > self.size - pos:
            raise self.fail(
                f"truncated or corrupt header: {count} {what} at byte {pos} cannot fit in the "
                f"{self.size - pos} bytes left"
            )

    def skip_value(self, pos: int, kind: gguf.GGUFValueType, what: str) -> int:
        """Position after the value at ``pos``, without decoding it."""
        if kind in _SCALARS:
            self.need(pos, _SCALARS[kind].size, what)
            return pos + _SCALARS[kind].size
        if kind == VT.STRING:
            n = self.u64(pos, f"length of {what}")
            self.need(pos + 8, n, what)
            return pos + 8 + n
        item, count, pos = self.array_head(pos, what)
        if item in _SCALARS:
            size = _SCALARS[item].size * count
            self.need(pos, size, what)
            return pos + size
        for i in range(count):
            pos = self.skip_value(pos, item, f"{what}[{i}]")
        return pos

    def array_head(self, pos: int, what: str) -> tuple[gguf.GGUFValueType, int, int]:
        item = self.value_type(pos, f"items of {what}")
        count = self.u64(pos + 4, f"length of {what}")
        pos += 12
        self.check_count(pos, count, _SCALARS[item].size if item in _SCALARS else 8, f"items of {what}")
        return item, count, pos

    def value(self, pos: int, kind: gguf.GGUFValueType, what: str) -> Any:
        if kind in _SCALARS:
            return self.scalar(pos, kind, what)
        if kind == VT.STRING:
            return self.string(pos, what)[0]
        item, count, pos = self.array_head(pos, what)
        if item in _SCALARS:
            fmt = _SCALARS[item].format
            values = np.frombuffer(self.buf, dtype=np.dtype(fmt), count=count, offset=pos).tolist()
            return [bool(v) for v in values] if item == VT.BOOL else values
        out = []
        for i in range(count):
            if item == VT.STRING:  # the common case (vocabularies): one pass per string
                text, pos = self.string(pos, f"{what}[{i}]")
                out.append(text)
            else:
                out.append(self.value(pos, item, f"{what}[{i}]"))
                pos = self.skip_value(pos, item, f"{what}[{i}]")
        return out


class GGUFModel:
    """An open GGUF file. Tensor data stays on disk until a tensor is read."""

    path: Path
    arch: str
    tensors: dict[str, TensorSpec]

    def __init__(self, path: Path, buf: mmap.mmap) -> None:
        self.path = path
        self._buf: mmap.mmap | None = buf
        self._data: np.ndarray | None = None
        self._sha256: str | None = None
        self._values: dict[str, Any] = {}
        self._kv, self.tensors, self._offsets = _parse(_Header(buf, path))
        arch = self.get("general.architecture", None)
        if not isinstance(arch, str) or not arch:
            raise GGUFError(f"{path}: no general.architecture in the metadata")
        self.arch = arch
        # Only now: an array over the map pins it, and a file that failed above must be unmappable.
        self._data = np.frombuffer(buf, dtype=np.uint8)

    @classmethod
    def open(cls, path: str | Path) -> GGUFModel:
        path = Path(path)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise GGUFError(f"{path}: empty file, not a GGUF model")
                buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise GGUFError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise GGUFError(f"{path}: is a directory, not a GGUF file") from None
        except PermissionError:
            raise GGUFError(f"{path}: cannot read the file: permission denied") from None
        except OSError as exc:
            raise GGUFError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
        try:
            return cls(path, buf)
        except BaseException:
            buf.close()  # nothing has exported the buffer yet (see __init__)
            raise

    # -- metadata ---------------------------------------------------------------------------

    def keys(self) -> list[str]:
        return list(self._kv)

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """A metadata value as plain Python (str, int, float, bool or a list of those).

        Decoded on first use and cached; a returned list is shared, so treat it as read-only."""
        if key in self._values:
            return self._values[key]
        if key not in self._kv:
            if default is _MISSING:
                raise GGUFError(f"{self.path}: no metadata key '{key}'")
            return default
        kind, pos = self._kv[key]
        value = _Header(self._mapped(), self.path).value(pos, kind, f"value of '{key}'")
        self._values[key] = value
        return value

    def arch_get(self, suffix: str, default: Any = _MISSING) -> Any:
        return self.get(f"{self.arch}.{suffix}", default)

    # -- tensors ----------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        return name in self.tensors

    def spec(self, name: str) -> TensorSpec:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFError(f"{self.path}: has no tensor '{name}'") from None

    def data_offset(self, name: str) -> int:
        """Byte offset of the tensor's data from the start of the file."""
        self.spec(name)
        return self._offsets[name]

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes: a flat uint8 view of the mapped file (no copy)."""
        spec = self.spec(name)
        data = self._array()
        start = self._offsets[name]
        return data[start : start + spec.n_bytes]

    def dequantize(self, name: str, xp: ModuleType = np, rows: slice | None = None) -> Any:
        """The tensor as float64 of ``spec.shape``; ``rows`` takes a range of the outermost axis
        (rows of a matrix, experts of a 3-D expert tensor) without touching the rest."""
        spec = self.spec(name)
        data = self.raw(name)
        shape = spec.shape
        if rows is not None:
            if not isinstance(rows, slice):
                raise TypeError(f"rows must be a slice of the outermost axis, got {type(rows).__name__}")
            data, shape = self._row_range(spec, data, rows)
        try:
            return quants.dequantize(data, spec.qtype, shape, xp)
        except quants.DequantError as exc:
            raise GGUFError(f"{self.path}: tensor '{name}': {exc}") from None

    def _row_range(
        self, spec: TensorSpec, data: np.ndarray, rows: slice
    ) -> tuple[np.ndarray, tuple[int, ...]]:
        outer = spec.shape[0]
        inner = spec.n_bytes // outer if outer else 0
        block, _ = quants.block_layout(spec.qtype)
        per_row = 1
        for dim in spec.shape[1:]:
            per_row *= dim
        if per_row % block:
            raise GGUFError(
                f"{self.path}: tensor '{spec.name}': cannot take rows of a {len(spec.shape)}-D "
                f"{spec.qtype.name} tensor (a row is not a whole number of blocks)"
            )
        picked = data.reshape(outer, inner)[rows]
        return picked, (picked.shape[0], *spec.shape[1:])

    # -- file -------------------------------------------------------------------------------

    def sha256(self, cache_dir: Path | None = None) -> str:
        """SHA-256 of the whole file, read in chunks (not through the map) and cached; with
        ``cache_dir``, also across processes while the file is unchanged (``file_digest``)."""
        if self._sha256 is None:
            try:
                self._sha256 = sha256_file(self.path, cache_dir)
            except OSError as exc:
                raise GGUFError(f"{self.path}: cannot read the file: {exc.strerror or exc}") from None
        return self._sha256

    def close(self) -> None:
        """Unmap the file. Arrays returned by ``raw`` stay valid: they keep the mapping alive."""
        self._data = None
        buf, self._buf = self._buf, None
        if buf is not None:
            try:
                buf.close()
            except BufferError:
                pass  # views handed out still use it; the OS unmaps once they are gone

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GGUFModel({str(self.path)!r}, arch={self.arch!r}, tensors={len(self.tensors)})"

    def _mapped(self) -> mmap.mmap:
        if self._buf is None:
            raise GGUFError(f"{self.path}: the model was closed")
        return self._buf

    def _array(self) -> np.ndarray:
        if self._data is None:
            raise GGUFError(f"{self.path}: the model was closed")
        return self._data


def _parse(
    h: _Header,
) -> tuple[dict[str, tuple[gguf.GGUFValueType, int]], dict[str, TensorSpec], dict[str, int]]:
    """Walk the header: metadata positions (decoded later, on demand), tensor specs and data offsets."""
    if h.size < 4 or h.buf[0:4] != b"GGUF":
        raise h.fail(f"not a GGUF file (starts with {h.buf[0:4]!r}, expected b'GGUF')")
    version = h.u32(4, "version")
    if version not in _SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0:
            raise h.fail("byte-swapped (big-endian) GGUF; only little-endian files are supported")
        raise h.fail(f"GGUF version {version} is not supported (only {_SUPPORTED_VERSIONS})")
    n_tensors = h.u64(8, "tensor count")
    n_kv = h.u64(16, "metadata count")
    pos = 24
    h.check_count(pos, n_kv, _MIN_KV_BYTES, "metadata entries")

    kv: dict[str, tuple[gguf.GGUFValueType, int]] = {}
    for i in range(n_kv):
        key, pos = h.string(pos, f"metadata key #{i}")
        if key in kv:
            raise h.fail(f"duplicate metadata key '{key}'")
        kind = h.value_type(pos, f"metadata '{key}'")
        kv[key] = (kind, pos + 4)
        pos = h.skip_value(pos + 4, kind, f"value of metadata '{key}'")

    h.check_count(pos, n_tensors, _MIN_TENSOR_INFO_BYTES, "tensor infos")
    infos: list[tuple[str, gguf.GGMLQuantizationType, tuple[int, ...], int]] = []
    for i in range(n_tensors):
        name, pos = h.string(pos, f"name of tensor #{i}")
        n_dims = h.u32(pos, f"dimension count of tensor '{name}'")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise h.fail(f"tensor '{name}' has {n_dims} dimensions (1 to {_MAX_DIMS} allowed)")
        ne = [h.u64(pos + 4 + 8 * d, f"shape of tensor '{name}'") for d in range(n_dims)]
        pos += 4 + 8 * n_dims
        raw_type = h.u32(pos, f"type of tensor '{name}'")
        offset = h.u64(pos + 4, f"data offset of tensor '{name}'")
        pos += 12
        try:
            qtype = gguf.GGMLQuantizationType(raw_type)
        except ValueError:
            raise h.fail(f"tensor '{name}' has unknown GGML type id {raw_type}") from None
        infos.append((name, qtype, tuple(reversed(ne)), offset))

    alignment = _DEFAULT_ALIGNMENT
    if "general.alignment" in kv:
        kind, apos = kv["general.alignment"]
        alignment = int(h.scalar(apos, kind, "general.alignment")) if kind in _SCALARS else 0
        if kind != VT.UINT32 or alignment <= 0 or alignment & (alignment - 1):
            raise h.fail("general.alignment must be a u32 power of two")
    data_start = -(-pos // alignment) * alignment

    tensors: dict[str, TensorSpec] = {}
    offsets: dict[str, int] = {}
    for name, qtype, shape, offset in infos:
        if name in tensors:
            raise h.fail(f"duplicate tensor '{name}'")
        try:
            n_bytes = quants.n_bytes_for(qtype, shape)
        except quants.DequantError as exc:
            raise h.fail(f"tensor '{name}': {exc}") from None
        if offset % alignment:
            raise h.fail(
                f"tensor '{name}' data offset {offset} is not a multiple of the alignment {alignment}"
            )
        start = data_start + offset
        if start + n_bytes > h.size:
            raise h.fail(
                f"truncated file: tensor '{name}' data ends at byte {start + n_bytes} "
                f"but the file has only {h.size} bytes"
            )
        tensors[name] = TensorSpec(name, qtype, shape, n_bytes)
        offsets[name] = start
    return kv, tensors, offsets
