"""The entry kernels a cubin exports, read from its ELF symbol table (no CUDA driver needed).

A manifest names each launch's kernel; checking the names against the cubin at build time turns a
typo into a REJECT naming the slot, instead of a load failure on the GPU later.
"""

from __future__ import annotations

import struct

from evalbot.errors import EvalbotError

_SHT_SYMTAB = 2
_STB_GLOBAL = 1
_STT_FUNC = 2
_STO_CUDA_ENTRY = 0x10  # st_other bit NVIDIA sets on __global__ functions


class CubinError(EvalbotError):
    pass


def entry_kernels(data: bytes) -> frozenset[str]:
    """Names of the ``__global__`` functions defined in an ELF64 little-endian cubin."""
    try:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise CubinError("not a 64-bit little-endian ELF file")
        (shoff,) = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
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
