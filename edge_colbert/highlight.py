"""Which words of a hit matched the query, and the passage of the hit that shows them.

Two kinds of words are marked, both only where the query word carries meaning (not a
stopword, not punctuation):

- *lexical* matches: the hit's words equal to a query word (after lower-casing and a light
  suffix strip, so "rivers" marks "river"), what the full-text side of a search found;
- *semantic* matches: for each query token, the hit's token MaxSim matched it to, only where
  their cosine similarity is at least :data:`SEMANTIC_SIMILARITY` (a weak best match is
  MaxSim's argmax all the same, but marking it shows noise), widened to the whole word.

:func:`best_passage` then shows the window holding the most distinct matched words.
Everything here is pure (the encoder is only read), so thread-safe.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from edge_colbert.errors import InvalidInputError
from edge_colbert.lexical import is_stopword
from edge_colbert.schema import META_POOL_FACTOR

if TYPE_CHECKING:
    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Hit, Index

Span = tuple[int, int]
Style = Literal["bold", "brackets", "none"]

PASSAGE_CHARS = 240
# Cosine between a query token and its best document token above which the document word
# is marked (the same word in another context scores about 0.85-0.95 with the bundled
# model; related words 0.5-0.75).
SEMANTIC_SIMILARITY = 0.8
BOLD, RESET = "\033[1m", "\033[0m"
_WORD_CHAR = re.compile(r"\w")
_WORD = re.compile(r"\w+")
_SUFFIXES = ("ing", "ed", "es", "s", "ly")


def _stem(word: str) -> str:
    """A light English stem for matching query words to text words (no dictionary)."""
    word = word.lower()
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def lexical_spans(query: str, text: str) -> list[Span]:
    """The spans of ``text``'s words that equal a query word (stopwords left out)."""
    wanted = {_stem(w) for w in _WORD.findall(query) if not is_stopword(w)}
    if not wanted:
        return []
    return [m.span() for m in _WORD.finditer(text) if _stem(m.group()) in wanted]


def semantic_spans(
    encoder: Encoder,
    query: str,
    texts: Sequence[str],
    *,
    doc_vectors: Sequence[npt.NDArray[np.float32] | None] | None = None,
) -> list[list[Span]]:
    """For each text, the words its tokens matched best to the query's meaningful tokens,
    where the similarity is at least :data:`SEMANTIC_SIMILARITY`.

    The query is encoded the way documents are (its punctuation dropped, each row with its
    character span), so every query row is known by its word; stopword and punctuation
    rows, markers and [MASK] expansions take no part.

    ``doc_vectors`` gives each text's token vectors already at hand (an index's stored
    rows, one per kept token in :meth:`~edge_colbert.encoder.Encoder.document_token_spans`
    order), so only the query is encoded; a text whose entry is None or whose rows do not
    line up with its tokens (pooled rows, a text changed since) is encoded again.

    Raises:
        InvalidInputError: ``doc_vectors`` and ``texts`` differ in length.
    """
    if doc_vectors is not None and len(doc_vectors) != len(texts):
        raise InvalidInputError(
            f"doc_vectors holds {len(doc_vectors)} entries for {len(texts)} texts; pass one "
            "array (or None) per text."
        )
    if not texts:
        return []
    query_rows = _meaningful_query_rows(encoder, query)
    token_spans = [encoder.document_token_spans(text) for text in texts]
    given: list[npt.NDArray[np.float32] | None] = (
        list(doc_vectors) if doc_vectors is not None else [None] * len(texts)
    )
    # Rows that cannot be matched to the text's characters are no use: encode those texts.
    again = [
        i for i, found in enumerate(given) if found is None or found.shape[0] != len(token_spans[i])
    ]
    if again:
        encoded = encoder.encode_documents([texts[i] for i in again])
        for i, fresh in zip(again, encoded, strict=True):
            given[i] = fresh
    out: list[list[Span]] = []
    for text, spans, rows in zip(texts, token_spans, given, strict=True):
        out.append([] if rows is None else _strong_words(text, spans, query_rows, rows))
    return out


def _meaningful_query_rows(encoder: Encoder, query: str) -> npt.NDArray[np.float32]:
    """The query encoded as a document, only the rows of its meaningful words (no stopwords,
    punctuation, markers or [MASK] expansions)."""
    (query_rows,) = encoder.encode_documents([query])
    query_spans = encoder.document_token_spans(query)
    meaningful = [
        i
        for i, (a, b) in enumerate(query_spans[: query_rows.shape[0]])
        if b > a and not is_stopword(query[slice(*widen_to_word(query, (a, b)))])
    ]
    return query_rows[meaningful]


def _strong_words(
    text: str,
    token_spans: Sequence[Span],
    query_rows: npt.NDArray[np.float32],
    doc_rows: npt.NDArray[np.float32],
) -> list[Span]:
    """The words of ``text`` (``token_spans``: each row's characters) that the query rows
    matched best with a similarity of at least :data:`SEMANTIC_SIMILARITY`, stopwords out."""
    if query_rows.shape[0] == 0 or doc_rows.shape[0] == 0:
        return []
    similarity = query_rows @ doc_rows.T
    best = np.argmax(similarity, axis=1)
    strong = similarity[np.arange(best.size), best] >= SEMANTIC_SIMILARITY
    spans = [
        widen_to_word(text, token_spans[r])
        for r in best[strong].tolist()
        if r < len(token_spans) and token_spans[r][1] > token_spans[r][0]
    ]
    return [s for s in spans if not is_stopword(text[s[0] : s[1]])]


def match_spans(
    encoder: Encoder | None,
    query: str,
    texts: Sequence[str],
    *,
    doc_vectors: Sequence[npt.NDArray[np.float32] | None] | None = None,
) -> list[list[Span]]:
    """For each text, the spans of its words that carry the match: lexical matches of the
    query's words, and (with an encoder) MaxSim's strong best matches; merged and sorted.
    ``doc_vectors``: the texts' token vectors at hand, as :func:`semantic_spans` takes them
    (e.g. :func:`stored_rows`)."""
    semantic = (
        semantic_spans(encoder, query, texts, doc_vectors=doc_vectors)
        if encoder is not None
        else []
    )
    out: list[list[Span]] = []
    for i, text in enumerate(texts):
        found = lexical_spans(query, text) + (semantic[i] if semantic else [])
        out.append(merge_spans(found))
    return out


def stored_rows(index: Index, hits: Sequence[Hit]) -> list[npt.NDArray[np.float32] | None]:
    """Each hit's token vectors as ``index`` stores them, decoded (int8 or residual codes
    alike), for :func:`semantic_spans`'s ``doc_vectors``: reading ten hits' rows back costs
    a fraction of encoding their texts again (``benchmarks/server_load.py`` on SciFact: 15x
    less, the same words marked on 58 of 60 hits). None for a hit that is gone and for every
    hit of a pooled index, whose rows are not one per token (those are encoded again)."""
    if index.store.meta().get(META_POOL_FACTOR, "1") != "1":
        return [None] * len(hits)
    rowids = index.store.rowids_of([hit.id for hit in hits])
    pack = index.store.vectors(rowids.values())
    position = {int(rowid): i for i, rowid in enumerate(pack.rowids.tolist())}
    out: list[npt.NDArray[np.float32] | None] = []
    for hit in hits:
        i = position.get(rowids.get(hit.id, -1))
        out.append(None if i is None else pack.document(i))
    return out


def widen_to_word(text: str, span: Span) -> Span:
    """Grow a token's span (``##ing``, a sub-word) to the whole word around it."""
    start, end = span
    while start > 0 and _WORD_CHAR.match(text[start - 1]):
        start -= 1
    while end < len(text) and _WORD_CHAR.match(text[end]):
        end += 1
    return start, end


def merge_spans(spans: Sequence[Span]) -> list[Span]:
    """Sorted spans with overlapping or touching ones joined."""
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def best_passage(text: str, spans: Sequence[Span], width: int = PASSAGE_CHARS) -> Span:
    """The window of about ``width`` characters of ``text`` holding the most distinct
    matched words (then the most matches), cut at word boundaries."""
    if len(text) <= width:
        return 0, len(text)
    best_start, best_score = 0, (-1, -1)
    for anchor, _ in spans or [(0, 0)]:
        inside = [(a, b) for a, b in spans if a >= anchor and b <= anchor + width]
        score = (len({text[a:b].lower() for a, b in inside}), len(inside))
        if score > best_score:
            best_start, best_score = anchor, score
    # Some context before the first match reads better than starting on it.
    start = max(0, min(best_start - width // 5, len(text) - width))
    end = min(len(text), start + width)
    if start > 0:
        space = text.find(" ", start, start + 30)
        start = space + 1 if space != -1 else start
    if end < len(text):
        space = text.rfind(" ", end - 30, end)
        end = space if space > start else end
    return start, end


def mark(text: str, spans: Sequence[Span], start: int, end: int, *, style: Style) -> str:
    """``text[start:end]`` on one line, the spans in bold or [brackets], with an ellipsis
    where the window cuts the text."""
    before, after = ("[", "]") if style == "brackets" else (BOLD, RESET)
    pieces: list[str] = ["…" if start > 0 else ""]
    position = start
    for a, b in spans:
        a, b = max(a, start), min(b, end)
        if a >= b:
            continue
        pieces.append(text[position:a])
        pieces.append(text[a:b] if style == "none" else f"{before}{text[a:b]}{after}")
        position = b
    pieces.append(text[position:end])
    pieces.append("…" if end < len(text) else "")
    return " ".join("".join(pieces).split())
