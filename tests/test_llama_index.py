"""The LlamaIndex adapters inside a real ``RetrieverQueryEngine`` with LlamaIndex's own
``MockLLM`` (it answers with the prompt it was given, so the answer shows which retrieved
text reached the LLM), on the real Index with the bundled model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "llama_index.core",
    reason='needs the llama-index extra: pip install "edge-colbert[llama-index]"',
)

from llama_index.core.llms.mock import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, TextNode

from edge_colbert import Encoder, Index
from edge_colbert.errors import InvalidInputError
from edge_colbert.llama_index import EdgeColbertReranker, EdgeColbertRetriever

CORPUS = {
    "wal": "Writes are SQLite transactions in WAL mode, so a crash loses at most one batch.",
    "prefilter": "A usearch centroid prefilter narrows a search to candidate documents.",
    "maxsim": "Candidates are ranked by exact MaxSim over their int8 token vectors.",
    "export": "The export step turns a ColBERT checkpoint into an ONNX model folder.",
    "onnx": "The runtime encodes with onnxruntime and never imports PyTorch.",
}
QUESTION = "what happens to my data after a crash?"


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture(scope="module")
def db(encoder: Encoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("li") / "docs.db"
    with Index(path, encoder=encoder) as index:
        index.add(
            list(CORPUS.values()),
            ids=list(CORPUS),
            metadata=[{"topic": key} for key in CORPUS],
        )
    return path


def test_query_engine_with_retriever_and_reranker(db: Path, encoder: Encoder) -> None:
    retriever = EdgeColbertRetriever(db, encoder=encoder, k=4)
    reranker = EdgeColbertReranker(index=db, encoder=encoder, top_n=2)
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=MockLLM(), node_postprocessors=[reranker]
    )
    response = engine.query(QUESTION)
    sources = response.source_nodes
    assert len(sources) == 2
    assert sources[0].node.node_id == "wal"
    assert sources[0].node.metadata == {"topic": "wal"}
    # The reranker's scores are Index.rerank's full-precision MaxSim over the 4 retrieved.
    with Index(db, encoder=encoder, readonly=True) as index:
        retrieved = [hit.id for hit in index.search(QUESTION, 4)]
        expected = index.rerank(QUESTION, [CORPUS[i] for i in retrieved])[:2]
    assert [s.node.node_id for s in sources] == [retrieved[i] for i, _ in expected]
    assert [s.score for s in sources] == pytest.approx([score for _, score in expected])
    # MockLLM echoes its prompt: the best passage reached the LLM, the dropped ones did not.
    assert CORPUS["wal"] in str(response)
    dropped = set(retrieved) - {s.node.node_id for s in sources}
    assert all(CORPUS[i] not in str(response) for i in dropped)


def test_retriever_nodes_and_scores_match_index(db: Path, encoder: Encoder) -> None:
    with Index(db, encoder=encoder, readonly=True) as index:
        retriever = EdgeColbertRetriever(index, k=3, where={"topic": ["onnx", "export", "wal"]})
        nodes = retriever.retrieve(QUESTION)
        hits = index.search(QUESTION, 3, where={"topic": ["onnx", "export", "wal"]})
    assert [n.node.node_id for n in nodes] == [h.id for h in hits]
    assert [n.score for n in nodes] == pytest.approx([h.score for h in hits])
    assert all(isinstance(n.node, TextNode) for n in nodes)
    assert nodes[0].node.get_content() == CORPUS[hits[0].id]


def test_async_query_engine(db: Path, encoder: Encoder) -> None:
    retriever = EdgeColbertRetriever(db, encoder=encoder, k=2)
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=MockLLM(), node_postprocessors=[EdgeColbertReranker(encoder=encoder)]
    )

    async def many() -> list[Any]:
        return list(await asyncio.gather(*(engine.aquery(QUESTION) for _ in range(6))))

    for response in asyncio.run(many()):
        assert response.source_nodes[0].node.node_id == "wal"


def test_reranker_with_encoder_orders_given_nodes(encoder: Encoder) -> None:
    nodes = [
        NodeWithScore(node=TextNode(id_="a", text=CORPUS["onnx"]), score=9.0),
        NodeWithScore(node=TextNode(id_="b", text=""), score=8.0),
        NodeWithScore(node=TextNode(id_="c", text=CORPUS["wal"]), score=1.0),
    ]
    out = EdgeColbertReranker(encoder=encoder).postprocess_nodes(nodes, query_str=QUESTION)
    assert [n.node.node_id for n in out] == ["c", "a", "b"]
    assert out[2].score is None  # no text to score: kept, last
    assert out[0].score is not None and out[1].score is not None
    assert out[0].score > out[1].score


def test_bad_input(db: Path, encoder: Encoder, tmp_path: Path) -> None:
    for k in (0, -2, "3", 1.5):
        with pytest.raises(InvalidInputError, match="k must be"):
            EdgeColbertRetriever(db, encoder=encoder, k=k)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="where must be"):
        EdgeColbertRetriever(db, encoder=encoder, where="topic=wal")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="does not exist"):
        EdgeColbertRetriever(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(InvalidInputError, match="mode"):
        EdgeColbertRetriever(db, encoder=encoder, mode="no-such-mode").retrieve(QUESTION)
    with pytest.raises(ValueError, match="to score with"):
        EdgeColbertReranker()
    with pytest.raises(ValueError, match="k must be"):
        EdgeColbertReranker(encoder=encoder, top_n=0)
    with pytest.raises(InvalidInputError, match="needs the query"):
        EdgeColbertReranker(encoder=encoder).postprocess_nodes([])


def test_llm_metadata_keys_limit_what_reaches_the_prompt(encoder: Encoder, tmp_path: Path) -> None:
    from llama_index.core.schema import MetadataMode

    db = tmp_path / "noisy.db"
    with Index(db, encoder=encoder) as index:
        index.add([CORPUS["wal"]], ids=["noisy"], metadata=[{"path": "/a.md", "sha": "f00"}])
    shown = EdgeColbertRetriever(db, encoder=encoder, llm_metadata_keys=["path"])
    node = shown.retrieve(QUESTION)[0].node
    prompt_text = node.get_content(metadata_mode=MetadataMode.LLM)
    assert "path: /a.md" in prompt_text and "f00" not in prompt_text
    assert node.metadata == {"path": "/a.md", "sha": "f00"}  # still all on the node
    every = EdgeColbertRetriever(db, encoder=encoder)
    assert "sha: f00" in every.retrieve(QUESTION)[0].node.get_content(
        metadata_mode=MetadataMode.LLM
    )
    with pytest.raises(InvalidInputError, match="llm_metadata_keys"):
        EdgeColbertRetriever(db, encoder=encoder, llm_metadata_keys="path")
