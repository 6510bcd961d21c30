"""The gate cases of each overridden slot once more under NVIDIA compute-sanitizer.

A kernel can pass every numeric gate and still be wrong: a missing barrier whose race the H200's
warp scheduling happens to hide, a read one element past a buffer that lands in the pool's padding.
The sanitizer sees those directly. Each (slot, tool) runs in a process of its own under
``compute-sanitizer --tool <tool>``, which launches the slot on its cases (the basket's shapes plus a
few fuzzed ones) with CuPy's memory pool off, so every buffer is its own allocation and memcheck
knows its bounds. A finding is a failed gate ``sanitizer:<tool>:<slot>`` quoting the first report.

A run that cannot finish (the sanitizer missing, refused by the device, past its timeout) says nothing
about the candidate: :class:`SanitizerUnavailable`, an evaluation error that is retried.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.kernel_gates.case_gen import Case, cases
from harness.kernel_gates.shapes import FUZZ, FixedShape, KernelGateError
from harness.measurements import GateResult
from reference_runtime.runtime.kernels import SlotKernel

_ERROR_EXIT = 86  # --error-exitcode: the sanitizer found something
_OUTPUT_CAP = 1 << 20  # bytes of sanitizer output kept; --print-limit bounds the reports themselves
_REPORT_LINES = 6
_REPORT_CHARS = 600
_PREFIX = "========= "
_SUMMARY = re.compile(r"^=+ (?:ERROR|RACECHECK|LEAK) SUMMARY: (\d+) (?:error|hazard)")
_RACE_ERRORS = re.compile(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?, (\d+) warnings?\)")


class SanitizerUnavailable(KernelGateError):
    """The sanitizer could not judge the candidate: the validator's problem, not a verdict."""


@dataclass(frozen=True)
class SanitizerRun:
    slot: str
    tool: str
    errors: int
    report: str  # the first report, prefixes stripped, lines joined with " | "; "" when clean
    seconds: float

    def gate(self) -> GateResult:
        name = f"sanitizer:{self.tool}:{self.slot}"
        if not self.errors:
            return GateResult(name, FUZZ, True, 0.0, 0.0, f"clean ({self.seconds:.1f} s)")
        plural = "s" if self.errors != 1 else ""
        return GateResult(name, FUZZ, False, float(self.errors), 0.0,
                          f"{self.errors} finding{plural}; first: {self.report}")


def find_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        path = Path(root, "bin", "compute-sanitizer") if root else None
        if path is not None and path.is_file():
            return str(path)
    return None


def first_report(output: str) -> str:
    """The first finding in compute-sanitizer's output: its block of ``=========`` lines after the
    banner, up to the next blank one, bounded in lines and characters."""
    lines: list[str] = []
    for raw in output.splitlines():
        if not raw.startswith("=========") or "COMPUTE-SANITIZER" in raw:
            if lines:
                break
            continue
        body = raw[len(_PREFIX):].strip() if raw.startswith(_PREFIX) else ""
        if _SUMMARY.match(raw) or not body:
            if lines:
                break
            continue
        lines.append(body)
        if len(lines) == _REPORT_LINES:
            break
    text = " | ".join(lines)
    return text if len(text) <= _REPORT_CHARS else text[: _REPORT_CHARS - 1] + "…"


def count_errors(tool: str, output: str) -> int:
    """Findings the summary line reports; racecheck's warnings (hazards it cannot prove) are not."""
    if tool == "racecheck":
        m = _RACE_ERRORS.search(output)
        if m:
            return int(m.group(1))
    counts = [int(m.group(1)) for line in output.splitlines() if (m := _SUMMARY.match(line))]
    return max(counts, default=0)


def judge(slot: str, tool: str, returncode: int, output: str, finished: bool, seconds: float) -> SanitizerRun:
    """One sanitizer process's outcome. Findings are the candidate's; a run that neither finished
    its cases nor reported anything is the sanitizer's (raises :class:`SanitizerUnavailable`)."""
    errors = count_errors(tool, output)
    if returncode == _ERROR_EXIT or errors:
        report = first_report(output) or "(no report text)"
        return SanitizerRun(slot, tool, max(errors, 1), report, seconds)
    if returncode != 0 or not finished:
        tail = " | ".join(line.strip() for line in output.strip().splitlines()[-4:])[:400]
        raise SanitizerUnavailable(f"compute-sanitizer --tool {tool} on {slot} did not finish "
                                   f"(exit {returncode}): {tail or 'no output'}")
    return SanitizerRun(slot, tool, 0, "", seconds)


def sanitize(overrides: Mapping[str, SlotKernel], fixed: Mapping[str, Sequence[FixedShape]], seed: int,
             tools: Sequence[str], fuzz_cases: int, *, timeout_s: float,
             sanitizer: str | None = None) -> tuple[GateResult, ...]:
    """One gate per (overridden slot, tool), sorted by slot then tool."""
    if not overrides or not tools:
        return ()
    binary = sanitizer or find_sanitizer()
    if binary is None:
        raise SanitizerUnavailable("compute-sanitizer is not installed here (it ships with the CUDA toolkit); "
                                   "the policy's [sanitizer] tools need it")
    out: list[GateResult] = []
    with tempfile.TemporaryDirectory(prefix="evalbot-sanitize-") as tmp:
        for slot in sorted(overrides):
            job = Path(tmp, f"{slot}.pkl")
            job.write_bytes(pickle.dumps((slot, overrides[slot], cases(slot, fixed.get(slot, ()), seed, fuzz_cases))))
            for tool in tools:
                out.append(_run(binary, slot, tool, job, Path(tmp, f"{slot}.{tool}.done"), timeout_s).gate())
    return tuple(out)


def _run(binary: str, slot: str, tool: str, job: Path, done: Path, timeout_s: float) -> SanitizerRun:
    cmd = [binary, "--tool", tool, "--error-exitcode", str(_ERROR_EXIT), "--print-limit", "10",
           sys.executable, "-m", "harness.kernel_gates.sanitize", str(job), str(done)]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, env=env,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise SanitizerUnavailable(f"compute-sanitizer --tool {tool} on {slot} ran past {timeout_s:g} s "
                                       "(the plain gates finished: the sanitizer is too slow here)") from None
        log.seek(0)
        output = log.read(_OUTPUT_CAP).decode("utf-8", "replace")
    return judge(slot, tool, proc.returncode, output, done.exists(), time.monotonic() - started)


def _child(job: Path, done: Path) -> None:
    """Under the sanitizer: launch the slot on each of its cases' runs (the plain gate grades them)."""
    import cupy

    from harness.kernel_gates.inputs import runs
    from harness.kernel_gates.launch import _execute
    from reference_runtime.runtime.decode import device_sm_count

    cupy.cuda.set_allocator(None)  # each buffer its own allocation: memcheck knows every bound
    cupy.cuda.set_pinned_memory_allocator(None)
    slot, kernel, slot_cases = pickle.loads(job.read_bytes())
    n_sm = device_sm_count()
    case: Case
    for case in slot_cases:
        for run in runs(case):
            _execute(slot, kernel, case, run, n_sm)
    done.write_text("ok")


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
