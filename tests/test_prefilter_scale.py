"""The prefilter at scale: the open reads every document's centroid ids without a Python
step per document, checks them in their own dtype, builds the centroid view in linear
time, and the search knobs grow with the collection (prefilter.search_settings)."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_colbert import store as store_module
from edge_colbert.errors import IndexFileError, InvalidInputError
from edge_colbert.prefilter import (
    DEFAULT_CANDIDATES,
    DEFAULT_NPROBE,
    HYBRID_CANDIDATE_SHARE,
    HYBRID_KEEP_SHARE,
    LARGE_COLLECTION,
    SMALL_CANDIDATES,
    SMALL_COLLECTION,
    Prefilter,
    _by_centroid,
    default_keep,
    search_settings,
)
from edge_colbert.quantize import quantize_int8
from edge_colbert.store import ModelInfo, NewDocument, Store

MODEL = ModelInfo(identity="test-model (64-d, abc)", name="test-model", dim=64)


def _docs(count: int, seed: int) -> list[NewDocument]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        tokens = int(rng.integers(1, 9))
        vectors = rng.standard_normal((tokens, MODEL.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = np.unique(rng.integers(0, 700, size=tokens)).astype(np.uint32)
        out.append(NewDocument(f"d{i}", "t", "{}", quantize_int8(vectors), ids))
    return out


def _filled(tmp_path: Path, count: int = 50) -> Store:
    store = Store(tmp_path / "i.db", model=MODEL)
    with store.transaction() as conn:
        store.insert(conn, _docs(count, 1), "uint16")
    return store


@pytest.mark.parametrize("chunk", [1, 7, 50, 1 << 18])
def test_flat_read_matches_the_per_row_read_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    store = _filled(tmp_path)
    with store.transaction() as conn:  # a gap in the rowids, as deletes leave
        store.delete(conn, ["d3", "d20"])
    monkeypatch.setattr(store_module, "FLAT_CHUNK_ROWS", chunk)
    rowids, lists = store.doc_centroids("uint16")
    flat_rowids, lengths, flat = store.doc_centroids_flat("uint16")
    assert flat.dtype == np.uint16 and flat_rowids.tolist() == rowids.tolist()
    assert lengths.tolist() == [len(x) for x in lists]
    assert flat.tolist() == np.concatenate(lists).tolist()
    after = int(rowids[30])
    tail_rowids, tail_lengths, tail = store.doc_centroids_flat("uint16", after=after)
    assert tail_rowids.tolist() == rowids[31:].tolist()
    assert tail.tolist() == np.concatenate(lists[31:]).tolist()
    assert tail_lengths.sum() == tail.size
    store.close()


def test_flat_read_falls_back_to_rows_when_aggregated_out_of_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _filled(tmp_path)
    monkeypatch.setattr(store_module, "FLAT_CHUNK_ROWS", 7)
    expected = store.doc_centroids_flat("uint16")
    real = store_module._int_list
    calls = {"rowids": 0}

    def shuffled(text: str, count: int) -> np.ndarray:
        values = real(text, count)
        calls["rowids"] += 1
        # The third list parsed is the second chunk's rowids: hand them back reversed.
        return values[::-1].copy() if calls["rowids"] == 3 else values

    monkeypatch.setattr(store_module, "_int_list", shuffled)
    got = store.doc_centroids_flat("uint16")
    assert calls["rowids"] == 3  # the fallback read the rest row by row, from the start
    for a, b in zip(got, expected, strict=True):
        assert a.tolist() == b.tolist()
    store.close()


def test_flat_read_of_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.db", model=MODEL)
    rowids, lengths, flat = store.doc_centroids_flat("uint16")
    assert rowids.size == lengths.size == flat.size == 0 and flat.dtype == np.uint16
    store.close()


def test_flat_read_refuses_a_blob_of_half_an_id(tmp_path: Path) -> None:
    store = _filled(tmp_path, 5)
    path = store.path
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE doc_centroids SET ids = x'010203' WHERE doc = 2")
    store = Store(path, model=MODEL)
    with pytest.raises(IndexFileError, match="doc_centroids"):
        store.doc_centroids_flat("uint16")
    store.close()


def test_compact_ids_are_checked_without_a_copy() -> None:
    pre = Prefilter(np.eye(4, 8, dtype=np.float32))
    flat = np.frombuffer(np.array([0, 2, 1, 3, 3], dtype=np.uint16).tobytes(), dtype=np.uint16)
    pre.set_postings_flat(np.array([5, 9, 11]), np.array([2, 2, 1]), flat)
    assert np.shares_memory(pre._doc_cents, flat)  # read-only file bytes, used as they are
    assert pre.postings(3).tolist() == [9, 11] and pre.postings(1).tolist() == [9]
    # Ids out of order within a document, or repeated, are sorted (a copy) and deduplicated.
    pre.set_postings_flat(np.array([5]), np.array([3]), np.array([2, 0, 2], dtype=np.uint16))
    assert pre.num_postings == 2 and pre.postings(0).tolist() == [5]
    with pytest.raises(InvalidInputError, match=r"\[0, 4\)"):
        pre.set_postings_flat(np.array([1]), np.array([1]), np.array([4], dtype=np.uint16))
    with pytest.raises(InvalidInputError, match="integers"):
        pre.set_postings_flat(np.array([1]), np.array([1]), np.array([1.0]))


def test_centroid_view_equals_a_plain_grouping() -> None:
    rng = np.random.default_rng(3)
    count = 300
    lists = [np.unique(rng.integers(0, count, size=rng.integers(1, 30))) for _ in range(500)]
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    cents = np.concatenate(lists).astype(np.uint16)
    post_indptr, slots = _by_centroid(indptr, cents, count)
    assert slots.dtype == np.int32 and post_indptr[-1] == cents.size
    for c in range(count):
        expected = [d for d, ids in enumerate(lists) if c in ids]
        assert slots[post_indptr[c] : post_indptr[c + 1]].tolist() == expected
    # A document without ids (never posted by this module, but the view must not shift).
    holed = np.insert(indptr, 3, indptr[3])
    holed_indptr, holed_slots = _by_centroid(holed, cents, count)
    assert holed_indptr.tolist() == post_indptr.tolist()
    assert holed_slots.tolist() == np.where(slots >= 3, slots + 1, slots).tolist()
    empty_indptr, empty_slots = _by_centroid(np.zeros(1, np.int64), cents[:0], count)
    assert empty_indptr.tolist() == [0] * (count + 1) and empty_slots.size == 0


def test_centroid_view_across_sort_blocks() -> None:
    # 65,536 centroids leave 16 bits of each sort key to the position: blocks of 65,536
    # entries, so 200,000 entries span four blocks and each centroid's runs must chain.
    rng = np.random.default_rng(4)
    count = 1 << 16
    lengths = rng.integers(1, 40, size=10_000)
    lists = [np.unique(rng.integers(0, 2_000, size=n)) * 32 for n in lengths]
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    cents = np.concatenate(lists).astype(np.uint16)
    assert cents.size > 3 * (1 << 16)
    post_indptr, slots = _by_centroid(indptr, cents, count)
    owner = np.repeat(np.arange(len(lists), dtype=np.int32), np.diff(indptr))
    assert slots.tolist() == owner[np.argsort(cents, kind="stable")].tolist()
    assert np.diff(post_indptr).tolist() == np.bincount(cents, minlength=count).tolist()


def test_settings_keep_small_collections_as_they_were() -> None:
    for documents in (0, 5_183, SMALL_COLLECTION, SMALL_COLLECTION + 1, LARGE_COLLECTION):
        for k in (1, 10, 100):
            got = search_settings(documents, k)
            small = documents <= SMALL_COLLECTION
            assert (got.nprobe, got.candidates, got.keep) == (
                DEFAULT_NPROBE,
                SMALL_CANDIDATES if small else DEFAULT_CANDIDATES,
                default_keep(k),
            )
            # Hybrid search's share is of the 2,048 at every size up to LARGE_COLLECTION:
            # it was tuned there (256), and 128 lost top-10 overlap (docs/hybrid.md).
            assert got.hybrid_candidates == DEFAULT_CANDIDATES // HYBRID_CANDIDATE_SHARE
            assert got.hybrid_keep == default_keep(k) // HYBRID_KEEP_SHARE


def test_settings_grow_with_the_collection() -> None:
    sizes = [LARGE_COLLECTION, LARGE_COLLECTION + 1, 1_000_000, 10_000_000]
    settings = [search_settings(n, 10) for n in sizes]
    for small, large in itertools.pairwise(settings):
        assert large.nprobe >= small.nprobe and large.keep >= small.keep
        assert large.candidates >= small.candidates
        assert large.hybrid_candidates >= small.hybrid_candidates
        assert large.hybrid_keep >= small.hybrid_keep
    million = search_settings(1_000_000, 10)
    assert million.candidates > DEFAULT_CANDIDATES and million.keep > default_keep(10)
    assert million.candidates >= million.keep and million.nprobe >= DEFAULT_NPROBE
    assert search_settings(1_000_000, 100).keep >= default_keep(100)  # deep lists stay deep
