"""The matched words of search hits, from the token vectors the index already stores.

:func:`edge_colbert.highlight.match_spans` finds a hit's semantic matches by encoding the
hit's text again: for ten hits of a few hundred tokens that costs several times the search
itself (``benchmarks/server_load.py`` on SciFact: 15x longer than reading the vectors back,
the same words marked on 58 of 60 hits). The index holds those very vectors (int8, one row per kept
token, in the order :meth:`~edge_colbert.encoder.Encoder.document_token_spans` gives their
characters), so here each hit's rows are read back from the file
(:func:`~edge_colbert.highlight.stored_rows`, which the CLI's ``search`` uses too) and handed
to :func:`~edge_colbert.highlight.semantic_spans` (``doc_vectors=``), which encodes only the
query. The rule for which words count is :mod:`edge_colbert.highlight`'s: lexical matches of
the query's words, plus the hit's word each meaningful query token matched best where their
cosine reaches :data:`~edge_colbert.highlight.SEMANTIC_SIMILARITY`.

A hit is encoded again where its stored rows are not one per token (token pooling), where
they disagree in number with its tokens (its text was replaced between the search and the
read) and where it is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edge_colbert.highlight import Span, match_spans, stored_rows

if TYPE_CHECKING:
    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Hit, Index

__all__ = ["hit_spans"]


def hit_spans(index: Index, encoder: Encoder, query: str, hits: Sequence[Hit]) -> list[list[Span]]:
    """For each hit, the character spans of its words that carry the match, merged and sorted.

    Thread-safe as far as ``index`` and ``encoder`` are (it only reads them).
    """
    if not hits:
        return []
    texts = [hit.text for hit in hits]
    return match_spans(encoder, query, texts, doc_vectors=stored_rows(index, hits))
