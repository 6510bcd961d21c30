"""A successful build as the runtime's kernel table: one :class:`SlotKernel` per overridden slot.

The manifest's launch geometry stays data: each expression is evaluated by the safe evaluator
against the runtime's shape environment at capture time. The objects pickle, so the GPU worker
process receives them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from evalbot import safe_expr
from evalbot.build.verdict import BuildReport
from evalbot.errors import EvalbotError
from evalbot.manifest import Manifest
from reference_runtime.runtime.kernels import LaunchSpec, SlotKernel


@dataclass(frozen=True)
class ExprDims:
    exprs: tuple[safe_expr.Expr, ...]

    def __call__(self, env: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(e.evaluate(env) for e in self.exprs)


@dataclass(frozen=True)
class ExprSize:
    expr: safe_expr.Expr

    def __call__(self, env: Mapping[str, int]) -> int:
        return self.expr.evaluate(env)


def slot_kernels(manifest: Manifest, report: BuildReport, origin: str) -> dict[str, SlotKernel]:
    """The overrides of a build whose every slot succeeded (``report.ok``)."""
    if not report.ok:
        raise EvalbotError(f"cannot load a failed build of {report.name or report.tree}: {report.reasons[0]}")
    cubins = report.cubins()
    table: dict[str, SlotKernel] = {}
    for slot, override in manifest.slots.items():
        launches = tuple(
            LaunchSpec(launch.kernel, ExprDims(launch.grid), ExprDims(launch.block), ExprSize(launch.shared_bytes),
                       launch.pdl)
            for launch in override.launches
        )
        table[slot] = SlotKernel(cubins[slot], launches, ExprSize(override.scratch_bytes), origin=origin)
    return table
