"""Several processes at once: writers never fork the chain, readers only ever see whole appends,
and a writer killed with SIGKILL in the middle of an append leaves a ledger that verifies."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ledger_support import BACKENDS, REPO_ROOT, advance, backend_url, evaluation, new_signer, sha

from ledger import Ledger

pytestmark = pytest.mark.slow

_PRELUDE = """
import sys, time
from pathlib import Path
from ledger import Ledger, Signer
from test_ledger_support import evaluation
url, key = sys.argv[1], Path(sys.argv[2])
"""

# Waits for the go file so both writers really start together, then appends one verdict per
# transaction and prints each seq it got.
WRITER = (
    _PRELUDE
    + """
first, count, go = int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
with Ledger.open(url, signer=Signer.load(key)) as ledger:
    while not go.exists():
        time.sleep(0.01)
    for i in range(first, first + count):
        print(ledger.record_evaluation(evaluation(i, author=f"writer{first}")).seq, flush=True)
"""
)

# Verifies over and over until the stop file appears; every snapshot must be a whole chain.
READER = (
    _PRELUDE
    + """
stop = Path(sys.argv[3])
rounds, last = 0, 0
with Ledger.open(url) as ledger:
    print("ready", flush=True)
    while not stop.exists():
        report = ledger.verify()
        if not report.ok or report.entries != report.head_seq or report.entries < last:
            print(f"BAD {report}", flush=True)
            sys.exit(1)
        rounds, last = rounds + 1, report.entries
print(f"rounds {rounds}", flush=True)
"""
)

# Appends batches of 100 forever, printing the head after each commit, until it is killed.
BATCHES = (
    _PRELUDE
    + """
first = int(sys.argv[3])
with Ledger.open(url, signer=Signer.load(key)) as ledger:
    for batch in range(10_000):
        start = first + batch * 100
        ledger.record_evaluations((evaluation(i) for i in range(start, start + 100)), batch_size=100)
        print("committed", ledger.head()[0], flush=True)
"""
)

# Stops inside the append transaction, after its rows are inserted and before COMMIT.
STALL_BEFORE_COMMIT = (
    _PRELUDE
    + """
original = Ledger._append
def stalled(self, conn, kind, prepared):
    seqs = original(self, conn, kind, prepared)
    print("inserted", seqs[0], seqs[-1], flush=True)
    time.sleep(600)
    return seqs
Ledger._append = stalled
with Ledger.open(url, signer=Signer.load(key)) as ledger:
    ledger.record_evaluations((evaluation(i) for i in range(1000, 1050)), batch_size=50)
"""
)


# Tries to advance the frontier from the previous one given; the first to run (``stall``) pauses
# after reading the current frontier and before appending, so the other one starts meanwhile.
ADVANCER = (
    _PRELUDE
    + """
from ledger import FrontierConflictError
from test_ledger_support import advance
n, previous, stall, go = int(sys.argv[3]), sys.argv[4], sys.argv[5] == "stall", Path(sys.argv[6])
if stall:
    original = Ledger._check_evaluation_seq
    def slow(conn, seq):
        print("stalled", flush=True)
        time.sleep(3)
        return original(conn, seq)
    Ledger._check_evaluation_seq = staticmethod(slow)
with Ledger.open(url, signer=Signer.load(key)) as ledger:
    while not go.exists():
        time.sleep(0.01)
    try:
        print("advanced", ledger.record_frontier_advance(advance(n, previous)).seq, flush=True)
    except FrontierConflictError as exc:
        print("conflict", exc, flush=True)
"""
)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request.param, tmp_path)


def spawn(script: str, *args: str | Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])}
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_line(process: subprocess.Popen[str], prefix: str) -> str:
    assert process.stdout is not None
    while line := process.stdout.readline():
        if line.startswith(prefix):
            return line
    raise AssertionError(f"process ended before printing {prefix!r}: {process.stderr.read() if process.stderr else ''}")


def test_two_writers_and_a_reader(url: str, tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    Ledger.open(url, signer=signer, create=True).close()
    go, stop = tmp_path / "go", tmp_path / "stop"
    reader = spawn(READER, url, tmp_path / "validator.key", stop)
    read_line(reader, "ready")
    writers = [spawn(WRITER, url, tmp_path / "validator.key", first, 120, go) for first in (1, 1001)]
    go.touch()
    outputs = [w.communicate(timeout=240) for w in writers]
    stop.touch()
    reader_out, reader_err = reader.communicate(timeout=240)

    assert [w.returncode for w in writers] == [0, 0], [err for _, err in outputs]
    assert reader.returncode == 0, reader_out + reader_err
    assert int(reader_out.split()[-1]) >= 2  # it really read while the writers wrote
    seqs = [[int(s) for s in out.split()] for out, _ in outputs]
    assert sorted(seqs[0] + seqs[1]) == list(range(1, 241))  # no seq handed out twice, none lost
    # The writers' appends interleaved: each got seqs before and after some of the other's.
    assert min(seqs[0]) < max(seqs[1]) and min(seqs[1]) < max(seqs[0])
    with Ledger.open(url) as ledger:
        assert ledger.verify([signer.public_hex]).ok
        assert ledger.count() == 240
        assert len(ledger.history(author="writer1", limit=None)) == 120


def test_sigkill_inside_the_append_transaction(url: str, tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    with Ledger.open(url, signer=signer, create=True) as ledger:
        ledger.record_evaluations(evaluation(i) for i in range(1, 11))
    stalled = spawn(STALL_BEFORE_COMMIT, url, tmp_path / "validator.key")
    first, last = map(int, read_line(stalled, "inserted").split()[1:])
    assert (first, last) == (11, 60)  # its 50 rows are written, not yet committed
    stalled.send_signal(signal.SIGKILL)
    stalled.wait(timeout=30)

    with Ledger.open(url, signer=signer) as ledger:
        report = ledger.verify([signer.public_hex])
        assert report.ok and report.entries == 10 and ledger.count() == 10
        # The dead writer left no lock behind: the next append proceeds and takes seq 11.
        assert ledger.record_evaluation(evaluation(99)).seq == 11
        assert ledger.verify([signer.public_hex]).ok


def test_sigkill_at_random_moments(url: str, tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    Ledger.open(url, signer=signer, create=True).close()
    rng = random.Random(5)
    acknowledged = 0
    for round_ in range(4):
        writer = spawn(BATCHES, url, tmp_path / "validator.key", 100_000 * (round_ + 1))
        acknowledged = int(read_line(writer, "committed").split()[1])
        time.sleep(rng.uniform(0.05, 0.6))
        writer.send_signal(signal.SIGKILL)
        remaining, _ = writer.communicate(timeout=30)
        acknowledged = max([acknowledged, *(int(line.split()[1]) for line in remaining.splitlines())])
        with Ledger.open(url) as ledger:
            report = ledger.verify([signer.public_hex])
            assert report.ok, report.problem
            count = ledger.count()
        assert count >= acknowledged  # nothing the writer saw committed was lost
        assert count % 100 == 0  # and no batch is half there


def test_two_validators_cannot_both_advance_the_same_frontier(url: str, tmp_path: Path) -> None:
    """The second writer reads the frontier only after the first committed, and is refused."""
    signer = new_signer(tmp_path)
    with Ledger.open(url, signer=signer, create=True) as ledger:
        base = ledger.record_frontier_advance(advance(1, None)).commit_sha
    key = tmp_path / "validator.key"
    first = spawn(ADVANCER, url, key, 2, base, "stall", tmp_path / "go-first")
    second = spawn(ADVANCER, url, key, 3, base, "plain", tmp_path / "go-second")
    (tmp_path / "go-first").touch()
    read_line(first, "stalled")  # inside its transaction, having seen `base` as the frontier
    (tmp_path / "go-second").touch()
    outputs = [p.communicate(timeout=120)[0] for p in (first, second)]
    assert outputs[0].splitlines()[-1].startswith("advanced")
    assert outputs[1].startswith("conflict") and f"is {sha(2, 'advance')}, not {base}" in outputs[1]
    with Ledger.open(url) as ledger:
        assert [a.commit_sha for a in ledger.frontier_history()] == [base, sha(2, "advance")]
        assert ledger.verify([signer.public_hex]).ok
