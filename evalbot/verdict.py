"""The verdict document (``evalbot/schemas/verdict-v1.schema.json``) and its three renderings:
JSON, a terminal report, and the Markdown body of the sticky PR comment."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from evalbot import __version__
from evalbot.policy import Decision, Policy
from evalbot.quote import block, cell, inline, plain
from harness.measurements import Measurements

SCHEMA_ID = "evalbot.verdict/1"


@dataclass(frozen=True)
class RunIdentity:
    gpu: str
    driver: str
    nvcc: str
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class Commits:
    repo: str
    candidate: str
    frontier: str | None
    pr: int | None


@dataclass(frozen=True)
class ModelIdentity:
    key: str
    sha256: str
    corpus_sha256: str
    reference_version: int
    role: str = "benchmark"  # or "correctness": end-to-end gated, never timed or scored


def schema() -> dict[str, Any]:
    return dict(json.loads(resources.files("evalbot").joinpath("schemas/verdict-v1.schema.json").read_text()))


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: a non-finite measurement (a kernel that wrote garbage) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def document(decision: Decision, measurements: Measurements, policy: Policy, run: RunIdentity, commits: Commits,
             models: tuple[ModelIdentity, ...], details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    doc = {
        "schema": SCHEMA_ID,
        "label": decision.label,
        "reasons": list(decision.reasons),
        "score": decision.score,
        "per_model_score": dict(decision.per_model),
        "run": {
            "evalbot_version": __version__,
            "policy_version": policy.version,
            "policy_sha256": policy.sha256,
            "policy_name": Path(policy.source).stem,
            "basket": "+".join(m.key for m in models if m.role == "benchmark"),
            "gpu": run.gpu,
            "driver": run.driver,
            "nvcc": run.nvcc,
            "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat(),
        },
        "commits": {"repo": commits.repo, "candidate": commits.candidate, "frontier": commits.frontier,
                    "pr": commits.pr},
        "models": [vars(m) for m in models],
        "measurements": measurements.to_dict(),
    }
    if details:
        doc["details"] = dict(details)
    return dict(_finite(doc))


def to_json(doc: Mapping[str, Any]) -> str:
    return json.dumps(_finite(doc), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _num(x: float | None) -> str:
    return "NaN" if x is None else f"{x:.4g}"


def _pct(x: float) -> str:
    return f"{100 * (x - 1):+.2f}%"


# Bounds that keep the comment well under GitHub's size limit whatever the reasons and logs hold.
_MAX_REASONS = 20
_MAX_REASON_CHARS = 600
_MAX_GATE_ROWS = 100
_MAX_LOGS = 3
_LOG_LINES = 60
_LOG_BYTES = 6_000


def _failed_logs(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(slot, compiler output) of each candidate slot that failed to build, as the build report recorded it."""
    build = (doc.get("details") or {}).get("build") or {}
    return [(str(s.get("slot", "")), str(s["log"])) for s in build.get("slots", ())
            if not s.get("ok", True) and s.get("log")]


def markdown(doc: Mapping[str, Any]) -> str:
    """The PR comment's verdict. Every string from the document is quoted (:mod:`evalbot.quote`): reasons,
    names and logs carry contributor text, and the rest costs nothing to quote."""
    run, commits, m = doc["run"], doc["commits"], doc["measurements"]
    frontier = inline(commits["frontier"][:12]) if commits["frontier"] else "none yet"
    reasons = doc["reasons"]
    lines = [
        f"### evalbot: **{inline(doc['label'], 16)}**",
        "",
        *(f"- {inline(reason, _MAX_REASON_CHARS)}" for reason in reasons[:_MAX_REASONS]),
        *([f"- … and {len(reasons) - _MAX_REASONS} more reasons (all are in the verdict JSON)"]
          if len(reasons) > _MAX_REASONS else []),
        "",
    ]
    if m["cells"]:
        lines += [
            "| model | context | speedup | 95% CI | p | MDE | pairs |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in m["cells"]:
            c = row["comparison"]
            lines.append(
                f"| {cell(row['model'], 80)} | {_context(row)} | {_pct(c['speedup'])} | "
                f"[{_pct(c['ci_low'])}, {_pct(c['ci_high'])}] | {c['p_value']:.2g} | {100 * c['mde']:.2f}% | "
                f"{int(c['n_pairs'])} |"
            )
        lines.append("")
    if m["gates"]:
        # The HTML block ends at the blank line after it: quoted text goes only where Markdown is read.
        lines += ["<details><summary>gates</summary>", "", "| gate | model | value | limit | |",
                  "|---|---|---:|---:|---|"]
        for g in m["gates"][:_MAX_GATE_ROWS]:
            lines.append(f"| {cell(g['name'], 80)} | {cell(g['model'], 80)} | {_num(g['value'])} | "
                         f"{_num(g['limit'])} | {'pass' if g['passed'] else '**FAIL**'} |")
        if len(m["gates"]) > _MAX_GATE_ROWS:
            lines += ["", f"… and {len(m['gates']) - _MAX_GATE_ROWS} more gates (all are in the verdict JSON)"]
        lines += ["", "</details>", ""]
    stale = (doc.get("details") or {}).get("needs_rebase") or []
    if stale:
        lines += [f"- needs rebase: the frontier changed {', '.join(inline(str(x), 80) for x in stale[:20])} "
                  "since this PR's base; merging it as is would replace that work", ""]
    logs = _failed_logs(doc)
    if logs:
        lines += ["<details><summary>compiler output</summary>", ""]
        for slot, log in logs[:_MAX_LOGS]:
            lines += [f"slot {inline(slot, 80)}:", "", block(log, _LOG_LINES, _LOG_BYTES), ""]
        if len(logs) > _MAX_LOGS:
            lines += [f"… and {len(logs) - _MAX_LOGS} more failed slots (their logs are in the verdict JSON)", ""]
        lines += ["</details>", ""]
    lines.append(
        f"<sub>candidate {inline(commits['candidate'][:12])} vs frontier {frontier} · {inline(run['gpu'], 80)} · "
        f"driver {inline(run['driver'], 40)} · nvcc {inline(run['nvcc'], 40)} · "
        f"evalbot {inline(run['evalbot_version'], 40)} · basket {inline(run.get('basket') or '?', 120)}"
        f"{_correctness_only(doc)} · "
        f"policy {inline(run.get('policy_name') or '?', 40)} {inline(run['policy_sha256'][:12])}</sub>"
    )
    return "\n".join(lines) + "\n"


def _correctness_only(doc: Mapping[str, Any]) -> str:
    names = [str(m.get("key", "")) for m in doc.get("models", ()) if m.get("role") == "correctness"]
    return f" (+ gated only: {inline('+'.join(names), 120)})" if names else ""


def _context(row: Mapping[str, Any]) -> str:
    """A cell's context; a long-context guard (regression guard only, not scored) says so."""
    return f"{int(row['context'])} (guard)" if row.get("guard") else str(int(row["context"]))


def terminal(doc: Mapping[str, Any]) -> Group:
    colour = {"REJECT": "red", "none": "yellow"}.get(doc["label"], "green")
    parts: list[Any] = [Text.assemble(("verdict: ", "bold"), (doc["label"], f"bold {colour}"))]
    # Text is never read as markup; plain() keeps a log's escape sequences away from the terminal.
    parts += [Text(f"  {plain(reason)}") for reason in doc["reasons"]]
    cells = doc["measurements"]["cells"]
    if cells:
        table = Table(title="decode speed, candidate vs frontier (paired, interleaved)")
        for col in ("model", "context", "speedup", "95% CI", "p", "MDE", "pairs"):
            table.add_column(col, justify="right")
        for row in cells:
            c = row["comparison"]
            table.add_row(Text(plain(row["model"])), _context(row), _pct(c["speedup"]),
                          f"[{_pct(c['ci_low'])}, {_pct(c['ci_high'])}]", f"{c['p_value']:.2g}",
                          f"{100 * c['mde']:.2f}%", str(c["n_pairs"]))
        parts.append(table)
    gates = doc["measurements"]["gates"]
    if gates:
        table = Table(title="gates")
        for col in ("gate", "model", "value", "limit", "result"):
            table.add_column(col)
        for g in gates:
            table.add_row(Text(plain(g["name"])), Text(plain(g["model"])), _num(g["value"]), _num(g["limit"]),
                          "[green]pass" if g["passed"] else "[red]FAIL")
        parts.append(table)
    return Group(*parts)


def print_report(doc: Mapping[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(terminal(doc))


def transparency_markdown(checkpoint: str, seq: int, key_id: str, site_url: str | None = None) -> str:
    """The PR comment's transparency-log note: the signed checkpoint that includes the verdict's ledger
    entry ``seq``, and the one command that checks the entry's inclusion proof against it offline.

    Nothing here is contributor text (the checkpoint is the validator's), but it is quoted all the same.
    """
    proof = f"proof-{int(seq)}.json"
    where = (
        f"the proof from {inline(site_url.rstrip('/') + f'/proofs/{int(seq)}.json', 300)}"
        if site_url
        else f"the proof from `evalbot ledger prove {int(seq)}` on a copy of the ledger"
    )
    return "\n".join(
        [
            f"<details><summary>ledger entry {int(seq)}: signed checkpoint</summary>",
            "",
            block(checkpoint, max_lines=40, max_bytes=8_192),
            "",
            f"Verify ({where}, saved as {inline(proof)}): "
            f"{inline(f'evalbot ledger verify-proof {proof} --pubkey {key_id}.pub', 300)}",
            "",
            "</details>",
            "",
        ]
    )
