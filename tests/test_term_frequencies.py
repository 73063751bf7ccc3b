"""Keyword queries without the terms of BM25 weight 0 (``lexical.TermFrequencies``).

FTS5's ``bm25()`` clamps the weight of a term held by half the documents or more to 1e-6, so
leaving such terms out of the query keeps the ranking; these tests hold the product to that
against SQLite's own ranking of the whole query, and check the cache of counts follows writes
and threads.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from edge_colbert import Index
from edge_colbert.encoder import Encoder
from edge_colbert.lexical import LOSSLESS_SHARE, TermFrequencies, fts_query, fts_terms

RARE = ["zebra", "quartz", "violet", "ember", "falcon", "glacier", "harbor", "indigo"]


def _texts(count: int) -> list[str]:
    """``count`` texts: *the* in all, *common* in 70%, *half* in half, *part* in 30%, the rare
    words in a few each, with lengths and repeats that differ so that BM25 scores do not
    tie."""
    texts = []
    for i in range(count):
        words = ["the", "record", str(i)]
        if i % 10 < 7:
            words.append("common")
        if i % 2 == 0:
            words.append("half")
        if i % 10 < 3:
            words.append("part")  # 30%: weighs little, but not 0, so it must stay
        rare = RARE[i % len(RARE)]
        words += [rare] * (1 + i % 3) + ["filler"] * (i % 5)
        texts.append(" ".join(words))
    return texts


@pytest.fixture
def index(tmp_path: Path, tiny_encoder: Encoder) -> Index:
    idx = Index(tmp_path / "terms.db", encoder=tiny_encoder)
    idx.add(_texts(80), ids=[f"d{i}" for i in range(80)])
    return idx


def _informative(index: Index, text: str, share: float = LOSSLESS_SHARE) -> list[str]:
    store = index.store
    with store.snapshot():
        return TermFrequencies().informative(
            fts_terms(text),
            share=share,
            state=store.collection_state(),
            documents=store.count,
            holding=store.fts_holding,
        )


def _by_score(ranked: list[tuple[float, str]]) -> list[set[str]]:
    """The ids of a ranking grouped by score (to 1e-4), best group first."""
    groups: dict[float, set[str]] = {}
    for score, doc_id in ranked:
        groups.setdefault(round(score, 4), set()).add(doc_id)
    return [groups[key] for key in sorted(groups, reverse=True)]


def test_terms_held_by_half_the_documents_are_left_out(index: Index) -> None:
    assert _informative(index, "the common half part zebra quartz") == [
        '"part"',
        '"zebra"',
        '"quartz"',
    ]
    # A lower share leaves out more (only the benchmark uses one).
    assert _informative(index, "the zebra record", share=0.2) == ['"zebra"']


def test_keyword_ranking_equals_sqlite_ranking_of_the_whole_query(index: Index) -> None:
    for query in ["the zebra common part", "half quartz the record violet", "common ember part"]:
        hits = index.search(query, k=8, mode="keyword")
        with index.store.snapshot():
            full_ids, full_scores = index.store.fts_search(str(fts_query(query)), 8)
            stored = index.store.documents(full_ids.tolist())
        ours = np.array([h.lexical for h in hits])
        # The left-out terms weigh 1e-6 each: scores agree to that, and so does the order
        # (documents whose scores differ by no more than that may swap).
        np.testing.assert_allclose(ours, full_scores, atol=1e-4)
        assert _by_score([(h.lexical or 0.0, h.id) for h in hits]) == _by_score(
            [(float(s), stored[int(r)].id) for r, s in zip(full_ids, full_scores, strict=True)]
        )


def test_too_few_hits_are_filled_by_documents_holding_only_common_terms(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    with Index(tmp_path / "small.db", encoder=tiny_encoder) as index:
        index.add(["the fox runs", "the dog sleeps", "the cat sits"], ids=["fox", "dog", "cat"])
        hits = index.search("the fox", k=10, mode="keyword")
        assert hits[0].id == "fox"
        assert {h.id for h in hits} == {"fox", "dog", "cat"}
        # No informative term occurs at all: the whole query is asked.
        assert {h.id for h in index.search("the zebra", k=10, mode="keyword")} == {
            "fox",
            "dog",
            "cat",
        }


def test_counts_follow_writes(index: Index) -> None:
    frequencies = TermFrequencies()
    store = index.store

    def informative(text: str) -> list[str]:
        with store.snapshot():
            return frequencies.informative(
                fts_terms(text),
                state=store.collection_state(),
                documents=store.count,
                holding=store.fts_holding,
            )

    assert informative("half zebra") == ['"zebra"']
    index.add([f"another plain note {i}" for i in range(80)])  # "half" now in a quarter
    assert informative("half zebra") == ['"half"', '"zebra"']
    index.delete([f"d{i}" for i in range(80) if i % 2])  # the ones without "half"
    assert informative("half zebra") == ['"half"', '"zebra"']
    index.delete([f"doc-{i}" for i in range(80)])  # not stored: nothing changes
    assert len(index) == 120


def test_each_term_is_counted_once_per_collection_state() -> None:
    counted: list[str] = []

    def holding(term: str, limit: int) -> int:
        counted.append(term)
        return {'"a"': 60, '"b"': 3}.get(term, 0)

    frequencies = TermFrequencies()
    for _ in range(3):
        kept = frequencies.informative(
            ['"a"', '"b"'], state=(1, 1), documents=lambda: 100, holding=holding
        )
        assert kept == ['"b"']
    assert counted == ['"a"', '"b"']
    frequencies.informative(['"a"', '"b"'], state=(2, 1), documents=lambda: 100, holding=holding)
    assert counted == ['"a"', '"b"', '"a"', '"b"']
    # One term, or an empty collection: nothing to count, nothing left out.
    assert frequencies.informative(['"a"'], state=(3, 0), documents=lambda: 0, holding=holding) == [
        '"a"'
    ]


def test_shared_between_threads(index: Index) -> None:
    frequencies = TermFrequencies()
    store = index.store
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        try:
            barrier.wait()
            for query in ["the zebra common", "half quartz", "record violet ember"] * 5:
                with store.snapshot():
                    results.append(
                        frequencies.informative(
                            fts_terms(query),
                            state=store.collection_state(),
                            documents=store.count,
                            holding=store.fts_holding,
                        )
                    )
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 8 * 15
    assert {tuple(r) for r in results} == {('"zebra"',), ('"quartz"',), ('"violet"', '"ember"')}
