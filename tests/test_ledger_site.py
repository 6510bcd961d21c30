"""The public site, rendered by headless Chromium: what a visitor sees is what the ledger holds.

The Chromium test also writes ``docs/ledger-site.png``, the screenshot the docs show.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.dates
import matplotlib.image
import numpy as np
import pytest
from test_ledger_support import REPO_ROOT, T0, advance, backend_url, evaluation, new_signer, run_cli, sha

from ledger import Ledger, Signer
from ledger.site import build_site, frontier_figure

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = "nvcc: <script>alert('pwned')</script> & friends"
# matplotlib's first line colour: nothing else on the page is drawn in it.
PLOT_BLUE = np.array([0x1F, 0x77, 0xB4]) / 255


def demo_ledger(url: str, signer: Signer) -> Ledger:
    """A small but realistic history: two GPU classes, a rejected PR with a compiler message."""
    ledger = Ledger.open(url, signer=signer, create=True)
    previous: dict[str, str | None] = {"h100": None, "b200": None}
    deltas = {"h100": [0.0, 0.042, 0.018, 0.061, 0.027], "b200": [0.0, 0.035, 0.052]}
    for gpu_class, steps in deltas.items():
        for i, delta in enumerate(steps):
            n = len(previous) * 10 + i if gpu_class == "b200" else i
            day = 9 * i + (3 if gpu_class == "b200" else 0)
            verdict = evaluation(n, author=f"dev{n % 4}", label="M", minutes=day * 1440 - 60)
            row = ledger.record_evaluation(dataclasses.replace(verdict, gpu_class=gpu_class))
            step = dataclasses.replace(
                advance(n, previous[gpu_class], delta=delta, evaluation_seq=row.seq),
                gpu_class=gpu_class,
                author=f"dev{n % 4}",
                advanced_at=T0 + timedelta(days=day),
            )
            previous[gpu_class] = ledger.record_frontier_advance(step).commit_sha
    rejected = evaluation(50, author="mallory", label="REJECT", minutes=40 * 1440)
    ledger.record_evaluation(dataclasses.replace(rejected, reasons=[HOSTILE], measurements=[]))
    return ledger


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_site_files_and_escaping(tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    with demo_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}", signer) as ledger:
        index = build_site(ledger, tmp_path / "site")
        head_seq, head_hash = ledger.head()
    page = index.read_text()
    assert "<script" not in page
    assert "nvcc: &lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; &amp; friends" in page
    assert f"{head_seq}:{head_hash}" in page
    assert (tmp_path / "site" / "frontier.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "site" / "keys" / f"{signer.key_id}.pub").read_text().strip() == signer.public_hex
    # The published copy is a complete ledger that verifies against the published key.
    audited = run_cli(
        "ledger",
        "verify",
        "--url",
        tmp_path / "site" / "ledger.sqlite",
        "--pubkey",
        tmp_path / "site" / "keys" / f"{signer.key_id}.pub",
        check=True,
    )
    assert f"{head_seq} entries verified against the given public key(s); head {head_seq}:{head_hash}" in (
        audited.stdout.replace("\n", "")
    )


@pytest.mark.postgres
def test_site_command_on_a_database_server_has_no_download_link(tmp_path: Path) -> None:
    """Only SQLite ledgers are files to download; other URLs still get the rest of the page."""
    urls = backend_url("postgres", tmp_path)  # skips, saying why, without a PostgreSQL server
    url = next(urls)
    try:
        demo_ledger(url, new_signer(tmp_path)).close()
        run_cli("ledger", "site", tmp_path / "site", "--url", url, check=True)
        page = (tmp_path / "site" / "index.html").read_text()
        assert "ask its validator for an export" in page and 'id="download"' not in page
        assert page.count('<tr class="advance">') == 8
    finally:
        urls.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (scripts/install.sh)")
def test_chromium_renders_the_ledger(tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    demo_ledger(url, signer).close()
    key = tmp_path / "validator.key"
    run_cli("ledger", "site", tmp_path / "site", "--url", url, "--latest", "6", "--key", key, check=True)
    page_url = (tmp_path / "site" / "index.html").as_uri()
    with Ledger.open(url) as ledger:
        head_seq, head_hash = ledger.head()
        advances = ledger.frontier_history()
        latest = ledger.history(limit=6)
        _, root = ledger.tree_root()

    dom = chromium("--dump-dom", page_url, profile=tmp_path / "profile").stdout
    assert "<h1>evalbot ledger</h1>" in dom
    assert f'<code id="head">{head_seq}:{head_hash}</code>' in dom
    assert len(re.findall(r'<tr class="advance">', dom)) == len(advances) == 8
    assert len(re.findall(r'<tr class="verdict">', dom)) == 6
    for row in latest:
        assert f'title="{row.commit_sha}"' in dom
    assert "+6.10%" in dom and "+5.20%" in dom  # the largest advance of each GPU class
    assert '<a id="download" href="ledger.sqlite" download="">' in dom
    assert "<script" not in dom and "&lt;script&gt;alert('pwned')&lt;/script&gt; &amp; friends" in dom
    assert f'<code title="{sha(50)}">' in dom and 'class="label REJECT">REJECT<' in dom
    # The signed checkpoint, and each verdict linked to an inclusion proof that verifies offline.
    checkpoint_text = (tmp_path / "site" / "checkpoint.txt").read_text()
    root_b64 = base64.b64encode(root).decode()
    assert checkpoint_text.startswith(f"evalbot.ledger/{signer.key_id}\n{head_seq}\n{root_b64}\n")
    assert f'<pre id="checkpoint">{html.escape(checkpoint_text)}</pre>' in dom
    for row in latest:
        assert f'<a class="proof" href="proofs/{row.seq}.json">entry {row.seq}</a>' in dom
    proved = run_cli(
        "ledger", "verify-proof", tmp_path / "site" / "proofs" / f"{latest[0].seq}.json",
        "--pubkey", tmp_path / "site" / "keys" / f"{signer.key_id}.pub",
    )
    assert proved.returncode == 0 and f"ok: entry {latest[0].seq} (evaluation" in proved.stdout, proved.stdout

    shot = tmp_path / "site.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,1700", page_url, profile=tmp_path / "profile")
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1700, 1200)
    # The plot image loaded and drew its line: a good number of pixels in the plot's blue.
    blue = np.all(np.abs(pixels - PLOT_BLUE) < 0.03, axis=-1)
    assert blue.sum() > 300
    docs = REPO_ROOT / "docs" / "ledger-site.png"
    shutil.copyfile(shot, docs)


class _Tables(HTMLParser):
    """The rows of each table of a page (by table id), each row as its cells' text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _tables(page: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def test_empty_tables_say_none_yet(tmp_path: Path) -> None:
    with Ledger.open(f"sqlite:///{tmp_path / 'ledger.sqlite'}", create=True) as ledger:
        page = build_site(ledger, tmp_path / "site").read_text()
    tables = _tables(page)
    assert set(tables) == {"frontier", "advances", "verdicts"}
    for rows in tables.values():
        header, *body = rows
        assert body == [["none yet"]] and len(header) > 1
    assert '<td colspan="5">none yet</td>' in page and '<td colspan="7">none yet</td>' in page


def test_a_table_with_rows_has_no_none_yet_row(tmp_path: Path) -> None:
    with demo_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}", new_signer(tmp_path)) as ledger:
        page = build_site(ledger, tmp_path / "site").read_text()
    for rows in _tables(page).values():
        assert ["none yet"] not in rows and len(rows) > 1


def _x_range(advances: list[object]) -> tuple[datetime, datetime]:
    low, high = frontier_figure(advances).axes[0].get_xlim()  # type: ignore[arg-type]
    return matplotlib.dates.num2date(low), matplotlib.dates.num2date(high)


def test_a_single_frontier_point_gets_a_days_wide_axis(tmp_path: Path) -> None:
    signer = new_signer(tmp_path)
    with Ledger.open(f"sqlite:///{tmp_path / 'ledger.sqlite'}", signer=signer, create=True) as ledger:
        ledger.record_frontier_advance(advance(1, None))
        advances = ledger.frontier_history()
    low, high = _x_range(advances)
    (point,) = (a.advanced_at for a in advances)
    assert low < point < high
    assert timedelta(days=2) <= high - low <= timedelta(days=10)  # not matplotlib's years-wide default


def test_a_long_history_keeps_its_span_with_a_margin(tmp_path: Path) -> None:
    with demo_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}", new_signer(tmp_path)) as ledger:
        advances = ledger.frontier_history()
    first, last = min(a.advanced_at for a in advances), max(a.advanced_at for a in advances)
    low, high = _x_range(advances)
    assert low < first and last < high
    assert (high - low) < (last - first) * 1.2


def test_the_site_shows_the_pollers_merge_queue_and_refuses_a_malformed_one(tmp_path: Path) -> None:
    from evalbot import ranking

    data = tmp_path / "data"
    config = tmp_path / "validator.toml"
    config.write_text(f'[paths]\ndata_dir = "{data}"\n')
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    demo_ledger(url, new_signer(tmp_path)).close()
    run_cli("ledger", "site", tmp_path / "site", "--url", url, "--config", config, check=True)
    assert "No poller writes a merge queue" in (tmp_path / "site" / "index.html").read_text()

    live = "f" * 40
    ranking.write(data, live, ranking.rank([
        ranking.Candidate(7, sha(7), "<b>eve</b>", "S", 0.08, 1.031, live, (), True),
        ranking.Candidate(9, sha(9), "dev1", "M", 0.12, 1.052, live, ("attn_decode",), True),
        ranking.Candidate(3, sha(3), "dev2", "XL", 0.4, 1.2, "e" * 40, (), False),
    ]))
    run_cli("ledger", "site", tmp_path / "site", "--url", url, "--config", config, check=True)
    page = (tmp_path / "site" / "index.html").read_text()
    section = page[page.index('<table id="merge-queue">'):]
    section = section[:section.index("</table>")]
    rows = re.findall(r'<tr class="(queued|stale)">(.*?)</tr>', section)
    # M before S (label first), and the head measured against an old frontier last, unranked.
    assert [re.findall(r">#(\d+)<", r)[0] for _, r in rows] == ["9", "7", "3"]
    assert [kind for kind, _ in rows] == ["queued", "queued", "stale"]
    assert "needs rebase: attn_decode" in rows[0][1] and "re-evaluating (measured against" in rows[2][1]
    assert "&lt;b&gt;eve&lt;/b&gt;" in section and "<b>eve" not in section

    row = {"pr": 7, "sha": sha(7), "author": "a", "label": "S", "score": 0.1, "speedup": 1.03,
           "measured_against": live, "needs_rebase": [], "current": True}
    for damaged in ('{"queue": [{"pr": "x"}]}', json.dumps({"queue": [{**row, "pr": "<script>"}]}),
                    json.dumps({"queue": [{**row, "score": "high"}]})):
        (data / ranking.FILE_NAME).write_text(damaged)
        broken = run_cli("ledger", "site", tmp_path / "site2", "--url", url, "--config", config)
        assert broken.returncode != 0 and "merge-queue.json: not a merge queue" in broken.stderr, damaged
        assert not (tmp_path / "site2" / "index.html").exists()
