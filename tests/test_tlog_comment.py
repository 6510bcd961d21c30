"""The PR comment's transparency-log note: the checkpoint that includes the verdict, and how to verify it."""

from __future__ import annotations

from pathlib import Path

from markdown_support import html, tokens
from test_ledger_support import new_signer, populated

from evalbot.ledger_recorder import LedgerRecorder
from evalbot.verdict import transparency_markdown
from ledger import checkpoint as notes


def test_the_note_carries_the_checkpoint_verbatim_and_the_command(tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    with populated(f"sqlite:///{tmp_path / 'ledger.sqlite'}", signer, evaluations=3) as ledger:
        ledger_sha = ledger.history(limit=1)[0].commit_sha
        note = LedgerRecorder(ledger, "default", "h100").transparency_note(ledger_sha, "https://ledger.example/v1/")
        signed = ledger.checkpoint(signer, f"evalbot.ledger/{signer.key_id}")
    assert note is not None
    fences = [t.content for t in tokens(note) if t.type == "fence"]
    assert fences == [signed.text()]  # byte for byte: it can be saved and checked
    assert notes.verify(notes.parse(fences[0]), bytes.fromhex(signer.public_hex)).size == 4
    codes = [t.content for t in tokens(note) if t.type == "code_inline"]
    assert "https://ledger.example/v1/proofs/3.json" in codes
    assert f"evalbot ledger verify-proof proof-3.json --pubkey {signer.key_id}.pub" in codes
    assert html(note) == ["<details><summary>ledger entry 3: signed checkpoint</summary>", "</details>"]


def test_a_hostile_site_url_stays_inert() -> None:
    note = transparency_markdown("o\n1\nAAAA\n\n— o AAAA\n", 1, "ab", "https://x/`<script>`[a](b)")
    assert "<script>" not in [t.content for t in tokens(note) if t.type in ("html_inline", "html_block")]
    assert not [t for t in tokens(note) if t.type == "link_open"]
