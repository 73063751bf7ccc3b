"""Bad input to the Index: each refused with InvalidInputError naming what is wrong, and a
refused call leaves everything already stored exactly as it was."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_colbert.encoder import Encoder
from edge_colbert.errors import InvalidInputError
from edge_colbert.index import Index

NOTES = ["rivers run down to the sea", "mountains stand over the city"]


@pytest.fixture
def index(tmp_path: Path, tiny_encoder: Encoder) -> Iterator[Index]:
    with Index(tmp_path / "notes.db", encoder=tiny_encoder) as opened:
        opened.add(NOTES, ids=["river", "mountain"], metadata=[{"n": 1}, {"n": 2}])
        yield opened


def _rows(path: Path) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path)
    try:
        return (
            con.execute(
                "SELECT d.rowid, d.id, d.text, d.metadata, v.codes, v.crc "
                "FROM documents d JOIN vectors v ON v.doc = d.rowid ORDER BY d.rowid"
            ).fetchall()
            + con.execute("SELECT * FROM centroid_lists ORDER BY last").fetchall()
        )
    finally:
        con.close()


BAD_ADDS: dict[str, tuple[dict[str, Any], str]] = {
    # name: (arguments to add, words the message must hold)
    "empty text": ({"texts": ["fine", ""]}, "position 1"),
    "whitespace text": ({"texts": [" \n\t"]}, "empty"),
    "text not a string": ({"texts": ["fine", 3]}, "position 1"),
    "a bare string": ({"texts": "one text"}, "list"),
    "lone surrogate": ({"texts": ["bad \ud800 text"]}, "surrogate"),
    "duplicate ids": ({"texts": ["a", "b", "c"], "ids": ["x", "y", "x"]}, "'x'"),
    "int and str id collide": ({"texts": ["a", "b"], "ids": [1, "1"]}, "'1'"),
    "too few ids": ({"texts": ["a", "b"], "ids": ["x"]}, "1 ids"),
    "bad id type": ({"texts": ["a"], "ids": [1.5]}, "float"),
    "empty id": ({"texts": ["a"], "ids": [""]}, "empty"),
    "metadata not JSON": ({"texts": ["a", "b"], "metadata": [{}, {"s": {1, 2}}]}, "position 1"),
    "metadata NaN": ({"texts": ["a"], "metadata": [{"x": float("nan")}]}, "position 0"),
    "metadata not a dict": ({"texts": ["a"], "metadata": ["tag"]}, "dict"),
    "metadata key not a string": ({"texts": ["a"], "metadata": [{1: "x"}]}, "key"),
    "too much metadata": ({"texts": ["a"], "metadata": [{}, {}]}, "2 metadata"),
    "batch_size zero": ({"texts": ["a"], "batch_size": 0}, "batch_size"),
}


@pytest.mark.parametrize("case", list(BAD_ADDS))
def test_refused_add_changes_nothing(case: str, index: Index) -> None:
    arguments, words = BAD_ADDS[case]
    before = _rows(index.path)
    # "river" is in every bad batch that takes ids: an upsert must not half-happen either
    with pytest.raises(InvalidInputError) as caught:
        index.add(**arguments)
    assert words in str(caught.value)
    assert _rows(index.path) == before


def test_refused_batch_with_an_existing_id_keeps_the_old_document(index: Index) -> None:
    before = _rows(index.path)
    with pytest.raises(InvalidInputError):
        index.add(["new river text", ""], ids=["river", "other"])
    assert _rows(index.path) == before and index.get("river").text == NOTES[0]  # type: ignore[union-attr]


@pytest.mark.parametrize("k", [0, -1, 1.5, "3", None, True])
def test_bad_k(k: Any, index: Index) -> None:
    with pytest.raises(InvalidInputError, match="k must"):
        index.search("rivers", k=k)


@pytest.mark.parametrize("query", ["", "   ", None])
def test_bad_query(query: Any, index: Index) -> None:
    with pytest.raises(InvalidInputError):
        index.search(query)


@pytest.mark.parametrize(
    "where",
    ["n = 1 OR 1=1", [("n", 1)], {"n": {"nested": 1}}, {1: 1}, {'say "hi"': 1}, {"n": object()}],
)
def test_bad_where(where: Any, index: Index) -> None:
    before = _rows(index.path)
    with pytest.raises(InvalidInputError):
        index.search("rivers", where=where)
    assert _rows(index.path) == before


def test_bad_query_vectors(index: Index) -> None:
    with pytest.raises(InvalidInputError, match="float array"):
        index.search_vectors(np.ones(16, dtype=np.float32), 1)
    with pytest.raises(InvalidInputError, match="NaN"):
        index.search_vectors(np.full((2, 16), np.nan, dtype=np.float32), 1)


def test_bad_delete_changes_nothing(index: Index) -> None:
    before = _rows(index.path)
    for bad in ([None], [b"river"], 1.5, [("river",)]):
        with pytest.raises(InvalidInputError):
            index.delete(bad)  # type: ignore[arg-type]
    assert _rows(index.path) == before
    assert None not in index and 1.5 not in index


def test_bad_options(tmp_path: Path, tiny_encoder: Encoder) -> None:
    with pytest.raises(InvalidInputError, match="nprobe"):
        Index(tmp_path / "x.db", encoder=tiny_encoder, nprobe=0)
