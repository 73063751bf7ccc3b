"""nDCG@10 on a BEIR-format dataset (SciFact by default), usable without torch.

`load_dataset` reads ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` the way BEIR
lays them out; `evaluate` computes mean nDCG@10 over the queries that have judgements, with
the trec_eval conventions BEIR reports (linear gain = relevance grade, log2 discount, ideal
DCG from all judged documents, a judged query missing from the run scores 0).

Another benchmark imports this for the bundled ONNX model:

    from benchmarks.eval_scifact import evaluate, load_dataset
    data = load_dataset()
    run = {qid: {docid: score, ...}, ...}
    print(evaluate(run, data.qrels))
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_colbert.errors import InvalidInputError

#: Where the shared copy of SciFact lives on the project machines (never copied into the repo).
DEFAULT_SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact-dev"

Qrels = dict[str, dict[str, int]]
Run = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class Dataset:
    """A BEIR dataset in memory: ids in file order, texts, and relevance judgements."""

    doc_ids: list[str]
    doc_texts: list[str]  # title + " " + text, as BEIR's dense models see a document
    query_ids: list[str]
    query_texts: list[str]
    qrels: Qrels


def load_qrels(path: str | Path) -> Qrels:
    """Read a BEIR qrels TSV (``query-id, corpus-id, score`` with a header row).

    Rows with a score of 0 or less are kept as judged-not-relevant (they add no gain).
    """
    qrels: Qrels = {}
    with Path(path).open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None or len(header) < 3:
            raise InvalidInputError(f"{path}: expected a header 'query-id corpus-id score'")
        for row in reader:
            if len(row) < 3:
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def load_dataset(root: str | Path = DEFAULT_SCIFACT, split: str = "dev") -> Dataset:
    """Load corpus, the queries and the split's qrels from a BEIR folder.

    Raises InvalidInputError naming the missing file when the folder is incomplete.
    """
    root = Path(root)
    paths = [root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"]
    for path in paths:
        if not path.is_file():
            raise InvalidInputError(
                f"{path} is missing: point load_dataset at a BEIR folder "
                "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv)"
            )
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    with paths[0].open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                doc = json.loads(line)
                doc_ids.append(str(doc["_id"]))
                doc_texts.append((doc.get("title", "") + " " + doc.get("text", "")).strip())
    query_ids: list[str] = []
    query_texts: list[str] = []
    with paths[1].open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                query = json.loads(line)
                query_ids.append(str(query["_id"]))
                query_texts.append(query["text"])
    return Dataset(doc_ids, doc_texts, query_ids, query_texts, load_qrels(paths[2]))


def ndcg_at_k(ranked: Mapping[str, float], judged: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one query: ``ranked`` maps doc id to score, ``judged`` doc id to grade.

    Ties in score are broken by doc id so that the figure is deterministic.
    """
    if k <= 0:
        raise InvalidInputError(f"k must be positive, got {k}")
    order = sorted(ranked.items(), key=lambda item: (-item[1], item[0]))[:k]
    dcg = sum(
        max(judged.get(doc, 0), 0) / math.log2(rank + 2) for rank, (doc, _) in enumerate(order)
    )
    ideal = sorted((grade for grade in judged.values() if grade > 0), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Mapping[str, float], judged: Mapping[str, int], k: int = 100) -> float:
    """Recall@k of one query: the share of its relevant documents in the top ``k`` of
    ``ranked`` (ties broken by doc id, as :func:`ndcg_at_k`); 0 when none is relevant."""
    relevant = {doc for doc, grade in judged.items() if grade > 0}
    top = sorted(ranked.items(), key=lambda item: (-item[1], item[0]))[:k]
    return len(relevant & {doc for doc, _ in top}) / len(relevant) if relevant else 0.0


# The split of the dev queries that every tuned figure uses: tune on one half, report on
# the other (benchmarks/hybrid.py, size_quality.py, search_latency.py).
SPLIT_SEED = 0


def query_halves(count: int, per_half: int = 0) -> tuple[list[int], list[int]]:
    """Positions of the tune and held-out halves of ``count`` queries (a shuffle seeded by
    :data:`SPLIT_SEED`, cut in two), each sorted; only the first ``per_half`` of each half
    in shuffled order when ``per_half`` > 0."""
    order = list(range(count))
    random.Random(SPLIT_SEED).shuffle(order)
    tune, held = order[: count // 2], order[count // 2 :]
    if per_half:
        tune, held = tune[:per_half], held[:per_half]
    return sorted(tune), sorted(held)


def encoded_queries(path: str | Path) -> list[Any]:
    """The bundled model's query vectors encoded beforehand (``q_vecs``/``q_lens`` of a
    ``.npz``, in query file order), one float32 ``[tokens, dim]`` array per query."""
    import numpy as np

    stored = np.load(path)
    ends = np.cumsum(stored["q_lens"])
    return [
        stored["q_vecs"][end - length : end].astype(np.float32)
        for end, length in zip(ends, stored["q_lens"], strict=True)
    ]


def evaluate(run: Run, qrels: Mapping[str, Mapping[str, int]], k: int = 10) -> float:
    """Mean nDCG@k over the queries of ``qrels`` that have at least one relevant document."""
    scores = [
        ndcg_at_k(run.get(qid, {}), judged, k)
        for qid, judged in qrels.items()
        if any(grade > 0 for grade in judged.values())
    ]
    if not scores:
        raise InvalidInputError("qrels hold no query with a relevant document")
    return sum(scores) / len(scores)


def top_k_run(
    query_ids: list[str], doc_ids: list[str], scores: object, k: int = 100
) -> dict[str, dict[str, float]]:
    """Turn a ``[n_queries, n_docs]`` score matrix (numpy array) into a run of the top k."""
    import numpy as np

    matrix = np.asarray(scores, dtype=np.float32)
    if matrix.shape != (len(query_ids), len(doc_ids)):
        raise InvalidInputError(
            f"scores have shape {matrix.shape}, expected ({len(query_ids)}, {len(doc_ids)})"
        )
    k = min(k, len(doc_ids))
    top = np.argpartition(-matrix, k - 1, axis=1)[:, :k]
    return {
        qid: {doc_ids[j]: float(matrix[i, j]) for j in top[i]} for i, qid in enumerate(query_ids)
    }
