"""``evalbot ledger`` commands as a user runs them: real processes, real files, exit codes."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from test_ledger_support import BACKENDS, backend_url, new_signer, populated, run_cli, sha

from ledger import Ledger, Signer


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request.param, tmp_path)


@pytest.fixture
def filled(url: str, tmp_path: Path) -> str:
    populated(url, new_signer(tmp_path), evaluations=9).close()
    return url


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "validator.key"
    made = run_cli("ledger", "keygen", "--out", key, check=True)
    signer = Signer.load(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert f"signing key {signer.key_id}" in made.stdout and signer.public_hex in made.stdout.replace("\n", "")
    assert Path(f"{key}.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = run_cli("ledger", "keygen", "--out", key)
    assert again.returncode == 2 and "a signing key already exists (pass --force" in again.stderr
    assert Signer.load(key).key_id == signer.key_id  # untouched
    run_cli("ledger", "keygen", "--out", key, "--force", check=True)
    assert Signer.load(key).key_id != signer.key_id


def test_keygen_uses_the_configured_path(tmp_path: Path) -> None:
    config = tmp_path / "validator.toml"
    config.write_text(f'[ledger]\nsigning_key = "{tmp_path / "cfg.key"}"\n')
    run_cli("ledger", "keygen", "--config", config, check=True)
    assert Signer.load(tmp_path / "cfg.key").key_id


def test_show_prints_the_verdict_of_a_commit(filled: str) -> None:
    shown = json.loads(run_cli("ledger", "show", sha(4)[:10], "--url", filled, "--json", check=True).stdout)
    assert len(shown) == 1
    (row,) = shown
    assert (row["commit"], row["author"], row["pr"], row["label"]) == (sha(4), "bob", 104, "S")
    assert row["verdict"]["n"] == 4 and row["measurements"][1]["speedup"] == 1.04
    assert len(row["entry"]["hash"]) == 64
    table = run_cli("ledger", "show", sha(4)[:10], "--url", filled, check=True).stdout
    assert sha(4) in table and "qwen3moe-tiny" in table and "1.040×" in table
    missing = run_cli("ledger", "show", "deadbeef", "--url", filled)
    assert missing.returncode == 2 and "no evaluation of commit deadbeef" in missing.stderr
    bad = run_cli("ledger", "show", "xyz!", "--url", filled)
    assert bad.returncode == 2 and "commit: expected 4 to 64 hex digits" in bad.stderr


def test_frontier_and_its_history(filled: str) -> None:
    current = json.loads(run_cli("ledger", "frontier", "--url", filled, "--json", check=True).stdout)
    assert [(f["basket"], f["gpu_class"], f["commit"]) for f in current] == [("default", "h100", sha(9, "advance"))]
    history = json.loads(run_cli("ledger", "frontier", "--history", "--url", filled, "--json", check=True).stdout)
    assert [a["commit"] for a in history] == [sha(i, "advance") for i in (3, 6, 9)]
    assert [a["previous_commit"] for a in history] == [None, sha(3, "advance"), sha(6, "advance")]
    table = run_cli("ledger", "frontier", "--history", "--url", filled, check=True).stdout
    assert table.count("+5.00%") == 3 and "dev9" in table


def test_history_filters(filled: str) -> None:
    rows = json.loads(
        run_cli(
            "ledger", "history", "--author", "alice", "--since", "2025-03-01T12:04", "--url", filled, "--json"
        ).stdout
    )
    assert [r["verdict"]["n"] for r in rows] == [9, 7, 5]
    assert len(json.loads(run_cli("ledger", "history", "--limit", "2", "--url", filled, "--json").stdout)) == 2
    bad = run_cli("ledger", "history", "--since", "yesterday", "--url", filled)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: --since: expected a date or ISO timestamp (2025-01-31[T12:00]), got 'yesterday'"
    )


def test_exports_hold_every_row(filled: str, tmp_path: Path) -> None:
    with Ledger.open(filled) as ledger:
        expected = {e.seq: e for e in ledger.history(limit=None)}
    out = tmp_path / "evaluations.parquet"
    run_cli("ledger", "export", "--format", "parquet", "--out", out, "--url", filled, check=True)
    frame = pd.read_parquet(out)
    assert sorted(frame["seq"]) == sorted(expected)
    assert str(frame["finished_at"].dtype) == "datetime64[us, UTC]"
    for record in frame.to_dict("records"):
        stored = expected[record["seq"]]
        assert (record["commit_sha"], record["verdict"]) == (stored.commit_sha, stored.verdict)
        assert record["finished_at"].to_pydatetime() == stored.finished_at

    csv = tmp_path / "m.csv"
    run_cli("ledger", "export", "--format", "csv", "--table", "measurements", "--out", csv, "--url", filled, check=True)
    measurements = pd.read_csv(csv)
    assert len(measurements) == 18 and set(measurements["model"]) == {"qwen3moe-tiny", "gemma4-tiny"}

    printed = run_cli("ledger", "export", "--format", "json", "--table", "frontier", "--url", filled, check=True)
    advances = json.loads(printed.stdout)
    assert [a["commit_sha"] for a in advances] == [sha(i, "advance") for i in (3, 6, 9)]
    assert advances[0]["advanced_at"].endswith("Z")

    refused = run_cli("ledger", "export", "--format", "parquet", "--url", filled)
    assert refused.returncode == 2 and "--format parquet writes a binary file: give --out PATH" in refused.stderr
    unknown = run_cli("ledger", "export", "--format", "xlsx", "--url", filled)
    assert unknown.returncode == 2 and "--format: must be one of csv, json, parquet, got 'xlsx'" in unknown.stderr


def test_sql_reads_and_cannot_write(filled: str) -> None:
    result = run_cli(
        "ledger", "sql", "SELECT author, count(*) AS n FROM evaluations GROUP BY author ORDER BY author",
        "--url", filled, "--json", check=True,
    )  # fmt: skip
    assert json.loads(result.stdout) == [{"author": "alice", "n": 5}, {"author": "bob", "n": 4}]
    for statement, message in (
        ("DELETE FROM measurements", "only SELECT (or WITH … SELECT) queries run here"),
        ("SELECT 1; DELETE FROM measurements", "database error"),
        ("WITH gone AS (DELETE FROM measurements RETURNING 1) SELECT * FROM gone", "database error"),
        ("SELECT * FROM no_such_table", "database error"),
    ):
        refused = run_cli("ledger", "sql", statement, "--url", filled)
        assert refused.returncode == 2, statement
        assert message in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    with Ledger.open(filled) as ledger:
        assert ledger.count() == 9 and ledger.verify().ok
    limited = run_cli("ledger", "sql", "SELECT seq FROM entries ORDER BY seq", "--limit", "3", "--url", filled)
    assert "(first 3 rows; --limit 0 shows all)" in limited.stdout


def test_migrate_creates_a_ledger_where_the_config_says(tmp_path: Path) -> None:
    config = tmp_path / "validator.toml"
    config.write_text(f'[paths]\ndata_dir = "{tmp_path / "data"}"\n')
    created = run_cli("ledger", "migrate", "--config", config, check=True)
    assert f"{tmp_path / 'data' / 'ledger.sqlite'}: created ledger" in created.stdout
    verified = run_cli("ledger", "verify", "--config", config, check=True)
    assert "ok: 0 entries verified" in verified.stdout


def test_csv_export_of_an_empty_table_is_its_header_once(tmp_path: Path) -> None:
    db = tmp_path / "empty.sqlite"
    run_cli("ledger", "migrate", "--url", db, check=True)
    printed = run_cli("ledger", "export", "--format", "csv", "--table", "frontier", "--url", db, check=True).stdout
    assert printed.splitlines() == [printed.splitlines()[0]] and printed.startswith("seq,basket,gpu_class,")
    out = tmp_path / "e.csv"
    run_cli("ledger", "export", "--format", "csv", "--out", out, "--url", db, check=True)
    assert len(out.read_text().splitlines()) == 1 and pd.read_csv(out).empty


def test_stored_text_with_brackets_is_printed_as_written(tmp_path: Path) -> None:
    """Authors and reasons come from pull requests: console markup in them is shown, never applied."""
    import dataclasses

    from test_ledger_support import evaluation

    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger.open(url, signer=new_signer(tmp_path), create=True) as ledger:
        ledger.record_evaluation(dataclasses.replace(evaluation(1), author="[bold]eve[/]",
                                                     reasons=["[build] section missing", "[red]x"]))
    shown = run_cli("ledger", "show", sha(1), "--url", url, check=True).stdout
    assert "[build] section missing; [red]x" in shown and "[bold]eve[/]" in shown
    assert "[bold]eve[/]" in run_cli("ledger", "history", "--url", url, check=True).stdout
