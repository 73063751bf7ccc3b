"""A calibrated "weak match" cue: whether a hit's MaxSim score says the query was matched
well, or only that this is the least bad of unrelated documents.

A MaxSim score is the sum, over the query's tokens, of each token's best cosine with the
document, so it grows with the query's length; divided by the number of query vectors it is
a mean best cosine per query token (:func:`match_strength`), comparable across queries.
:data:`WEAK_MATCH_STRENGTH` was calibrated for the bundled model by
``benchmarks/weak_match.py`` on scifact-dev (tuned on one half of the queries, checked on the
other): 95% of judged-relevant abstracts score above it. It applies to MaxSim scores only
(not to fused hybrid scores), and to other models only roughly.

Thread-safe: pure functions.
"""

from __future__ import annotations

# Mean best cosine per query token below which a hit is a weak match (bundled model). On the
# held-out half of scifact-dev it flagged 6.0% of judged-relevant abstracts and 74.7% of the
# best hits of unrelated questions (medians: relevant 0.735, unrelated best hit 0.525).
WEAK_MATCH_STRENGTH = 0.55


def match_strength(score: float, query_tokens: int) -> float:
    """The MaxSim ``score`` per query vector: about 1 when every query token found a near
    copy, lower as the match loosens."""
    return float(score) / max(1, int(query_tokens))


def is_weak_match(
    score: float, query_tokens: int, *, threshold: float = WEAK_MATCH_STRENGTH
) -> bool:
    """Whether a MaxSim hit is a weak match: its :func:`match_strength` is below
    ``threshold``. ``query_tokens`` is the number of query vectors the score summed over
    (``len(encoder.encode_queries([query])[0])``)."""
    return match_strength(score, query_tokens) < threshold


def hit_is_weak(semantic: float | None, query_tokens: int | None) -> bool | None:
    """Whether a hit with MaxSim score ``semantic`` is a weak match, or None when no MaxSim
    was computed (keyword search) and so nothing can be said."""
    if semantic is None or query_tokens is None:
        return None
    return is_weak_match(semantic, query_tokens)
