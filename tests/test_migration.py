"""Schema migrations: a file written by an older edge-colbert opens, is upgraded in one
transaction, keeps every document, ranks as before, and takes new writes.

The version 2 file has version 2's tables: each document's centroid ids in the vectors
row, no checksum, no full-text table, the centroid version in ``meta`` too, no token count
and (as files written before it existed) no ``rowid_high`` mark. The version 1 file adds
the per-token float16 scales that version 2 no longer stores (here ``1 / ||codes||``, the
scale that makes each stored token unit length, as version 1's were up to float16 rounding).
"""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pytest

from edge_colbert import Index, ReadOnlyIndexError, centroid_lists
from edge_colbert.encoder import Encoder
from edge_colbert.quantize import inverse_norms
from edge_colbert.schema import SCHEMA_VERSION

TEXTS = [
    "rivers run to the sea",
    "mountains stand over the city",
    "the cell holds a gene",
    "the river meets the sea at the delta",
    "a gene is read inside the cell",
]
IDS = ["river", "mountain", "cell", "delta", "gene"]


def _as_version_4(path: Path) -> None:
    """Rewrite a current index into schema version 4: one ``doc_centroids`` row per
    document (the chunks' lists, byte for byte) instead of ``centroid_lists``."""
    con = sqlite3.connect(path)
    with con:
        con.execute(
            "CREATE TABLE doc_centroids ("
            "doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON DELETE CASCADE, "
            "ids BLOB NOT NULL)"
        )
        for rowids, sizes, ids in con.execute(
            "SELECT rowids, sizes, ids FROM centroid_lists ORDER BY last"
        ).fetchall():
            ends = np.cumsum(np.frombuffer(sizes, dtype="<u4")).tolist()
            starts = [0, *ends[:-1]]
            con.executemany(
                "INSERT INTO doc_centroids(doc, ids) VALUES (?, ?)",
                [
                    (int(r), ids[a:b])
                    for r, a, b in zip(
                        np.frombuffer(rowids, dtype="<i8"), starts, ends, strict=True
                    )
                ],
            )
        con.execute("DROP TABLE centroid_lists")
        con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _as_version_3(path: Path) -> None:
    """Rewrite a current (int8) index into schema version 3: centroids without buckets."""
    _as_version_4(path)
    con = sqlite3.connect(path)
    with con:
        con.execute(
            "CREATE TABLE centroids_v3 (id INTEGER PRIMARY KEY CHECK (id = 0), "
            "version INTEGER NOT NULL, vectors BLOB NOT NULL)"
        )
        con.execute("INSERT INTO centroids_v3 SELECT id, version, vectors FROM centroids")
        con.execute("DROP TABLE centroids")
        con.execute("ALTER TABLE centroids_v3 RENAME TO centroids")
        con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _as_version_2(path: Path) -> None:
    """Rewrite a current index into schema version 2."""
    _as_version_3(path)
    con = sqlite3.connect(path)
    with con:
        version = con.execute("SELECT coalesce(max(version), 0) FROM centroids").fetchone()[0]
        con.execute(
            "CREATE TABLE vectors_v2 ("
            "doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON DELETE CASCADE, "
            "codes BLOB NOT NULL, centroids BLOB)"
        )
        con.execute(
            "INSERT INTO vectors_v2(doc, codes, centroids) SELECT v.doc, v.codes, c.ids "
            "FROM vectors v LEFT JOIN doc_centroids c ON c.doc = v.doc"
        )
        for table in ("vectors", "doc_centroids", "documents_fts"):
            con.execute(f"DROP TABLE {table}")
        con.execute("ALTER TABLE vectors_v2 RENAME TO vectors")
        con.execute(
            "DELETE FROM meta WHERE key IN "
            "('tokens', 'codec', 'pool_factor', 'fts_tokenizer', 'rowid_high')"
        )
        con.execute("INSERT INTO meta VALUES ('centroid_version', ?)", (str(version),))
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _as_version_1(path: Path) -> None:
    """Rewrite a current index into schema version 1: vectors with a scales column."""
    _as_version_2(path)
    con = sqlite3.connect(path)
    with con:
        rows = con.execute("SELECT doc, codes, centroids FROM vectors").fetchall()
        con.execute("DROP TABLE vectors")
        con.execute(
            "CREATE TABLE vectors ("
            "doc INTEGER PRIMARY KEY REFERENCES documents(rowid) ON DELETE CASCADE, "
            "codes BLOB NOT NULL, scales BLOB NOT NULL, centroids BLOB)"
        )
        for doc, codes, centroids in rows:
            c = np.frombuffer(codes, dtype=np.int8).reshape(-1, 16)
            scales = inverse_norms(c).astype("<f2")  # what v1 stored for unit vectors
            con.execute(
                "INSERT INTO vectors(doc, codes, scales, centroids) VALUES (?, ?, ?, ?)",
                (doc, codes, scales.tobytes(), centroids),
            )
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _columns(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return [row[1] for row in con.execute("PRAGMA table_info(vectors)")]
    finally:
        con.close()


@pytest.fixture
def v1_index(tmp_path: Path, tiny_encoder: Encoder) -> tuple[Path, list[tuple[str, float]]]:
    """A version 1 file, and the ranking its documents had before it was rewritten."""
    assert tiny_encoder.dim == 16, "the v1 fixture reshapes codes to the tiny model's 16-d"
    path = tmp_path / "old.db"
    with Index(path, encoder=tiny_encoder) as index:
        index.add(TEXTS, ids=IDS, metadata=[{"n": i} for i in range(len(IDS))])
        before = [(h.id, h.score) for h in index.search("river sea", k=5, exhaustive=True)]
    _as_version_1(path)
    assert "scales" in _columns(path)
    return path, before


def test_version_1_is_migrated_on_open(
    v1_index: tuple[Path, list[tuple[str, float]]], tiny_encoder: Encoder
) -> None:
    path, before = v1_index
    with Index(path, encoder=tiny_encoder) as index:
        assert index.info()["schema_version"] == SCHEMA_VERSION
        assert len(index) == len(IDS) and all(i in index for i in IDS)
        after = [(h.id, h.score) for h in index.search("river sea", k=5, exhaustive=True)]
        assert [i for i, _ in after] == [i for i, _ in before]
        np.testing.assert_allclose([s for _, s in after], [s for _, s in before], atol=1e-5)
        got = index.get("gene")
        assert got is not None and got.text == TEXTS[4] and got.metadata == {"n": 4}
        index.add(["the sea is salt"], ids=["salt"])
        hits = {h.id: h.score for h in index.search("salt sea", k=len(IDS) + 1, mode="semantic")}
        # Stored after the migration, scored like a fresh full-precision encoding.
        fresh = index.rerank("salt sea", ["the sea is salt"])[0][1]
        assert hits["salt"] == pytest.approx(fresh, abs=0.05)
    assert "scales" not in _columns(path)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    con.close()
    # The cascade from documents to vectors survives the table rebuild.
    with Index(path, encoder=tiny_encoder) as index:
        index.delete(["river"])
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM vectors").fetchone()[0] == len(IDS)
    con.close()


def test_readonly_open_of_an_old_file_says_to_open_it_for_writing_once(
    v1_index: tuple[Path, list[tuple[str, float]]], tiny_encoder: Encoder
) -> None:
    path, _ = v1_index
    before = path.read_bytes()
    with pytest.raises(ReadOnlyIndexError, match="without readonly=True to migrate"):
        Index(path, encoder=tiny_encoder, readonly=True)
    assert path.read_bytes() == before


@pytest.fixture
def v2_index(tmp_path: Path, tiny_encoder: Encoder) -> tuple[Path, list[tuple[str, float]]]:
    """A version 2 file with trained centroids, and the ranking it had before."""
    path = tmp_path / "v2.db"
    with Index(path, encoder=tiny_encoder, train_tokens=40) as index:
        index.add(TEXTS, ids=IDS, metadata=[{"n": i} for i in range(len(IDS))])
        index.delete(["delta"])  # the highest rowid ever given is now above max(rowid)...
        index.add([TEXTS[3]], ids=["delta"])
        index.delete(["delta"])  # ...and no row holds it
        assert index.info()["centroid_version"] >= 1
        before = [(h.id, h.score) for h in index.search("river sea", k=5, exhaustive=True)]
    _as_version_2(path)
    return path, before


def test_version_2_is_migrated_with_the_full_text_index_built(
    v2_index: tuple[Path, list[tuple[str, float]]], tiny_encoder: Encoder
) -> None:
    path, before = v2_index
    with Index(path, encoder=tiny_encoder) as index:
        info = index.info()
        assert info["schema_version"] == SCHEMA_VERSION == 5
        assert info["centroid_version"] >= 1 and info["centroids"] > 0
        after = [(h.id, h.score) for h in index.search("river sea", k=5, exhaustive=True)]
        assert after == before
        # Every stored text is in the full-text index, found by its own words.
        assert {h.id for h in index.search("gene", k=5, mode="keyword")} == {"gene", "cell"}
        assert [h.id for h in index.search("mountains", k=5, mode="keyword")] == ["mountain"]
        index.add(["the sea is salt"], ids=["salt"])
        assert [h.id for h in index.search("salt", k=5, mode="keyword")] == ["salt"]
    con = sqlite3.connect(path)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    assert "centroid_version" not in meta
    assert meta["codec"] == "int8" and meta["pool_factor"] == "1"
    assert meta["fts_tokenizer"] == "porter unicode61"
    # rowid_high kept the highest rowid ever given (the deleted delta's), not max(rowid).
    assert int(meta["rowid_high"]) == con.execute("SELECT max(rowid) FROM documents").fetchone()[0]
    assert int(meta["tokens"]) == con.execute("SELECT sum(n_tokens) FROM documents").fetchone()[0]
    for codes, crc in con.execute("SELECT codes, crc FROM vectors"):
        assert zlib.crc32(codes) == crc
    posted = sum(len(rowids) // 8 for (rowids,) in con.execute("SELECT rowids FROM centroid_lists"))
    assert posted == len(IDS)  # four migrated documents and "salt"
    con.execute("INSERT INTO documents_fts(documents_fts) VALUES ('integrity-check')")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_readonly_open_of_a_version_2_file_is_refused_untouched(
    v2_index: tuple[Path, list[tuple[str, float]]], tiny_encoder: Encoder
) -> None:
    path, _ = v2_index
    before = path.read_bytes()
    with pytest.raises(ReadOnlyIndexError, match=r"version 2 .* without readonly=True to migrate"):
        Index(path, encoder=tiny_encoder, readonly=True)
    assert path.read_bytes() == before


def test_version_3_is_migrated_keeping_its_int8_codes(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    path = tmp_path / "v3.db"
    with Index(path, encoder=tiny_encoder, train_tokens=40) as index:
        index.add(TEXTS, ids=IDS)
        assert index.info()["centroid_version"] >= 1
        before = [(h.id, h.score) for h in index.search("river sea", k=5)]
    _as_version_3(path)
    con = sqlite3.connect(path)
    codes_before = con.execute("SELECT doc, codes, crc FROM vectors ORDER BY doc").fetchall()
    con.close()
    with Index(path, encoder=tiny_encoder) as index:
        assert index.info()["schema_version"] == SCHEMA_VERSION == 5
        assert index.codec == "int8"
        assert [(h.id, h.score) for h in index.search("river sea", k=5)] == before
    con = sqlite3.connect(path)
    assert con.execute("SELECT doc, codes, crc FROM vectors ORDER BY doc").fetchall() == (
        codes_before
    )
    assert con.execute("SELECT buckets FROM centroids").fetchone() == (None,)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_readonly_open_of_a_version_3_file_is_refused_untouched(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    path = tmp_path / "v3.db"
    with Index(path, encoder=tiny_encoder) as index:
        index.add(TEXTS, ids=IDS)
    _as_version_3(path)
    before = path.read_bytes()
    with pytest.raises(ReadOnlyIndexError, match=r"version 3 .* without readonly=True to migrate"):
        Index(path, encoder=tiny_encoder, readonly=True)
    assert path.read_bytes() == before


def _postings(index: Index) -> dict[int, list[int]]:
    """Every centroid's posted rowids, as the open built them in memory."""
    prefilter = index._prefilter
    assert prefilter is not None
    return {c: prefilter.postings(c).tolist() for c in range(prefilter.num_centroids)}


def test_version_4_is_migrated_into_chunks_with_the_same_postings(
    tmp_path: Path, tiny_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three documents a chunk: 20 documents make seven chunks, the last one partial.
    monkeypatch.setattr(centroid_lists, "CHUNK_DOCS", 3)
    path = tmp_path / "v4.db"
    texts = [f"{TEXTS[i % len(TEXTS)]} number {i}" for i in range(23)]
    with Index(path, encoder=tiny_encoder, train_tokens=40) as index:
        index.add(texts, ids=[f"d{i}" for i in range(23)])
        index.delete(["d4", "d5", "d11"])  # gaps in the rowids
        postings_before = _postings(index)
        ranked_before = [(h.id, h.score) for h in index.search("river sea", k=8)]
    _as_version_4(path)
    con = sqlite3.connect(path)
    lists_v4 = con.execute("SELECT doc, ids FROM doc_centroids ORDER BY doc").fetchall()
    con.close()
    assert len(lists_v4) == 20
    with Index(path, encoder=tiny_encoder) as index:  # migrates
        assert index.info()["schema_version"] == SCHEMA_VERSION == 5
        assert _postings(index) == postings_before
        assert [(h.id, h.score) for h in index.search("river sea", k=8)] == ranked_before
        dtype = index.store.meta()["centroid_ids"]
        rowids, lengths, flat = index.store.doc_centroids_flat(dtype)
        ends = np.cumsum(lengths).tolist()
        migrated = [
            (int(r), flat[a:b].tobytes())
            for r, a, b in zip(rowids.tolist(), [0, *ends[:-1]], ends, strict=True)
        ]
        assert migrated == lists_v4  # byte for byte, in rowid order
        index.add(["the sea is salt"], ids=["salt"])  # into the partial tail chunk
        assert index.search("salt sea", k=1)[0].id == "salt"
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    chunks = [len(r) // 8 for (r,) in con.execute("SELECT rowids FROM centroid_lists")]
    assert "doc_centroids" not in tables
    assert chunks == [3, 3, 3, 3, 3, 3, 3]  # 20 migrated, then "salt" filled the tail
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    # The migrated schema is one this version accepts (the probe's check runs on open).
    with Index(path, encoder=tiny_encoder, readonly=True) as again:
        assert len(again) == 21 and again.search("salt sea", k=1)[0].id == "salt"


def test_readonly_open_of_a_version_4_file_is_refused_untouched(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    path = tmp_path / "v4.db"
    with Index(path, encoder=tiny_encoder, train_tokens=40) as index:
        index.add(TEXTS, ids=IDS)
    _as_version_4(path)
    before = path.read_bytes()
    with pytest.raises(ReadOnlyIndexError, match=r"version 4 .* without readonly=True to migrate"):
        Index(path, encoder=tiny_encoder, readonly=True)
    assert path.read_bytes() == before
