"""The slot argument lists, read from the C header that defines them (``cuda/evalbot_slots.h``).

The header is the single source of truth: each ``EVALBOT_*_ARGS`` macro is one argument list and
an ``@slots`` tag above it names the slots that take it. Parsing it here means the Python side
(plans, the NumPy slot math, the launcher) cannot drift from what kernels are compiled against.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from reference_runtime.errors import ReferenceRuntimeError

HEADER_NAME = "evalbot_slots.h"

# How each C parameter type travels: a device pointer, or a scalar packed as this NumPy dtype.
_SCALARS = {"int": "int32", "float": "float32", "long long": "int64"}


class ABIError(ReferenceRuntimeError):
    pass


@dataclass(frozen=True)
class Param:
    name: str
    ctype: str  # as written in the header, e.g. "const float* __restrict__"

    @property
    def is_pointer(self) -> bool:
        return "*" in self.ctype

    @property
    def scalar_dtype(self) -> str:
        if self.is_pointer:
            raise ABIError(f"parameter {self.name} is a pointer")
        return _SCALARS[self.ctype]


@dataclass(frozen=True)
class SlotABI:
    macro: str
    text: str  # the macro's body with whitespace collapsed: the slot's signature
    params: tuple[Param, ...]

    def index(self, name: str) -> int:
        for i, p in enumerate(self.params):
            if p.name == name:
                return i
        raise ABIError(f"{self.macro} has no parameter {name!r}")


def cuda_dir() -> Path:
    return Path(str(resources.files("reference_runtime").joinpath("cuda")))


def header_path() -> Path:
    return cuda_dir() / HEADER_NAME


_MACRO = re.compile(r"#define\s+(EVALBOT_\w+_ARGS)\s*\\\n((?:.*\\\n)*.*)")
_TAG = re.compile(r"@slots\s+([^\n]+)")


def _parse_param(text: str, macro: str) -> Param:
    m = re.fullmatch(r"(.*?[\s*])(\w+)", text.strip())
    if not m:
        raise ABIError(f"{macro}: cannot parse parameter {text!r}")
    ctype = " ".join(m.group(1).split())
    if "*" not in ctype and ctype not in _SCALARS:
        raise ABIError(f"{macro}: parameter {m.group(2)} has unsupported type {ctype!r}")
    return Param(m.group(2), ctype)


def parse_header(text: str) -> dict[str, SlotABI]:
    """Slot name -> its argument list, from the header's text."""
    table: dict[str, SlotABI] = {}
    for match in _MACRO.finditer(text):
        macro, body = match.group(1), match.group(2)
        body = " ".join(body.replace("\\\n", " ").split())
        tags = _TAG.findall(text[: match.start()])
        if not tags:
            raise ABIError(f"{macro}: no @slots tag precedes it")
        params = tuple(_parse_param(p, macro) for p in body.split(","))
        if len({p.name for p in params}) != len(params):
            raise ABIError(f"{macro}: repeated parameter names")
        abi = SlotABI(macro, body, params)
        for slot in tags[-1].split():
            if slot in table:
                raise ABIError(f"slot {slot} is tagged on two argument lists")
            table[slot] = abi
    return table


@functools.cache
def slot_abis() -> dict[str, SlotABI]:
    return parse_header(header_path().read_text())
