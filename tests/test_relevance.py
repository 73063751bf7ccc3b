"""The weak-match cue: score per query token against the calibrated threshold."""

from __future__ import annotations

import pytest

from edge_colbert.encoder import Encoder
from edge_colbert.errors import ModelFolderError
from edge_colbert.maxsim import maxsim_scores
from edge_colbert.relevance import WEAK_MATCH_STRENGTH, is_weak_match, match_strength


def test_strength_is_the_score_per_query_token() -> None:
    assert match_strength(16.0, 32) == 0.5
    assert match_strength(3.0, 0) == 3.0  # no division by zero
    assert is_weak_match((WEAK_MATCH_STRENGTH - 0.01) * 32, 32)
    assert not is_weak_match((WEAK_MATCH_STRENGTH + 0.01) * 32, 32)
    assert not is_weak_match(0.9 * 10, 10)
    assert is_weak_match(0.9 * 10, 10, threshold=0.95)


def test_the_bundled_model_flags_an_unrelated_best_hit_and_not_a_good_one() -> None:
    try:
        encoder = Encoder()
    except ModelFolderError as error:  # a checkout without the bundled model
        pytest.skip(f"the bundled model is not available: {error}")
    documents = [
        "Vitamin D supplements lowered the risk of fractures in older women in a two-year "
        "randomized trial.",
        "The tumour suppressor gene p53 is mutated in about half of human cancers.",
    ]
    vectors = encoder.encode_documents(documents)
    for query, weak in (
        ("Does vitamin D prevent fractures in elderly women?", False),
        ("How do I configure the printer driver on my laptop?", True),
    ):
        (q,) = encoder.encode_queries([query])
        best = float(maxsim_scores(q, vectors).max())
        assert is_weak_match(best, len(q)) is weak, (query, match_strength(best, len(q)))


def test_hit_is_weak_is_null_without_a_maxsim_score() -> None:
    from edge_colbert.relevance import hit_is_weak

    assert hit_is_weak(None, 8) is None  # keyword search: no MaxSim computed
    assert hit_is_weak(3.0, None) is None  # no query vectors counted
    assert hit_is_weak((WEAK_MATCH_STRENGTH - 0.05) * 8, 8) is True
    assert hit_is_weak((WEAK_MATCH_STRENGTH + 0.05) * 8, 8) is False
