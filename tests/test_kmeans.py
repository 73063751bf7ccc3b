"""Spherical k-means: sizing, determinism, recovery of clusters, degenerate samples."""

from __future__ import annotations

import numpy as np
import pytest

from edge_colbert.errors import InvalidInputError
from edge_colbert.kmeans import assign_nearest, kmeans, num_centroids


def _clusters(seed: int, k: int, per: int, d: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = np.repeat(np.arange(k), per)
    x = centers[labels] + spread * rng.standard_normal((k * per, d)).astype(np.float32) / np.sqrt(d)
    return x.astype(np.float32), centers


def test_num_centroids_is_a_clamped_power_of_two() -> None:
    assert num_centroids(1_300_000) == 4096
    assert num_centroids(100_000) == 1024
    assert num_centroids(5) == 5  # never more centroids than tokens
    assert num_centroids(9) == 9
    assert num_centroids(1) == 1
    assert num_centroids(10**13) == 65536
    for n in (16, 100, 12_345, 777_777):
        c = num_centroids(n)
        assert c & (c - 1) == 0 and 8 <= c <= n
    with pytest.raises(InvalidInputError, match="0 tokens"):
        num_centroids(0)


def test_deterministic_for_a_seed() -> None:
    x, _ = _clusters(0, 20, 50, 16, 0.5)
    a = kmeans(x, 20, iterations=5, seed=3)
    b = kmeans(x, 20, iterations=5, seed=3)
    np.testing.assert_array_equal(a, b)
    c = kmeans(x, 20, iterations=5, seed=4)
    assert not np.array_equal(a, c)


def test_recovers_well_separated_clusters() -> None:
    x, centers = _clusters(1, 12, 80, 32, 0.3)
    got = kmeans(x, 12, iterations=10, seed=0)
    assert got.shape == (12, 32) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    # Every true center has a centroid close to it, and no centroid is shared.
    sim = centers @ got.T
    assert np.all(sim.max(axis=1) > 0.98)
    assert len(set(sim.argmax(axis=1).tolist())) == 12


def test_more_centroids_than_distinct_points() -> None:
    base = np.eye(4, 8, dtype=np.float32)
    x = np.repeat(base, 5, axis=0)  # 20 rows, 4 distinct directions
    got = kmeans(x, 10, seed=0)
    assert got.shape == (10, 8)
    assert {tuple(r) for r in got.tolist()} == {tuple(r) for r in base.tolist()}
    labels, _ = assign_nearest(x, got)
    np.testing.assert_allclose(got[labels], x)


def test_rejects_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="non-zero"):
        kmeans(np.zeros((5, 4), np.float32), 2)
    with pytest.raises(InvalidInputError, match="k=0"):
        kmeans(np.ones((5, 4), np.float32), 0)
    with pytest.raises(InvalidInputError, match="float"):
        kmeans(np.ones((5, 4), np.int64), 2)


def test_assign_nearest_is_exact_and_chunk_independent(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    c = rng.standard_normal((40, 16)).astype(np.float32)
    want = np.argmax(x @ c.T, axis=1)
    monkeypatch.setattr("edge_colbert.kmeans._CHUNK_ENTRIES", 40 * 7)
    labels, best = assign_nearest(x, c)
    np.testing.assert_array_equal(labels, want)
    np.testing.assert_allclose(best, (x @ c.T).max(axis=1), rtol=1e-6)
