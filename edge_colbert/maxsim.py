"""MaxSim, ColBERT's late-interaction score, in vectorized numpy.

``score(q, D) = sum over query tokens i of max over document tokens j of q_i . d_j``.

The kernels work on *packed* documents: the tokens of many documents stacked in one array,
with ``offsets`` marking where each document starts (CSR style, ``offsets[0] == 0`` and
``offsets[-1] == tokens``). One float32 matmul scores a block of documents at once; a
segment max (``np.maximum.reduceat``) takes each query token's best match per document and
a sum over query tokens gives the scores. Int8 codes are widened to float32 before the
matmul, so products and sums never overflow (int8 arithmetic would wrap), and each code
row is scaled to unit length (see :mod:`edge_colbert.quantize`), so a score is a sum of
cosines as with float vectors.

A document with no tokens scores 0: it cannot match anything, and 0 keeps scores finite so
they sort, serialize to JSON and add up without special cases. Real documents have at least
their [CLS] and marker tokens, so an empty one only appears if the caller built it so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge_colbert.errors import InvalidInputError
from edge_colbert.quantize import inverse_norms_widened

__all__ = ["best_matches", "maxsim_float_packed", "maxsim_int8_packed", "maxsim_scores"]

# Tokens scored per matmul. 32 query tokens x 16384 doc tokens x 4 bytes = 2 MiB of
# similarities, which stays in cache for the segment max and bounds memory however many
# documents are scored at once.
BLOCK_TOKENS = 16384


def _query_matrix(query: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Return the query as a C-contiguous float32 ``[Tq, d]`` array or raise."""
    q = np.asarray(query)
    if q.ndim != 2 or not np.issubdtype(q.dtype, np.floating):
        raise InvalidInputError(
            f"a query must be a float array [tokens, dim]; got dtype {q.dtype} with shape "
            f"{q.shape}. Use encoder.encode_queries(...)[i]."
        )
    return np.ascontiguousarray(q, dtype=np.float32)


def _check_dim(query_dim: int, doc_dim: int) -> None:
    """Raise when query and document vectors have different dimensions."""
    if query_dim != doc_dim:
        raise InvalidInputError(
            f"query vectors have {query_dim} dimensions but document vectors have {doc_dim}; "
            "encode both with the same model."
        )


def _packed_scores(
    query: npt.NDArray[np.float32],
    tokens: npt.NDArray[np.float32] | npt.NDArray[np.int8],
    offsets: npt.NDArray[np.int64],
    block_tokens: int,
) -> npt.NDArray[np.float32]:
    """Score packed documents; inputs are already validated.

    Blocks hold whole documents, so a segment never straddles two matmuls. Empty
    documents are skipped: ``reduceat`` would otherwise copy a neighbour's value into
    their slot.
    """
    n_docs = offsets.shape[0] - 1
    scores = np.zeros(n_docs, dtype=np.float32)
    if query.shape[0] == 0:
        return scores
    nonempty = np.flatnonzero(offsets[1:] > offsets[:-1])
    starts = offsets[:-1][nonempty]
    i = 0
    while i < nonempty.shape[0]:
        first = int(starts[i])
        j = max(int(np.searchsorted(starts, first + block_tokens, side="left")), i + 1)
        last = int(offsets[nonempty[j - 1] + 1])
        block = tokens[first:last].astype(np.float32, copy=False)
        sim = query @ block.T
        if tokens.dtype == np.int8:
            sim *= inverse_norms_widened(block)
        best = np.maximum.reduceat(sim, starts[i:j] - first, axis=1)
        scores[nonempty[i:j]] = best.sum(axis=0)
        i = j
    return scores


def maxsim_scores(
    query: npt.ArrayLike,
    docs: Sequence[npt.ArrayLike],
    *,
    block_tokens: int = BLOCK_TOKENS,
) -> npt.NDArray[np.float32]:
    """MaxSim of one query against each of several float documents.

    Args:
        query: float ``[Tq, d]`` query token vectors.
        docs: one float ``[Ti, d]`` array per document (``Ti`` may be 0).
        block_tokens: document tokens per matmul; bounds memory.

    Returns:
        float32 ``[len(docs)]``; a document without tokens scores 0.

    Raises:
        InvalidInputError: a document is not 2-D or its dimension differs from the query's.
    """
    q = _query_matrix(query)
    mats: list[npt.NDArray[np.float32]] = []
    for position, doc in enumerate(docs):
        m = np.asarray(doc)
        if m.ndim != 2:
            raise InvalidInputError(
                f"document {position} must be a 2-D array [tokens, dim]; got shape {m.shape}."
            )
        _check_dim(q.shape[1], m.shape[1])
        mats.append(m.astype(np.float32, copy=False))
    offsets = np.zeros(len(mats) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([m.shape[0] for m in mats])
    if not mats:
        return np.zeros(0, dtype=np.float32)
    packed = np.concatenate(mats, axis=0)
    return _packed_scores(q, packed, offsets, block_tokens)


def _checked_offsets(offsets: npt.ArrayLike, tokens: int) -> npt.NDArray[np.int64]:
    o = np.asarray(offsets)
    if o.ndim != 1 or o.shape[0] < 1 or not np.issubdtype(o.dtype, np.integer):
        raise InvalidInputError(
            f"offsets must be a 1-D integer array [n + 1]; got dtype {o.dtype}, shape {o.shape}."
        )
    o = o.astype(np.int64, copy=False)
    if int(o[0]) != 0 or int(o[-1]) != tokens or bool(np.any(np.diff(o) < 0)):
        raise InvalidInputError(
            f"offsets must rise from 0 to the number of tokens ({tokens}); got first "
            f"{int(o[0])}, last {int(o[-1])}, non-decreasing: {not bool(np.any(np.diff(o) < 0))}."
        )
    return o


def maxsim_int8_packed(
    query: npt.ArrayLike,
    codes: npt.ArrayLike,
    offsets: npt.ArrayLike,
    *,
    block_tokens: int = BLOCK_TOKENS,
) -> npt.NDArray[np.float32]:
    """MaxSim of one query against many int8 documents packed in one array.

    Document ``i`` owns rows ``offsets[i]:offsets[i + 1]`` of ``codes``; its token ``t``
    stands for the unit vector ``codes[t] / ||codes[t]||`` (see
    :mod:`edge_colbert.quantize`). The result equals :func:`maxsim_scores` on
    ``dequantize_int8(codes)`` up to float32 rounding.

    Args:
        query: float ``[Tq, d]``.
        codes: int8 ``[sum T, d]``.
        offsets: integer ``[n + 1]``, non-decreasing, from 0 to ``sum T``.
        block_tokens: document tokens per matmul; bounds memory.

    Returns:
        float32 ``[n]``; a document without tokens scores 0.

    Raises:
        InvalidInputError: shapes, dtypes or offsets do not fit together.
    """
    q = _query_matrix(query)
    c = np.asarray(codes)
    if c.ndim != 2 or c.dtype != np.int8:
        raise InvalidInputError(
            f"codes must be an int8 array [tokens, dim]; got dtype {c.dtype}, shape {c.shape}."
        )
    _check_dim(q.shape[1], c.shape[1])
    return _packed_scores(q, c, _checked_offsets(offsets, c.shape[0]), block_tokens)


def maxsim_float_packed(
    query: npt.ArrayLike,
    vectors: npt.ArrayLike,
    offsets: npt.ArrayLike,
    *,
    block_tokens: int = BLOCK_TOKENS,
) -> npt.NDArray[np.float32]:
    """MaxSim of one query against many float documents packed in one array (document
    ``i`` owns rows ``offsets[i]:offsets[i + 1]`` of ``vectors``), as decoded from residual
    codes: :func:`maxsim_scores` without a list of arrays.

    Raises:
        InvalidInputError: shapes, dtypes or offsets do not fit together.
    """
    q = _query_matrix(query)
    v = np.asarray(vectors)
    if v.ndim != 2 or not np.issubdtype(v.dtype, np.floating):
        raise InvalidInputError(
            f"vectors must be a float array [tokens, dim]; got dtype {v.dtype}, shape {v.shape}."
        )
    _check_dim(q.shape[1], v.shape[1])
    v = v.astype(np.float32, copy=False)
    return _packed_scores(q, v, _checked_offsets(offsets, v.shape[0]), block_tokens)


def best_matches(query: npt.ArrayLike, doc: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """For each query token, the row of the document token it matches best.

    This is the argmax inside MaxSim, used to highlight which words of a hit matched.

    Args:
        query: float ``[Tq, d]``.
        doc: float ``[T, d]`` with ``T >= 1``.

    Returns:
        int ``[Tq]`` row indices into ``doc``; ties go to the first row.

    Raises:
        InvalidInputError: the document has no tokens or the dimensions differ.
    """
    q = _query_matrix(query)
    m = np.asarray(doc)
    if m.ndim != 2:
        raise InvalidInputError(f"doc must be a 2-D array [tokens, dim]; got shape {m.shape}.")
    _check_dim(q.shape[1], m.shape[1])
    if m.shape[0] == 0:
        raise InvalidInputError(
            "the document has no token vectors, so no token can match; skip empty documents."
        )
    sim = q @ m.astype(np.float32, copy=False).T
    rows: npt.NDArray[np.intp] = np.argmax(sim, axis=1)
    return rows
