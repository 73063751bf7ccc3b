"""Check a written graph, through the runtime Encoder, against the torch reference.

fp32 graphs must match token for token (same kept rows, cosine above 0.999); quantized
graphs must keep the reference MaxSim top-3 on a small query/document set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_colbert.errors import ExportError

logger = logging.getLogger(__name__)

MIN_COSINE = 0.999
# Reference scores (mean over query tokens) closer than this count as ties in a ranking.
TIE = 2e-3


def token_cosines(expected: Sequence[np.ndarray], actual: Sequence[np.ndarray], kind: str) -> float:
    """Smallest per-token cosine between two lists of per-text vectors; rows must match."""
    worst = 1.0
    for i, (ref, got) in enumerate(zip(expected, actual, strict=True)):
        if ref.shape != got.shape:
            raise ExportError(
                f"{kind} {i}: the exported model keeps {got.shape[0]} tokens of width "
                f"{got.shape[-1]}, the reference {ref.shape[0]} of width {ref.shape[-1]}; "
                "the preprocessing settings do not reproduce the reference"
            )
        cos = np.sum(ref * got, axis=1) / (
            np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1) + 1e-12
        )
        worst = min(worst, float(cos.min()))
    return worst


def maxsim(queries: Sequence[np.ndarray], docs: Sequence[np.ndarray]) -> np.ndarray:
    """MaxSim scores ``[queries, docs]``, averaged over query tokens."""
    scores = np.zeros((len(queries), len(docs)), dtype=np.float64)
    for i, q in enumerate(queries):
        for j, d in enumerate(docs):
            scores[i, j] = float((q @ d.T).max(axis=1).mean())
    return scores


def ranking_kept(
    reference: np.ndarray, exported: np.ndarray, top: int = 3, min_overlap: float = 0.8
) -> tuple[bool, str]:
    """Whether quantization kept the ranking: every query's top-1 is the reference's (ties
    within ``TIE`` allowed) and the top-``top`` sets overlap by ``min_overlap`` on average."""
    overlaps = []
    for i in range(reference.shape[0]):
        want = int(np.argmax(reference[i]))
        got = int(np.argmax(exported[i]))
        if reference[i, got] < reference[i, want] - TIE:
            return False, (
                f"query {i}: top-1 is document {got} (reference score {reference[i, got]:.4f}) "
                f"instead of {want} ({reference[i, want]:.4f})"
            )
        ref_top = set(np.argsort(-reference[i])[:top].tolist())
        got_top = set(np.argsort(-exported[i])[:top].tolist())
        overlaps.append(len(ref_top & got_top) / top)
    mean = float(np.mean(overlaps))
    if mean < min_overlap:
        return False, f"top-{top} overlap {mean:.2f} < {min_overlap}"
    return True, f"top-1 kept, top-{top} overlap {mean:.2f}"


def compare_graph(
    folder: Path,
    model_file: str,
    queries: Sequence[str],
    docs: Sequence[str],
    ref_queries: Sequence[np.ndarray],
    ref_docs: Sequence[np.ndarray],
    *,
    language: str | None = None,
) -> dict[str, Any]:
    """Encode with the runtime Encoder and compare with the reference, raising nothing but a
    shape mismatch: smallest per-token cosines, whether the ranking is kept, and why."""
    from edge_colbert.encoder import Encoder

    encoder = Encoder(
        folder, providers=["CPUExecutionProvider"], threads=2, model_file=model_file,
        language=language,
    )  # fmt: skip
    got_q = encoder.encode_queries(list(queries))
    got_d = encoder.encode_documents(list(docs))
    reference, exported = maxsim(ref_queries, ref_docs), maxsim(got_q, got_d)
    kept, why = ranking_kept(reference, exported)
    top3, top3_why = top_k_kept(reference, exported, 3)
    return {
        "query_min_cosine": token_cosines(ref_queries, got_q, "query"),
        "document_min_cosine": token_cosines(ref_docs, got_d, "document"),
        "ranking_kept": kept,
        "ranking": why,
        "top3_kept": top3,
        "top3": top3_why,
        "max_score_error": float(np.abs(reference - exported).max()),
    }


def top_k_kept(reference: np.ndarray, exported: np.ndarray, k: int = 3) -> tuple[bool, str]:
    """Whether every query's exported top-``k`` are reference top-``k`` documents, up to
    ties (a document within ``TIE`` of the reference's k-th score may take a place)."""
    for i in range(reference.shape[0]):
        kth = float(np.sort(reference[i])[::-1][min(k, reference.shape[1]) - 1])
        for doc in np.argsort(-exported[i])[:k].tolist():
            if reference[i, doc] < kth - TIE:
                return False, (
                    f"query {i}: document {doc} (reference score {reference[i, doc]:.4f}) "
                    f"entered the top {k}, whose {k}-th reference score is {kth:.4f}"
                )
    return True, f"top-{k} kept"


def check_graph(
    folder: Path,
    model_file: str,
    queries: Sequence[str],
    docs: Sequence[str],
    ref_queries: Sequence[np.ndarray],
    ref_docs: Sequence[np.ndarray],
    *,
    exact: bool,
    language: str | None = None,
    fix: str = "try --quantize none or fp16.",
) -> dict[str, Any]:
    """Encode with the runtime Encoder and compare; ExportError with the numbers on failure.

    ``fix`` is the advice a changed ranking ends with: the caller knows which option made
    the graph.
    """
    compared = compare_graph(
        folder, model_file, queries, docs, ref_queries, ref_docs, language=language
    )
    q_cos, d_cos = compared["query_min_cosine"], compared["document_min_cosine"]
    result: dict[str, Any] = {"query_min_cosine": q_cos, "document_min_cosine": d_cos}
    if exact:
        if min(q_cos, d_cos) <= MIN_COSINE:
            raise ExportError(
                f"{model_file} disagrees with the torch model: smallest per-token cosine "
                f"{q_cos:.5f} on queries, {d_cos:.5f} on documents (needs > {MIN_COSINE}); "
                "nothing was written. Report this checkpoint as unsupported."
            )
    else:
        result["ranking"] = compared["ranking"]
        if not compared["ranking_kept"]:
            raise ExportError(
                f"{model_file} changes the reference ranking ({compared['ranking']}; smallest "
                f"per-token cosine {min(q_cos, d_cos):.4f}); {fix} Nothing was written."
            )
    logger.info("%s verified: %s", model_file, result)
    return result
