"""Token pooling: exact Ward clustering in numpy (batched), pooled documents, the recorded
factor."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_colbert import cli, pooling
from edge_colbert.encoder import Encoder
from edge_colbert.errors import IndexFileError, InvalidInputError
from edge_colbert.index import Index
from edge_colbert.pooling import MAX_POOL_FACTOR, pool_documents, ward_labels
from edge_colbert.ward import batch_ward_labels

TEXTS = [
    f"document {i} talks about {topic} and {other} with several more words to pool"
    for i, (topic, other) in enumerate(
        [("cats", "dogs"), ("rivers", "lakes"), ("stars", "planets"), ("bread", "cheese")] * 5
    )
]


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def _partition(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == v).tolist()) for v in np.unique(labels)}


def _naive_ward(x: np.ndarray, clusters: int) -> np.ndarray:
    """Ward by definition: merge the two clusters whose union raises the within-cluster
    sum of squares least, recomputed from the members every step (slow, obviously right)."""
    groups = [[i] for i in range(x.shape[0])]
    data = x.astype(np.float64)
    while len(groups) > clusters:
        best = (np.inf, 0, 0)
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                ma, mb = data[groups[a]].mean(0), data[groups[b]].mean(0)
                na, nb = len(groups[a]), len(groups[b])
                cost = na * nb / (na + nb) * float(((ma - mb) ** 2).sum())
                if cost < best[0]:
                    best = (cost, a, b)
        _, a, b = best
        groups[a] += groups.pop(b)
    labels = np.empty(x.shape[0], dtype=np.int64)
    for g, members in enumerate(groups):
        labels[members] = g
    return labels


@pytest.mark.parametrize(("n", "clusters"), [(12, 6), (25, 9), (40, 20), (7, 1), (5, 5)])
def test_ward_matches_the_definition(n: int, clusters: int) -> None:
    x = _unit(np.random.default_rng(n).standard_normal((n, 8)))
    got = ward_labels(x, clusters)
    assert got.dtype == np.int64 and got.shape == (n,)
    assert sorted(set(got.tolist())) == list(range(clusters))
    assert _partition(got) == _partition(_naive_ward(x, clusters))
    # Labels follow the tokens' order: cluster c's first token comes before cluster c+1's.
    firsts = [int(np.flatnonzero(got == c)[0]) for c in range(clusters)]
    assert firsts == sorted(firsts)


def test_ward_matches_scipy_on_token_sized_documents() -> None:
    hierarchy = pytest.importorskip(
        "scipy.cluster.hierarchy", reason="SciPy is only the reference here, not a dependency"
    )
    rng = np.random.default_rng(7)
    for n in (30, 120, 250):
        x = _unit(rng.standard_normal((n, 64)))
        ref = hierarchy.fcluster(
            hierarchy.linkage(x.astype(np.float64), "ward"), n // 2, "maxclust"
        )
        assert _partition(ward_labels(x, n // 2)) == _partition(np.asarray(ref))


def test_a_batch_clusters_each_set_as_if_alone() -> None:
    # Sets of different sizes run in lockstep; each gets the partition of its own run, also
    # where it has nothing to merge, one point, or asks for more clusters than points.
    rng = np.random.default_rng(11)
    sets = [_unit(rng.standard_normal((n, 8))) for n in (12, 1, 25, 3, 40, 7)]
    wanted = [6, 1, 9, 5, 20, 7]
    got = batch_ward_labels(sets, wanted)
    for x, clusters, labels in zip(sets, wanted, got, strict=True):
        assert labels.shape == (x.shape[0],)
        assert _partition(labels) == _partition(_naive_ward(x, min(clusters, x.shape[0])))
    assert batch_ward_labels([], []) == []


def test_pooling_in_small_batches_equals_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    docs = [_unit(rng.standard_normal((n, 16))) for n in (9, 40, 3, 25, 17, 60, 2)]
    whole = pool_documents(docs, 2)
    monkeypatch.setattr(pooling, "WARD_BATCH_ENTRIES", 40 * 40)  # a document or two a batch
    for a, b in zip(pool_documents(docs, 2), whole, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pooled_documents_keep_the_first_token_and_unit_means() -> None:
    rng = np.random.default_rng(3)
    docs = [_unit(rng.standard_normal((n, 16))) for n in (1, 2, 3, 10, 31)]
    for factor in (2, 3):
        pooled = pool_documents(docs, factor)
        for doc, out in zip(docs, pooled, strict=True):
            want = doc.shape[0] if doc.shape[0] <= 2 else 1 + math.ceil((doc.shape[0] - 1) / factor)
            assert out.shape == (want, 16) and out.dtype == np.float32
            np.testing.assert_array_equal(out[0], doc[0])
            np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert all(
        a is b or np.array_equal(a, b) for a, b in zip(pool_documents(docs, 1), docs, strict=True)
    )


def test_index_pools_records_the_factor_and_applies_it_later(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    path = tmp_path / "pooled.db"
    with Index(tmp_path / "plain.db", encoder=tiny_encoder) as plain:
        plain.add(TEXTS[:10])
        plain_tokens = plain.info()["tokens"]
    with Index(path, encoder=tiny_encoder, pool_factor=2) as index:
        assert index.pool_factor == 2
        index.add(TEXTS[:10])
        pooled_tokens = index.info()["tokens"]
        assert pooled_tokens < 0.65 * plain_tokens
        hits = index.search("cats and dogs", k=3)
        assert hits and "cats" in hits[0].text
    with Index(path, encoder=tiny_encoder) as again:  # no pool_factor: the file's is used
        assert again.pool_factor == 2
        again.add(TEXTS[10:])
        assert again.info()["tokens"] < 0.65 * 2 * plain_tokens
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'pool_factor'").fetchone()[0] == "2"
    con.close()


def test_bad_pool_factors_are_refused_and_the_file_is_untouched(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    for bad in (0, -1, MAX_POOL_FACTOR + 1, 10**9, 2.0, "2", True):
        with pytest.raises(InvalidInputError, match="pool_factor"):
            Index(tmp_path / "never.db", encoder=tiny_encoder, pool_factor=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "never.db").exists()
    path = tmp_path / "one.db"
    with Index(path, encoder=tiny_encoder) as index:
        index.add(TEXTS[:3])
    before = path.read_bytes()
    with pytest.raises(InvalidInputError, match=r"pools tokens by 1.*new file with pool_factor=2"):
        Index(path, encoder=tiny_encoder, pool_factor=2)
    assert path.read_bytes() == before
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'pool_factor'")
    con.commit()
    con.close()
    with pytest.raises(IndexFileError, match=r"pool factor '99'.*upgrade"):
        Index(path, encoder=tiny_encoder)


def test_cli_index_pool_factor(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    for i, text in enumerate(TEXTS[:6]):
        (folder / f"{i}.txt").write_text(text, encoding="utf-8")
    db = tmp_path / "notes.db"
    args = ["--model", str(tiny_model_dir), "index", str(db), str(folder)]
    assert cli.main([*args, "--pool-factor", "2"]) == 0
    with Index(db, readonly=True) as index:
        assert index.pool_factor == 2 and len(index) >= 6
    assert cli.main([*args, "--pool-factor", "3"]) == 1  # a file with chunks keeps its factor
    assert cli.main([*args, "--pool-factor", "0"]) == 2  # argparse: not a positive integer
