"""The prefilter at scale: the open reads every document's centroid ids without a Python
step per document, checks them in their own dtype, builds the centroid view in linear
time, and the search knobs grow with the collection (prefilter.search_settings)."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_colbert import centroid_lists
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


def _docs(count: int, seed: int, prefix: str = "d") -> list[NewDocument]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        tokens = int(rng.integers(1, 9))
        vectors = rng.standard_normal((tokens, MODEL.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = np.unique(rng.integers(0, 700, size=tokens)).astype(np.uint32)
        out.append(NewDocument(f"{prefix}{i}", "t", "{}", quantize_int8(vectors), ids))
    return out


def _filled(tmp_path: Path, count: int = 50) -> Store:
    store = Store(tmp_path / "i.db", model=MODEL)
    with store.transaction() as conn:
        store.insert(conn, _docs(count, 1), "uint16")
    return store


def _chunks(store: Store) -> dict[int, tuple[bytes, bytes, bytes]]:
    """The stored centroid-list chunks by key: (rowids, sizes, ids) blobs."""
    rows = store.connection.execute("SELECT last, rowids, sizes, ids FROM centroid_lists")
    return {int(r[0]): (r[1], r[2], r[3]) for r in rows}


@pytest.mark.parametrize("chunk", [1, 7, 50, 1024])
def test_flat_read_returns_every_list_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(centroid_lists, "CHUNK_DOCS", chunk)
    docs = _docs(50, 1)
    store = Store(tmp_path / "i.db", model=MODEL)
    for part in (docs[:20], docs[20:37], docs[37:]):  # later batches append to the tail
        with store.transaction() as conn:
            store.insert(conn, part, "uint16")
    with store.transaction() as conn:  # gaps in the rowids, as deletes leave
        store.delete(conn, ["d3", "d20", "d49"])
    expected = {
        i + 1: np.asarray(d.centroids)
        for i, d in enumerate(docs)
        if d.id not in ("d3", "d20", "d49")
    }
    rowids, lists = store.doc_centroids("uint16")
    flat_rowids, lengths, flat = store.doc_centroids_flat("uint16")
    assert flat.dtype == np.uint16 and flat_rowids.tolist() == rowids.tolist()
    assert rowids.tolist() == list(expected)
    assert [x.tolist() for x in lists] == [ids.tolist() for ids in expected.values()]
    assert lengths.tolist() == [len(x) for x in lists]
    assert flat.tolist() == np.concatenate(lists).tolist()
    assert all(len(r) // 8 <= chunk for r, _, _ in _chunks(store).values())
    for after in (-1, 0, int(rowids[30]), 48, 50):
        tail_rowids, tail_lengths, tail = store.doc_centroids_flat("uint16", after=after)
        keep = rowids > after
        assert tail_rowids.tolist() == rowids[keep].tolist()
        kept = [x for x, k in zip(lists, keep, strict=True) if k]
        assert tail.tolist() == (np.concatenate(kept).tolist() if kept else [])
        assert tail_lengths.tolist() == [len(x) for x in kept]
    store.close()


def test_add_and_delete_rewrite_only_the_chunks_they_touch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(centroid_lists, "CHUNK_DOCS", 10)
    store = _filled(tmp_path, 45)  # chunks ending at rowids 10, 20, 30, 40 and a tail of 5
    before = _chunks(store)
    assert sorted(before) == [10, 20, 30, 40, 45]
    with store.transaction() as conn:
        store.insert(conn, _docs(1, 9, "new"), "uint16")  # rowid 46 joins the tail chunk
    after_add = _chunks(store)
    assert sorted(after_add) == [10, 20, 30, 40, 46]
    assert all(after_add[k] == before[k] for k in (10, 20, 30, 40))
    with store.transaction() as conn:
        store.delete(conn, [f"d{i}" for i in range(10, 20)] + ["d23"])  # rowids 11-20, 24
    after_delete = _chunks(store)
    assert sorted(after_delete) == [10, 30, 40, 46]  # the emptied chunk is gone
    assert all(after_delete[k] == after_add[k] for k in (10, 40, 46))
    assert len(after_delete[30][0]) // 8 == 9  # rowid 24 dropped, the key kept
    with store.transaction() as conn:
        store.insert(conn, _docs(9, 8, "more"), "uint16")  # tail fills to 10, then a new chunk
    assert sorted(_chunks(store)) == [10, 30, 40, 50, 55]
    assert store.doc_centroids_flat("uint16")[0].tolist() == [
        *range(1, 11),
        *range(21, 24),
        *range(25, 56),
    ]
    store.close()


def test_flat_read_of_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.db", model=MODEL)
    rowids, lengths, flat = store.doc_centroids_flat("uint16")
    assert rowids.size == lengths.size == flat.size == 0 and flat.dtype == np.uint16
    store.close()


def _crafted(store: Store, **blobs: bytes) -> Store:
    """``store`` reopened after setting columns of its first chunk to ``blobs``."""
    path = store.path
    store.close()
    with sqlite3.connect(path) as conn:
        key = conn.execute("SELECT min(last) FROM centroid_lists").fetchone()[0]
        for column, value in blobs.items():
            conn.execute(f"UPDATE centroid_lists SET {column} = ? WHERE last = ?", (value, key))
    return Store(path, model=MODEL)


@pytest.mark.parametrize(
    ("craft", "message"),
    [
        ({"sizes": np.array([3, 3, 2, 4, 2], dtype="<u4").tobytes()}, "whole number of 2-byte"),
        ({"sizes": np.array([2, 2, 2, 2, 2], dtype="<u4").tobytes()}, "add up to 10 bytes"),
        ({"sizes": np.array([2, 2, 2, 2], dtype="<u4").tobytes()}, "5 rowids but 4"),
        ({"rowids": np.array([1, 3, 2, 4, 5], dtype="<i8").tobytes()}, "not increasing"),
        ({"rowids": np.array([1, 2, 3, 4, 9], dtype="<i8").tobytes()}, r"outside its range"),
        ({"rowids": np.array([0, 2, 3, 4, 5], dtype="<i8").tobytes()}, r"outside its range"),
        ({"rowids": b"\x01\x02\x03"}, "not whole numbers"),
    ],
)
def test_flat_read_refuses_a_damaged_chunk(
    tmp_path: Path, craft: dict[str, bytes], message: str
) -> None:
    docs = [
        NewDocument(f"d{i}", "t", "{}", _docs(1, i)[0].codes, np.arange(i % 2 + 1, dtype=np.uint32))
        for i in range(5)
    ]
    store = Store(tmp_path / "i.db", model=MODEL)
    with store.transaction() as conn:  # five documents of 1, 2, 1, 2, 1 ids: 14 bytes
        store.insert(conn, docs, "uint16")
    store = _crafted(store, ids=bytes(14), **craft)
    with pytest.raises(IndexFileError, match=rf"centroid_lists row 5 .*{message}"):
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
