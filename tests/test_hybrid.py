"""Hybrid retrieval: the full-text index in the same file, the three search modes, fusion,
safe queries and bad input.

The tiny random model makes MaxSim's ranking arbitrary but deterministic, which is enough
here: fusion is checked at its two ends (weight 1: BM25's order, weight 0: MaxSim's), and
keyword search is exact whatever the model.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_colbert import Index, InvalidInputError
from edge_colbert.encoder import Encoder
from edge_colbert.lexical import fts_query
from edge_colbert.schema import FTS_MULTILINGUAL, ModelInfo
from edge_colbert.store import NewDocument, Store

TEXTS = {
    "fox": "the quick red fox jumps over the lazy dog",
    "red": "a fox is red and quick in the autumn forest",
    "error": "the build failed with error E1042 in module zeta",
    "sea": "rivers run to the sea and the sea is salt",
    "cell": "the cell holds a gene that is read by enzymes",
    "note": "remember to back up the index file before travelling",
}
SCRIPTS = [
    "héllo wörld café",
    "αλφα βήτα γάμμα",
    "привет мир",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "你好世界 日本語のテキスト",
    "안녕하세요 세계",
    "สวัสดีชาวโลก",
    "🦊 🐶 ✨",
]
NASTY = [
    '"',
    '"unbalanced',
    "*",
    "fox*",
    "NEAR(",
    "NEAR(fox dog)",
    "AND",
    "fox AND",
    "-",
    "-fox",
    ":",
    "text:fox",
    "^fox",
    "(",
    ")",
    "OR OR",
    "{fox}",
    "'",
    "?!.,;",
    'fox " OR " dog',
]


@pytest.fixture
def index(tmp_path: Path, tiny_encoder: Encoder) -> Index:
    idx = Index(tmp_path / "hybrid.db", encoder=tiny_encoder)
    idx.add(list(TEXTS.values()), ids=list(TEXTS), metadata=[{"n": i} for i in range(len(TEXTS))])
    return idx


def test_keyword_mode_finds_rare_words_without_loading_a_model(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = index.path
    index.close()

    def no_model() -> Encoder:
        raise AssertionError("keyword search loaded the model")

    monkeypatch.setattr("edge_colbert.index._default_encoder", no_model)
    with Index(path, readonly=True) as reader:
        hits = reader.search("E1042", 3, mode="keyword")
        assert [h.id for h in hits] == ["error"]
        assert hits[0].lexical == hits[0].score > 0 and hits[0].semantic is None
        assert hits[0].text == TEXTS["error"] and hits[0].metadata == {"n": 2}
        # Porter stemming: "rivers" and "river", "travelling" and "travel" meet.
        assert [h.id for h in reader.search("river", 3, mode="keyword")] == ["sea"]
        assert {h.id for h in reader.search("fox", 5, mode="keyword")} == {"fox", "red"}
        # A phrase in double quotes is exact.
        assert [h.id for h in reader.search('"red fox"', 5, mode="keyword")] == ["fox"]
        assert reader.search("fox", 5, mode="keyword", where={"n": 1})[0].id == "red"


def test_fusion_ends_are_bm25_alone_and_maxsim_alone(index: Index) -> None:
    query = "red fox sea gene"
    keyword = [h.id for h in index.search(query, 6, mode="keyword")]
    semantic = [h.id for h in index.search(query, 6, mode="semantic", exhaustive=True)]
    index.ranker.lexical_weight = 1.0
    fused = index.search(query, 6, mode="hybrid", exhaustive=True)
    assert [h.id for h in fused][: len(keyword)] == keyword
    index.ranker.lexical_weight = 0.0
    fused = index.search(query, 6, mode="hybrid", exhaustive=True)
    assert [h.id for h in fused] == semantic
    for hit in fused:
        assert hit.semantic is not None
        assert (hit.lexical is not None) == (hit.id in keyword)
    index.ranker.fusion = "rrf"
    assert len(index.search(query, 6)) == 6


def test_hybrid_hits_carry_both_scores_and_filters_apply(index: Index) -> None:
    hits = index.search("back up the index file", 3)
    assert hits and all(h.semantic is not None for h in hits)
    assert any(h.id == "note" and h.lexical is not None for h in hits)
    filtered = index.search("fox", 6, where={"n": [0, 3]})
    assert {h.id for h in filtered} <= {"fox", "sea"}
    semantic = index.search("fox", 6, mode="semantic", where={"n": [0, 3]})
    assert {h.id for h in semantic} <= {"fox", "sea"}


@pytest.mark.parametrize("mode", ["hybrid", "semantic", "keyword"])
def test_no_query_reaches_fts5_as_syntax(index: Index, mode: str) -> None:
    for query in NASTY:
        hits = index.search(query, 3, mode=mode)
        assert isinstance(hits, list), query
    assert index.search("?!.,;", 3, mode="keyword") == []
    assert [h.id for h in index.search('"fox" AND "dog"', 1, mode="keyword")] == ["fox"]


def test_fts_query_quotes_every_word() -> None:
    assert fts_query('NEAR(fox AND "red dog") -x:y *') == (
        '"NEAR" OR "fox" OR "AND" OR "red dog" OR "x" OR "y"'
    )
    assert fts_query("?!") is None
    long_query = fts_query(" ".join(f"w{i}" for i in range(1000)))
    assert long_query is not None and long_query.count(" OR ") == 63


@pytest.mark.parametrize("mode", ["hybrid", "semantic", "keyword"])
def test_bad_input_gets_one_clear_error_or_results(index: Index, mode: str) -> None:
    for query in ("", "   \n"):
        with pytest.raises(InvalidInputError, match="empty"):
            index.search(query, 3, mode=mode)
    for k in (0, -1, True, 2.5, "3"):
        with pytest.raises(InvalidInputError, match="k must be"):
            index.search("fox", k, mode=mode)  # type: ignore[arg-type]
    huge = ("fox dog sea " * 9000)[:100_000]
    assert index.search(huge, 3, mode=mode)
    for text in SCRIPTS:
        assert isinstance(index.search(text, 3, mode=mode), list), text
    assert len(index.search("fox", 10**9, mode=mode)) <= len(TEXTS)
    with pytest.raises(InvalidInputError, match="mode must be one of hybrid, semantic, keyword"):
        index.search("fox", 3, mode="fuzzy")


def test_full_text_follows_upserts_and_deletes(index: Index) -> None:
    index.add(["a blue whale sings"], ids=["fox"])
    assert index.search("lazy", 3, mode="keyword") == []
    assert [h.id for h in index.search("whale", 3, mode="keyword")] == ["fox"]
    index.delete(["fox", "error"])
    assert index.search("whale", 3, mode="keyword") == []
    assert index.search("E1042", 3, mode="keyword") == []
    index.store.fts_integrity_check()
    con = sqlite3.connect(index.path)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    assert int(meta["tokens"]) == con.execute("SELECT sum(n_tokens) FROM documents").fetchone()[0]
    con.close()
    assert index.info()["tokens"] == int(meta["tokens"])


def test_multilingual_models_index_without_stemming_and_fold_diacritics(tmp_path: Path) -> None:
    model = ModelInfo("multi (8-d, x)", "multi", 8, languages=("de", "fr"))
    store = Store(tmp_path / "multi.db", model=model)
    assert store.fts_tokenizer() == FTS_MULTILINGUAL
    codes = np.ones((3, 8), dtype=np.int8)
    docs = [
        NewDocument("a", "Über die Brücke gehen", "{}", codes, None),
        NewDocument("b", "running runners", "{}", codes, None),
    ]
    with store.transaction() as conn:
        store.insert(conn, docs, "uint16")
    rowids, _ = store.fts_search('"uber" OR "brucke"', 5)
    assert store.documents(rowids.tolist())[int(rowids[0])].id == "a"
    assert store.fts_search('"run"', 5)[0].size == 0  # no Porter stemming
    store.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("how do I bind the server to another host", '"bind" OR "server" OR "another" OR "host"'),
        ("what if the laptop loses power?", '"laptop" OR "loses" OR "power"'),
        ("Is it?", '"Is" OR "it"'),  # every word a stopword: all kept
        ('how do I find "the end"', '"find" OR "the end"'),  # phrases keep theirs
        ("the cell holds a gene", '"the" OR "cell" OR "holds" OR "a" OR "gene"'),  # a claim
    ],
)
def test_a_question_leaves_its_stopwords_out_of_the_full_text_query(
    query: str, expected: str
) -> None:
    assert fts_query(query) == expected
