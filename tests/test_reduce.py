"""The 64-d reduction (export/reduce.py) and the nDCG@10 evaluation (benchmarks/eval_scifact.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.eval_scifact import (  # noqa: E402
    DEFAULT_SCIFACT,
    evaluate,
    load_dataset,
    ndcg_at_k,
    top_k_run,
)
from edge_colbert.errors import InvalidInputError  # noqa: E402
from edge_colbert_export.calibration_text import pseudo_queries, stdlib_passages  # noqa: E402
from edge_colbert_export.reduce import (  # noqa: E402
    default_calibration_texts,
    fit_projection,
    pca_projection,
    query_aware_init,
)

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason='needs torch, of the export extra: pip install "edge-colbert[export]"',
)


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True))


def _synthetic(seed: int, n: int = 48) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Queries and documents in 32 dims where PCA to 8 dims keeps the wrong subspace.

    The ranking lives in 8 low-variance "signal" dimensions. Documents also carry a large,
    constant-norm component in 24 "nuisance" dimensions that queries never touch: it adds
    nothing to any query-document similarity yet holds most of the variance, so PCA keeps
    it and throws the signal away.
    """
    rng = np.random.default_rng(seed)
    docs, queries = [], []
    for _ in range(n):
        signal = _unit(rng.normal(size=(12, 8)))
        nuisance = 3.0 * _unit(rng.normal(size=(12, 24)))
        docs.append(_unit(np.hstack([signal, nuisance])).astype(np.float32))
        picked = signal[rng.choice(12, size=6, replace=False)]
        noisy = _unit(picked + 0.5 * rng.normal(size=picked.shape))
        queries.append(np.hstack([noisy, np.zeros((6, 24))]).astype(np.float32))
    return queries, docs


def _maxsim(queries: list[np.ndarray], docs: list[np.ndarray], w: np.ndarray | None) -> np.ndarray:
    def reduce(x: np.ndarray) -> np.ndarray:
        return _unit(x @ w) if w is not None else _unit(x)

    return np.array([[(reduce(q) @ reduce(d).T).max(1).sum() for d in docs] for q in queries])


def _top1_agreement(teacher: np.ndarray, student: np.ndarray) -> float:
    return float((teacher.argmax(1) == student.argmax(1)).mean())


def test_pca_projection_is_orthonormal_and_keeps_the_largest_variance() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) * np.array([5.0, 1.0, 0.1, 3.0, 0.2, 0.3])
    w = pca_projection(x, 2)
    assert w.shape == (6, 2)
    np.testing.assert_allclose(w.T @ w, np.eye(2), atol=1e-5)
    # The two largest-variance axes are 0 and 3, in that order.
    np.testing.assert_allclose(np.abs(w[[0, 3], [0, 1]]), [1.0, 1.0], atol=0.02)


def test_pca_projection_rejects_a_dim_out_of_range() -> None:
    with pytest.raises(InvalidInputError, match=r"1\.\.4"):
        pca_projection(np.ones((10, 4)), 5)


@needs_torch
@pytest.mark.export
def test_fit_projection_beats_pca_where_pca_keeps_the_wrong_subspace() -> None:
    train_q, train_d = _synthetic(seed=1)
    test_q, test_d = _synthetic(seed=2)  # held out: the fit must generalize, not memorize
    all_tokens = np.concatenate([*train_q, *train_d])
    w_pca = pca_projection(all_tokens, 8)
    w_fit = fit_projection(train_q, train_d, 8, seed=0, steps=150, threads=1)
    assert w_fit.shape == (32, 8) and w_fit.dtype == np.float32
    teacher = _maxsim(test_q, test_d, None)
    pca = _top1_agreement(teacher, _maxsim(test_q, test_d, w_pca))
    fitted = _top1_agreement(teacher, _maxsim(test_q, test_d, w_fit))
    assert fitted >= 0.95, f"fitted projection kept the top-1 of only {fitted:.0%} of queries"
    assert fitted >= pca + 0.3, f"fitted {fitted:.0%} vs PCA {pca:.0%}"


@needs_torch
@pytest.mark.export
def test_fit_projection_is_deterministic_for_a_seed() -> None:
    queries, docs = _synthetic(seed=3, n=16)
    first = fit_projection(queries, docs, 8, seed=7, steps=20, threads=1)
    second = fit_projection(queries, docs, 8, seed=7, steps=20, threads=1)
    np.testing.assert_array_equal(first, second)


def test_query_aware_init_keeps_the_directions_queries_use() -> None:
    queries, docs = _synthetic(seed=4)
    w = query_aware_init(queries, docs, 8)
    np.testing.assert_allclose(w.T @ w, np.eye(8), atol=1e-5)
    signal_share = np.linalg.norm(w[:8]) ** 2 / 8
    assert signal_share > 0.95


@needs_torch
@pytest.mark.export
def test_fit_projection_with_no_steps_returns_the_init() -> None:
    queries, docs = _synthetic(seed=5, n=8)
    np.testing.assert_array_equal(
        fit_projection(queries, docs, 8, steps=0), query_aware_init(queries, docs, 8)
    )


def test_fit_projection_rejects_mismatched_widths() -> None:
    with pytest.raises(InvalidInputError, match="widths"):
        fit_projection([np.ones((3, 8))], [np.ones((3, 16))], 4)


def test_default_calibration_texts_are_substantial() -> None:
    queries, docs = default_calibration_texts()
    assert len(docs) >= 100 and len(queries) >= len(docs)
    assert all(q.strip() for q in queries) and all(len(d.split()) >= 30 for d in docs)
    # With docstring passages added, the shipped ones still come first: the export's checks
    # take the first few texts.
    more_q, more_d = default_calibration_texts(200)
    assert len(more_d) > len(docs) and more_d[: len(docs)] == docs
    assert more_q[: len(queries)] == queries and len(more_q) > len(queries)


def test_stdlib_passages_are_the_prose_of_docstrings_without_importing(tmp_path: Path) -> None:
    prose = " ".join(f"Sentence number {i} explains how the frobnicator behaves." for i in range(6))
    source = (
        f'"""{prose}\n\n>>> frobnicate(1)\n2\n"""\n'
        "raise SystemExit('importing this file would stop the test run')\n"
        f'def f():\n    """{prose} Again."""\n'
    )
    (tmp_path / "frob.py").write_text(source, encoding="utf-8")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_frob.py").write_text(f'"""{prose} Test."""\n', encoding="utf-8")
    passages = stdlib_passages(10, root=tmp_path)
    assert passages == [prose, prose + " Again."]  # the doctest and the test folder are dropped
    assert stdlib_passages(1, root=tmp_path) == stdlib_passages(1, root=tmp_path)
    assert len(stdlib_passages(1, root=tmp_path)) == 1


def test_pseudo_queries_are_the_first_and_middle_sentences() -> None:
    passage = (
        "The cache keeps recent pages. It evicts the oldest page first. Writes go to disk later."
    )
    assert pseudo_queries(passage) == [
        "The cache keeps recent pages",
        "It evicts the oldest page first",
    ]


def _shingles(text: str, n: int = 8) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@pytest.mark.skipif(
    not DEFAULT_SCIFACT.is_dir(),
    reason=f"SciFact is not at {DEFAULT_SCIFACT} (shared evaluation data, not shipped)",
)
def test_default_calibration_texts_share_nothing_with_scifact() -> None:
    # Every passage the docstring option can add, not only the default set.
    queries, docs = default_calibration_texts(3000)
    data = load_dataset()
    calibration: set[tuple[str, ...]] = set()
    for text in (*queries, *docs):
        calibration |= _shingles(text)
    shared = [t for t in (*data.doc_texts, *data.query_texts) if _shingles(t) & calibration]
    assert not shared, f"{len(shared)} SciFact texts share an 8-word run, e.g. {shared[0][:80]!r}"
    assert not set(queries) & set(data.query_texts)


def test_ndcg_matches_a_hand_computed_example() -> None:
    judged = {"a": 1, "b": 1}
    ranked = {"x": 4.0, "a": 3.0, "y": 2.0, "b": 1.0}
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k(ranked, judged) == pytest.approx(dcg / idcg)
    assert ndcg_at_k({"a": 1.0, "b": 0.5}, judged) == pytest.approx(1.0)
    # Beyond the cut-off a relevant document adds nothing.
    assert ndcg_at_k(ranked, judged, k=2) == pytest.approx((1 / math.log2(3)) / idcg)


def test_evaluate_averages_judged_queries_and_scores_missing_ones_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 2}, "q3": {"c": 0}}
    run = {"q1": {"a": 1.0, "z": 0.5}, "q9": {"b": 1.0}}
    # q1 is perfect, q2 is missing from the run (0), q3 has nothing relevant (not counted).
    assert evaluate(run, qrels) == pytest.approx(0.5)


def test_top_k_run_keeps_the_best_scores() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    run = top_k_run(["q1", "q2"], ["a", "b", "c"], scores, k=2)
    assert set(run["q1"]) == {"b", "c"} and set(run["q2"]) == {"a", "b"}


def test_load_dataset_reads_a_beir_folder(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "title": "T", "text": "body"}) + "\n", encoding="utf-8"
    )
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "question"}) + "\n", encoding="utf-8"
    )
    (tmp_path / "qrels" / "dev.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8"
    )
    data = load_dataset(tmp_path)
    assert data.doc_texts == ["T body"] and data.query_texts == ["question"]
    assert data.qrels == {"q1": {"d1": 1}}
    with pytest.raises(InvalidInputError, match=r"test\.tsv"):
        load_dataset(tmp_path, split="test")
