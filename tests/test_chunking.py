"""File discovery, decoding and chunking: what `edge-colbert index` relies on."""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_colbert.chunking import Chunk, chunk_text, html_to_text
from edge_colbert.discovery import check_paths, walk
from edge_colbert.errors import InvalidInputError

SPECIALS = 3  # [CLS], marker, [SEP], as Encoder.count_document_tokens counts them


def count_words(texts: list[str]) -> list[int]:
    """A tokenizer that makes one token per whitespace-separated word, plus the specials."""
    return [len(text.split()) + SPECIALS for text in texts]


def _paragraph(rng: random.Random, sentences: int) -> str:
    words = [*("alpha", "beta", "gamma", "delta", "epsilon", "zeta"), *("eta", "theta", "mu")]
    out = []
    for _ in range(sentences):
        n = rng.randint(4, 14)
        out.append(" ".join(rng.choice(words) for _ in range(n)).capitalize() + ".")
    return " ".join(out)


def _check_chunks(text: str, chunks: list[Chunk], max_tokens: int) -> None:
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip() and chunk.text
        assert count_words([chunk.text])[0] <= max_tokens
    # Every word of the text is in some chunk, in order, and chunks move forward.
    starts = [c.start for c in chunks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    covered = [False] * len(text)
    for chunk in chunks:
        covered[chunk.start : chunk.end] = [True] * (chunk.end - chunk.start)
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())


# --- chunk_text ---------------------------------------------------------------------------


def test_short_text_is_one_chunk_with_offsets() -> None:
    text = "\n\n  Hello world. A second sentence.  \n"
    chunks = chunk_text(text, max_tokens=64, count_tokens=count_words)
    assert chunks == [Chunk("Hello world. A second sentence.", 4, 35)]


def test_empty_and_blank_text_gives_no_chunks() -> None:
    assert chunk_text("", max_tokens=64, count_tokens=count_words) == []
    assert chunk_text(" \n\n\t ", max_tokens=64, count_tokens=count_words) == []


def test_paragraphs_are_packed_whole_and_chunks_end_at_paragraph_breaks() -> None:
    paragraphs = [" ".join(f"p{i}w{j}" for j in range(20)) + "." for i in range(10)]
    text = "\n\n".join(paragraphs)
    chunks = chunk_text(text, max_tokens=64, count_tokens=count_words, overlap_tokens=0)
    _check_chunks(text, chunks, 64)
    # 61 tokens of room, 20-word paragraphs: three whole paragraphs per chunk.
    assert [c.text.count("\n\n") for c in chunks] == [2, 2, 2, 0]
    assert all(c.text.endswith(".") for c in chunks)
    assert len(chunks) == 4


def test_overlap_repeats_the_last_sentences_of_the_previous_chunk() -> None:
    sentences = [f"Sentence {i} has exactly six words." for i in range(40)]
    text = " ".join(sentences)
    chunks = chunk_text(text, max_tokens=67, count_tokens=count_words, overlap_tokens=8)
    _check_chunks(text, chunks, 67)
    assert len(chunks) > 3
    for previous, chunk in itertools.pairwise(chunks):
        # The next chunk starts inside the previous one, at a sentence start.
        assert previous.start < chunk.start < previous.end
        assert chunk.text.startswith("Sentence ")
        overlap_words = len(text[chunk.start : previous.end].split())
        assert 0 < overlap_words <= 8


def test_default_overlap_is_about_an_eighth_of_the_window() -> None:
    rng = random.Random(3)
    text = "\n\n".join(_paragraph(rng, 3) for _ in range(60))
    chunks = chunk_text(text, max_tokens=128, count_tokens=count_words)
    _check_chunks(text, chunks, 128)
    overlaps = [
        len(text[c.start : p.end].split()) for p, c in itertools.pairwise(chunks) if c.start < p.end
    ]
    assert overlaps, "consecutive chunks should share some text"
    assert max(overlaps) <= 0.15 * 128


def test_oversize_paragraph_splits_on_sentences_then_words() -> None:
    long_sentence = " ".join(f"w{i}" for i in range(300))  # no punctuation at all
    text = "Short intro.\n\n" + long_sentence + "\n\nShort outro."
    chunks = chunk_text(text, max_tokens=50, count_tokens=count_words, overlap_tokens=0)
    _check_chunks(text, chunks, 50)
    assert chunks[0].text.startswith("Short intro.")
    assert chunks[-1].text.endswith("Short outro.")


def test_a_word_longer_than_the_window_is_cut_into_pieces() -> None:
    def count_chars(texts: list[str]) -> list[int]:
        return [len(text.replace(" ", "")) + 2 for text in texts]

    text = "x" * 500
    chunks = chunk_text(text, max_tokens=42, count_tokens=count_chars, overlap_tokens=0)
    assert "".join(c.text for c in chunks) == text
    assert all(count_chars([c.text])[0] <= 42 for c in chunks)


def test_non_additive_counts_are_checked_on_the_whole_chunk() -> None:
    # A counter that charges extra for every join between sentences (as BPE merges may):
    # summing sentence counts underestimates, so the final check must cut again.
    def count_joins(texts: list[str]) -> list[int]:
        return [len(t.split()) + 2 * t.count(". ") + SPECIALS for t in texts]

    text = " ".join(f"Item {i} is here." for i in range(100))
    chunks = chunk_text(text, max_tokens=40, count_tokens=count_joins, overlap_tokens=0)
    assert all(count_joins([c.text])[0] <= 40 for c in chunks)
    assert all(text[c.start : c.end] == c.text for c in chunks)


def test_counter_is_called_in_batches_and_a_megabyte_is_fast() -> None:
    rng = random.Random(7)
    text = "\n\n".join(_paragraph(rng, rng.randint(1, 8)) for _ in range(3000))
    while len(text) < 1_000_000:
        text += "\n\n" + text[:100_000]
    calls = []

    def counting(texts: list[str]) -> list[int]:
        calls.append(len(texts))
        return count_words(texts)

    began = time.perf_counter()
    chunks = chunk_text(text, max_tokens=256, count_tokens=counting)
    elapsed = time.perf_counter() - began
    _check_chunks(text, chunks, 256)
    assert len(calls) <= 5, calls
    assert elapsed < 10, f"chunking 1 MB took {elapsed:.1f} s"


def test_window_too_small_for_the_special_tokens_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="max_tokens=3"):
        chunk_text("some text", max_tokens=3, count_tokens=count_words)


def test_a_counter_returning_the_wrong_number_of_counts_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="one count per text"):
        chunk_text("One. Two.", max_tokens=30, count_tokens=lambda texts: [5])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(
        st.lists(st.text(alphabet="abc .!?\n", min_size=0, max_size=60), max_size=6),
        max_size=8,
    ),
    st.integers(min_value=8, max_value=40),
    st.integers(min_value=0, max_value=10),
)
def test_chunks_always_fit_cover_the_text_and_map_back(
    paragraphs: list[list[str]], max_tokens: int, overlap: int
) -> None:
    text = "\n\n".join(" ".join(p) for p in paragraphs)
    chunks = chunk_text(
        text, max_tokens=max_tokens, count_tokens=count_words, overlap_tokens=overlap
    )
    _check_chunks(text, chunks, max_tokens)


def test_real_tokenizer_counts(tiny_encoder: object) -> None:
    """With the encoder's own counter, no chunk is truncated by the model."""
    encoder = tiny_encoder
    window = encoder.manifest.doc_maxlen  # type: ignore[attr-defined]
    rng = random.Random(11)
    text = "\n\n".join(_paragraph(rng, rng.randint(1, 12)) for _ in range(40))
    count = encoder.count_document_tokens  # type: ignore[attr-defined]
    chunks = chunk_text(text, max_tokens=window, count_tokens=count)
    assert len(chunks) > 1
    assert max(count([c.text for c in chunks])) <= window
    assert all(text[c.start : c.end] == c.text for c in chunks)


# --- discover_files -----------------------------------------------------------------------


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _found(paths: list[Path], root: Path) -> list[str]:
    return [f.path.relative_to(root).as_posix() for f in walk(check_paths(paths))]


def test_discovery_walks_folders_in_sorted_order_with_known_suffixes(tmp_path: Path) -> None:
    for name in [
        "b.md",
        "a.txt",
        "c.RST",
        "d.HTML",
        "e.htm",
        "f.py",
        "g.pdf",
        "h.unknown",
        "sub/z.md",
        "sub/a.txt",
        ".hidden.md",
        ".git/x.md",
        ".venv/y.txt",
        "node_modules/m.md",
        "__pycache__/c.py",
    ]:
        _touch(tmp_path / name)
    found = _found([tmp_path], tmp_path)
    assert found == [
        *("a.txt", "b.md", "c.RST", "d.HTML", "e.htm", "f.py", "g.pdf"),
        *("sub/a.txt", "sub/z.md"),
    ]


def test_a_named_file_is_kept_whatever_its_suffix_and_only_once(tmp_path: Path) -> None:
    notes = _touch(tmp_path / "notes.weird")
    doc = _touch(tmp_path / "d" / "a.md")
    found = list(walk(check_paths([notes, tmp_path / "d", doc])))
    assert [(f.path, f.origin) for f in found] == [(notes, "named"), (doc, "named")]


def test_symlink_loops_are_walked_once(tmp_path: Path) -> None:
    _touch(tmp_path / "top" / "a.md")
    _touch(tmp_path / "top" / "inner" / "b.md")
    (tmp_path / "top" / "inner" / "loop").symlink_to(tmp_path / "top")
    (tmp_path / "top" / "again").symlink_to(tmp_path / "top" / "inner")
    assert _found([tmp_path / "top"], tmp_path) == ["top/a.md", "top/again/b.md"]


def test_a_missing_path_is_an_error_before_anything_is_yielded(tmp_path: Path) -> None:
    _touch(tmp_path / "a.md")
    with pytest.raises(InvalidInputError, match=r"nope\.md does not exist"):
        check_paths([tmp_path, tmp_path / "nope.md"])


# --- HTML without selectolax ----------------------------------------------------------------


def test_html_gives_visible_text_with_paragraph_breaks() -> None:
    text = html_to_text(
        "<!doctype html><html><head><title>The  Title</title><style>p {color: red}</style>"
        "<script>var x = '<p>no</p>';</script></head><body>"
        "<h1>Heading &amp; more</h1><p>First   paragraph\nwith <b>bold</b> text.</p>"
        "<p>Second&nbsp;one &lt;ok&gt;</p><ul><li>item one</li><li>item two</li></ul>"
        "<pre>code  line 1\ncode line 2</pre><div>a<br>b</div></body></html>"
    )
    assert text == (
        "The Title\n\nHeading & more\n\nFirst paragraph with bold text.\n\n"
        "Second one <ok>\n\nitem one\n\nitem two\n\ncode  line 1\ncode line 2\n\na\nb"
    )
    assert "color" not in text and "var x" not in text


def test_html_to_text_of_an_empty_page_is_empty() -> None:
    assert html_to_text("<html><body><script>x</script></body></html>") == ""
