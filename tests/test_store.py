"""The SQLite file itself: schema and meta, refusals that leave files untouched, transactions,
read-only opening, the where-filter SQL, and the bytes each stored token costs."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_colbert.errors import (
    IndexBusyError,
    IndexFileError,
    InvalidInputError,
    ModelMismatchError,
    StorageFullError,
)
from edge_colbert.quantize import quantize_int8
from edge_colbert.store import (
    SCHEMA_VERSION,
    ModelInfo,
    NewDocument,
    Store,
    decode_text,
    encode_text,
    where_clause,
)

MODEL = ModelInfo(identity="test-model (64-d, abc)", name="test-model", dim=64)


def _doc(doc_id: str, text: str, tokens: int, seed: int, meta: str = "{}") -> NewDocument:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((tokens, MODEL.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    codes = quantize_int8(vectors)
    centroids = np.unique(rng.integers(0, 1024, size=tokens)).astype(np.uint32)
    return NewDocument(doc_id, text, meta, codes, centroids)


def test_new_file_records_meta_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "index.db"
    path.parent.mkdir()  # Store does not create folders (a typo must not scatter them)
    store = Store(path, model=MODEL)
    store.close()
    con = sqlite3.connect(path)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    journal = con.execute("PRAGMA journal_mode").fetchone()[0]
    con.close()
    assert meta["app"] == "edge-colbert" and meta["schema_version"] == str(SCHEMA_VERSION)
    assert meta["model_identity"] == MODEL.identity and meta["dim"] == "64"
    assert "centroid_version" not in meta and meta["trained_on_tokens"] == "0"
    assert meta["tokens"] == "0" and meta["rowid_high"] == "0"
    assert meta["codec"] == "int8" and meta["pool_factor"] == "1"
    assert meta["fts_tokenizer"] == "porter unicode61"
    assert {
        "meta",
        "documents",
        "vectors",
        "centroid_lists",
        "centroids",
        "documents_fts",
    } <= tables
    assert "doc_centroids" not in tables  # the chunks replace it (schema 5)
    assert journal == "wal"


def test_rows_round_trip_and_upsert_replaces(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.db", model=MODEL)
    long_text = "a sentence about rivers and the sea. " * 20
    with store.transaction() as conn:
        replaced, added = store.insert(
            conn, [_doc("a", long_text, 7, 1, '{"k": 1}'), _doc("b", "short", 3, 2)], "uint16"
        )
    assert replaced == [] and len(added) == 2
    got = store.get("a")
    assert got is not None and got.text == long_text and got.metadata == {"k": 1}
    assert got.n_tokens == 7
    packed = store.vectors(added)
    assert packed.offsets.tolist() == [0, 7, 10] and packed.codes.shape == (10, 64)
    assert np.array_equal(packed.codes[:7], _doc("a", "", 7, 1).codes)
    with store.transaction() as conn:
        replaced, new = store.insert(conn, [_doc("a", "new text", 2, 3)], "uint16")
    assert replaced == [added[0]] and store.count() == 2 and store.token_count() == 5
    assert store.get("a").text == "new text"  # type: ignore[union-attr]
    rowids, lists = store.doc_centroids("uint16")
    assert rowids.tolist() == sorted([added[1], new[0]])
    expected = _doc("a", "", 2, 3).centroids
    assert expected is not None and np.array_equal(lists[-1], expected)
    with store.transaction() as conn:
        assert store.delete(conn, ["a", "missing"]) == [new[0]]
    assert not store.contains("a") and list(store.ids()) == ["b"]
    # no orphaned vectors after deletes and replacements
    assert store.connection.execute("SELECT count(*) FROM vectors").fetchone()[0] == 1
    store.close()


def test_iter_vectors_pages_through_everything(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.db", model=MODEL)
    with store.transaction() as conn:
        store.insert(conn, [_doc(f"d{i}", "t", 5 + i, i) for i in range(20)], "uint16")
    packs = list(store.iter_vectors(max_tokens=30))
    assert len(packs) > 3
    rowids = np.concatenate([p.rowids for p in packs])
    assert rowids.tolist() == sorted(rowids.tolist()) and len(rowids) == 20
    assert sum(p.codes.shape[0] for p in packs) == store.token_count()
    store.close()


def test_long_text_is_compressed_short_text_is_not() -> None:
    long_text = "the quick brown fox jumps over the lazy dog " * 10
    assert isinstance(encode_text(long_text), bytes)
    assert decode_text(encode_text(long_text)) == long_text
    assert encode_text("short") == "short"


def test_failed_batch_is_rolled_back_whole(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.db", model=MODEL)
    with store.transaction() as conn:
        store.insert(conn, [_doc("keep", "kept", 4, 0)], "uint16")
    with pytest.raises(RuntimeError), store.transaction() as conn:
        store.insert(conn, [_doc("x", "lost", 4, 1)], "uint16")
        raise RuntimeError("crash in the middle of a batch")
    assert list(store.ids()) == ["keep"]
    store.close()


def test_full_disk_is_storage_full_error_and_rolled_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.db", model=MODEL)
    with store.transaction() as conn:
        store.insert(conn, [_doc("keep", "kept", 4, 0)], "uint16")
    pages = store.connection.execute("PRAGMA page_count").fetchone()[0]
    store.connection.execute(f"PRAGMA max_page_count = {pages + 2}")
    big = [_doc(f"big{i}", "x", 200, i) for i in range(5)]
    with pytest.raises(StorageFullError, match="rolled back"), store.transaction() as conn:
        store.insert(conn, big, "uint16")
    assert list(store.ids()) == ["keep"]
    store.close()


def test_lock_timeout_is_index_busy_error(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    Store(path, model=MODEL).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        store = Store(path, model=MODEL, timeout=0.2)
        with pytest.raises(IndexBusyError, match=r"0\.2 s"), store.transaction():
            pass
        store.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_readonly_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    store = Store(path, model=MODEL)
    with store.transaction() as conn:
        store.insert(conn, [_doc("a", "text", 3, 0)], "uint16")
    reader = Store(path, model=MODEL, readonly=True)
    assert reader.count() == 1
    with pytest.raises(IndexFileError, match="readonly=True"), reader.transaction():
        pass
    # the reader sees what the writer commits after it opened
    with store.transaction() as conn:
        store.insert(conn, [_doc("b", "more", 3, 1)], "uint16")
    assert reader.changed_elsewhere() and reader.count() == 2
    assert not reader.changed_elsewhere()
    reader.close()
    store.close()


def test_foreign_and_non_sqlite_files_are_refused_untouched(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n", encoding="utf-8")
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    with con:
        con.execute("CREATE TABLE contacts (name TEXT)")
    con.close()
    for path, words in ((text, "not a SQLite database"), (other, "contacts")):
        before = path.read_bytes()
        for readonly in (False, True):
            with pytest.raises(IndexFileError, match=words):
                Store(path, model=MODEL, readonly=readonly)
        assert path.read_bytes() == before
        assert not Path(f"{path}-wal").exists()


def test_newer_schema_and_other_model_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    Store(path, model=MODEL).close()
    with pytest.raises(ModelMismatchError, match="other") as caught:
        Store(path, model=ModelInfo("other (64-d, def)", "other", 64))
    assert MODEL.identity in str(caught.value)
    with pytest.raises(ModelMismatchError, match="32-d"):
        Store(path, model=ModelInfo("small (32-d, x)", "small", 32))
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    con.close()
    with pytest.raises(IndexFileError, match="upgrade"):
        Store(path, model=MODEL)


def test_where_clause_binds_everything() -> None:
    sql, params = where_clause({"a') OR 1=1 --": "x' OR '1'='1", "n": [1, True, None]})
    assert "OR 1=1" not in sql and "'1'='1" not in sql
    assert "x' OR '1'='1" in params and '$."a\') OR 1=1 --"' in params
    for bad in ({'say "hi"': 1}, {"": 1}, {"k": {"nested": 1}}, {"k": float("nan")}, {1: 2}):
        with pytest.raises(InvalidInputError):
            where_clause(bad)  # type: ignore[arg-type]


def test_where_filter_matches_json_types(tmp_path: Path) -> None:
    store = Store(tmp_path / "i.db", model=MODEL)
    metas = [{"n": 1}, {"n": True}, {"n": "1"}, {"n": 1.0}, {"n": None}, {"m": 1}, {"a.b": 2}]
    with store.transaction() as conn:
        store.insert(
            conn, [_doc(f"d{i}", "t", 2, i, json.dumps(m)) for i, m in enumerate(metas)], "uint16"
        )

    def ids(where: dict[str, object]) -> set[str]:
        rowids, _ = store.filter(where)
        return {d.id for d in store.documents(rowids.tolist()).values()}

    assert ids({"n": 1}) == {"d0", "d3"}
    assert ids({"n": True}) == {"d1"}
    assert ids({"n": "1"}) == {"d2"}
    assert ids({"n": None}) == {"d4"}
    assert ids({"n": ["1", True]}) == {"d1", "d2"}
    assert ids({"n": []}) == set()
    assert ids({"a.b": 2}) == {"d6"}
    assert ids({"n": 2**70}) == set()
    store.close()


def test_bytes_per_token_stay_under_target(tmp_path: Path) -> None:
    """64-d vectors, ~5 characters of text per token, as a chunked English corpus gives."""
    path = tmp_path / "size.db"
    store = Store(path, model=MODEL)
    rng = np.random.default_rng(0)
    words = ["river", "protein", "cell", "sea", "the", "of", "and", "gene", "mountain", "in"]
    docs, tokens = [], 0
    for i in range(300):
        n = int(rng.integers(100, 250))
        text = " ".join(rng.choice(words, size=int(n * 0.8)))
        doc = _doc(f"{i:032x}", text, n, i)
        # about 0.6 unique centroids per token, as a trained index stores
        keep = np.unique(rng.integers(0, 4096, size=int(n * 0.6))).astype(np.uint32)
        docs.append(NewDocument(doc.id, doc.text, "{}", doc.codes, keep))
        tokens += n
    with store.transaction() as conn:
        store.insert(conn, docs, "uint16")
    store.close()
    assert path.stat().st_size / tokens <= 72


def test_internals_doc_states_the_schema_version_of_the_code() -> None:
    """docs/internals.md describes the tables of one schema version: the code's."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "internals.md").read_text("utf-8")
    stated = re.findall(r"Tables \(schema version (\d+)", doc)
    assert stated == [str(SCHEMA_VERSION)], (stated, SCHEMA_VERSION)
