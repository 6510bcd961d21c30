"""Checkpoints, inclusion proofs and consistency from the command line, and the four attacks a chain
check alone cannot see (tail truncation under an older head, rollback to an older copy, a ledger
re-signed with another key, a forged history), each caught given an older checkpoint, with its message.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from test_ledger_support import evaluation, new_signer, populated, run_cli
from test_ledger_tamper import tamper

from ledger import Ledger, Signer, merkle, proofs
from ledger import checkpoint as notes


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _checkpoint(url: str, signer: Signer) -> notes.SignedCheckpoint:
    with Ledger.open(url) as ledger:
        return ledger.checkpoint(signer, proofs.default_origin(signer.key_id))


def _problem(url: str, signed: notes.SignedCheckpoint, pubkeys: list[str] | None = None) -> str | None:
    with Ledger.open(url) as ledger:
        report = ledger.verify(pubkeys)
        if not report.ok:
            assert report.problem is not None
            return report.problem.message
        return proofs.check_checkpoint(ledger, signed, report, pubkeys)


@pytest.mark.slow  # several evalbot subprocesses: over 10 s on a busy 2-core machine
def test_checkpoint_prove_and_verify_proof(tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    url = _url(tmp_path / "ledger.sqlite")
    with populated(url, signer, evaluations=6) as ledger:
        size, root = ledger.tree_root()
    key = tmp_path / "validator.key"
    out = run_cli("ledger", "checkpoint", "--url", url, "--key", key, check=True).stdout
    signed = notes.parse(out)
    assert notes.verify(signed, bytes.fromhex(signer.public_hex)) == notes.Checkpoint(
        f"evalbot.ledger/{signer.key_id}", size, root
    )

    proof_file = tmp_path / "proof.json"
    run_cli("ledger", "prove", "5", "--url", url, "--key", key, "--out", proof_file, check=True)
    doc = json.loads(proof_file.read_text())
    assert doc["tree_size"] == 8 and doc["entry"]["seq"] == 5 and doc["checkpoint"] == out
    ok = run_cli("ledger", "verify-proof", proof_file, "--pubkey", f"{key}.pub")
    assert ok.returncode == 0, ok.stderr
    assert f"ok: entry 5 (evaluation, commit {doc['entry']['content']['commit_sha'][:12]}, S) is in" in ok.stdout
    assert "note:" not in ok.stdout
    by_commit = run_cli("ledger", "prove", doc["entry"]["content"]["commit_sha"][:10], "--url", url, "--key", key)
    assert json.loads(by_commit.stdout)["entry"]["seq"] == 5

    doc["entry"]["content"]["label"] = "XL"
    proof_file.write_text(json.dumps(doc))
    bad = run_cli("ledger", "verify-proof", proof_file, "--pubkey", f"{key}.pub")
    assert bad.returncode == 1 and "invalid proof: entry 5: its record does not hash to the entry hash" in bad.stdout


def _proof_doc(url: str, signer: Signer, seq: int) -> dict[str, object]:
    with Ledger.open(url) as ledger:
        return proofs.prove(ledger, seq, signer, proofs.default_origin(signer.key_id))


def test_every_entry_proves_offline_and_no_altered_proof_does(tmp_path: Path) -> None:
    signer, other = new_signer(tmp_path), new_signer(tmp_path, "other.key")
    url = _url(tmp_path / "ledger.sqlite")
    with populated(url, signer, evaluations=6):
        pass
    for seq in range(1, 9):
        result = proofs.verify_proof(_proof_doc(url, signer, seq), signer.public_hex)
        assert result.seq == seq and result.checkpoint.size == 8 and result.trusted_key
    doc = _proof_doc(url, signer, 3)
    assert not proofs.verify_proof(doc).trusted_key

    def altered(change: object) -> dict[str, object]:
        copy = json.loads(json.dumps(doc))
        change(copy)  # type: ignore[operator]
        return copy

    flipped = merkle.leaf_hash(b"x")
    cases = {
        "another proof element": (
            altered(lambda d: d["inclusion_proof"].__setitem__(0, base64.b64encode(flipped).decode())),
            "inclusion proof of leaf 2 leads to root",
        ),
        "another position": (altered(lambda d: d.__setitem__("leaf_index", 4)), "entry 3 is leaf 2, not leaf 4"),
        "a larger tree": (
            altered(lambda d: d.__setitem__("checkpoint", d["checkpoint"].replace("\n8\n", "\n9\n"))),
            "bad signature",
        ),
        "another key": (doc, r"entry 3 is signed by key \w+, not by key"),
    }
    for name, (changed, message) in cases.items():
        key = other.public_hex if name == "another key" else signer.public_hex
        with pytest.raises((merkle.ProofError, notes.CheckpointError), match=message):
            proofs.verify_proof(changed, key)


def _head_row(url: str) -> tuple[object, ...]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return tuple(conn.execute("SELECT seq, entry_hash, key_id, signature FROM chain_head").fetchone())


def _truncate(url: str, keep: int, head: tuple[object, ...]) -> None:
    """Remove the entries after ``keep`` and put back the genuine signed head the chain had then."""

    def change(conn: object) -> None:
        for statement in (
            f"DELETE FROM measurements WHERE evaluation_seq > {keep}",
            f"DELETE FROM evaluations WHERE seq > {keep}",
            f"DELETE FROM frontier_advances WHERE seq > {keep}",
            f"DELETE FROM entries WHERE seq > {keep}",
            f"DELETE FROM tlog_nodes WHERE (idx + 1) * (1 << level) > {keep}",
        ):
            conn.execute(text(statement))  # type: ignore[attr-defined]
        conn.execute(  # type: ignore[attr-defined]
            text("UPDATE chain_head SET seq = :s, entry_hash = :h, key_id = :k, signature = :g"),
            dict(zip("shkg", head, strict=True)),
        )

    tamper(url, change)


def test_tail_truncation_under_an_older_head(tmp_path: Path) -> None:
    signer, url = new_signer(tmp_path), _url(tmp_path / "ledger.sqlite")
    with populated(url, signer, evaluations=3) as ledger:  # entries 1-4
        old_head = _head_row(url)
        ledger.record_evaluations([evaluation(i) for i in range(10, 14)])  # 5-8
    signed = _checkpoint(url, signer)
    assert _problem(url, signed) is None
    _truncate(url, 4, old_head)
    with Ledger.open(url) as ledger:
        assert ledger.verify([signer.public_hex]).ok  # the chain alone cannot tell
    message = _problem(url, signed, [signer.public_hex])
    assert message is not None and "the ledger has 4 entries but its checkpoint signed by key" in message
    assert "covers 8: entries were removed from the end" in message


@pytest.mark.slow  # several evalbot subprocesses: over 10 s on a busy 2-core machine
def test_rollback_to_an_older_genuine_copy_from_the_command_line(tmp_path: Path) -> None:
    signer, path = new_signer(tmp_path), tmp_path / "ledger.sqlite"
    old_copy = tmp_path / "old.sqlite"
    with populated(_url(path), signer, evaluations=3) as ledger:
        with sqlite3.connect(path) as src, sqlite3.connect(old_copy) as dst:
            src.backup(dst)
        ledger.record_evaluation(evaluation(10))
    cp_file = tmp_path / "checkpoint.txt"
    key = tmp_path / "validator.key"
    run_cli("ledger", "checkpoint", "--url", _url(path), "--key", key, "--out", cp_file, check=True)
    ok = run_cli("ledger", "verify", "--url", _url(path), "--checkpoint", cp_file, "--pubkey", f"{key}.pub")
    assert ok.returncode == 0, ok.stdout
    plain = run_cli("ledger", "verify", "--url", _url(old_copy), "--pubkey", f"{key}.pub")
    assert plain.returncode == 0  # the older copy is a perfectly good chain
    rolled = run_cli("ledger", "verify", "--url", _url(old_copy), "--checkpoint", cp_file, "--pubkey", f"{key}.pub")
    shown = " ".join(rolled.stdout.split())  # the console wraps long lines
    assert rolled.returncode == 1
    assert "broken at entry 5: the ledger has 4 entries but its checkpoint" in shown
    assert "an older copy of the ledger (a rollback)" in shown


def test_a_ledger_re_signed_with_another_key(tmp_path: Path) -> None:
    signer, mallory = new_signer(tmp_path), new_signer(tmp_path, "mallory.key")
    genuine, forged = _url(tmp_path / "genuine.sqlite"), _url(tmp_path / "forged.sqlite")
    with populated(genuine, signer, evaluations=3):
        pass
    with populated(forged, mallory, evaluations=3):  # the same records, re-signed
        pass
    signed = _checkpoint(genuine, signer)
    message = _problem(forged, signed)
    assert message is not None and "none of this ledger's keys: the ledger was re-signed with another key" in message
    with_key = _problem(forged, signed, [signer.public_hex])
    assert with_key is not None and "which is not a trusted key" in with_key


def test_a_forged_history_signed_with_the_same_key(tmp_path: Path) -> None:
    """The validator's own key (stolen, or a validator showing two histories): the roots differ."""
    signer = new_signer(tmp_path)
    genuine, forked = _url(tmp_path / "genuine.sqlite"), _url(tmp_path / "forked.sqlite")
    with populated(genuine, signer, evaluations=3):
        pass
    with Ledger.open(forked, signer=signer, create=True) as ledger:
        ledger.record_evaluations([evaluation(i, label="XL") for i in range(1, 8)])
    signed = _checkpoint(genuine, signer)
    message = _problem(forked, signed, [signer.public_hex])
    assert message is not None and "the ledger's first 4 entries have Merkle root" in message
    assert "the history was rewritten (a forged or forked chain)" in message
