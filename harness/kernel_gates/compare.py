"""A run's outputs against the oracle's (exact, by id, or normwise relative) and a slot's verdict."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from harness.kernel_gates.case_gen import Case
from harness.kernel_gates.inputs import Run
from harness.kernel_gates.shapes import EXACT, FUZZ, family
from harness.measurements import GateResult


# -- comparison -----------------------------------------------------------------------------------
def _first_diff(got: np.ndarray, want: np.ndarray, mask: np.ndarray) -> str:
    i = int(np.flatnonzero(mask)[0])
    return f"first at [{i}]: {got[i]!r} != {want[i]!r}"


def score(slot: str, run: Run, got: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """(error, note) of one run's outputs ``got`` (final buffer contents by parameter name). The
    error is the count of differing elements for exact slots, else the worst relative error (to the
    output's norm, or to its rounding floor where it cancels: ``Run.floor``); inf when the outputs
    cannot be compared (non-finite values, wrong router ids)."""
    fam = family(slot)
    if fam == EXACT:
        total, notes = 0, []
        for name, want in run.expect.items():
            g = np.asarray(got[name]).reshape(-1)
            w = want.reshape(-1)
            differ = ~((g == w) | (np.isnan(g) & np.isnan(w)))
            n = int(differ.sum())
            if n:
                total += n
                notes.append(f"{n} of {w.size} elements of {name} differ ({_first_diff(g, w, differ)})")
        return float(total), "; ".join(notes) or "exact"
    if fam == "router":
        return _score_router(run, got)
    worst, note = 0.0, ""
    for name, want in run.expect.items():
        g = np.asarray(got[name], dtype=np.float64).reshape(-1)
        bad = ~np.isfinite(g)
        if bad.any():
            return math.inf, (f"{int(bad.sum())} of {g.size} elements of {name} are not finite (outputs start as "
                              f"NaN: unwritten?), first at [{int(np.flatnonzero(bad)[0])}]")
        rows = run.rows.get(name, 1)
        diff = (g - want.reshape(-1)).reshape(rows, -1)
        ref = np.maximum(np.linalg.norm(want.reshape(rows, -1), axis=1), run.floor.get(name, 0.0))
        err = np.linalg.norm(diff, axis=1) / np.where(ref > 0, ref, 1.0)
        i = int(np.argmax(err))
        if err[i] > worst or not note:
            worst, note = float(err[i]), f"{name}" + (f" head {i}" if rows > 1 else "")
    return worst, f"relative error {worst:.3g} in {note}"


def _score_router(run: Run, got: Mapping[str, np.ndarray]) -> tuple[float, str]:
    want_ids, want_w = run.expect["ids"], run.expect["weights"]
    ids = np.asarray(got["ids"]).astype(np.int64).reshape(-1)
    if sorted(ids.tolist()) != sorted(want_ids.tolist()):
        return math.inf, (f"chose experts {sorted(ids.tolist())}, the top {want_ids.size} are "
                          f"{sorted(want_ids.tolist())}")
    w = np.asarray(got["weights"], dtype=np.float64).reshape(-1)
    if not np.isfinite(w).all():
        return math.inf, "routing weights are not finite (unwritten?)"
    by_id = dict(zip(ids.tolist(), w.tolist(), strict=True))
    g = np.array([by_id[i] for i in want_ids.tolist()])
    err = float(np.linalg.norm(g - want_w) / max(float(np.linalg.norm(want_w)), 1e-300))
    return err, f"relative error {err:.3g} in the routing weights"


@dataclass(frozen=True)
class Outcome:
    case: Case
    run: str  # the run's label
    error: float
    note: str
    varies: tuple[str, ...] = ()  # outputs whose bytes differed between launches of this run


def _variation(outcomes: Sequence[Outcome], repeats: int) -> str:
    varied = [o for o in outcomes if o.varies]
    if repeats < 2:
        return ""
    if not varied:
        return f"; {repeats} launches per run, identical outputs"
    w = varied[0]
    where = ("fuzzed shape " if w.case.fuzzed else "") + w.case.describe(w.run)
    return (f"; outputs differ between its {repeats} launches on {len(varied)} of {len(outcomes)} runs "
            f"(first: {', '.join(w.varies)} on {where})")


def summarize(slot: str, limit: float, outcomes: Sequence[Outcome], repeats: int = 1) -> GateResult:
    """The slot's gate from its runs: failed if any run is over the limit (or not comparable); the
    detail says whether repeated launches of one run gave different outputs."""
    name = f"kernel:{slot}"
    if not outcomes:
        return GateResult(name, FUZZ, True, 0.0, limit, "no cases: the basket does not use the slot and no "
                                                        "shapes were fuzzed")
    n_basket = len({o.case.index for o in outcomes if not o.case.fuzzed})
    n_fuzz = len({o.case.index for o in outcomes if o.case.fuzzed})
    failed = [o for o in outcomes if not o.error <= limit]
    counts = f"{len(outcomes)} runs on {n_basket} basket and {n_fuzz} fuzzed shapes"
    if failed:
        w = max(failed, key=lambda o: o.error)
        where = ("fuzzed shape " if w.case.fuzzed else "") + w.case.describe(w.run)
        return GateResult(name, w.case.origin, False, w.error, limit,
                          f"{len(failed)} of {counts} over the limit; worst on {where}: {w.note}"
                          + _variation(outcomes, repeats))
    w = max(outcomes, key=lambda o: o.error)
    where = "a fuzzed shape" if w.case.fuzzed else w.case.describe(w.run)
    return GateResult(name, w.case.origin, True, w.error, limit,
                      f"{counts}; worst on {where}" + _variation(outcomes, repeats))


