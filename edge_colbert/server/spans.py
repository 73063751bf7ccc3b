"""The matched words of search hits, from the token vectors the index already stores.

:func:`edge_colbert.highlight.match_spans` finds a hit's semantic matches by encoding the
hit's text again: for ten hits of a few hundred tokens that costs several times the search
itself (``benchmarks/server_load.py`` on SciFact: 15x longer than reading the vectors back,
the same words marked on 58 of 60 hits). The index holds those very vectors (int8, one row per kept
token, in the order :meth:`~edge_colbert.encoder.Encoder.document_token_spans` gives their
characters), so here only the query is encoded and each hit's rows are read back from the
file. The rule for which words count is :mod:`edge_colbert.highlight`'s: lexical matches of
the query's words, plus the hit's word each meaningful query token matched best where their
cosine reaches :data:`~edge_colbert.highlight.SEMANTIC_SIMILARITY`.

Falls back to :func:`~edge_colbert.highlight.match_spans` for an index whose stored rows are
not one per token (token pooling) and for a hit whose rows and tokens disagree in number
(its text was replaced between the search and the read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edge_colbert import schema
from edge_colbert.highlight import (
    SEMANTIC_SIMILARITY,
    Span,
    lexical_spans,
    match_spans,
    merge_spans,
    widen_to_word,
)
from edge_colbert.lexical import is_stopword
from edge_colbert.quantize import dequantize_int8

if TYPE_CHECKING:
    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Hit, Index

__all__ = ["hit_spans"]


def _query_rows(encoder: Encoder, query: str) -> npt.NDArray[np.float32]:
    """The query encoded as a document, only the rows of its meaningful words (no stopwords,
    punctuation, markers or [MASK] expansions), as ``semantic_spans`` takes them."""
    (rows,) = encoder.encode_documents([query])
    spans = encoder.document_token_spans(query)
    keep = [
        i
        for i, (a, b) in enumerate(spans[: rows.shape[0]])
        if b > a and not is_stopword(query[slice(*widen_to_word(query, (a, b)))])
    ]
    return rows[keep]


def _strong_words(
    encoder: Encoder,
    text: str,
    query_rows: npt.NDArray[np.float32],
    doc_rows: npt.NDArray[np.float32],
) -> list[Span] | None:
    """The words of ``text`` the query rows matched strongly; None when the stored rows do not
    line up with the text's tokens."""
    token_spans = encoder.document_token_spans(text)
    if len(token_spans) != doc_rows.shape[0]:
        return None
    if query_rows.shape[0] == 0 or doc_rows.shape[0] == 0:
        return []
    similarity = query_rows @ doc_rows.T
    best = np.argmax(similarity, axis=1)
    strong = similarity[np.arange(best.size), best] >= SEMANTIC_SIMILARITY
    words = [
        widen_to_word(text, token_spans[row])
        for row in best[strong].tolist()
        if token_spans[row][1] > token_spans[row][0]
    ]
    return [w for w in words if not is_stopword(text[w[0] : w[1]])]


def hit_spans(index: Index, encoder: Encoder, query: str, hits: Sequence[Hit]) -> list[list[Span]]:
    """For each hit, the character spans of its words that carry the match, merged and sorted.

    Thread-safe as far as ``index`` and ``encoder`` are (it only reads them).
    """
    if not hits:
        return []
    texts = [hit.text for hit in hits]
    if index.store.meta().get(schema.META_POOL_FACTOR, "1") != "1":
        return match_spans(encoder, query, texts)
    rowids = index.store.rowids_of([hit.id for hit in hits])
    pack = index.store.vectors(rowids.values())
    position = {int(rowid): i for i, rowid in enumerate(pack.rowids.tolist())}
    query_rows = _query_rows(encoder, query)
    out: list[list[Span]] = []
    for hit in hits:
        found: list[Span] | None = None
        i = position.get(rowids.get(hit.id, -1))
        if i is not None:
            codes = pack.codes[pack.offsets[i] : pack.offsets[i + 1]]
            found = _strong_words(encoder, hit.text, query_rows, dequantize_int8(codes))
        if found is None:  # replaced meanwhile, or gone: encode this one text
            (found,) = match_spans(encoder, query, [hit.text])
        out.append(merge_spans(lexical_spans(query, hit.text) + found))
    return out
