"""Validators witnessing each other's checkpoints, keeping cosignatures, and comparing their verdicts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_ledger_support import evaluation, new_signer, populated, run_cli

from ledger import Ledger, MeasurementIn, Signer, proofs
from ledger import checkpoint as notes
from ledger import witness as witnessing
from ledger.compare import compare, latest_verdicts


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _cp(ledger: Ledger, signer: Signer, size: int | None = None) -> notes.SignedCheckpoint:
    return ledger.checkpoint(signer, proofs.default_origin(signer.key_id), size)


@pytest.fixture
def two(tmp_path: Path) -> tuple[Ledger, Signer, Ledger, Signer]:
    a_key, b_key = new_signer(tmp_path, "a.key"), new_signer(tmp_path, "b.key")
    a = populated(_url(tmp_path / "a.sqlite"), a_key, evaluations=6)  # 8 entries
    b = Ledger.open(_url(tmp_path / "b.sqlite"), signer=b_key, create=True)
    yield a, a_key, b, b_key
    a.close()
    b.close()


def test_a_witness_cosigns_a_growing_log_and_the_log_keeps_the_cosignatures(two: tuple) -> None:
    a, a_key, b, b_key = two
    first = witnessing.witness(b, _cp(a, a_key, 4), a_key.public_hex, b_key, "witness.b", now=1700000000)
    assert first.previous_size is None
    second = witnessing.witness(b, _cp(a, a_key), a_key.public_hex, b_key, "witness.b", other=a, now=1700000100)
    assert second.previous_size == 4
    cosigned = notes.parse(second.cosigned.text())
    assert notes.verify_cosignature(cosigned, bytes.fromhex(b_key.public_hex), "witness.b") == 1700000100
    again = witnessing.witness(b, _cp(a, a_key), a_key.public_hex, b_key, "witness.b", now=1700000200)
    assert again.previous_size == 8  # the same checkpoint again: cosigned again, nothing new to prove

    assert witnessing.receive(a, cosigned, a_key.public_hex) == ["witness.b"]
    assert witnessing.receive(a, cosigned, a_key.public_hex) == []  # kept once
    (kept,) = witnessing.cosignatures(a)
    assert (kept.size, kept.witness) == (8, "witness.b")
    line = notes.parse(_cp(a, a_key).text() + kept.line + "\n")
    assert notes.verify_cosignature(line, bytes.fromhex(b_key.public_hex), "witness.b") == 1700000100


def test_the_witness_refuses_rollback_fork_wrong_key_and_unproven_growth(two: tuple, tmp_path: Path) -> None:
    a, a_key, b, b_key = two
    witnessing.witness(b, _cp(a, a_key, 3), a_key.public_hex, b_key, "w")
    with pytest.raises(witnessing.WitnessError, match="grew from 3 to 8 entries; give a copy of its ledger"):
        witnessing.witness(b, _cp(a, a_key), a_key.public_hex, b_key, "w")
    witnessing.witness(b, _cp(a, a_key), a_key.public_hex, b_key, "w", other=a)
    with pytest.raises(witnessing.WitnessError, match=r"size 5 is older than size 8, already witnessed \(a rollback\)"):
        witnessing.witness(b, _cp(a, a_key, 5), a_key.public_hex, b_key, "w")

    # The same key, another history: a log showing two views.
    fork = Ledger.open(_url(tmp_path / "fork.sqlite"), signer=a_key, create=True)
    fork.record_evaluations([evaluation(i, label="XL") for i in range(1, 11)])
    with pytest.raises(witnessing.WitnessError, match=r"two different roots for size 8 .*the log forked"):
        witnessing.witness(b, _cp(fork, a_key, 8), a_key.public_hex, b_key, "w")
    with pytest.raises(witnessing.WitnessError, match=r"size 10 does not extend the witnessed size 8.*forked"):
        witnessing.witness(b, _cp(fork, a_key), a_key.public_hex, b_key, "w", other=fork)
    a.record_evaluations([evaluation(i) for i in range(20, 22)])  # the genuine log grows to 10 too
    with pytest.raises(witnessing.WitnessError, match=r"first 10 entries have root .*\(the copy is not this log's\)"):
        witnessing.witness(b, _cp(a, a_key), a_key.public_hex, b_key, "w", other=fork)
    fork.close()
    assert witnessing.witness(b, _cp(a, a_key), a_key.public_hex, b_key, "w", other=a).previous_size == 8

    mallory = new_signer(tmp_path, "m.key")
    with pytest.raises(witnessing.WitnessError, match="carries no signature by key"):
        witnessing.witness(b, _cp(a, mallory), a_key.public_hex, b_key, "w")


@pytest.mark.slow  # several evalbot subprocesses: over 10 s on a busy 2-core machine
def test_witness_and_cosignatures_from_the_command_line(tmp_path: Path) -> None:
    a_key, b_key = new_signer(tmp_path, "a.key"), new_signer(tmp_path, "b.key")
    a_url, b_url = _url(tmp_path / "a.sqlite"), _url(tmp_path / "b.sqlite")
    with populated(a_url, a_key, evaluations=3):
        pass
    Ledger.open(b_url, create=True).close()
    cp_file, cosigned = tmp_path / "a.checkpoint", tmp_path / "a.cosigned"
    run_cli("ledger", "checkpoint", "--url", a_url, "--key", tmp_path / "a.key", "--out", cp_file, check=True)
    done = run_cli(
        "ledger", "witness", cp_file, "--log-key", tmp_path / "a.key.pub", "--url", b_url,
        "--key", tmp_path / "b.key", "--out", cosigned,
    )
    assert done.returncode == 0, done.stderr
    assert "size 4 first checkpoint seen from it; cosigned" in done.stdout
    kept = run_cli("ledger", "cosignatures", "--url", a_url, "--key", tmp_path / "a.key", "--add", cosigned)
    assert kept.returncode == 0, kept.stderr
    assert f"1 new cosignature(s): evalbot.ledger/{b_key.key_id}" in kept.stdout


def _b_verdict(i: int) -> object:
    base = evaluation(i)
    if i == 5:
        base = replace(base, label="M")
    return replace(
        base,
        measurements=[
            MeasurementIn("qwen3moe-tiny", True, 1000.0, 950.0, 1 + i / 100 - 0.004, None, None),
            MeasurementIn("gemma4-tiny", True, 800.0, 790.0, 1.0125 + 0.01, None, None),
        ],
    )


def test_compare_two_validators(tmp_path: Path) -> None:
    a_url, b_url = _url(tmp_path / "a.sqlite"), _url(tmp_path / "b.sqlite")
    with Ledger.open(a_url, signer=new_signer(tmp_path, "a.key"), create=True) as a:
        a.record_evaluations([evaluation(i) for i in range(1, 7)])
    with Ledger.open(b_url, signer=new_signer(tmp_path, "b.key"), create=True) as b:
        b.record_evaluations([_b_verdict(i) for i in range(3, 9)])  # type: ignore[misc]
    with Ledger.open(a_url) as a, Ledger.open(b_url) as b:
        result = compare(latest_verdicts(a), latest_verdicts(b))
    assert (result.both, result.only_a, result.only_b, result.agree) == (4, 2, 2, 3)
    assert [(c[:8], x, y) for c, x, y in result.disagreements] == [(evaluation(5).commit_sha[:8], "S", "M")]
    gemma, qwen = result.models
    assert (gemma.model, gemma.pairs) == ("gemma4-tiny", 4)
    assert gemma.mean == pytest.approx(-1.0) and qwen.mean == pytest.approx(0.4) and qwen.max_abs == pytest.approx(0.4)

    shown = run_cli("ledger", "compare", a_url, b_url, "--json", check=True)
    doc = json.loads(shown.stdout)
    assert doc["both"] == 4 and doc["agreement"] == pytest.approx(0.75) and doc["disagreements"][0]["b"] == "M"
    text = run_cli("ledger", "compare", a_url, b_url, check=True).stdout
    assert "4 commits evaluated by both (2 only by A, 2 only by B); labels agree on 3 (75.0%)" in text
