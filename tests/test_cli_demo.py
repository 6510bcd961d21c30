"""``evalbot demo`` end to end without a GPU: the GitHub stand-in, the example repository's PRs,
``evalbot watch --once`` in its own process with the build-only evaluator, real nvcc, a real ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger import Ledger
from tests.build_support import require_nvcc

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_runs_the_poller_and_shows_what_it_published(tmp_path: Path) -> None:
    require_nvcc()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVALBOT_", "GITHUB_"))} | {"COLUMNS": "200"}
    work = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "evalbot", "demo", "--dir", str(work),
                           "--evaluator", "evalbot.demo:create_build_only"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "local GitHub stand-in at http://127.0.0.1:" in out
    for number, branch in ((1, "faster"), (2, "wrong"), (3, "broken")):
        assert f"opened PR #{number} ({branch})" in out
    # Per PR, as the poller left it on the stand-in: the label, the status and the sticky comment.
    prs = {block.split(" ", 1)[0]: block for block in out.split("\nPR #")[1:]}
    assert "labels: eval:none" in prs["1"] and "status: success" in prs["1"]
    assert "labels: eval:REJECT" in prs["3"] and "status: failure" in prs["3"]
    assert "<!-- evalbot:sticky -->" in prs["3"] and 'identifier "rows_per_blok" is undefined' in prs["3"]
    assert "nothing was gated or measured" in prs["2"]  # build-only: the wrong kernel builds
    assert "4 signed verdicts, verifies" in out
    # The poller's log went through: it evaluated and published each head.
    assert "4 evaluated, 0 failed, 4 published" in done.stderr + out
    with Ledger.open(f"sqlite:///{work / 'ledger.sqlite'}") as ledger:
        rows = ledger.history(limit=None)
        assert ledger.verify().ok
    assert sorted((ev.pr or 0, ev.label) for ev in rows) == [(0, "none"), (1, "none"), (2, "none"), (3, "REJECT")]


def test_demo_refuses_a_directory_in_use(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    done = subprocess.run([sys.executable, "-m", "evalbot", "demo", "--dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "not empty" in done.stderr and "Traceback" not in done.stderr
