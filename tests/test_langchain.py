"""The LangChain adapters, run through langchain-tests' own standard suites and against bad
input, on the real Index with the bundled model (it ranks "bar" above "foo" for "bar", which
the standard suite's exact-order assertions need; the tiny test model does not know words).
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip(
    "langchain_core", reason='needs the langchain extra: pip install "edge-colbert[langchain]"'
)
pytest.importorskip(
    "langchain_tests",
    reason='needs langchain-tests: pip install "edge-colbert[test-extras]"',
)
pytest.importorskip(
    "pytest_asyncio", reason='needs pytest-asyncio: pip install "edge-colbert[test-extras]"'
)

from langchain_core.documents import Document
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from edge_colbert import Encoder, Index
from edge_colbert.errors import InvalidInputError, ReadOnlyIndexError
from edge_colbert.langchain import EdgeColbertRetriever, EdgeColbertVectorStore

# asyncio_mode = auto for this file only: the standard suites' async tests carry no asyncio
# mark, so every test here gets one (the sync ones ignore it; their warning is silenced).
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings("ignore:The test <Function .*is marked with '@pytest.mark.asyncio'"),
]

CORPUS = [
    ("wal", "Writes are SQLite transactions in WAL mode, so a crash loses at most one batch."),
    ("prefilter", "A usearch centroid prefilter narrows a search to candidate documents."),
    ("maxsim", "Candidates are ranked by exact MaxSim over their int8 token vectors."),
    ("export", "The export step turns a ColBERT checkpoint into an ONNX model folder."),
    ("onnx", "The runtime encodes with onnxruntime and never imports PyTorch."),
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    """The bundled model, loaded once for the module."""
    return Encoder()


@pytest.fixture(scope="module")
def corpus_index(encoder: Encoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lc") / "docs.db"
    with Index(path, encoder=encoder) as index:
        index.add(
            [text for _, text in CORPUS],
            ids=[key for key, _ in CORPUS],
            metadata=[{"topic": key, "n": n} for n, (key, _) in enumerate(CORPUS)],
        )
    return path


class TestEdgeColbertRetrieverStandard(RetrieversIntegrationTests):
    """langchain-tests' retriever suite, on a five-document index (every test runs)."""

    params: ClassVar[dict[str, Any]] = {}

    @pytest.fixture(autouse=True)
    def _index(self, corpus_index: Path, encoder: Encoder) -> None:
        type(self).params = {"index": str(corpus_index), "encoder": encoder}

    @property
    def retriever_constructor(self) -> type[EdgeColbertRetriever]:
        return EdgeColbertRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def retriever_query_example(self) -> str:
        return "what happens to my data after a crash?"


class TestEdgeColbertVectorStoreStandard(VectorStoreIntegrationTests):
    """langchain-tests' vector store suite, on a fresh index file per test. The suite's
    ``get_embeddings()`` (fake embeddings) is not used: the store owns its ColBERT encoder,
    and langchain-tests lets a store be built however it likes in the ``vectorstore``
    fixture. No test is switched off: sync, async and get_by_ids all run."""

    @pytest.fixture
    def vectorstore(self, encoder: Encoder, tmp_path: Path) -> Iterator[EdgeColbertVectorStore]:
        store = EdgeColbertVectorStore(tmp_path / "store.db", encoder=encoder)
        try:
            yield store
        finally:
            store.index.close()


# ------------------------------------------------------------------ our own behaviour


def test_retriever_documents_carry_id_score_and_metadata(
    corpus_index: Path, encoder: Encoder
) -> None:
    retriever = EdgeColbertRetriever(index=corpus_index, encoder=encoder, k=2)
    docs = retriever.invoke("what happens to my data after a crash?")
    assert docs[0].id == "wal"
    first = docs[0].metadata
    assert first["topic"] == "wal" and first["n"] == 0 and first["id"] == "wal"
    hits = Index(corpus_index, encoder=encoder, readonly=True).search(
        "what happens to my data after a crash?", 2
    )
    assert [doc.metadata["score"] for doc in docs] == pytest.approx([h.score for h in hits])


def test_retriever_where_filter_and_index_object(corpus_index: Path, encoder: Encoder) -> None:
    with Index(corpus_index, encoder=encoder, readonly=True) as index:
        retriever = EdgeColbertRetriever(index=index, k=3, where={"topic": ["onnx", "export"]})
        docs = retriever.invoke("crash safety of writes")
        assert sorted(doc.id for doc in docs if doc.id) == ["export", "onnx"]
        # A per-call where replaces the default one.
        assert [d.id for d in retriever.invoke("crash", where={"topic": "maxsim"})] == ["maxsim"]


@pytest.mark.parametrize("k", [0, -1, "3", 2.5, True])
def test_retriever_wrong_k(corpus_index: Path, encoder: Encoder, k: Any) -> None:
    with pytest.raises(ValueError, match="k must be"):
        EdgeColbertRetriever(index=corpus_index, encoder=encoder, k=k)
    retriever = EdgeColbertRetriever(index=corpus_index, encoder=encoder)
    with pytest.raises(InvalidInputError, match="k must be"):
        retriever.invoke("crash", k=k)


def test_retriever_bad_options(corpus_index: Path, encoder: Encoder, tmp_path: Path) -> None:
    retriever = EdgeColbertRetriever(index=corpus_index, encoder=encoder)
    with pytest.raises(InvalidInputError, match="unknown search option"):
        retriever.invoke("crash", top_k=3)
    with pytest.raises(InvalidInputError, match="where must be a dict"):
        retriever.invoke("crash", where="topic=wal")
    with pytest.raises(InvalidInputError, match="empty"):
        retriever.invoke("   ")
    with pytest.raises(ValueError, match="does not exist"):
        EdgeColbertRetriever(index=tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(ValueError, match="mode must be"):
        EdgeColbertRetriever(index=corpus_index, encoder=encoder, mode=3)  # type: ignore[arg-type]


def test_retriever_mode(corpus_index: Path, encoder: Encoder) -> None:
    """``mode`` is passed on to Index.search; an unknown one is the index's clear error."""
    retriever = EdgeColbertRetriever(index=corpus_index, encoder=encoder, mode="no-such-mode")
    with pytest.raises(InvalidInputError, match="no-such-mode"):
        retriever.invoke("crash")
    if "mode" not in inspect.signature(Index.search).parameters:
        pytest.skip("this Index.search has no mode= yet (issue 15)")
    semantic = EdgeColbertRetriever(index=corpus_index, encoder=encoder, k=2, mode="semantic")
    direct = Index(corpus_index, encoder=encoder, readonly=True).search("crash", 2, mode="semantic")
    assert [d.id for d in semantic.invoke("crash")] == [h.id for h in direct]


async def test_retriever_async_concurrent(corpus_index: Path, encoder: Encoder) -> None:
    """Many ainvoke at once: they run in worker threads on one Index, and agree with invoke."""
    retriever = EdgeColbertRetriever(index=corpus_index, encoder=encoder, k=3)
    queries = ["crash", "prefilter centroids", "onnx runtime", "int8 maxsim"] * 4
    results = await asyncio.gather(*(retriever.ainvoke(q) for q in queries))
    for query, docs in zip(queries, results, strict=True):
        assert [d.id for d in docs] == [d.id for d in retriever.invoke(query)]


def test_store_bad_metadata_changes_nothing(encoder: Encoder, tmp_path: Path) -> None:
    store = EdgeColbertVectorStore(tmp_path / "s.db", encoder=encoder)
    store.add_documents([Document(page_content="kept", metadata={"a": 1})], ids=["keep"])
    bad = [
        Document(page_content="new", metadata={"when": datetime.date(2024, 1, 1)}),
        Document(page_content="keep replaced?", metadata={}),
    ]
    with pytest.raises(InvalidInputError, match="not JSON-serializable"):
        store.add_documents(bad, ids=["new", "keep"])
    with pytest.raises(InvalidInputError, match="not JSON-serializable"):
        store.add_texts(["x"], [{"x": float("nan")}])
    assert len(store.index) == 1
    assert store.get_by_ids(["keep", "new"]) == [
        Document(page_content="kept", metadata={"a": 1}, id="keep")
    ]


def test_store_bad_input(encoder: Encoder, tmp_path: Path) -> None:
    store = EdgeColbertVectorStore.from_texts(
        ["alpha", "beta"], path=tmp_path / "s.db", encoder=encoder, ids=["a", "b"]
    )
    with pytest.raises(InvalidInputError, match="k must be"):
        store.similarity_search("alpha", k=0)
    with pytest.raises(InvalidInputError, match="needs the ids"):
        store.delete()
    with pytest.raises(InvalidInputError, match="single string"):
        store.add_texts("alpha")
    with pytest.raises(InvalidInputError, match="own ColBERT model"):
        EdgeColbertVectorStore.from_texts(["x"], object(), path=tmp_path / "t.db")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="path="):
        EdgeColbertVectorStore.from_texts(["x"])
    assert sorted(store.index) == ["a", "b"]
    assert store.similarity_search("beta", k=1, filter={"missing": 1}) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.similarity_search_by_vector([0.1] * 64),
        lambda s: s.max_marginal_relevance_search("alpha"),
        lambda s: s.max_marginal_relevance_search_by_vector([0.1] * 64),
        lambda s: s.as_retriever(search_type="mmr").invoke("alpha"),
        lambda s: s.similarity_search_with_relevance_scores("alpha"),
    ],
)
def test_store_single_vector_methods_explain(encoder: Encoder, tmp_path: Path, call: Any) -> None:
    store = EdgeColbertVectorStore.from_texts(["alpha"], path=tmp_path / "s.db", encoder=encoder)
    with pytest.raises(NotImplementedError, match=r"multi-vector|MaxSim scores"):
        call(store)


async def test_store_async_single_vector_methods_explain(encoder: Encoder, tmp_path: Path) -> None:
    store = EdgeColbertVectorStore(tmp_path / "s.db", encoder=encoder)
    with pytest.raises(NotImplementedError, match="multi-vector"):
        await store.asimilarity_search_by_vector([0.1] * 64)
    with pytest.raises(NotImplementedError, match="multi-vector"):
        await store.amax_marginal_relevance_search("alpha")


def test_store_on_readonly_index_refuses_writes(corpus_index: Path, encoder: Encoder) -> None:
    with Index(corpus_index, encoder=encoder, readonly=True) as index:
        store = EdgeColbertVectorStore(index)
        with pytest.raises(ReadOnlyIndexError):
            store.add_texts(["more"])
        with pytest.raises(ReadOnlyIndexError):
            store.delete(["wal"])
        assert len(index) == len(CORPUS)
        assert store.as_retriever(search_kwargs={"k": 1}).invoke("crash")[0].id == "wal"


async def test_store_async_writes_and_searches_at_once(encoder: Encoder, tmp_path: Path) -> None:
    """aadd_documents and asimilarity_search run in LangChain's executor threads on one
    index at the same time: writes are serialized, searches see whole batches."""
    store = EdgeColbertVectorStore(tmp_path / "s.db", encoder=encoder)
    batches = [
        [
            Document(page_content=f"note {b}-{i} about topic {b}", metadata={"b": b})
            for i in range(3)
        ]
        for b in range(6)
    ]
    writes = [store.aadd_documents(batch) for batch in batches]
    reads = [store.asimilarity_search("topic", k=50) for _ in range(6)]
    # Two gathers only for the types: every write and read is still in flight at once.
    written, read = await asyncio.gather(asyncio.gather(*writes), asyncio.gather(*reads))
    assert len(store.index) == 18
    assert all(len(ids) == 3 for ids in written)
    for found in read:
        per_batch: dict[int, int] = {}
        for doc in found:
            per_batch[doc.metadata["b"]] = per_batch.get(doc.metadata["b"], 0) + 1
        assert set(per_batch.values()) <= {3}, per_batch  # a batch is all there or not at all
