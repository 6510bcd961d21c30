"""Rows as plain JSON-ready dicts: what ``--json`` prints and what the site renders."""

from __future__ import annotations

import json
from typing import Any

from ledger.canonical import utc_timestamp
from ledger.models import Evaluation, FrontierAdvance


def evaluation_dict(row: Evaluation) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "repo": row.repo,
        "pr": row.pr,
        "commit": row.commit_sha,
        "author": row.author,
        "base_commit": row.base_commit,
        "frontier_commit": row.frontier_commit,
        "gpu": row.gpu,
        "gpu_class": row.gpu_class,
        "basket": row.basket,
        "evalbot_version": row.evalbot_version,
        "policy_hash": row.policy_hash,
        "started_at": utc_timestamp(row.started_at),
        "finished_at": utc_timestamp(row.finished_at),
        "status": row.status,
        "label": row.label,
        "reasons": json.loads(row.reasons),
        "measurements": [
            {
                "model": m.model,
                "gates_passed": m.gates_passed,
                "tokens_per_s": m.tokens_per_s,
                "frontier_tokens_per_s": m.frontier_tokens_per_s,
                "speedup": m.speedup,
                "speedup_ci_low": m.speedup_ci_low,
                "speedup_ci_high": m.speedup_ci_high,
            }
            for m in row.measurements
        ],
        "verdict": json.loads(row.verdict),
        "entry": {
            "recorded_at": utc_timestamp(row.entry.recorded_at),
            "hash": row.entry.entry_hash,
            "prev_hash": row.entry.prev_hash,
            "key_id": row.entry.key_id,
        },
    }


def advance_dict(row: FrontierAdvance) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "basket": row.basket,
        "gpu_class": row.gpu_class,
        "commit": row.commit_sha,
        "author": row.author,
        "previous_commit": row.previous_commit,
        "delta": row.delta,
        "model_deltas": json.loads(row.model_deltas),
        "evaluation_seq": row.evaluation_seq,
        "advanced_at": utc_timestamp(row.advanced_at),
        "entry": {"hash": row.entry.entry_hash, "key_id": row.entry.key_id},
    }
