"""Which words of a hit matched the query, and the passage of the hit that shows them.

MaxSim scores a document by, for each query token, its most similar document token. Those
argmax tokens are exactly what made the hit rank, so they are what the CLI marks: each query
token's best document token, widened to the whole word it belongs to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from edge_colbert.maxsim import best_matches

if TYPE_CHECKING:
    from edge_colbert.encoder import Encoder

Span = tuple[int, int]
Style = Literal["bold", "brackets", "none"]

PASSAGE_CHARS = 240
BOLD, RESET = "\033[1m", "\033[0m"
_WORD_CHAR = re.compile(r"\w")


def match_spans(
    encoder: Encoder,
    query: str,
    texts: Sequence[str],
    *,
    query_vectors: npt.NDArray[np.float32] | None = None,
) -> list[list[Span]]:
    """For each text, the character spans of the words the query's tokens matched best.

    Only the query's own tokens count, not the [MASK] expansion positions, which match
    whatever is near the text's overall meaning and would mark noise. Pass
    ``query_vectors`` when the query is already encoded, to skip encoding it again.
    """
    if not texts:
        return []
    if query_vectors is None:
        (query_vectors,) = encoder.encode_queries([query])
    real = min(encoder.count_document_tokens([query])[0], query_vectors.shape[0])
    query_vectors = query_vectors[:real]
    out: list[list[Span]] = []
    for text, doc_vectors in zip(texts, encoder.encode_documents(list(texts)), strict=True):
        token_spans = encoder.document_token_spans(text)
        if doc_vectors.shape[0] == 0:
            out.append([])
            continue
        rows = {int(r) for r in best_matches(query_vectors, doc_vectors)}
        spans = [token_spans[r] for r in rows if r < len(token_spans) and token_spans[r][1] > 0]
        out.append(merge_spans([widen_to_word(text, span) for span in spans]))
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
    """The window of about ``width`` characters of ``text`` holding the most matched spans,
    cut at word boundaries."""
    if len(text) <= width:
        return 0, len(text)
    best_start, best_count = 0, -1
    for anchor, _ in spans or [(0, 0)]:
        count = sum(1 for a, b in spans if a >= anchor and b <= anchor + width)
        if count > best_count:
            best_start, best_count = anchor, count
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
