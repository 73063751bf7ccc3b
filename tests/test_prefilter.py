"""Prefilter: exact assignment, candidates, incremental postings, pruning, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from edge_colbert.errors import InvalidInputError
from edge_colbert.kmeans import kmeans, num_centroids
from edge_colbert.maxsim import maxsim_scores
from edge_colbert.prefilter import DEFAULT_NPROBE, Prefilter, default_keep

DIM = 32


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), dtype=np.float32)


def _collection(n_docs: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Topic-clustered documents (terms + context noise + a shared [CLS]) and queries."""
    rng = np.random.default_rng(seed)
    terms = _unit(rng.standard_normal((600, DIM)))
    topics = [rng.choice(600, 40, replace=False) for _ in range(60)]
    cls = _unit(rng.standard_normal(DIM))
    docs, doc_topic = [], rng.integers(0, 60, n_docs)
    for t in doc_topic:
        ids = rng.choice(topics[t], int(rng.integers(8, 40)))
        vecs = _unit(terms[ids] + 0.25 * rng.standard_normal((ids.size, DIM)) / np.sqrt(DIM) * 2)
        docs.append(np.vstack([cls[None], vecs]))
    queries = []
    for target in rng.choice(n_docs, 20, replace=False):
        picks = docs[target][1 + rng.choice(docs[target].shape[0] - 1, 4)]
        real = _unit(picks + 0.2 * rng.standard_normal(picks.shape) / np.sqrt(DIM) * 2)
        masks = _unit(real.mean(0) + 0.1 * rng.standard_normal((8, DIM)))
        queries.append(np.vstack([cls[None], real, masks]))
    return docs, queries


# The fixture below: the prefilter, the documents, the queries and each document's centroids.
Built = tuple[Prefilter, list[np.ndarray], list[np.ndarray], list[np.ndarray]]


@pytest.fixture(scope="module")
def built() -> Built:
    docs, queries = _collection(1500)
    tokens = np.concatenate(docs)
    sample = tokens[np.random.default_rng(1).choice(tokens.shape[0], 8000, replace=False)]
    centroids = kmeans(sample, num_centroids(tokens.shape[0]), iterations=3, seed=0)
    pre = Prefilter(centroids)
    cents = [np.unique(pre.assign(d)) for d in docs]
    pre.set_postings(np.arange(len(docs)), cents)
    return pre, docs, queries, cents


def test_assign_is_exact(built: Built) -> None:
    pre, docs, _, _ = built
    tokens = np.concatenate(docs[:50])
    got = pre.assign(tokens)
    assert got.dtype == np.uint32 and got.shape == (tokens.shape[0],)
    want = [int(np.argmax([float(t @ c) for c in pre.centroids])) for t in tokens[:200]]
    assert got[:200].tolist() == want
    np.testing.assert_array_equal(got, np.argmax(tokens @ pre.centroids.T, axis=1))


def test_probe_finds_nearest_centroids(built: Built) -> None:
    pre, _, queries, _ = built
    probes = pre.probe(queries[0], 4)
    assert probes.shape == (queries[0].shape[0], 4) and probes.dtype == np.uint32
    exact = np.argsort(-(queries[0] @ pre.centroids.T), axis=1)[:, :4]
    recall = np.mean([len(set(a) & set(b)) / 4 for a, b in zip(probes, exact, strict=True)])
    assert recall >= 0.95
    assert pre.probe(queries[0], 10**6).shape[1] == pre.num_centroids


def test_candidates_contain_exhaustive_top(built: Built) -> None:
    pre, docs, queries, _ = built
    for q in queries:
        cand = pre.candidates(q, nprobe=DEFAULT_NPROBE)
        assert cand.dtype == np.int64 and np.all(np.diff(cand) > 0)
        top = np.argsort(-maxsim_scores(q, docs))[:10]
        assert set(top.tolist()) <= set(cand.tolist())


def test_prune_keeps_exhaustive_top10_at_defaults(
    built: Built,
) -> None:
    pre, docs, queries, _ = built
    keep = default_keep(10)
    assert keep < len(docs)  # otherwise pruning would not be exercised
    overlaps = []
    for q in queries:
        cand = pre.candidates(q, nprobe=DEFAULT_NPROBE)
        kept = pre.prune(q, cand, keep=keep)
        assert kept.shape[0] == min(keep, cand.shape[0])
        scores = maxsim_scores(q, [docs[i] for i in kept])
        got = set(kept[np.argsort(-scores)[:10]].tolist())
        want = set(np.argsort(-maxsim_scores(q, docs))[:10].tolist())
        overlaps.append(len(got & want) / 10)
    assert np.mean(overlaps) >= 0.95


def test_centroid_scores_are_exact_centroid_interaction(
    built: Built,
) -> None:
    pre, _, queries, cents = built
    q = queries[3]
    rows = np.arange(0, 1500, 7)
    full = pre.centroid_scores(q, np.concatenate([rows, [10**7]]))
    qc = q @ pre.centroids.T
    want = [qc[:, cents[r]].max(axis=1).sum() for r in rows]
    np.testing.assert_allclose(full[:-1], want, rtol=1e-5)
    assert full[-1] == -np.inf  # never posted


def test_candidates_narrow_and_keep_the_exhaustive_top(
    built: Built,
) -> None:
    """Stage 1 hands far fewer documents than the posting union to stage 2."""
    pre, docs, queries, _ = built
    union_sizes, sizes, found = [], [], []
    for q in queries:
        probes = np.unique(pre.probe(q, DEFAULT_NPROBE))
        union = np.unique(np.concatenate([pre.postings(int(c)) for c in probes]))
        cand = pre.candidates(q, nprobe=DEFAULT_NPROBE, limit=200)
        assert cand.size <= 200 and np.all(np.diff(cand) > 0)
        assert set(cand.tolist()) <= set(union.tolist())
        top = np.argsort(-maxsim_scores(q, docs))[:10]
        found.append(len(set(top.tolist()) & set(cand.tolist())) / 10)
        union_sizes.append(union.size)
        sizes.append(cand.size)
    assert np.mean(sizes) <= 200 < np.mean(union_sizes)
    assert np.mean(found) >= 0.95


def test_probe_is_exact_and_best_first(built: Built) -> None:
    pre, _, queries, _ = built
    qc = queries[1] @ pre.centroids.T
    probes = pre.probe(queries[1], 6)
    np.testing.assert_array_equal(probes, np.argsort(-qc, axis=1, kind="stable")[:, :6])


def test_unsorted_postings_are_sorted(built: Built) -> None:
    pre, _, _, cents = built
    ref = Prefilter(pre.centroids)
    ref.set_postings(np.arange(50), [cents[i] for i in range(50)])
    shuffled = Prefilter(pre.centroids)
    order = np.random.default_rng(3).permutation(50)
    shuffled.set_postings(order, [np.concatenate([cents[i][::-1], cents[i][:1]]) for i in order])
    for c in range(pre.num_centroids):
        np.testing.assert_array_equal(shuffled.postings(c), ref.postings(c))
    assert shuffled.num_postings == ref.num_postings
    with pytest.raises(InvalidInputError, match="repeat"):
        shuffled.set_postings(np.array([3, 1, 3]), [cents[0], cents[1], cents[2]])


def test_incremental_add_and_discard_equal_a_rebuild(
    built: Built,
) -> None:
    pre, _, queries, cents = built
    inc = Prefilter(pre.centroids)
    rowids = np.arange(1500) * 3 + 10
    inc.add_postings(rowids[:700], cents[:700])
    inc.add_postings(rowids[900:], cents[900:])
    inc.add_postings(rowids[700:900], cents[700:900])  # out-of-order rowids merge in
    inc.add_postings(rowids[5:6], [cents[6]])  # re-adding a rowid replaces it
    gone = rowids[100:400]
    inc.discard(np.concatenate([gone, [10**9]]))  # an unknown rowid is ignored
    left = np.setdiff1d(np.arange(1500), np.arange(100, 400))
    ref_cents = list(cents)
    ref_cents[5] = cents[6]
    ref = Prefilter(pre.centroids)
    ref.set_postings(rowids[left], [ref_cents[i] for i in left])
    assert inc.num_postings == ref.num_postings and inc.num_documents == ref.num_documents
    for c in range(inc.num_centroids):
        np.testing.assert_array_equal(inc.postings(c), ref.postings(c))
    for q in queries[:5]:
        np.testing.assert_array_equal(inc.candidates(q, nprobe=4), ref.candidates(q, nprobe=4))
        cand = inc.candidates(q, nprobe=4)
        np.testing.assert_array_equal(inc.prune(q, cand, keep=50), ref.prune(q, cand, keep=50))
        assert not set(cand.tolist()) & set(gone.tolist())


def test_prune_small_sets_and_unknown_rows(built: Built) -> None:
    pre, _, queries, _ = built
    assert pre.prune(queries[0], np.array([5, 3, 3]), keep=10).tolist() == [3, 5]
    # Rows that were never posted rank last.
    kept = pre.prune(queries[0], np.array([10**7, 10**7 + 1, 0, 1]), keep=2)
    assert kept.tolist() == [0, 1]
    with pytest.raises(InvalidInputError, match="keep"):
        pre.prune(queries[0], np.arange(5), keep=0)


def test_save_and_from_bytes_round_trip(built: Built) -> None:
    pre, _, queries, _ = built
    blob = pre.save_centroids()
    assert len(blob) == pre.num_centroids * DIM * 4
    again = Prefilter.from_bytes(blob, DIM)
    np.testing.assert_array_equal(again.centroids, pre.centroids)
    assert again.dim == DIM and again.num_postings == 0
    np.testing.assert_array_equal(again.assign(queries[0]), pre.assign(queries[0]))
    with pytest.raises(InvalidInputError, match="48-dim"):
        Prefilter.from_bytes(blob[:-4], 48)


def test_dimension_mismatch_names_both_numbers(built: Built) -> None:
    pre, _, _, _ = built
    wrong = np.ones((3, 64), dtype=np.float32)
    for call in (pre.assign, lambda v: pre.probe(v, 2), lambda v: pre.candidates(v)):
        with pytest.raises(InvalidInputError, match=r"64 dimensions.* 32"):
            call(wrong)


def test_bad_postings_raise(built: Built) -> None:
    pre, _, _, _ = built
    with pytest.raises(InvalidInputError, match=r"2 rowids but 1"):
        pre.add_postings(np.array([1, 2]), [np.array([0], np.uint32)])
    with pytest.raises(InvalidInputError, match=str(pre.num_centroids)):
        pre.add_postings(np.array([1]), [np.array([pre.num_centroids], np.uint32)])
