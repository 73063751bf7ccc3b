"""MaxSim kernels against a plain double-loop reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge_colbert.errors import InvalidInputError
from edge_colbert.maxsim import best_matches, maxsim_int8_packed, maxsim_scores
from edge_colbert.quantize import dequantize_int8, quantize_int8


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))


def _reference(query: np.ndarray, doc: np.ndarray) -> float:
    """MaxSim as the definition reads, in float64 Python loops."""
    total = 0.0
    for q in query.astype(np.float64):
        best = None
        for t in doc.astype(np.float64):
            s = float(sum(a * b for a, b in zip(q, t, strict=True)))
            best = s if best is None else max(best, s)
        total += 0.0 if best is None else best
    return total


def _pack(docs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([d.shape[0] for d in docs])
    return np.concatenate(docs), offsets


@pytest.mark.parametrize(("tq", "lengths"), [(1, [1]), (4, [1, 3, 0, 7]), (8, [0, 0, 5]), (3, [9])])
def test_maxsim_matches_loop_reference(tq: int, lengths: list[int]) -> None:
    rng = np.random.default_rng(tq)
    d = 6
    query = _unit(rng, tq, d)
    docs = [_unit(rng, n, d) for n in lengths]
    got = maxsim_scores(query, docs)
    assert got.dtype == np.float32 and got.shape == (len(docs),)
    want = [_reference(query, doc) for doc in docs]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # A document without tokens scores exactly 0.
    assert all(got[i] == 0 for i, n in enumerate(lengths) if n == 0)


def test_blocks_do_not_change_scores() -> None:
    rng = np.random.default_rng(5)
    query = _unit(rng, 32, 64)
    docs = [_unit(rng, int(n), 64) for n in rng.integers(0, 40, 60)]
    whole = maxsim_scores(query, docs)
    tiny = maxsim_scores(query, docs, block_tokens=7)
    np.testing.assert_allclose(tiny, whole, rtol=1e-6, atol=1e-6)


def test_int8_packed_agrees_with_dequantized_and_original() -> None:
    rng = np.random.default_rng(6)
    query = _unit(rng, 32, 64)
    docs = [_unit(rng, int(n), 64) for n in rng.integers(1, 120, 80)]
    docs[10] = docs[10][:0]  # an empty document in the middle
    packed, offsets = _pack(docs)
    codes = quantize_int8(packed)
    got = maxsim_int8_packed(query, codes, offsets, block_tokens=500)
    deq = dequantize_int8(codes)
    on_deq = maxsim_scores(query, [deq[a:b] for a, b in itertools.pairwise(offsets)])
    np.testing.assert_allclose(got, on_deq, rtol=1e-5, atol=1e-5)
    original = maxsim_scores(query, docs)
    # Each of 32 terms moves by at most ~sum|q| * step/2; in practice far less.
    assert np.abs(got - original).max() < 0.05
    assert got[10] == 0
    np.testing.assert_array_equal(np.argsort(-got)[:5], np.argsort(-original)[:5])


def test_int8_packed_rejects_bad_offsets_and_dims() -> None:
    rng = np.random.default_rng(7)
    codes = quantize_int8(_unit(rng, 10, 8))
    query = _unit(rng, 2, 8)
    with pytest.raises(InvalidInputError, match="offsets"):
        maxsim_int8_packed(query, codes, np.array([0, 4, 9]))
    with pytest.raises(InvalidInputError, match="offsets"):
        maxsim_int8_packed(query, codes, np.array([0, 6, 4, 10]))
    with pytest.raises(InvalidInputError, match=r"16 dimensions.*8"):
        maxsim_int8_packed(_unit(rng, 2, 16), codes, np.array([0, 10]))
    with pytest.raises(InvalidInputError, match="int8"):
        maxsim_int8_packed(query, codes.astype(np.int16), np.array([0, 10]))


def test_no_documents() -> None:
    query = np.ones((2, 4), dtype=np.float32)
    assert maxsim_scores(query, []).shape == (0,)
    empty = maxsim_int8_packed(query, np.zeros((0, 4), np.int8), np.zeros(1, np.int64))
    assert empty.shape == (0,)


def test_best_matches_is_argmax_per_query_token() -> None:
    rng = np.random.default_rng(8)
    doc = _unit(rng, 12, 16)
    query = doc[[3, 7, 7, 0]] + 0.01 * rng.standard_normal((4, 16)).astype(np.float32)
    got = best_matches(query, doc)
    assert got.tolist() == [3, 7, 7, 0]
    single = best_matches(query, doc[5:6])
    assert single.tolist() == [0, 0, 0, 0]
    with pytest.raises(InvalidInputError, match="no token"):
        best_matches(query, doc[:0])
    with pytest.raises(InvalidInputError, match=r"16 dimensions.*8"):
        best_matches(query, doc[:, :8])
