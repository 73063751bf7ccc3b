"""A small retrieval-augmented generation loop over this project's docs, three ways.

Run from the repository root (no network; the "LLM" is a fake one, so the answer is the
context the real one would be given, cut short):

    python docs/examples/rag_loop.py --framework langchain "why is int8 enough?"
    python docs/examples/rag_loop.py --framework llama-index "why is int8 enough?"
    python docs/examples/rag_loop.py --framework mcp "why is int8 enough?"

Each builds (or updates) the index ``--db`` (default ``rag-demo.db``) over ``docs/`` with the
bundled model, retrieves the best passages for the question with edge-colbert through that
framework, puts them in a prompt and asks the fake LLM. It prints the answer, then one
``source: PATH`` line per passage used. Needs the extra of the framework chosen:
``pip install "edge-colbert[langchain]"`` (and ``[llama-index]``, ``[mcp]``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent  # docs/
PROMPT = "Answer the question from the context.\n\nContext:\n{context}\n\nQuestion: {question}"


def build_index(db: Path) -> None:
    """Index (or bring up to date) the Markdown pages under docs/ in ``db``."""
    from edge_colbert import Encoder, Index
    from edge_colbert.sync import sync_files

    encoder = Encoder()
    with Index(db, encoder=encoder) as index:
        sync_files(index, encoder, [DOCS], exclude=[db])


def fake_llm(prompt: str) -> str:
    """Stands in for a real model: answers with the first lines of the context it was given."""
    context = prompt.split("Context:\n", 1)[-1].split("\n\nQuestion:", 1)[0]
    return " ".join(context.split()[:80])


def with_langchain(db: Path, question: str, k: int) -> tuple[str, list[str]]:
    """retriever | prompt | LLM as a LangChain runnable chain."""
    from langchain_core.documents import Document
    from langchain_core.prompts import PromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough

    from edge_colbert.langchain import EdgeColbertRetriever

    retriever = EdgeColbertRetriever(index=db, k=k)
    sources: list[str] = []

    def context(docs: list[Document]) -> str:
        sources.extend(str(doc.metadata.get("path", doc.id)) for doc in docs)
        return "\n\n".join(doc.page_content for doc in docs)

    chain = (
        {"context": retriever | RunnableLambda(context), "question": RunnablePassthrough()}
        | PromptTemplate.from_template(PROMPT)
        | RunnableLambda(lambda prompt: fake_llm(prompt.to_string()))  # a real LLM goes here
    )
    return chain.invoke(question), sources


def with_llama_index(db: Path, question: str, k: int) -> tuple[str, list[str]]:
    """A RetrieverQueryEngine: edge-colbert retrieves 2k, its MaxSim reranker keeps k."""
    from llama_index.core.llms.mock import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    from edge_colbert.llama_index import EdgeColbertReranker, EdgeColbertRetriever

    # Only the file's path and heading go into the prompt beside each passage.
    retriever = EdgeColbertRetriever(db, k=2 * k, llm_metadata_keys=["path", "heading"])
    reranker = EdgeColbertReranker(index=retriever.index, top_n=k)
    # LlamaIndex's MockLLM answers with the prompt it was given (a real LLM goes here).
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=MockLLM(), node_postprocessors=[reranker]
    )
    response = engine.query(question)
    sources = [str(n.node.metadata.get("path", n.node.node_id)) for n in response.source_nodes]
    # The echoed prompt is LlamaIndex's QA template around the passages: keep the passages.
    context = str(response).split("---------------------")[1]
    return fake_llm(PROMPT.format(context=context, question=question)), sources


def with_mcp(db: Path, question: str, k: int) -> tuple[str, list[str]]:
    """An MCP client, as a desktop assistant is one: spawn `edge-colbert mcp`, call search."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    server = StdioServerParameters(
        command=sys.executable, args=["-m", "edge_colbert", "mcp", str(db)]
    )

    async def ask() -> list[dict[str, Any]]:
        async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("search", {"query": question, "k": k})
            if result.is_error:
                raise RuntimeError(str(result.content))
            hits: list[dict[str, Any]] = (result.structured_content or {})["result"]
            return hits

    hits = asyncio.run(ask())
    context = "\n\n".join(hit["text"] for hit in hits)
    answer = fake_llm(PROMPT.format(context=context, question=question))
    return answer, [str(hit["metadata"].get("path", hit["id"])) for hit in hits]


FRAMEWORKS = {"langchain": with_langchain, "llama-index": with_llama_index, "mcp": with_mcp}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--framework", choices=sorted(FRAMEWORKS), default="langchain")
    parser.add_argument("--db", type=Path, default=Path("rag-demo.db"))
    parser.add_argument("-k", type=int, default=3, help="passages given to the LLM")
    args = parser.parse_args(argv)
    build_index(args.db)
    answer, sources = FRAMEWORKS[args.framework](args.db, args.question, args.k)
    print(answer)  # noqa: T201 (a command-line example)
    for source in sources:
        print(f"source: {source}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
