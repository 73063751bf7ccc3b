"""The Index API with the tiny real model: add, search, upsert, delete, reopen, filters,
the prefilter against exhaustive MaxSim, centroid (re)training, model checks and read-only use."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from tiny_model import build_tiny_model, vocabulary

from edge_colbert import centroid_lists
from edge_colbert.encoder import Encoder
from edge_colbert.errors import IndexFileError, InvalidInputError, ModelMismatchError
from edge_colbert.index import RETRAIN_FACTOR, Hit, Index

NOTES = [
    "rivers run down to the sea",
    "mountains stand over the city",
    "the cell holds a gene",
    "music in the morning light",
]


def _generated(count: int, seed: int = 0) -> list[str]:
    """``count`` texts of 8-20 words drawn (seeded) from the tiny model's vocabulary."""
    words = [w for w in vocabulary() if w.isalpha()][:600]
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=int(rng.integers(8, 20)))) for _ in range(count)]


def test_add_search_get_len_contains(tmp_path: Path, tiny_encoder: Encoder) -> None:
    with Index(tmp_path / "notes.db", encoder=tiny_encoder) as index:
        ids = index.add(NOTES, ids=["river", "mountain", "cell", "music"], metadata=[{"n": 1}] * 4)
        assert ids == ["river", "mountain", "cell", "music"]
        hits = index.search("rivers run down to the sea", k=2)
        assert [type(h) for h in hits] == [Hit, Hit] and hits[0].id == "river"
        assert hits[0].text == NOTES[0] and hits[0].metadata == {"n": 1}
        assert hits[0].score >= hits[1].score
        assert len(index) == 4 and "cell" in index and "nope" not in index
        assert sorted(index) == sorted(ids)
        got = index.get("cell")
        assert got is not None and got.text == NOTES[2] and math.isnan(got.score)
        assert index.get("nope") is None
        assert dict(index.metadata())["music"] == {"n": 1}
        assert len(index.search("the city", k=100)) == 4


def test_auto_ids_and_int_ids(tmp_path: Path, tiny_encoder: Encoder) -> None:
    with Index(tmp_path / "notes.db", encoder=tiny_encoder) as index:
        auto = index.add(NOTES[:2])
        assert len(auto) == 2 and all(len(i) == 32 and int(i, 16) >= 0 for i in auto)
        # Integer ids are refused on add (7 would be the same document as "7"); lookups
        # still take them as their text.
        assert index.add(NOTES[2:3], ids=["7"]) == ["7"] and "7" in index and 7 in index


def test_upsert_replaces_text_vectors_and_metadata(tmp_path: Path, tiny_encoder: Encoder) -> None:
    with Index(tmp_path / "notes.db", encoder=tiny_encoder) as index:
        index.add(NOTES, ids=["a", "b", "c", "d"])
        index.add(["music in the morning light"], ids=["a"], metadata=[{"v": 2}])
        assert len(index) == 4
        assert index.get("a") == Hit("a", index.get("a").score, NOTES[3], {"v": 2})  # type: ignore[union-attr]
        top = {h.id for h in index.search("music in the morning light", k=2)}
        assert top == {"a", "d"}
        con = sqlite3.connect(tmp_path / "notes.db")
        assert con.execute("SELECT count(*) FROM vectors").fetchone()[0] == 4
        con.close()


def test_delete(tmp_path: Path, tiny_encoder: Encoder) -> None:
    with Index(tmp_path / "notes.db", encoder=tiny_encoder) as index:
        index.add(NOTES, ids=["a", "b", "c", "d"])
        assert index.delete(["a", "a", "missing"]) == 1
        assert index.delete("b") == 1 and index.delete(["b"]) == 0
        assert len(index) == 2 and "a" not in index
        assert {h.id for h in index.search(NOTES[0], k=10)} == {"c", "d"}


def test_reopening_gives_the_same_results(tmp_path: Path, tiny_encoder: Encoder) -> None:
    path = tmp_path / "notes.db"
    texts = _generated(120)
    queries = _generated(5, seed=1)
    with Index(path, encoder=tiny_encoder, train_tokens=500) as index:
        index.add(texts, metadata=[{"i": i} for i in range(len(texts))])
        before = [index.search(q, k=5) for q in queries]
        info = index.info()
    assert info["centroids"] > 0
    with Index(path, encoder=tiny_encoder, train_tokens=500, readonly=True) as index:
        assert [index.search(q, k=5) for q in queries] == before
        assert index.info()["centroids"] == info["centroids"]


def test_without_the_memory_map_results_are_the_same(tmp_path: Path, tiny_encoder: Encoder) -> None:
    path = tmp_path / "notes.db"
    texts = _generated(120)
    queries = _generated(5, seed=1)
    with Index(path, encoder=tiny_encoder, train_tokens=500) as index:
        index.add(texts)
        assert index.store.connection.execute("PRAGMA mmap_size").fetchone()[0] > 0
        before = [index.search(q, k=5) for q in queries]
    for readonly in (True, False):
        with Index(path, encoder=tiny_encoder, readonly=readonly, mmap=False) as index:
            assert index.store.connection.execute("PRAGMA mmap_size").fetchone()[0] == 0
            assert [index.search(q, k=5) for q in queries] == before


def test_where_filters(tmp_path: Path, tiny_encoder: Encoder) -> None:
    nasty = "a') OR 1=1 --"
    with Index(tmp_path / "notes.db", encoder=tiny_encoder) as index:
        index.add(
            NOTES,
            ids=["river", "mountain", "cell", "music"],
            metadata=[{"kind": "nature", nasty: nasty}, {"kind": "nature"}, {"kind": "bio"}, {}],
        )

        def ids(where: dict[str, object], exhaustive: bool = False) -> set[str]:
            return {h.id for h in index.search("the sea", k=10, where=where, exhaustive=exhaustive)}

        assert ids({"kind": "nature"}) == {"river", "mountain"}
        assert ids({"kind": ["bio", "nature"]}, exhaustive=True) == {"river", "mountain", "cell"}
        assert ids({nasty: nasty}) == {"river"}
        assert ids({"kind": nasty}) == set()
        assert ids({nasty: "x"}) == set()
        assert ids({"kind": "nature", "missing": 1}) == set()
        assert len(index) == 4  # nothing was dropped or changed by the attempts


def test_where_filter_with_prefilter_returns_only_matching(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    texts = _generated(300)
    with Index(tmp_path / "big.db", encoder=tiny_encoder, train_tokens=1000) as index:
        index.add(
            texts, ids=[str(i) for i in range(300)], metadata=[{"g": i % 7} for i in range(300)]
        )
        assert index.info()["centroids"] > 0
        for query in texts[:5]:
            hits = index.search(query, k=10, where={"g": 3})
            exact = index.search(query, k=10, where={"g": 3}, exhaustive=True)
            assert all(int(h.id) % 7 == 3 for h in hits) and len(hits) == 10
            assert [h.id for h in hits] == [h.id for h in exact]


def test_prefilter_keeps_the_exhaustive_top10(tmp_path: Path, tiny_encoder: Encoder) -> None:
    texts = _generated(400)
    queries = _generated(30, seed=5)
    with Index(tmp_path / "big.db", encoder=tiny_encoder, train_tokens=1000) as index:
        index.add(texts)
        info = index.info()
        assert info["centroids"] > 0 and info["tokens"] > 1000
        overlaps = []
        for query in queries:
            fast = {h.id for h in index.search(query, k=10)}
            exact = {h.id for h in index.search(query, k=10, exhaustive=True)}
            overlaps.append(len(fast & exact) / 10)
    assert float(np.mean(overlaps)) >= 0.9


def test_centroids_train_at_threshold_and_retrain_past_4x(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    path = tmp_path / "grow.db"
    texts = _generated(400, seed=3)
    with Index(path, encoder=tiny_encoder, train_tokens=600) as index:
        index.add(texts[:20])
        small = index.info()
        assert small["tokens"] < 600 and small["centroids"] == 0 and small["centroid_version"] == 0
        index.add(texts[20:60])
        first = index.info()
        assert first["centroid_version"] == 1 and first["trained_on_tokens"] == first["tokens"]
        # Not yet past 4x: new documents are posted under the existing centroids.
        count = 60
        while index.info()["tokens"] + 200 <= RETRAIN_FACTOR * first["trained_on_tokens"]:
            index.add(texts[count : count + 5])
            count += 5
        assert index.info()["centroid_version"] == 1
        index.add(texts[count : count + 100])
        second = index.info()
    assert second["tokens"] > RETRAIN_FACTOR * first["trained_on_tokens"]
    assert second["centroid_version"] == 2 and second["trained_on_tokens"] == second["tokens"]
    con = sqlite3.connect(path)
    posted = {rowid for rowid, _ in centroid_lists.rows(con)}
    stored = {doc for (doc,) in con.execute("SELECT doc FROM vectors")}
    con.close()
    assert stored == posted


def test_search_vectors_and_rerank(tmp_path: Path, tiny_encoder: Encoder) -> None:
    with Index(tmp_path / "notes.db", encoder=tiny_encoder) as index:
        index.add(NOTES, ids=["a", "b", "c", "d"])
        query = tiny_encoder.encode_queries(["the cell holds a gene"])[0]
        assert index.search_vectors(query, 1)[0].id == "c"
        with pytest.raises(InvalidInputError, match=r"7 dimensions.*16-d"):
            index.search_vectors(np.ones((3, 7), dtype=np.float32), 1)
        ranked = index.rerank("the cell holds a gene", NOTES)
        assert ranked[0][0] == 2 and sorted(i for i, _ in ranked) == [0, 1, 2, 3]
        assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
        assert len(index) == 4


def test_empty_index_searches_to_nothing(tmp_path: Path, tiny_encoder: Encoder) -> None:
    with Index(tmp_path / "empty.db", encoder=tiny_encoder) as index:
        assert index.search("anything", k=3) == [] and len(index) == 0
        assert index.info()["bytes_per_token"] is None


def test_other_model_is_refused(tmp_path: Path, tiny_encoder: Encoder) -> None:
    path = tmp_path / "notes.db"
    with Index(path, encoder=tiny_encoder) as index:
        index.add(NOTES)
    before = path.read_bytes()
    other = Encoder(build_tiny_model(tmp_path / "other", seed=1, name="other-tiny"))
    with pytest.raises(ModelMismatchError) as caught:
        Index(path, encoder=other)
    assert tiny_encoder.identity in str(caught.value) and other.identity in str(caught.value)
    wider = Encoder(build_tiny_model(tmp_path / "wide", dim=32))
    with pytest.raises(ModelMismatchError, match="32-d"):
        Index(path, encoder=wider, readonly=True)
    assert path.read_bytes() == before


def test_readonly_index_reads_and_cannot_write(tmp_path: Path, tiny_encoder: Encoder) -> None:
    path = tmp_path / "notes.db"
    with Index(path, encoder=tiny_encoder) as writer:
        writer.add(NOTES, ids=["a", "b", "c", "d"])
        with Index(path, encoder=tiny_encoder, readonly=True) as reader:
            assert len(reader) == 4 and reader.search(NOTES[1], k=1)[0].id == "b"
            with pytest.raises(IndexFileError, match="readonly"):
                reader.add(["more"])
            with pytest.raises(IndexFileError, match="readonly"):
                reader.delete(["a"])
            # a reader sees later commits of the writer, postings included
            writer.add(["the sea at night"], ids=["e"])
            assert len(reader) == 5 and reader.search("the sea at night", k=1)[0].id == "e"
    with Index(path, readonly=True) as no_model:  # info, get, metadata need no encoder
        assert no_model.info()["documents"] == 5 and no_model.get("e") is not None
