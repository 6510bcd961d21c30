"""What a cubin exports, read from its ELF file (no CUDA driver needed): the entry kernels (symbol
table) and each one's parameter layout (the ``.nv.info.<kernel>`` attributes).

A manifest names each launch's kernel; checking the names and parameter lists against the cubin at
build time turns a typo or a wrong signature into a REJECT naming the slot, instead of a load
failure or garbage arguments on the GPU later.
"""

from __future__ import annotations

import struct

from evalbot.errors import EvalbotError

_SHT_SYMTAB = 2
_STB_GLOBAL = 1
_STT_FUNC = 2
_STO_CUDA_ENTRY = 0x10  # st_other bit NVIDIA sets on __global__ functions
_EIFMT_SVAL = 4  # .nv.info item formats: 4 carries a 16-bit length and a payload, the others 2 bytes
_EIATTR_KPARAM_INFO = 0x17  # one per kernel parameter: ordinal, offset in the parameter buffer, size


class CubinError(EvalbotError):
    pass


def _sections(data: bytes) -> list[tuple[int, ...]]:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise CubinError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    return [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]


def kernel_params(data: bytes) -> dict[str, tuple[tuple[int, int], ...]]:
    """Each kernel's parameters as (offset, size) in bytes, in declaration order, from the
    ``EIATTR_KPARAM_INFO`` records of its ``.nv.info.<kernel>`` section (unused parameters
    included). A kernel without parameters has no section entry and maps to ``()``."""
    try:
        sections = _sections(data)
        (shstrndx,) = struct.unpack_from("<H", data, 0x3E)
        names_at = sections[shstrndx][4]
        out: dict[str, tuple[tuple[int, int], ...]] = {}
        for name_off, _kind, _flags, _addr, offset, size, *_ in sections:
            end = data.index(b"\0", names_at + name_off)
            name = data[names_at + name_off : end].decode("utf-8", "replace")
            if not name.startswith(".nv.info."):
                continue
            params: dict[int, tuple[int, int]] = {}
            pos = offset
            while pos + 4 <= offset + size:
                fmt, attr = data[pos], data[pos + 1]
                if fmt != _EIFMT_SVAL:
                    pos += 4
                    continue
                (length,) = struct.unpack_from("<H", data, pos + 2)
                if attr == _EIATTR_KPARAM_INFO and length >= 12:
                    _index, ordinal, param_offset, flags = struct.unpack_from("<IHHI", data, pos + 4)
                    params[ordinal] = (param_offset, (flags >> 18) & 0x3FFF)
                pos += 4 + length
            out[name.removeprefix(".nv.info.")] = tuple(params[i] for i in sorted(params))
        return out
    except (struct.error, IndexError, ValueError) as exc:
        raise CubinError(f"malformed cubin: {exc}") from None


def entry_kernels(data: bytes) -> frozenset[str]:
    """Names of the ``__global__`` functions defined in an ELF64 little-endian cubin."""
    try:
        sections = _sections(data)
        names: set[str] = set()
        for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
            if kind != _SHT_SYMTAB or entsize != 24:
                continue
            strtab_offset = sections[link][4]
            for pos in range(offset, offset + size, entsize):
                st_name, st_info, st_other, st_shndx = struct.unpack_from("<IBBH", data, pos)
                if st_info >> 4 == _STB_GLOBAL and st_info & 0xF == _STT_FUNC and st_other & _STO_CUDA_ENTRY \
                        and st_shndx != 0:
                    end = data.index(b"\0", strtab_offset + st_name)
                    names.add(data[strtab_offset + st_name : end].decode("utf-8", "replace"))
        return frozenset(names)
    except (struct.error, IndexError, ValueError) as exc:
        raise CubinError(f"malformed cubin: {exc}") from None
