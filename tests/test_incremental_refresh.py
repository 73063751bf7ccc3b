"""A reader follows another process's commits incrementally: after an add, an upsert of the
last document, a delete, it loads only the new postings and drops the deleted ones, and ends
with exactly the postings a fresh open builds; a retrain elsewhere reloads everything.
Also: rowids are never reused, and writes to a read-only index raise ReadOnlyIndexError."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tiny_model import vocabulary

from edge_colbert import centroid_lists
from edge_colbert.encoder import Encoder
from edge_colbert.errors import IndexFileError, ReadOnlyIndexError
from edge_colbert.index import Index


def _generated(count: int, seed: int) -> list[str]:
    """``count`` texts of 8-20 words drawn (seeded) from the tiny model's vocabulary."""
    words = [w for w in vocabulary() if w.isalpha()][:600]
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=int(rng.integers(8, 20)))) for _ in range(count)]


def _postings(index: Index) -> dict[int, tuple[int, ...]]:
    """Every posted document's centroid ids, as the index holds them in memory."""
    prefilter = index._prefilter
    assert prefilter is not None
    by_doc: dict[int, list[int]] = {}
    for centroid in range(prefilter.num_centroids):
        for rowid in prefilter.postings(centroid).tolist():
            by_doc.setdefault(rowid, []).append(centroid)
    return {rowid: tuple(ids) for rowid, ids in by_doc.items()}


def _fresh_postings(path: Path) -> dict[int, tuple[int, ...]]:
    with Index(path, readonly=True) as fresh:
        return _postings(fresh)


def _traced(index: Index) -> list[str]:
    """Start recording the SQL the index's connection runs (the public ``store`` hook)."""
    statements: list[str] = []
    index.store.connection.set_trace_callback(statements.append)
    return statements


def test_reader_refreshes_postings_incrementally(
    tmp_path: Path, tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Eight documents a chunk: the 40 first fill five chunks, so reading "only the new
    # rows" is visible as reading only the chunks above the rowids the reader has.
    monkeypatch.setattr(centroid_lists, "CHUNK_DOCS", 8)
    path = tmp_path / "shared.db"
    texts = _generated(600, seed=11)
    with Index(path, encoder=tiny_encoder, train_tokens=300) as writer:
        writer.add(texts[:40], ids=[f"d{i}" for i in range(40)])
        assert writer.info()["centroid_version"] == 1
        with Index(path, encoder=tiny_encoder, readonly=True) as reader:
            assert _postings(reader) == _fresh_postings(path)
            steps: list[Callable[[], object]] = [
                lambda: writer.add(texts[40:45], ids=[f"d{i}" for i in range(40, 45)]),
                # Upsert of the newest document: SQLite alone would give its rowid again.
                lambda: writer.add([texts[100]], ids=["d44"]),
                lambda: writer.delete(["d3", "d44"]),
                lambda: writer.add([texts[101]], ids=["d44"]),
            ]
            for step in steps:
                seen = reader.store.rowid_high()
                step()
                statements = _traced(reader)
                hits = reader.search(texts[101], k=3)
                reader.store.connection.set_trace_callback(None)
                # No reload of the centroids blob (readguard's length() check reads no blob).
                assert not any("SELECT version, vectors FROM centroids" in s for s in statements)
                loads = [s for s in statements if "FROM centroid_lists WHERE last > " in s]
                bounds = {int(s.split("WHERE last > ")[1].split()[0]) for s in loads}
                assert bounds == {seen}  # only the chunks holding rowids it has not seen
                chunks = writer.store.connection.execute(
                    "SELECT count(*) FROM centroid_lists WHERE last > ?", (seen,)
                ).fetchone()[0]
                assert chunks <= 2
                assert _postings(reader) == _fresh_postings(path)
            assert hits[0].id == "d44" and hits[0].text == texts[101]
            assert "d3" not in {h.id for h in reader.search(texts[3], k=5)}
            # A retrain elsewhere changes the centroids: the reader reloads them all.
            start = 102
            while writer.info()["centroid_version"] == 1 and start < len(texts):
                writer.add(texts[start : start + 100])
                start += 100
            assert writer.info()["centroid_version"] == 2
            reader.search(texts[0], k=1)
            assert reader.info()["centroids"] == writer.info()["centroids"]
            assert _postings(reader) == _fresh_postings(path)


def test_rowids_are_never_reused(tmp_path: Path, tiny_encoder: Encoder) -> None:
    path = tmp_path / "ids.db"
    with Index(path, encoder=tiny_encoder) as index:
        index.add(["first text here", "second text here"], ids=["a", "b"])
        index.add(["second text again"], ids=["b"])  # replaces the newest row
        index.delete(["b"])
        index.add(["third text here"], ids=["c"])
    con = sqlite3.connect(path)
    rowids = dict(con.execute("SELECT id, rowid FROM documents").fetchall())
    con.close()
    assert rowids == {"a": 1, "c": 4}


def test_writes_to_a_readonly_index_say_how_to_fix(tmp_path: Path, tiny_encoder: Encoder) -> None:
    path = tmp_path / "ro.db"
    with Index(path, encoder=tiny_encoder) as writer:
        writer.add(["some text"], ids=["a"])
    with Index(path, encoder=tiny_encoder, readonly=True) as reader:
        for write in (lambda: reader.add(["more"]), lambda: reader.delete("a")):
            with pytest.raises(ReadOnlyIndexError, match="without readonly=True") as caught:
                write()
            assert isinstance(caught.value, IndexFileError)
        assert len(reader) == 1


def test_a_retrain_between_a_readers_reads_is_not_seen_half(
    tmp_path: Path, tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer retrains (more centroids) right after a reader has read the centroids: the
    reader's postings still come from the same commit as its centroids."""
    path = tmp_path / "race.db"
    texts = _generated(400, seed=5)
    with Index(path, encoder=tiny_encoder, train_tokens=300) as writer:
        writer.add(texts[:40], ids=[f"d{i}" for i in range(40)])
        before = writer.info()["centroids"]
        store_type = type(writer.store)
        original = store_type.centroids
        fired: list[int] = []

        def centroids_then_retrain(self: object) -> object:
            found = original(self)  # type: ignore[arg-type]
            if self is not writer.store and not fired:
                fired.append(1)
                # Four times the tokens: the writer retrains with more centroids now.
                writer.add(texts[40:400], ids=[f"d{i}" for i in range(40, 400)])
                assert writer.info()["centroids"] > before
            return found

        monkeypatch.setattr(store_type, "centroids", centroids_then_retrain)
        with Index(path, encoder=tiny_encoder, readonly=True) as reader:
            assert fired, "the writer did not run between the reader's reads"
            prefilter = reader._prefilter
            assert prefilter is not None and prefilter.num_centroids == before
            monkeypatch.setattr(store_type, "centroids", original)
            # The next search follows the retrain as a whole.
            reader.search("cell", k=3)
            assert reader.info()["centroids"] == writer.info()["centroids"]
            assert _postings(reader) == _fresh_postings(path)
