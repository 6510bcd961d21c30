"""The public static site: one HTML page, the frontier plot, the SQLite file and the public keys.

Every string shown comes from pull requests (authors, reasons, …), so all of it is HTML-escaped;
the page has no scripts and loads nothing from elsewhere.
"""

from __future__ import annotations

import hashlib
import html
import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

# The Figure API (not pyplot): no global state and no GUI backend on a headless validator box.
from matplotlib.figure import Figure

from ledger import proofs, witness
from ledger.api import Ledger
from ledger.engine import sqlite_path
from ledger.keys import Signer
from ledger.models import Evaluation, FrontierAdvance

DB_NAME = "ledger.sqlite"
PLOT_NAME = "frontier.png"
CHECKPOINT_NAME = "checkpoint.txt"
PROOFS_DIR = "proofs"
_MIN_SPAN = timedelta(days=4)

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #1a1a1a; }
h1 { margin-bottom: .2rem; } .sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } code { font-size: 12px; } .num { text-align: right; }
.label { font-weight: 600; } .REJECT { color: #b00020; } .none { color: #777; }
img.plot { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: 12px; }
"""


@dataclass(frozen=True)
class QueueRow:
    """One open PR of the merge queue (ranked by the poller; the ledger only shows it)."""
    pr: int
    commit_sha: str
    author: str
    label: str
    score: float | None
    speedup: float | None
    measured_against: str | None
    needs_rebase: tuple[str, ...]
    current: bool


@dataclass(frozen=True)
class MergeQueue:
    generated_at: str | None
    frontier: str | None
    rows: Sequence[QueueRow]


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _short(sha: str | None) -> str:
    return "—" if sha is None else f'<code title="{_e(sha)}">{_e(sha[:12])}</code>'


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def time_axis(times: list[datetime]) -> tuple[datetime, datetime]:
    """The plot's time range: the points' own span with a margin, and at least a few days wide, so a
    single advance (or a few within one day) is not drawn on matplotlib's default years-wide axis."""
    first, last = min(times), max(times)
    pad = max((last - first) / 20, (_MIN_SPAN - (last - first)) / 2)
    return first - pad, last + pad


def frontier_figure(advances: list[FrontierAdvance]) -> Figure:
    """Cumulative speedup of each (basket, GPU class) frontier over its first recorded frontier."""
    series: dict[tuple[str, str], tuple[list[datetime], list[float]]] = defaultdict(lambda: ([], []))
    for advance in advances:
        times, levels = series[(advance.basket, advance.gpu_class)]
        times.append(advance.advanced_at)
        levels.append((levels[-1] if levels else 1.0) * (1.0 + advance.delta))
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax = fig.subplots()
    for (basket, gpu_class), (times, levels) in sorted(series.items()):
        ax.step(times, levels, where="post", marker="o", linewidth=2, label=f"{basket} · {gpu_class}")
    ax.set_ylabel("decode speed vs. first frontier (×)")
    ax.set_title("Frontier over time")
    ax.grid(alpha=0.3)
    if series:
        ax.set_xlim(*time_axis([a.advanced_at for a in advances]))
        ax.legend(loc="upper left")
    else:
        ax.text(0.5, 0.5, "no frontier advances yet", ha="center", va="center", transform=ax.transAxes)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _copy_sqlite(source: Path, target: Path) -> str:
    """A consistent single-file copy (online backup, no WAL sidecar) and its SHA-256."""
    target.unlink(missing_ok=True)
    with (
        closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src,
        closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")
    return hashlib.sha256(target.read_bytes()).hexdigest()


def _rows(rows: list[str], columns: int) -> str:
    """A table's body rows, or one row saying there are none yet (an empty table looks broken)."""
    return "\n".join(rows) if rows else f'<tr class="empty"><td colspan="{columns}">none yet</td></tr>'


def _tr(row_class: str, cells: list[str | tuple[str, str]]) -> str:
    """A table row; a cell is its (already escaped) HTML, or (cell class, HTML)."""
    tds = "".join(f"<td>{c}</td>" if isinstance(c, str) else f'<td class="{c[0]}">{c[1]}</td>' for c in cells)
    return f'<tr class="{row_class}">{tds}</tr>'


def _advance_rows(advances: list[FrontierAdvance]) -> str:
    rows = [
        _tr(
            "advance",
            [
                _when(a.advanced_at),
                _e(a.basket),
                _e(a.gpu_class),
                _short(a.commit_sha),
                _e(a.author),
                ("num", f"{a.delta * 100:+.2f}%"),
                _short(a.previous_commit),
            ],
        )
        for a in reversed(advances)
    ]
    return _rows(rows, 7)


def _verdict_rows(evaluations: list[Evaluation], proved: set[int] | None = None) -> str:
    rows = []
    for ev in evaluations:
        speedups = ", ".join(
            f"{_e(m.model)} {m.speedup:.3f}×" for m in ev.measurements if m.speedup is not None
        )
        label = _e(ev.label or ev.status)
        cells: list[str | tuple[str, str]] = [
            _when(ev.finished_at),
            _e(ev.repo) + (f" #{ev.pr}" if ev.pr is not None else ""),
            _short(ev.commit_sha),
            _e(ev.author),
            (f"label {label}", label),
            speedups or "—",
            _e("; ".join(json.loads(ev.reasons))),
            f'<a class="proof" href="{PROOFS_DIR}/{ev.seq}.json">entry {ev.seq}</a>'
            if proved is not None and ev.seq in proved
            else f"entry {ev.seq}",
        ]
        rows.append(_tr("verdict", cells))
    return _rows(rows, 8)


def _queue_section(queue: MergeQueue | None) -> str:
    if queue is None:
        return '<p class="empty" id="merge-queue">No poller writes a merge queue beside this ledger.</p>'
    rows = []
    for rank, r in enumerate(queue.rows, start=1):
        state = ("needs rebase: " + _e(", ".join(r.needs_rebase))) if r.needs_rebase else "ready"
        if not r.current:
            state = f"re-evaluating (measured against {_short(r.measured_against)})"
        rows.append(_tr("queued" if r.current else "stale", [
            ("num", str(rank) if r.current else "—"), f"#{_e(r.pr)}", _short(r.commit_sha), _e(r.author),
            (f"label {_e(r.label)}", _e(r.label)),
            ("num", "—" if r.score is None else f"{100 * r.score:.1f}%"),
            ("num", "—" if r.speedup is None else f"{r.speedup:.3f}×"), state,
        ]))
    when = _e(queue.generated_at or "?")
    return (f'<p class="sub">Open PRs holding a verified win against the live frontier '
            f"{_short(queue.frontier)}, best first; ranked by the poller at {when}.</p>\n"
            '<table id="merge-queue"><tr><th class="num">rank</th><th>PR</th><th>head</th><th>author</th>'
            '<th>label</th><th class="num">headroom closed</th><th class="num">weakest speedup</th>'
            f"<th>state</th></tr>\n{_rows(rows, 8)}\n</table>")


def _frontier_rows(frontiers: list[FrontierAdvance]) -> str:
    return _rows(
        [
            _tr("frontier", [_e(f.basket), _e(f.gpu_class), _short(f.commit_sha), _e(f.author), _when(f.advanced_at)])
            for f in frontiers
        ],
        5,
    )


def _transparency(ledger: Ledger, out: Path, evaluations: list[Evaluation], signer: Signer | None,
                  origin: str | None) -> tuple[str, set[int] | None]:
    """The page's transparency-log section; with the validator's key, also checkpoint.txt and a proof
    file per listed verdict (all against that one checkpoint)."""
    if signer is None:
        size, root = ledger.tree_root()
        return (
            f'<p>Merkle tree root of the {size} entries: <code id="tree-root">{root.hex()}</code> '
            "(this copy of the site was built without the validator's key, so it carries no signed "
            "checkpoint).</p>",
            None,
        )
    signed = ledger.checkpoint(signer, origin or proofs.default_origin(signer.key_id))
    (out / CHECKPOINT_NAME).write_text(signed.text(), encoding="utf-8")
    proof_dir = out / PROOFS_DIR
    proof_dir.mkdir(exist_ok=True)
    size = signed.checkpoint.size
    proved = set()
    for ev in evaluations:
        if ev.seq <= size:
            doc = proofs.prove(ledger, ev.seq, signer, signed.checkpoint.origin, size=size)
            (proof_dir / f"{ev.seq}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            proved.add(ev.seq)
    cosigned = [c for c in witness.cosignatures(ledger) if c.size == size]
    items = "".join(f"<li><code>{_e(c.line)}</code></li>" for c in cosigned) or '<li class="empty">none yet</li>'
    key = signer.key_id
    return (
        f"""<p>The signed checkpoint (<a href="{CHECKPOINT_NAME}">{CHECKPOINT_NAME}</a>, C2SP tlog-checkpoint) of
the Merkle tree over every entry; each verdict above links to its inclusion proof.</p>
<pre id="checkpoint">{_e(signed.text())}</pre>
<p>Cosignatures by witnesses of this checkpoint:</p>
<ul id="cosignatures">{items}</ul>
<p>Check a verdict's proof offline: <code>evalbot ledger verify-proof proofs/&lt;entry&gt;.json --pubkey
keys/{_e(key)}.pub</code>; check a copy of the ledger extends this checkpoint:
<code>evalbot ledger verify --url {DB_NAME} --pubkey keys/{_e(key)}.pub --checkpoint {CHECKPOINT_NAME}</code>.</p>""",
        proved,
    )


def build_site(
    ledger: Ledger, out: Path, *, latest: int = 50, signer: Signer | None = None, origin: str | None = None,
    merge_queue: MergeQueue | None = None,
) -> Path:
    """Write the site into ``out`` (created if needed); returns the page's path. With the validator's
    ``signer``, the page carries a signed checkpoint and each listed verdict's inclusion proof; with
    the poller's ``merge_queue``, its ranking of the open PRs."""
    out.mkdir(parents=True, exist_ok=True)
    advances = ledger.frontier_history()
    evaluations = ledger.history(limit=latest)
    transparency, proved = _transparency(ledger, out, evaluations, signer, origin)
    frontiers = ledger.frontiers()
    head_seq, head_hash = ledger.head()
    frontier_figure(advances).savefig(out / PLOT_NAME)

    keys_dir = out / "keys"
    keys_dir.mkdir(exist_ok=True)
    key_items = []
    for key in ledger.signing_keys():
        (keys_dir / f"{key.key_id}.pub").write_text(key.public_key + "\n", encoding="ascii")
        key_items.append(f'<li><a href="keys/{_e(key.key_id)}.pub"><code>{_e(key.key_id)}</code></a></li>')

    source = sqlite_path(str(ledger.engine.url))
    if source is not None:
        digest = _copy_sqlite(source, out / DB_NAME)
        download = (
            f'<a id="download" href="{DB_NAME}" download>Download the ledger ({DB_NAME})</a> '
            f"· SHA-256 <code>{digest}</code>"
        )
    else:
        download = "This ledger is kept in a database server; ask its validator for an export."

    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>evalbot ledger</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>evalbot ledger</h1>
<p class="sub">Generated {_when(datetime.now(UTC))} · {ledger.count()} evaluations ·
chain head <code id="head">{head_seq}:{_e(head_hash)}</code></p>
<p>{download}</p>
<h2>Frontier over time</h2>
<img class="plot" src="{PLOT_NAME}" alt="frontier speedup over time" width="900" height="360">
<h2>Current frontier</h2>
<table id="frontier"><tr><th>basket</th><th>GPU class</th><th>commit</th><th>author</th><th>since</th></tr>
{_frontier_rows(frontiers)}
</table>
<h2>Merge queue</h2>
{_queue_section(merge_queue)}
<h2>Frontier advances</h2>
<table id="advances"><tr><th>when</th><th>basket</th><th>GPU class</th><th>commit</th><th>author</th>
<th class="num">Δ</th><th>previous frontier</th></tr>
{_advance_rows(advances)}
</table>
<h2>Latest verdicts</h2>
<table id="verdicts"><tr><th>finished</th><th>PR</th><th>commit</th><th>author</th><th>label</th>
<th>speedup per model</th><th>reasons</th><th>proof</th></tr>
{_verdict_rows(evaluations, proved)}
</table>
<h2>Transparency log</h2>
{transparency}
<h2>Audit</h2>
<p>Every row is hash-chained and signed. Check a downloaded copy against a published key with
<code>evalbot ledger verify --url {DB_NAME} --pubkey keys/&lt;key id&gt;.pub</code>, and compare its
chain head with the one above. Signing keys:</p>
<ul id="keys">{"".join(key_items) or '<li class="empty">none yet</li>'}</ul>
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
