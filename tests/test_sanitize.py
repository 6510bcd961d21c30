"""Reading compute-sanitizer's output (no GPU): a finding is the candidate's failed gate quoting the
first report; a run that neither finished nor reported is the validator's error, never a verdict."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from harness.kernel_gates.sanitize import SanitizerUnavailable, count_errors, first_report, judge, sanitize
from reference_runtime.runtime.kernels import Const, LaunchSpec, SlotKernel

MEMCHECK = """\
========= COMPUTE-SANITIZER
========= Invalid __global__ write of size 4 bytes
=========     at rmsnorm_overrun+0x1b0 in /tmp/t/rmsnorm.cu:10
=========     by thread (31,0,0) in block (0,0,0)
=========     Address 0x7f3c1e000400 is out of bounds
=========     and is 1 bytes after the nearest allocation at 0x7f3c1e000000 of size 1024 bytes
=========     Saved host backtrace up to driver entry point at kernel launch time
=========         Host Frame: [0x2dd4ef] in libcuda.so.1
=========
========= Invalid __global__ write of size 4 bytes
=========     at rmsnorm_overrun+0x1b0 in /tmp/t/rmsnorm.cu:10
=========
========= ERROR SUMMARY: 2 errors
"""
RACECHECK = """\
========= COMPUTE-SANITIZER
========= Error: Race reported between Write access at rmsnorm_race+0x2f0 in rmsnorm_gaming.cu:26
=========     and Read access at rmsnorm_race+0x310 in rmsnorm_gaming.cu:28 [64 hazards]
=========
========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)
"""
CLEAN = "========= COMPUTE-SANITIZER\n========= ERROR SUMMARY: 0 errors\n"
WARNINGS_ONLY = ("========= COMPUTE-SANITIZER\n========= Warning: Race reported between Read access at k+0x10\n"
                 "=========\n========= RACECHECK SUMMARY: 1 hazard displayed (0 errors, 1 warning)\n")


def test_the_first_report_is_quoted_without_the_banner_or_the_backtrace_tail() -> None:
    report = first_report(MEMCHECK)
    assert report.startswith("Invalid __global__ write of size 4 bytes | at rmsnorm_overrun+0x1b0")
    assert "COMPUTE-SANITIZER" not in report and "ERROR SUMMARY" not in report
    assert report.count(" | ") == 5  # six lines at most
    assert first_report(CLEAN) == ""


def test_a_flood_of_output_is_bounded() -> None:
    flood = "========= COMPUTE-SANITIZER\n========= " + "x" * 100_000 + "\n"
    assert len(first_report(flood)) <= 600


@pytest.mark.parametrize(("tool", "output", "errors"), [
    ("memcheck", MEMCHECK, 2), ("racecheck", RACECHECK, 1), ("memcheck", CLEAN, 0),
    ("racecheck", WARNINGS_ONLY, 0), ("synccheck", "no summary at all", 0),
])
def test_counting_findings(tool: str, output: str, errors: int) -> None:
    assert count_errors(tool, output) == errors


def test_a_finding_fails_the_gate_named_by_tool_and_slot() -> None:
    gate = judge("rmsnorm", "racecheck", 86, RACECHECK, finished=True, seconds=3.0).gate()
    assert gate.name == "sanitizer:racecheck:rmsnorm" and not gate.passed and gate.value == pytest.approx(1.0)
    assert "Race reported between Write access" in gate.detail
    # A kernel the sanitizer killed (an illegal address under memcheck) is still the candidate's.
    crashed = judge("rmsnorm", "memcheck", 86, MEMCHECK, finished=False, seconds=1.0).gate()
    assert not crashed.passed and crashed.value == pytest.approx(2.0)


def test_a_clean_run_passes_and_a_silent_failure_is_the_validators() -> None:
    assert judge("gemv_q4_k", "memcheck", 0, CLEAN, finished=True, seconds=2.5).gate().passed
    with pytest.raises(SanitizerUnavailable, match="did not finish"):
        judge("gemv_q4_k", "memcheck", 1, "========= Error: Device not supported\n", finished=False, seconds=1)
    with pytest.raises(SanitizerUnavailable, match="exit 0"):
        judge("gemv_q4_k", "memcheck", 0, CLEAN, finished=False, seconds=1)  # died quietly before its end


def _fake_sanitizer(tmp_path: Path, body: str) -> str:
    path = tmp_path / "compute-sanitizer"
    path.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


KERNEL = SlotKernel(Path("/nonexistent.cubin"), (LaunchSpec("k", Const((1,)), Const((32,))),), Const(0))


def test_a_missing_sanitizer_is_the_validators_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.kernel_gates.sanitize.find_sanitizer", lambda: None)
    with pytest.raises(SanitizerUnavailable, match="not installed"):
        sanitize({"rmsnorm": KERNEL}, {}, 1, ("memcheck",), 0, timeout_s=10)
    assert sanitize({}, {}, 1, ("memcheck",), 0, timeout_s=10) == ()  # nothing overridden: nothing to run


def test_a_sanitizer_past_its_timeout_is_the_validators_error(tmp_path: Path) -> None:
    binary = _fake_sanitizer(tmp_path, "import time\ntime.sleep(30)")
    with pytest.raises(SanitizerUnavailable, match="ran past 1 s"):
        sanitize({"rmsnorm": KERNEL}, {}, 1, ("racecheck",), 0, timeout_s=1, sanitizer=binary)


def test_each_tool_runs_in_its_own_process_on_each_slot(tmp_path: Path) -> None:
    # The stand-in prints a report for racecheck only, and exits as the real one does.
    binary = _fake_sanitizer(tmp_path, f"""
tool = sys.argv[sys.argv.index('--tool') + 1]
done = sys.argv[-1]
open(done, 'w').write('ok')
if tool == 'racecheck':
    sys.stdout.write({RACECHECK!r})
    sys.exit(86)
sys.stdout.write({CLEAN!r})
""")
    gates = sanitize({"rmsnorm": KERNEL, "glu_swiglu": KERNEL}, {}, 1, ("memcheck", "racecheck"), 0,
                     timeout_s=30, sanitizer=binary)
    assert [(g.name, g.passed) for g in gates] == [
        ("sanitizer:memcheck:glu_swiglu", True), ("sanitizer:racecheck:glu_swiglu", False),
        ("sanitizer:memcheck:rmsnorm", True), ("sanitizer:racecheck:rmsnorm", False)]
