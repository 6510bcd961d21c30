"""What a build concluded, per slot and overall. A failed build is a value, never an exception."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalbot.build import diagnostics


@dataclass(frozen=True)
class SlotBuild:
    slot: str
    ok: bool
    cached: bool
    seconds: float
    cubin: Path | None  # in the build cache; None when the slot failed
    kernels: tuple[str, ...]
    reason: str = ""  # the REJECT reason: "slot NAME: <first error line or limit hit>"
    log: str = ""  # the compiler's output, capped at the log limit

    def to_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot, "ok": self.ok, "cached": self.cached, "seconds": round(self.seconds, 3),
            "cubin": self.cubin.name if self.cubin else None, "kernels": list(self.kernels),
            "reason": self.reason, "log": diagnostics.trim(self.log) if not self.ok else "",
        }


@dataclass(frozen=True)
class BuildReport:
    tree: Path
    arch: str
    backend: str
    sandboxed: bool
    toolchain: str
    slots: tuple[SlotBuild, ...]
    reasons: tuple[str, ...]  # every REJECT reason: manifest errors, then failed slots in order
    seconds: float
    name: str = ""  # the tree as reports show it (a commit, or the path)

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def label(self) -> str:
        return "OK" if self.ok else "REJECT"

    def cubins(self) -> dict[str, Path]:
        return {s.slot: s.cubin for s in self.slots if s.ok and s.cubin is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "reasons": list(self.reasons), "tree": self.name or str(self.tree),
            "arch": self.arch,
            "backend": self.backend, "sandboxed": self.sandboxed, "toolchain": self.toolchain,
            "seconds": round(self.seconds, 3), "slots": [s.to_dict() for s in self.slots],
        }
