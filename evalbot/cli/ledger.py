"""``evalbot ledger``: create, query, export, verify and publish the public ledger."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import DBAPIError

from evalbot.config import load_config
from evalbot.errors import EvalbotError
from ledger import Ledger, LedgerError, keys, merkle, proofs, schema
from ledger import checkpoint as notes
from ledger.dberrors import driver_message
from ledger.engine import describe_url, make_engine, sqlite_path
from ledger.readonly_sql import run_select
from ledger.verify import Problem, ProblemKind, VerifyReport
from ledger.views import advance_dict, evaluation_dict

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="The public ledger: query, export, verify, publish.")
console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Validator TOML file.")]
UrlOpt = Annotated[
    str | None, typer.Option("--url", help="Ledger SQLAlchemy URL or SQLite file (default: [ledger] url).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _url(config: Path | None, url: str | None) -> str:
    if url:
        return url if "://" in url else f"sqlite:///{Path(url).expanduser().resolve()}"
    return load_config(config).ledger_url


def _open(config: Path | None, url: str | None) -> Ledger:
    return Ledger.open(_url(config, url))


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _short(sha: str | None) -> str:
    return "-" if sha is None else sha[:12]


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


ToOpt = Annotated[str | None, typer.Option(
    "--to", help="Copy the ledger into this (empty) database instead, e.g. postgresql://…; verified after.")]


@app.command()
def migrate(config: ConfigOpt = None, url: UrlOpt = None, to: ToOpt = None) -> None:
    """Create the ledger, or upgrade its schema to this evalbot's revision (keeps every row)."""
    if to:
        _copy_to(_url(config, url), _url(None, to))
        return
    target = _url(config, url)
    where = describe_url(target)
    path = sqlite_path(target)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(target)
    try:
        before, after = schema.upgrade(engine, where)
    except DBAPIError as exc:
        raise LedgerError(f"{where}: cannot migrate: {driver_message(exc)}") from None
    finally:
        engine.dispose()
    if before == after:
        console.print(f"{where}: already at schema revision {after}", markup=False)
    elif before is None:
        console.print(f"{where}: created ledger (schema revision {after})", markup=False)
    else:
        console.print(f"{where}: upgraded schema revision {before} → {after}", markup=False)


def _copy_to(source: str, target: str) -> None:
    """``migrate --to``: copy every row (ledger/copy.py), then verify the copy."""
    from evalbot.queue.store import QueueRow
    from ledger.copy import copy_ledger

    report = copy_ledger(source, target, extra=[QueueRow.__table__])
    with Ledger.open(target) as ledger:
        check = ledger.verify()
    if not check.ok:
        raise LedgerError(f"{describe_url(target)}: the copy does not verify: "
                          f"{check.problem.message if check.problem else 'broken'}")
    rows = ", ".join(f"{n} {name}" for name, n in report.rows.items())
    console.print(f"{describe_url(source)} → {describe_url(target)}: copied {rows}; verified {check.entries} "
                  f"entries, head {check.head_seq}:{check.head_hash}. Set [ledger] url to the new database.",
                  markup=False)


@app.command()
def keygen(
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Private key file (default: [ledger] signing_key).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key.")] = False,
) -> None:
    """Generate the validator's Ed25519 signing key (private key 0600, public key next to it)."""
    cfg = load_config(config)
    path = out or (Path(cfg.ledger.signing_key).expanduser() if cfg.ledger.signing_key else None)
    path = path or cfg.data_dir / "ledger-signing.key"
    signer, pub_path = keys.generate(path, force=force)
    console.print(f"signing key {signer.key_id} written to {path}", markup=False)
    console.print(f"public key: {pub_path}  ({signer.public_hex})", markup=False)


@app.command()
def verify(
    config: ConfigOpt = None,
    url: UrlOpt = None,
    pubkey: Annotated[
        list[Path] | None,
        typer.Option("--pubkey", help="Trust only this public key (PEM or hex); repeatable."),
    ] = None,
    as_json: JsonOpt = False,
    checkpoint_file: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Also check the ledger extends this older signed checkpoint."),
    ] = None,
) -> None:
    """Re-derive every hash and check every signature; exit 1 at the first broken link or corrupted row."""
    trusted = [keys.load_public_key(p) for p in pubkey] if pubkey else None
    with _open(config, url) as ledger:
        report = ledger.verify(trusted)
        if checkpoint_file is not None and report.ok:
            report = _against_checkpoint(ledger, checkpoint_file, report, trusted)
    if as_json:
        problem = report.problem
        _print_json(
            {
                "ok": report.ok,
                "entries_checked": report.entries,
                "head": {"seq": report.head_seq, "hash": report.head_hash},
                "tree_root": report.tree_root or None,
                "key_ids": list(report.key_ids),
                "problem": None if problem is None else {
                    "seq": problem.seq, "kind": problem.kind.value, "message": problem.message
                },
            }
        )
    elif report.problem is None:
        trust = "the given public key(s)" if trusted else "the ledger's own key table"
        console.print(
            f"[green]ok[/]: {report.entries} entries verified against {trust}; "
            f"head {report.head_seq}:{report.head_hash}; Merkle root {report.tree_root}"
            + (f"; extends checkpoint {escape(str(checkpoint_file))}" if checkpoint_file is not None else ""),
            highlight=False,
        )
    elif report.problem.kind is ProblemKind.CORRUPT:
        console.print(
            f"[bold red]corrupted[/] at entry {report.problem.seq}: {escape(report.problem.message)}; "
            f"its data cannot be read, so it cannot be checked ({report.entries} entries were verified "
            "before it)",
            highlight=False,
        )
    else:
        console.print(
            f"[bold red]broken[/] at entry {report.problem.seq}: {escape(report.problem.message)} "
            f"({report.entries} entries before it are intact)",
            highlight=False,
        )
    if not report.ok:
        # SystemExit rather than typer.Exit: evalbot.cli.main runs click with standalone_mode=False,
        # which returns an Exit's code instead of exiting with it.
        sys.exit(1)


@app.command()
def show(commit: str, config: ConfigOpt = None, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Every verdict recorded for a commit (a prefix of at least 4 hex digits will do)."""
    with _open(config, url) as ledger:
        found = ledger.find(commit)
        if not found:
            raise LedgerError(f"{ledger.where}: no evaluation of commit {commit}")
    if as_json:
        _print_json([evaluation_dict(ev) for ev in found])
        return
    for ev in found:
        facts = Table.grid(padding=(0, 2))
        for name, value in (
            ("commit", ev.commit_sha),
            ("repo / PR", f"{ev.repo}" + (f" #{ev.pr}" if ev.pr else "")),
            ("author", ev.author),
            ("label", ev.label or "-"),
            ("status", ev.status),
            ("reasons", "; ".join(json.loads(ev.reasons)) or "-"),
            ("frontier", ev.frontier_commit or "-"),
            ("GPU", f"{ev.gpu} ({ev.gpu_class}), basket {ev.basket}"),
            ("evaluated", f"{_when(ev.started_at)} → {_when(ev.finished_at)} UTC"),
            ("evalbot / policy", f"{ev.evalbot_version} / {ev.policy_hash}"),
            ("entry", f"{ev.seq}  hash {ev.entry.entry_hash}  key {ev.entry.key_id}"),
        ):
            facts.add_row(Text(name, style="bold"), Text(str(value)))
        console.print(facts)
        table = Table("model", "gates", "tok/s", "frontier tok/s", "speedup", "95% CI")
        for m in ev.measurements:
            ci = "-" if m.speedup_ci_low is None else f"{m.speedup_ci_low:.3f} … {m.speedup_ci_high:.3f}"
            table.add_row(
                Text(m.model),
                "pass" if m.gates_passed else "[red]fail[/]",
                "-" if m.tokens_per_s is None else f"{m.tokens_per_s:.1f}",
                "-" if m.frontier_tokens_per_s is None else f"{m.frontier_tokens_per_s:.1f}",
                "-" if m.speedup is None else f"{m.speedup:.3f}×",
                ci,
            )
        console.print(table)


@app.command()
def frontier(
    config: ConfigOpt = None,
    url: UrlOpt = None,
    history: Annotated[bool, typer.Option("--history", help="Every advance, not just the current frontier.")] = False,
    basket: Annotated[str | None, typer.Option(help="Only this model basket.")] = None,
    gpu_class: Annotated[str | None, typer.Option("--gpu-class", help="Only this GPU class.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The current frontier per (basket, GPU class), or with --history who moved it, when, by how much."""
    with _open(config, url) as ledger:
        if history:
            rows = ledger.frontier_history(basket=basket, gpu_class=gpu_class)
        else:
            rows = [
                f
                for f in ledger.frontiers()
                if (basket is None or f.basket == basket) and (gpu_class is None or f.gpu_class == gpu_class)
            ]
    if as_json:
        _print_json([advance_dict(a) for a in rows])
        return
    table = Table("when (UTC)", "basket", "GPU class", "commit", "author", "Δ", "previous", title="frontier")
    for a in rows:
        table.add_row(
            _when(a.advanced_at),
            Text(a.basket),
            Text(a.gpu_class),
            _short(a.commit_sha),
            Text(a.author),
            f"{a.delta * 100:+.2f}%",
            _short(a.previous_commit),
        )
    console.print(table if rows else "no frontier recorded yet", markup=False)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise EvalbotError(f"--since: expected a date or ISO timestamp (2025-01-31[T12:00]), got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def history(
    config: ConfigOpt = None,
    url: UrlOpt = None,
    author: Annotated[str | None, typer.Option(help="Only this author's verdicts.")] = None,
    since: Annotated[str | None, typer.Option(help="Only verdicts finished at or after this date (UTC).")] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many, newest first (0: all).")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Verdicts, newest first."""
    with _open(config, url) as ledger:
        rows = ledger.history(author=author, since=_since(since), limit=limit or None)
    if as_json:
        _print_json([evaluation_dict(ev) for ev in rows])
        return
    table = Table("finished (UTC)", "PR", "commit", "author", "label", "speedups", title="verdicts")
    for ev in rows:
        speedups = ", ".join(f"{m.model} {m.speedup:.3f}×" for m in ev.measurements if m.speedup is not None)
        table.add_row(
            _when(ev.finished_at),
            Text(f"{ev.repo}" + (f" #{ev.pr}" if ev.pr else "")),
            _short(ev.commit_sha),
            Text(ev.author),
            Text(ev.label or ev.status),
            Text(speedups or "-"),
        )
    console.print(table if rows else "no verdicts match", markup=False)


@app.command("export")
def export_command(
    fmt: Annotated[str, typer.Option("--format", help="One of: csv, json, parquet.")],
    config: ConfigOpt = None,
    url: UrlOpt = None,
    table: Annotated[str, typer.Option(help="One of: evaluations, measurements, frontier, entries.")] = "evaluations",
    out: Annotated[Path | None, typer.Option("--out", help="Output file (default: stdout; parquet needs one).")] = None,
) -> None:
    """Export a table (JSON: one array of row objects; timestamps in UTC)."""
    # Imported here: pandas and pyarrow would add ~0.4 s to every evalbot command's start-up.
    from ledger.export import export

    with _open(config, url) as ledger:
        rows = export(ledger.engine, ledger.where, table, fmt, out)
    if out is not None:
        console.print(f"{rows} rows of {table} written to {out}", markup=False)


@app.command()
def sql(
    query: str,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    limit: Annotated[int, typer.Option(min=0, help="Show at most this many rows (0: all).")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Run one read-only SELECT against the ledger."""
    result = run_select(_url(config, url), query, limit=limit or None)
    if as_json:
        _print_json([dict(zip(result.columns, row, strict=True)) for row in result.rows])
        return
    table = Table(*result.columns)
    for row in result.rows:
        table.add_row(*(Text("NULL" if v is None else str(v)) for v in row))
    console.print(table)
    if result.truncated:
        console.print(f"(first {limit} rows; --limit 0 shows all)")


@app.command()
def site(
    out: Annotated[Path, typer.Argument(help="Directory to write the site into.")],
    config: ConfigOpt = None,
    url: UrlOpt = None,
    latest: Annotated[int, typer.Option(min=1, help="How many recent verdicts the page lists.")] = 50,
    key: Annotated[
        Path | None, typer.Option("--key", help="Signing key: publish a signed checkpoint and the verdicts' proofs.")
    ] = None,
    origin: Annotated[str | None, typer.Option("--origin", help="The log's name in the checkpoint.")] = None,
) -> None:
    """Write the static public site: frontier plot, merge queue, advances, latest verdicts, the SQLite file."""
    from ledger.site import build_site  # matplotlib: ~0.4 s of start-up, only needed here

    signer = keys.Signer.load(key) if key is not None else None
    queue = _merge_queue(load_config(config).data_dir)
    with _open(config, url) as ledger:
        index = build_site(ledger, out, latest=latest, signer=signer, origin=origin, merge_queue=queue)
    console.print(f"site written to {index}", markup=False)


def _merge_queue(data_dir: Path) -> Any:
    """The poller's ranking beside this ledger for the site; None when no poller wrote one here."""
    from evalbot import ranking
    from ledger.site import MergeQueue, QueueRow

    try:
        generated, frontier, ranked = ranking.read(data_dir)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise EvalbotError(f"{exc}; the site was not written") from None
    return MergeQueue(generated, frontier, [
        QueueRow(c.pr, c.sha, c.author, c.label, c.score, c.speedup, c.measured_against, c.needs_rebase, c.current)
        for c in ranked])


# -- the transparency log (docs/ledger.md, "The ledger as a transparency log") ----------------------

KeyOpt = Annotated[
    Path | None, typer.Option("--key", help="Signing key (default: [ledger] signing_key).")
]
OriginOpt = Annotated[
    str | None, typer.Option("--origin", help="The log's name in checkpoints (default: evalbot.ledger/<key id>).")
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Write to this file instead of printing.")]


def _signer(config: Path | None, key: Path | None) -> keys.Signer:
    if key is None:
        cfg = load_config(config)
        key = Path(cfg.ledger.signing_key).expanduser() if cfg.ledger.signing_key else None
        key = key or cfg.data_dir / "ledger-signing.key"
    return keys.Signer.load(key)


def _write(text: str, out: Path | None, what: str) -> None:
    if out is None:
        typer.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    console.print(f"{what} written to {out}", markup=False)


def _against_checkpoint(
    ledger: Ledger, path: Path, report: VerifyReport, trusted: list[str] | None
) -> VerifyReport:
    """``report``, with a problem if the ledger does not extend the checkpoint in ``path``."""
    try:
        signed = notes.parse(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read checkpoint: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise LedgerError(f"{path}: not a checkpoint (not UTF-8 text)") from None
    except notes.CheckpointError as exc:
        raise LedgerError(f"{path}: {exc}") from None
    message = proofs.check_checkpoint(ledger, signed, report, trusted)
    if message is None:
        return report
    return replace(report, problem=Problem(min(report.entries, signed.checkpoint.size) + 1, message))


@app.command("checkpoint")
def checkpoint_command(
    config: ConfigOpt = None, url: UrlOpt = None, key: KeyOpt = None, origin: OriginOpt = None, out: OutOpt = None
) -> None:
    """Print the signed checkpoint (C2SP tlog-checkpoint: origin, size, Merkle root) of the whole ledger."""
    signer = _signer(config, key)
    with _open(config, url) as ledger:
        signed = ledger.checkpoint(signer, origin or proofs.default_origin(signer.key_id))
    _write(signed.text(), out, f"checkpoint of {signed.checkpoint.size} entries")


def _entry_seq(ledger: Ledger, entry: str) -> int:
    """ENTRY as a chain position (digits, up to 9 of them) or a commit (its newest evaluation)."""
    text = entry.strip()
    if text.isdigit() and len(text) <= 9:
        return int(text)
    found = ledger.find(text)
    if not found:
        raise LedgerError(f"{ledger.where}: no evaluation of commit {entry}")
    return found[-1].seq


@app.command()
def prove(
    entry: Annotated[str, typer.Argument(help="Entry number (seq), or a commit: its newest evaluation.")],
    config: ConfigOpt = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
    origin: OriginOpt = None,
    out: OutOpt = None,
) -> None:
    """An entry's inclusion proof and the signed checkpoint it leads to, as one JSON file."""
    signer = _signer(config, key)
    with _open(config, url) as ledger:
        seq = _entry_seq(ledger, entry)
        doc = proofs.prove(ledger, seq, signer, origin or proofs.default_origin(signer.key_id))
    _write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", out, f"inclusion proof of entry {seq}")


@app.command("verify-proof")
def verify_proof_command(
    file: Annotated[Path, typer.Argument(help="An inclusion proof file from `evalbot ledger prove`.")],
    pubkey: Annotated[
        Path | None, typer.Option("--pubkey", help="The validator's public key (PEM or hex): who must have signed.")
    ] = None,
) -> None:
    """Check an inclusion proof offline (no database): record → entry → Merkle root → signed checkpoint."""
    trusted = keys.load_public_key(pubkey) if pubkey else None
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LedgerError(f"{file}: cannot read proof: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LedgerError(f"{file}: not a proof file (not JSON)") from None
    try:
        result = proofs.verify_proof(doc, trusted)
    except proofs.ProofFileError as exc:
        raise LedgerError(f"{file}: {exc}") from None
    except (merkle.ProofError, notes.CheckpointError) as exc:
        console.print(f"[bold red]invalid proof[/]: {escape(str(exc))}", highlight=False)
        sys.exit(1)
    cp = result.checkpoint
    what = result.content.get("commit_sha", "")
    label = result.content.get("label") or result.content.get("status") or ""
    subject = f"entry {result.seq} ({result.kind}" + (f", commit {what[:12]}, {label}" if what else "") + ")"
    console.print(
        f"[green]ok[/]: {escape(subject)} is in {escape(cp.origin)} at size {cp.size}, "
        f"root {cp.root.hex()}, signed by key {result.key_id}",
        highlight=False,
    )
    if not result.trusted_key:
        console.print(
            "note: checked against the public key the file names; pass --pubkey to check who signed it",
            markup=False,
        )


_MAX_CHECKPOINT_BYTES = 1 << 16


def _read_source(source: str) -> str:
    """A checkpoint from a file, or from an http(s) URL (another validator's site)."""
    if source.startswith(("http://", "https://")):
        import urllib.request  # only the witness fetches anything

        try:
            with urllib.request.urlopen(source, timeout=30) as response:
                data = response.read(_MAX_CHECKPOINT_BYTES + 1)
        except OSError as exc:
            raise LedgerError(f"{source}: cannot fetch checkpoint: {exc}") from None
        if len(data) > _MAX_CHECKPOINT_BYTES:
            raise LedgerError(f"{source}: larger than {_MAX_CHECKPOINT_BYTES} bytes, not a checkpoint")
    else:
        try:
            data = Path(source).read_bytes()[: _MAX_CHECKPOINT_BYTES + 1]
        except OSError as exc:
            raise LedgerError(f"{source}: cannot read checkpoint: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise LedgerError(f"{source}: not a checkpoint (not UTF-8 text)") from None


def _parse_checkpoint(text: str, where: str) -> notes.SignedCheckpoint:
    try:
        return notes.parse(text)
    except notes.CheckpointError as exc:
        raise LedgerError(f"{where}: {exc}") from None


@app.command()
def witness(
    source: Annotated[str, typer.Argument(help="The other validator's checkpoint: a file or an http(s) URL.")],
    log_key: Annotated[Path, typer.Option("--log-key", help="The other validator's public key (PEM or hex).")],
    other: Annotated[
        str | None,
        typer.Option("--ledger", help="A copy of the other validator's ledger (file or URL), to prove consistency."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="This witness's key name (default: our origin).")] = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
    out: OutOpt = None,
) -> None:
    """Check another validator's checkpoint extends the last one seen from it, cosign it, remember it."""
    from ledger import witness as witnessing

    signer = _signer(config, key)
    signed = _parse_checkpoint(_read_source(source), source)
    other_ledger = Ledger.open(_url(None, other)) if other else None
    try:
        with _open(config, url) as ledger:
            result = witnessing.witness(
                ledger, signed, keys.load_public_key(log_key), signer, name or proofs.default_origin(signer.key_id),
                other_ledger,
            )
    except witnessing.WitnessError as exc:
        console.print(f"[bold red]refused[/]: {escape(str(exc))}", highlight=False)
        sys.exit(1)
    finally:
        if other_ledger is not None:
            other_ledger.close()
    cp = signed.checkpoint
    since = "first checkpoint seen from it" if result.previous_size is None else f"extends size {result.previous_size}"
    # Without --out the cosigned checkpoint goes to stdout, so the summary goes to stderr.
    typer.echo(f"{cp.origin}: size {cp.size} {since}; cosigned", err=out is None)
    _write(result.cosigned.text(), out, "cosigned checkpoint")


@app.command()
def cosignatures(
    add: Annotated[
        Path | None, typer.Option("--add", help="Keep the cosignatures on this checkpoint of ours (from a witness).")
    ] = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The witnesses' cosignatures this ledger has received (with --add, store more first)."""
    from ledger import witness as witnessing

    with _open(config, url) as ledger:
        if add is not None:
            signer = _signer(config, key)
            signed = _parse_checkpoint(_read_source(str(add)), str(add))
            try:
                stored = witnessing.receive(ledger, signed, signer.public_hex)
            except (witnessing.WitnessError, notes.CheckpointError) as exc:
                raise LedgerError(f"{add}: {exc}") from None
            console.print(f"{len(stored)} new cosignature(s): {', '.join(stored) or '-'}", markup=False)
        rows = witnessing.cosignatures(ledger)
    if as_json:
        _print_json([{"size": r.size, "witness": r.witness, "root": r.root, "line": r.line} for r in rows])
        return
    table = Table("size", "witness", "key id", "received (UTC)", title="cosignatures")
    for r in rows:
        table.add_row(str(r.size), Text(r.witness), r.witness_key_id, _when(r.received_at))
    console.print(table if rows else "no cosignatures received yet", markup=False)


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="Validator A's ledger (file or URL).")],
    b: Annotated[str, typer.Argument(help="Validator B's ledger (file or URL).")],
    as_json: JsonOpt = False,
    show: Annotated[int, typer.Option(min=0, help="List at most this many disagreements.")] = 20,
) -> None:
    """Two validators side by side: label agreement and speedup differences on commits both evaluated."""
    from ledger.compare import compare as compare_ledgers
    from ledger.compare import latest_verdicts

    with Ledger.open(_url(None, a)) as la, Ledger.open(_url(None, b)) as lb:
        result = compare_ledgers(latest_verdicts(la), latest_verdicts(lb))
    if as_json:
        _print_json(
            {
                "both": result.both, "only_a": result.only_a, "only_b": result.only_b, "agree": result.agree,
                "agreement": result.agreement,
                "disagreements": [{"commit": c, "a": x, "b": y} for c, x, y in result.disagreements],
                "models": [m.__dict__ for m in result.models],
            }
        )
        return
    share = "-" if result.agreement is None else f"{100 * result.agreement:.1f}%"
    console.print(
        f"{result.both} commits evaluated by both ({result.only_a} only by A, {result.only_b} only by B); "
        f"labels agree on {result.agree} ({share})",
        markup=False,
    )
    if result.models:
        table = Table("model", "pairs", "mean Δ (A − B)", "mean |Δ|", "max |Δ|", title="speedup differences (pp)")
        for m in result.models:
            table.add_row(Text(m.model), str(m.pairs), f"{m.mean:+.2f}", f"{m.mean_abs:.2f}", f"{m.max_abs:.2f}")
        console.print(table)
    if result.disagreements:
        table = Table("commit", "A", "B", title="label disagreements")
        for commit, x, y in result.disagreements[:show]:
            table.add_row(_short(commit), Text(x or "-"), Text(y or "-"))
        console.print(table)
        if len(result.disagreements) > show:
            console.print(f"… and {len(result.disagreements) - show} more (raise --show, or use --json)", markup=False)
