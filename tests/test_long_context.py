"""The long-context probe's inputs: the corpus cycled to length, the last positions probed."""

from __future__ import annotations

import numpy as np
import pytest

from harness.long_context import probe_positions, probe_tokens


def test_the_corpus_is_cycled_to_the_probe_length() -> None:
    corpus = np.array([5, 6, 7])
    assert probe_tokens(corpus, 8).tolist() == [5, 6, 7, 5, 6, 7, 5, 6]
    assert probe_tokens(corpus, 2).tolist() == [5, 6]
    assert len(probe_tokens(np.arange(2396), 16384)) == 16384


def test_the_probed_positions_are_the_last_ones() -> None:
    assert probe_positions(16384, 8).tolist() == list(range(16376, 16384))


@pytest.mark.parametrize(("n", "steps"), [(10, 0), (10, 11)])
def test_impossible_probes_are_refused(n: int, steps: int) -> None:
    with pytest.raises(ValueError, match="steps"):
        probe_positions(n, steps)
    with pytest.raises(ValueError, match="corpus"):
        probe_tokens(np.array([], dtype=np.int64), 4)
