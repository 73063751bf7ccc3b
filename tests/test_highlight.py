"""Highlights that mean something: the words that carry a match, never stopwords or
punctuation, in the passage that holds the most of them."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from edge_colbert.highlight import best_passage, lexical_spans, match_spans
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


def test_no_highlighted_word_of_the_readme_demo_answer_is_a_stopword(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's demo query over the page that answers it, with the bundled model."""
    from edge_colbert.cli import main

    query = _readme_demo_query()
    db = tmp_path / "demo.db"
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        assert main(["-q", "index", str(db), "docs/reliability.md"]) == 0
        capsys.readouterr()
        assert main(["search", str(db), query, "--json", "-k", "3"]) == 0
    finally:
        os.chdir(cwd)
    hits = json.loads(capsys.readouterr().out)
    assert hits, "the demo query found nothing"
    marked = [m["text"] for hit in hits for m in hit["matches"]]
    assert marked, "nothing was highlighted"
    assert not [w for w in marked if is_stopword(w)], marked
    assert not {w.lower() for w in marked} & STOPWORDS
    assert all(hit["semantic"] is not None for hit in hits)
    assert any(hit["lexical"] is not None for hit in hits)
