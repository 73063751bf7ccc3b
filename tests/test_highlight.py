"""Highlights that mean something: the words that carry a match, never stopwords or
punctuation, in the passage that holds the most of them."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest

from edge_colbert.encoder import Encoder
from edge_colbert.errors import InvalidInputError
from edge_colbert.highlight import (
    best_passage,
    lexical_spans,
    match_spans,
    semantic_spans,
    widen_to_word,
)
from edge_colbert.lexical import STOPWORDS, is_stopword

ROOT = Path(__file__).resolve().parents[1]


def _readme_demo_query() -> str:
    """The query of the README's first command (`edge-colbert search demo.db "..."`)."""
    for line in (ROOT / "README.md").read_text("utf-8").splitlines():
        if "edge-colbert search demo.db" in line:
            argv = shlex.split(line.split("&&")[-1])
            return argv[argv.index("demo.db") + 1]
    raise AssertionError("the README has no `edge-colbert search demo.db` command")


def test_lexical_matches_skip_stopwords_and_meet_plurals() -> None:
    text = "The rivers and the sea: a river runs to the sea."
    marked = [text[a:b] for a, b in lexical_spans("what is the river to the sea?", text)]
    assert marked == ["rivers", "sea", "river", "sea"]
    assert lexical_spans("the and of ?", text) == []


def test_the_passage_shown_holds_the_most_matched_words() -> None:
    """The issue's case: a window holding only a repeated word lost to the one holding
    all five query words."""
    filler = " ".join(f"filler{i}" for i in range(60))
    text = (
        f"for for for for for {filler} zebra crossing protocol for llama migrations "
        f"{filler} for for"
    )
    query = "zebra crossing protocol for llama migrations"
    (spans,) = match_spans(None, query, [text])
    marked = {text[a:b] for a, b in spans}
    assert marked == {"zebra", "crossing", "protocol", "llama", "migrations"}
    start, end = best_passage(text, spans, width=120)
    assert all(word in text[start:end] for word in marked)


def _demo_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The README demo's index: the page that answers its query, indexed by the CLI with
    the bundled model (run from the repository root, as the README's command is)."""
    from edge_colbert.cli import main

    db = tmp_path / "demo.db"
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        assert main(["-q", "index", str(db), "docs/reliability.md"]) == 0
    finally:
        os.chdir(cwd)
    capsys.readouterr()
    return db


def test_no_highlighted_word_of_the_readme_demo_answer_is_a_stopword(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's demo query over the page that answers it, with the bundled model."""
    from edge_colbert.cli import main

    query = _readme_demo_query()
    db = _demo_index(tmp_path, capsys)
    assert main(["search", str(db), query, "--json", "-k", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits, "the demo query found nothing"
    marked = [m["text"] for hit in hits for m in hit["matches"]]
    assert marked, "nothing was highlighted"
    assert not [w for w in marked if is_stopword(w)], marked
    assert not {w.lower() for w in marked} & STOPWORDS
    assert all(hit["semantic"] is not None for hit in hits)
    assert any(hit["lexical"] is not None for hit in hits)


def _row_of(encoder: Encoder, text: str, word: str) -> int:
    """The first encoded row of ``text`` that belongs to ``word``."""
    spans = encoder.document_token_spans(text)
    return next(
        i
        for i, (a, b) in enumerate(spans)
        if b > a and text[slice(*widen_to_word(text, (a, b)))] == word
    )


def test_semantic_spans_take_the_vectors_given_and_encode_only_what_does_not_fit(
    tiny_encoder: Encoder,
) -> None:
    query = "milk and bread"
    texts = ["she likes to drink fresh milk", "bread is baked in the oven"]
    encoded = tiny_encoder.encode_documents(texts)
    again = semantic_spans(tiny_encoder, query, texts)
    assert semantic_spans(tiny_encoder, query, texts, doc_vectors=encoded) == again
    # Rows that do not line up with the text's tokens, and None, are encoded again.
    assert semantic_spans(tiny_encoder, query, texts, doc_vectors=[encoded[0][:2], None]) == again

    # Rows that fit are used as given: the row of "fresh" made the query's "milk" row (every
    # other row 0) marks "fresh" and nothing else.
    (query_rows,) = tiny_encoder.encode_documents([query])
    milk = _row_of(tiny_encoder, query, "milk")
    fresh = _row_of(tiny_encoder, texts[0], "fresh")
    crafted = np.zeros_like(encoded[0])
    crafted[fresh] = query_rows[milk]
    (marked,) = semantic_spans(tiny_encoder, query, texts[:1], doc_vectors=[crafted])
    assert [texts[0][a:b] for a, b in marked] == ["fresh"]
    assert marked != again[0]

    with pytest.raises(InvalidInputError, match="1 entries for 2 texts"):
        semantic_spans(tiny_encoder, query, texts, doc_vectors=encoded[:1])


def test_cli_search_highlights_from_the_stored_vectors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`edge-colbert search` reads each hit's stored rows for its highlights: the model
    encodes the query (as a query, and as a document for its words) but no hit's text, and
    the words marked are the ones encoding the hits again would mark (bundled model), but
    for a word whose similarity sits at the bar, where the stored int8 rows and the float
    vectors of a new encoding may fall on either side (rows out of line with the tokens
    would mark other words altogether)."""
    from edge_colbert.cli import main

    query = _readme_demo_query()
    db = _demo_index(tmp_path, capsys)
    encoded: list[str] = []
    encode_documents = Encoder.encode_documents

    def recording(self: Encoder, texts: list[str], **kwargs: object) -> object:
        encoded.extend(texts)
        return encode_documents(self, texts, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Encoder, "encode_documents", recording)
    assert main(["search", str(db), query, "--json", "-k", "3"]) == 0
    monkeypatch.undo()
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3
    assert encoded == [query], "a hit's text was encoded again"
    again = match_spans(Encoder(), query, [hit["text"] for hit in hits])
    shown = {(i, m["start"], m["end"]) for i, hit in enumerate(hits) for m in hit["matches"]}
    expected = {(i, a, b) for i, spans in enumerate(again) for a, b in spans}
    assert len(shown & expected) >= 0.9 * len(shown | expected), (shown, expected)
