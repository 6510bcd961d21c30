"""Paired-ratio statistics on simulated interleaved trials with known ground truth."""

import math

import numpy as np
import pytest

from harness.stats import SamplingRule, compare_paired, log_ratios


def simulate(n, effect, noise=0.01, drift=0.05, seed=0):
    """ABAB timings: a slow drift shared by each pair, independent per-trial noise, true speedup ``effect``."""
    rng = np.random.default_rng(seed)
    base = 1e-3 * (1 + drift * np.sin(np.linspace(0, 6, n)))
    frontier = base * np.exp(rng.normal(0, noise, n))
    candidate = base / (1 + effect) * np.exp(rng.normal(0, noise, n))
    return frontier, candidate


def test_aa_interval_covers_one_about_95_percent_of_the_time():
    covered = 0
    for seed in range(200):
        c = compare_paired(*simulate(200, 0.0, seed=seed), n_resamples=1000)
        covered += c.ci_low <= 1.0 <= c.ci_high
    assert 0.90 <= covered / 200 <= 0.99


@pytest.mark.parametrize("effect", [0.01, 0.03, 0.10])
def test_known_effect_lies_in_its_interval_and_is_significant(effect):
    c = compare_paired(*simulate(400, effect, seed=3))
    assert c.ci_low <= 1 + effect <= c.ci_high
    assert c.p_value < 0.01
    assert c.ci_low > 1.0


def test_drift_cancels_in_pairs():
    # A 30 % drift over the run would swamp a 1 % effect in unpaired means; pairing removes it.
    c = compare_paired(*simulate(300, 0.01, drift=0.3, seed=5))
    assert c.ci_low > 1.0 and abs(c.speedup - 1.01) < 0.004


def test_mde_shrinks_with_more_pairs_and_matches_resolution():
    small = np.mean([compare_paired(*simulate(50, 0.0, seed=s), n_resamples=1000).mde for s in range(8)])
    large = np.mean([compare_paired(*simulate(800, 0.0, seed=s), n_resamples=1000).mde for s in range(8)])
    assert large < small / 2.5  # ~1/sqrt(n): 4x fewer would be exact
    # 1 % per-trial noise on each side, 800 pairs: the median resolves well under 0.5 %.
    assert large < 0.005


def test_regression_shows_as_speedup_below_one():
    c = compare_paired(*simulate(200, -0.05, seed=2))
    assert c.ci_high < 1.0 and math.isclose(c.speedup, 0.95, rel_tol=0.01)


def test_identical_timings():
    t = np.full(30, 1e-3)
    c = compare_paired(t, t)
    assert c.speedup == 1.0 and c.p_value == 1.0 and c.ci_low == c.ci_high == 1.0


def test_sampling_rule_stops_on_width_or_budget():
    rule = SamplingRule(target_halfwidth=0.002, min_pairs=20, budget_s=60)
    f, c = simulate(2000, 0.0, noise=0.01)
    assert not rule.done(f[:10], c[:10], elapsed_s=1)
    assert not rule.done(f[:50], c[:50], elapsed_s=1)
    assert rule.done(f[:2000], c[:2000], elapsed_s=1)
    assert rule.done(f[:50], c[:50], elapsed_s=61)


def test_bad_input():
    with pytest.raises(ValueError, match="equal-length"):
        log_ratios(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="positive"):
        log_ratios(np.array([1.0, 0.0]), np.ones(2))
    with pytest.raises(ValueError, match="at least 5"):
        compare_paired(np.ones(3), np.ones(3))


def test_an_interval_over_blocks_that_disagree_covers_them_all():
    rng = np.random.default_rng(5)
    frontier = 1e-3 * (1 + rng.normal(0, 0.001, 80))
    candidate = frontier * (1 + rng.normal(0, 0.001, 80))
    blocks = np.repeat(np.arange(8), 10)
    biased = candidate * np.where(blocks % 2 == 0, 1.02, 1.0)  # every other block 2 % slower
    blocked = compare_paired(frontier, biased, blocks=blocks)
    assert blocked.ci_low < 1 / 1.02 + 0.002 and blocked.ci_high > 0.998
    # consistent blocks: about the same interval as without blocks
    same = compare_paired(frontier, candidate, blocks=blocks)
    alone = compare_paired(frontier, candidate)
    assert (same.ci_high - same.ci_low) < 2 * (alone.ci_high - alone.ci_low)
    with pytest.raises(ValueError):
        compare_paired(frontier, candidate, blocks=blocks[:10])


def test_stopping_rule_waits_for_blocks_to_agree():
    rng = np.random.default_rng(6)
    frontier = 1e-3 * (1 + rng.normal(0, 0.0005, 60))
    candidate = frontier * (1 + rng.normal(0, 0.0005, 60))
    blocks = np.repeat(np.arange(6), 10)
    rule = SamplingRule(target_halfwidth=0.002, min_pairs=40, budget_s=60)
    assert rule.done(frontier, candidate, 1.0, blocks)
    assert not rule.done(frontier, candidate * np.where(blocks % 2 == 0, 1.02, 1.0), 1.0, blocks)
