"""The benchmark's inputs never repeat within a cell, stay in the cell's band, and come from the seed;
the repeat audit's gate compares the candidate's gain from repetition with the frontier's."""

from __future__ import annotations

import numpy as np

from harness.gates import repeat_audit
from harness.measurements import RepeatAudit
from harness.trial_inputs import band, trial_input

SEED = 0x5EED_1234_5678_9ABC


def test_every_pair_gets_a_fresh_start_and_fresh_tokens_within_the_band():
    for context, vocab in [(128, 1024), (4096, 151936), (32768, 262144)]:
        draws = [trial_input(SEED, i, context, 32, vocab) for i in range(400)]
        starts = np.array([d.start for d in draws])
        assert starts.min() >= context - band(context) and starts.max() <= context
        assert len(set(starts.tolist())) > min(band(context), 100)  # spread over the band
        assert len({(d.start, d.tokens.tobytes()) for d in draws}) == len(draws)  # no input twice
        assert all(d.tokens.dtype == np.int32 and 0 <= d.tokens.min() and d.tokens.max() < vocab for d in draws)
    assert (band(128), band(4096), band(32768), band(0)) == (16, 256, 256, 0)


def test_the_inputs_are_the_seeds_and_nobody_elses():
    a, b = trial_input(SEED, 7, 4096, 64, 1000), trial_input(SEED, 7, 4096, 64, 1000)
    assert a.start == b.start and a.tokens.tobytes() == b.tokens.tobytes()  # another box, same seed
    others = [trial_input(SEED + 1 + k, 7, 4096, 64, 1000) for k in range(8)]
    assert all(o.tokens.tobytes() != a.tokens.tobytes() for o in others)
    assert trial_input(2**64 + 5, 1, 128, 8, 10).tokens.tobytes() == trial_input(5, 1, 128, 8, 10).tokens.tobytes()


def test_the_repeat_audit_rejects_a_candidate_that_gains_from_repetition():
    caching = repeat_audit("qwen3moe-tiny", RepeatAudit(4096, 16, frontier_ratio=1.004, candidate_ratio=1.31), 0.05)
    assert not caching.passed and caching.name == "audit:repeat"
    assert abs(caching.value - (1.31 / 1.004 - 1)) < 1e-12
    assert "1.310x as fast as fresh inputs for the candidate, 1.004x for the frontier" in caching.detail
    honest = repeat_audit("qwen3moe-tiny", RepeatAudit(4096, 16, frontier_ratio=1.01, candidate_ratio=1.02), 0.05)
    assert honest.passed
    broken = repeat_audit("m", RepeatAudit(128, 16, frontier_ratio=1.0, candidate_ratio=float("nan")), 0.05)
    assert not broken.passed
