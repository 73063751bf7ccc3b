"""Reduce token vectors to a few dimensions while keeping the full-width MaxSim ranking.

The reduction is a matrix ``W`` of shape ``[native_dim, dim]``; a reduced vector is
``l2_normalize(x @ W)``. The export folds ``W`` into the graph's last linear layer, so it
costs nothing at run time. Because the vectors are re-normalized after the projection, the
scale of ``W`` and of ``x`` does not matter: only directions do.

`pca_projection` is the baseline. `fit_projection` starts from it and distills the
teacher (MaxSim over the full-width, L2-normalized token vectors) into the reduced space on
calibration queries and documents: a KL divergence between the teacher's and the student's
softmax over candidate documents (the teacher's hardest ones plus random ones), and a mean
squared error on every query token's best match similarity, which is what MaxSim adds up.
See docs/dim-reduction.md for the method and the measured effect.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

from edge_colbert.errors import ExportError, InvalidInputError

from .calibration_text import pseudo_queries, stdlib_passages, stdlib_root
from .requirements import ExportDependencyError, export_dependency_message

log = logging.getLogger(__name__)

_CALIBRATION_FILE = "calibration/passages.txt"
# Docstring passages added to the shipped ones by default: none, because on SciFact they did
# not help (docs/dim-reduction.md) and they make the fit slower and Python-version dependent.
DEFAULT_STDLIB_PASSAGES = 0


def _normalize(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return out


def _check_vectors(name: str, vectors: Sequence[np.ndarray]) -> int:
    """Validate a list of ``[tokens, dim]`` arrays and return their common width."""
    if len(vectors) == 0:
        raise InvalidInputError(f"{name} is empty: pass at least one [tokens, dim] array")
    widths = {np.asarray(v).shape[-1] for v in vectors}
    if any(np.asarray(v).ndim != 2 or len(v) == 0 for v in vectors) or len(widths) != 1:
        raise InvalidInputError(
            f"{name} must be non-empty 2-d arrays of one width, got widths {sorted(widths)}"
        )
    return int(widths.pop())


def pca_projection(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The top-``dim`` principal directions of ``vectors`` ``[n, native_dim]`` as ``W``.

    Directions come from the centered covariance (classic PCA). The convention has no bias,
    so the mean is not subtracted at run time; with re-normalized outputs that is what a
    projection folded into a bias-free layer can do. Signs are fixed (largest entry
    positive) so the result is deterministic.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InvalidInputError(f"pca_projection needs [n >= 2, dim] vectors, got {x.shape}")
    if not 0 < dim <= x.shape[1]:
        raise InvalidInputError(f"dim must be in 1..{x.shape[1]}, got {dim}")
    centered = x - x.mean(axis=0)
    cov = centered.T @ centered / (len(x) - 1)
    values, vecs = np.linalg.eigh(cov)
    w = vecs[:, np.argsort(values)[::-1][:dim]]
    signs = np.sign(w[np.abs(w).argmax(axis=0), np.arange(dim)])
    out: np.ndarray = (w * signs).astype(np.float32)
    return out


def query_aware_init(
    query_vectors: Sequence[np.ndarray], doc_vectors: Sequence[np.ndarray], dim: int
) -> np.ndarray:
    """The starting ``W``: top eigenvectors of the query and document second moments, each
    scaled to unit trace.

    Plain PCA ranks directions by variance over all tokens, so directions where documents
    vary a lot but queries never point add nothing to any query-document similarity yet
    crowd out the ones that do. Weighting both sides equally keeps every direction that
    either side uses. The moments are not centered because the projection has no bias.
    """
    moments = []
    for vectors in (query_vectors, doc_vectors):
        x = np.concatenate([_normalize(np.asarray(v, np.float64)) for v in vectors])
        m = x.T @ x
        moments.append(m / np.trace(m))
    values, vecs = np.linalg.eigh(moments[0] + moments[1])
    w = vecs[:, np.argsort(values)[::-1][:dim]]
    signs = np.sign(w[np.abs(w).argmax(axis=0), np.arange(dim)])
    out: np.ndarray = (w * signs).astype(np.float32)
    return out


def _token_maxima(torch: Any, q: Any, qmask: Any, d: Any, dmask: Any) -> Any:
    """Best match similarity of every query token in every document: ``[nq, Tq, nd]``.

    Padded query tokens get 0 so that summing over tokens gives MaxSim.
    """
    sims = torch.einsum("qtc,nlc->qtnl", q, d)
    sims = sims.masked_fill(~dmask[None, None, :, :], -4.0)
    return sims.amax(dim=-1) * qmask[:, :, None]


def fit_projection(
    query_vectors: Sequence[np.ndarray],
    doc_vectors: Sequence[np.ndarray],
    dim: int,
    *,
    seed: int = 0,
    steps: int = 300,
    lr: float = 2e-3,
    batch_queries: int = 16,
    hard_negatives: int = 4,
    random_docs: int = 32,
    temperature: float = 0.1,
    mse_weight: float = 1.0,
    threads: int | None = None,
) -> np.ndarray:
    """Fit ``W [native_dim, dim]`` so that ``l2_normalize(x @ W)`` keeps MaxSim's ranking.

    ``query_vectors`` and ``doc_vectors`` are per-text ``[tokens, native_dim]`` arrays of
    calibration queries and documents (no pairing between them is needed: the teacher
    scores every query against every document). Starting from PCA, Adam minimizes, on
    batches of queries against their teacher-hardest and random documents:
    KL(softmax(teacher / T) || softmax(student / T)) over documents, with scores averaged
    over query tokens, plus ``mse_weight`` times the squared error of each query token's
    best match similarity. Seeded: the same inputs and seed give the same ``W``.
    """
    width = _check_vectors("query_vectors", query_vectors)
    if _check_vectors("doc_vectors", doc_vectors) != width:
        raise InvalidInputError("query_vectors and doc_vectors have different widths")
    if not 0 < dim <= width:
        raise InvalidInputError(f"dim must be in 1..{width}, got {dim}")
    if steps < 0 or batch_queries < 1 or temperature <= 0:
        raise InvalidInputError("steps >= 0, batch_queries >= 1 and temperature > 0 are required")
    try:
        import torch
    except ImportError as exc:
        raise ExportDependencyError(export_dependency_message(["torch"])) from exc

    w0 = query_aware_init(query_vectors, doc_vectors, dim)
    if steps == 0 or dim == width:
        return w0

    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _distill(
            torch,
            query_vectors,
            doc_vectors,
            w0,
            seed=seed,
            steps=steps,
            lr=lr,
            batch_queries=batch_queries,
            hard_negatives=hard_negatives,
            random_docs=random_docs,
            temperature=temperature,
            mse_weight=mse_weight,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _batch(torch: Any, parts: list[Any], rows: Any) -> tuple[Any, Any]:
    """Pad the normalized ``[t, d]`` tensors ``parts[rows]`` into ``[n, T, d]`` and a mask."""
    picked = [parts[int(i)] for i in rows]
    lengths = torch.tensor([len(p) for p in picked])
    padded = torch.nn.utils.rnn.pad_sequence(picked, batch_first=True)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, mask


def _candidates(torch: Any, queries: list[Any], docs: list[Any], k: int) -> Any:
    """For each query, the ``k`` documents nearest by mean-pooled full-width vectors.

    A cheap stand-in for the teacher's hardest documents: scoring every query against every
    document with MaxSim costs (query tokens x document tokens) per pair, which does not
    scale to thousands of calibration texts; the exact teacher is computed per batch.
    """
    q_mean = torch.nn.functional.normalize(torch.stack([q.mean(0) for q in queries]), dim=-1)
    d_mean = torch.nn.functional.normalize(torch.stack([d.mean(0) for d in docs]), dim=-1)
    out = [
        (q_mean[i : i + 1024] @ d_mean.T).topk(k, dim=1).indices
        for i in range(0, len(queries), 1024)
    ]
    return torch.cat(out)


def _distill(
    torch: Any,
    query_vectors: Sequence[np.ndarray],
    doc_vectors: Sequence[np.ndarray],
    w0: np.ndarray,
    *,
    seed: int,
    steps: int,
    lr: float,
    batch_queries: int,
    hard_negatives: int,
    random_docs: int,
    temperature: float,
    mse_weight: float,
) -> np.ndarray:
    """The gradient fit behind `fit_projection` (arguments as there).

    The teacher is computed per batch, for the batch's queries against the batch's
    documents only, so time and memory grow with the number of steps, not with the
    number of calibration query-document pairs.
    """
    queries = [torch.from_numpy(_normalize(np.asarray(v, np.float32))) for v in query_vectors]
    docs = [torch.from_numpy(_normalize(np.asarray(v, np.float32))) for v in doc_vectors]
    n_q, n_d = len(queries), len(docs)
    k_hard = min(hard_negatives, n_d)
    with torch.no_grad():
        nearest = _candidates(torch, queries, docs, k_hard)

    generator = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    # Reduced, re-normalized vectors have larger cosines than the full-width ones; a learned
    # scale and offset on the student's similarities absorbs that, because any increasing
    # affine map of the token maxima leaves every query's ranking as it is.
    # Start them at the least-squares fit on a sample, so that the first steps do not bend
    # W to shrink the cosines instead.
    with torch.no_grad():
        q, qmask = _batch(torch, queries, torch.randperm(n_q, generator=generator)[:64])
        d, dmask = _batch(torch, docs, torch.randperm(n_d, generator=generator)[:64])
        wn = torch.from_numpy(w0)
        student0 = _token_maxima(
            torch,
            torch.nn.functional.normalize(q @ wn, dim=-1),
            qmask.float(),
            torch.nn.functional.normalize(d @ wn, dim=-1),
            dmask,
        )[qmask]
        teacher0 = _token_maxima(torch, q, qmask.float(), d, dmask)[qmask]
        slope = ((student0 - student0.mean()) * (teacher0 - teacher0.mean())).mean() / (
            student0.var(unbiased=False) + 1e-9
        )
        slope = slope.clamp(min=1e-3)
        intercept = teacher0.mean() - slope * student0.mean()
    log_scale = torch.nn.Parameter(slope.log())
    offset = torch.nn.Parameter(intercept.clone())
    optimizer = torch.optim.Adam([w, log_scale, offset], lr=lr)
    for step in range(steps):
        qi = torch.randperm(n_q, generator=generator)[: min(batch_queries, n_q)]
        extra = torch.randperm(n_d, generator=generator)[: min(random_docs, n_d)]
        di = torch.unique(torch.cat([nearest[qi].reshape(-1), extra]))
        q, qmask = _batch(torch, queries, qi)
        d, dmask = _batch(torch, docs, di)
        token_mask = qmask.float()[:, :, None]
        q_tokens = qmask.sum(dim=1).clamp(min=1).float()[:, None]
        with torch.no_grad():
            target_max = _token_maxima(torch, q, qmask.float(), d, dmask)
        qs = torch.nn.functional.normalize(q @ w, dim=-1)
        ds = torch.nn.functional.normalize(d @ w, dim=-1)
        raw_max = _token_maxima(torch, qs, qmask.float(), ds, dmask)
        student_max = (raw_max * log_scale.exp() + offset) * token_mask
        student = student_max.sum(dim=1) / q_tokens
        teacher = target_max.sum(dim=1) / q_tokens
        kl = torch.nn.functional.kl_div(
            torch.log_softmax(student / temperature, dim=1),
            torch.log_softmax(teacher / temperature, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        mse = (((student_max - target_max) ** 2) * token_mask).sum() / (token_mask.sum() * len(di))
        loss = kl + mse_weight * mse
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            log.info("fit step %d: kl %.4f, mse %.5f", step, kl.item(), mse.item())
    result: np.ndarray = w.detach().numpy().astype(np.float32)
    return result


def shipped_calibration_texts() -> tuple[list[str], list[str]]:
    """The passages of ``export/calibration/passages.txt``: ``(queries, documents)``.

    Written for this project, Apache-2.0 like it, sharing nothing with SciFact or any BEIR
    set. Each passage carries a question written with it; the other queries are
    pseudo-queries, the first sentence of each passage.
    """
    text = resources.files("edge_colbert_export").joinpath(_CALIBRATION_FILE).read_text("utf-8")
    queries: list[str] = []
    documents: list[str] = []
    for block in text.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        if not lines or lines[0].startswith("#"):
            continue
        question = lines[0][2:].strip() if lines[0].startswith("Q:") else ""
        passage = " ".join(lines[1:] if question else lines)
        if not passage:
            continue
        documents.append(passage)
        if question:
            queries.append(question)
        first = passage.split(". ")[0].rstrip(".")
        if first != passage:
            queries.append(first)
    if not documents:
        raise ExportError(f"the built-in calibration file {_CALIBRATION_FILE} holds no passage")
    return queries, documents


@functools.lru_cache(maxsize=4)
def _default_texts(stdlib_passages_max: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    queries, documents = shipped_calibration_texts()
    passages = stdlib_passages(stdlib_passages_max) if stdlib_passages_max > 0 else []
    if stdlib_passages_max > 0 and not passages:
        log.warning(
            "this Python ships no standard library sources under %s: calibrating on the %d "
            "shipped passages only, which fits a weaker projection",
            stdlib_root(),
            len(documents),
        )
    for passage in passages:
        documents.append(passage)
        queries.extend(pseudo_queries(passage))
    return tuple(queries), tuple(documents)


def default_calibration_texts(
    stdlib_passages_max: int = DEFAULT_STDLIB_PASSAGES,
) -> tuple[list[str], list[str]]:
    """The built-in calibration set: ``(queries, documents)``.

    First the shipped passages (`shipped_calibration_texts`, in file order), then up to
    ``stdlib_passages_max`` prose passages from the docstrings of the running Python's
    standard library (`edge_colbert_export.calibration_text`), each with one or two of its
    sentences as pseudo-queries. Queries and documents are not paired: the fit scores every query
    against documents chosen per batch.
    """
    queries, documents = _default_texts(stdlib_passages_max)
    return list(queries), list(documents)
