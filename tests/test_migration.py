"""Schema migrations: a file written by an older edge-colbert opens, is upgraded in one
transaction, keeps every document, ranks as before, and takes new writes.

The version 1 file has version 1's tables: beside each document's codes, the per-token
float16 scales that version 2 no longer stores (here ``1 / ||codes||``, the scale that
makes each stored token unit length, as version 1's were up to float16 rounding).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_colbert import Index, ReadOnlyIndexError
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


def _as_version_1(path: Path) -> None:
    """Rewrite a current index into schema version 1: vectors with a scales column."""
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
        hits = {h.id: h.score for h in index.search("salt sea", k=len(IDS) + 1)}
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
