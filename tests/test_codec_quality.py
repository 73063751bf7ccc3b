"""Residual codes rank as the float vectors they code: the quality bounds of a residual file.

A residual file scores decoded vectors, so a defect in coding (codes made against other
centroids than the stored ones, bucket values off, a retraining that re-codes wrongly, a
read path that decodes differently) shows as MaxSim scores drifting from the float vectors'
while every round trip still "works". These tests bound that drift on a seeded, clustered
synthetic collection (token vectors as an encoder makes them: unit length, around a few
dozen directions), through the product's own paths: ``Index.add`` into a residual file in
batches (a first training, then a retraining that re-codes every document from its decoded
vectors), and ``compact`` of an int8 file (coded once, from the int8 codes).

Measured on this set, mean |score error| per query token (top-10 overlap with the float
ranking), Lloyd-Max buckets against ColBERTv2's quantile buckets:

- ``Index.add``, residual2: 0.0172 (0.890) against 0.0330 (0.885); residual4: 0.0036
  (0.925) against 0.0110 (0.935);
- ``compact`` to residual2: 0.0083 (0.920) against 0.0201 (0.900); int8 itself: 0.0001.

The bounds sit between the two, so a return to the weaker buckets fails too; ``Index.add``
gets a wider one than ``compact`` because a retraining codes decoded vectors again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from edge_colbert.codec import ResidualCodec
from edge_colbert.compact import compact_index
from edge_colbert.index import Index
from edge_colbert.kmeans import kmeans
from edge_colbert.maxsim import maxsim_float_packed
from edge_colbert.prefilter import Prefilter

DIM = 64
DOCS = 200
TOKENS = 30  # per document
QUERIES = 20
# Most mean score error per query token and least top-10 overlap with the float ranking.
BOUNDS = {"residual2": (0.024, 0.85), "residual4": (0.007, 0.88)}
COMPACT_BOUND = (0.013, 0.88)


def _clustered(rows: int, seed: int) -> npt.NDArray[np.float32]:
    """Unit vectors around 24 shared directions (the same for every seed)."""
    centres = np.random.default_rng(7).normal(size=(24, DIM))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, 24, rows)] + 0.6 * rng.normal(size=(rows, DIM))
    unit: npt.NDArray[np.float32] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(
        np.float32
    )
    return unit


DOC_VECTORS = _clustered(DOCS * TOKENS, seed=1)
QUERY_VECTORS = [_clustered(16, seed=100 + i) for i in range(QUERIES)]
TEXTS = [f"doc-{i}" for i in range(DOCS)]


class _GivenVectors:
    """Stands in for the encoder inside ``Index.add``: document ``doc-i`` is given its
    synthetic token vectors (what is tested is how the index codes and scores them)."""

    @dataclass(frozen=True)
    class _Manifest:
        name: str = "synthetic-64"
        languages: tuple[str, ...] = ("en",)

    def __init__(self) -> None:
        self.manifest = self._Manifest()
        self.dim = DIM
        self.identity = "synthetic-64 (64-d, given vectors)"

    def encode_documents(self, texts: Sequence[str]) -> list[npt.NDArray[np.float32]]:
        """Each ``doc-i``'s vectors."""
        rows = [int(t.split("-")[1]) for t in texts]
        return [DOC_VECTORS[r * TOKENS : (r + 1) * TOKENS] for r in rows]

    def encode_queries(self, texts: Sequence[str]) -> list[npt.NDArray[np.float32]]:
        """Queries come through ``search_vectors`` only."""
        raise AssertionError("queries are searched by vectors here")


def _float_scores(query: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    offsets = np.arange(0, DOCS * TOKENS + 1, TOKENS)
    return maxsim_float_packed(query, DOC_VECTORS, offsets)


def _drift(index: Index) -> tuple[float, float]:
    """Mean |score - float score| per query token, and mean top-10 overlap, over the
    queries, through the index's exhaustive search."""
    errors, overlaps = [], []
    for query in QUERY_VECTORS:
        exact = _float_scores(query)
        hits = index.search_vectors(query, k=DOCS, exhaustive=True)
        assert len(hits) == DOCS
        scores = np.zeros(DOCS, dtype=np.float32)
        for hit in hits:
            scores[int(str(hit.id).split("-")[1])] = hit.score
        errors.append(float(np.abs(scores - exact).mean()) / query.shape[0])
        top = set(np.argsort(-exact, kind="stable")[:10].tolist())
        overlaps.append(len(top & set(np.argsort(-scores, kind="stable")[:10].tolist())) / 10)
    return float(np.mean(errors)), float(np.mean(overlaps))


def _add_all(path: Path, codec: str) -> None:
    with Index(path, encoder=_GivenVectors(), codec=codec, train_tokens=1000) as index:  # type: ignore[arg-type]
        for start in range(0, DOCS, 20):  # batches: a first training, then a retraining
            index.add(TEXTS[start : start + 20], ids=TEXTS[start : start + 20])
        assert index.info()["centroid_version"] >= 2


@pytest.mark.parametrize("codec", ["residual2", "residual4"])
def test_a_residual_file_scores_within_its_bound_of_the_float_vectors(
    tmp_path: Path, codec: str
) -> None:
    path = tmp_path / f"{codec}.db"
    _add_all(path, codec)
    with Index(path, readonly=True) as index:
        error, overlap = _drift(index)
    most, least = BOUNDS[codec]
    assert error < most, (codec, error)
    assert overlap >= least, (codec, overlap)


def test_a_compacted_residual_file_scores_within_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "int8.db"
    _add_all(path, "int8")
    with Index(path, readonly=True) as index:
        int8_error, _ = _drift(index)
    assert int8_error < 0.001  # int8 codes: the reference the residual file is coded from
    compact_index(path, codec="residual2")
    with Index(path, readonly=True) as index:
        assert index.info()["codec"] == "residual2"
        error, overlap = _drift(index)
    most, least = COMPACT_BOUND
    assert error < most, error
    assert overlap >= least, overlap


@pytest.mark.parametrize("nbits", [2, 4])
def test_trained_bucket_values_are_the_means_of_what_they_hold(nbits: int) -> None:
    sample = DOC_VECTORS[:4000]
    prefilter = Prefilter(kmeans(sample, 64, seed=0))
    labels = prefilter.assign(sample)
    codec = ResidualCodec.train(sample, labels, prefilter.centroids, nbits=nbits)
    residuals = sample - prefilter.centroids[labels]
    for d in range(DIM):
        held = np.searchsorted(codec.cutoffs[d], residuals[:, d], side="right")
        for bucket in np.unique(held):
            mean = residuals[held == bucket, d].mean()
            assert codec.weights[d, bucket] == pytest.approx(mean, abs=1e-5), (d, bucket)
    # Lower error than ColBERTv2's quantile buckets on vectors it was not trained on.
    held_out, held_labels = DOC_VECTORS[4000:], prefilter.assign(DOC_VECTORS[4000:])
    buckets = 1 << nbits
    quantile = ResidualCodec(
        prefilter.centroids,
        np.quantile(residuals, np.arange(1, buckets) / buckets, axis=0).T.astype(np.float32),
        np.quantile(residuals, (np.arange(buckets) + 0.5) / buckets, axis=0).T.astype(np.float32),
        nbits,
    )

    def error(c: ResidualCodec) -> float:
        decoded = c.decode(c.encode(held_out, held_labels))
        return float(((decoded - held_out) ** 2).sum(axis=1).mean())

    assert error(codec) < 0.85 * error(quantile), (error(codec), error(quantile))
