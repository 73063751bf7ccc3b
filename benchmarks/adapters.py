"""What the framework adapters add to a search: p50 of ``Index.search`` and of each adapter,
side by side, measured in one run on one SciFact index.

    nice -n 10 python benchmarks/adapters.py --db /tmp/scifact-adapters.db --queries 100

The index is built once (all 5,183 SciFact abstracts with the bundled model, or the first
``--docs``) and reused when ``--db`` exists. Every query runs through every path in turn, the
order rotated per query, so that load on a shared machine falls on all of them alike:

- ``Index.search``: the reference;
- LangChain ``EdgeColbertRetriever.invoke`` and ``EdgeColbertVectorStore.similarity_search``;
- LlamaIndex ``EdgeColbertRetriever.retrieve``;
- MCP: the ``search`` tool's own code in-process (``LocalIndexes.search``), and a real
  ``tools/call`` from the SDK's ``ClientSession`` to ``edge-colbert mcp`` over stdio (JSON-RPC,
  a pipe and a worker thread per call: what an assistant waits for).

Each path encodes the query itself, as a user's call does. SciFact is CC BY-NC: evaluation
only, never copied into the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `edge_colbert` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, latency_ms
from benchmarks.eval_scifact import DEFAULT_SCIFACT, load_dataset

logger = logging.getLogger("benchmarks.adapters")


def build(db: Path, docs: int) -> None:
    """Index the first ``docs`` SciFact abstracts in ``db`` (skipped when it exists)."""
    from edge_colbert import Encoder, Index

    if db.exists():
        return
    data = load_dataset(DEFAULT_SCIFACT)
    began = time.perf_counter()
    with Index(db, encoder=Encoder()) as index:
        index.add(data.doc_texts[:docs], ids=data.doc_ids[:docs])
    print(
        f"built {db}: {min(docs, len(data.doc_ids))} abstracts in "
        f"{time.perf_counter() - began:.0f} s"
    )


async def measure(
    db: Path, queries: list[str], k: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds per call of each path, every query through every path (rotated
    order). CPU time is this process's (all its threads): a loaded machine stretches wall
    time but barely CPU time; for the stdio path the search runs in the server process, so
    its CPU column is only the client's share."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    from edge_colbert import Encoder, Index
    from edge_colbert.langchain import EdgeColbertRetriever as LangChainRetriever
    from edge_colbert.langchain import EdgeColbertVectorStore
    from edge_colbert.llama_index import EdgeColbertRetriever as LlamaRetriever
    from edge_colbert.mcp_server import LocalIndexes

    encoder = Encoder()
    index = Index(db, encoder=encoder, readonly=True)
    lc_retriever = LangChainRetriever(index=index, k=k)
    lc_store = EdgeColbertVectorStore(index)
    llama = LlamaRetriever(index, k=k)
    tools = LocalIndexes([db], encoder=encoder, allow_write=False)
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "edge_colbert", "-q", "mcp", str(db)]
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def over_stdio(query: str) -> Any:
            result = await session.call_tool("search", {"query": query, "k": k})
            if result.is_error:
                raise RuntimeError(str(result.content))
            return result

        paths: dict[str, Callable[[str], Any]] = {
            "Index.search": lambda q: index.search(q, k),
            "LangChain retriever.invoke": lc_retriever.invoke,
            "LangChain store.similarity_search": lambda q: lc_store.similarity_search(q, k),
            "LlamaIndex retriever.retrieve": llama.retrieve,
            "MCP search tool, in-process": lambda q: tools.search(q, k),
            "MCP tools/call over stdio": over_stdio,
        }
        names = list(paths)
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for turn, query in enumerate([queries[0], *queries]):  # the first is a warm-up
            for shift in range(len(names)):
                name = names[(turn + shift) % len(names)]
                began, began_cpu = time.perf_counter(), time.process_time()
                out = paths[name](query)
                if asyncio.iscoroutine(out):
                    await out
                if turn > 0:
                    wall[name].append(time.perf_counter() - began)
                    cpu[name].append(time.process_time() - began_cpu)
    tools.close()
    index.close()
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("scifact-adapters.db"))
    parser.add_argument("--docs", type=int, default=5183, help="abstracts indexed (all: 5183)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # Some SciFact queries pass the 32-token query window; the encoder's warning for each
    # would bury the table.
    logging.getLogger("edge_colbert.encoder").setLevel(logging.ERROR)
    build(args.db, args.docs)
    queries = load_dataset(DEFAULT_SCIFACT).query_texts[: args.queries]
    wall, cpu = asyncio.run(measure(args.db, queries, args.k))
    figures = {
        name: {"wall": latency_ms(wall[name]), "cpu": latency_ms(cpu[name])} for name in wall
    }
    reference = figures["Index.search"]
    print(f"$ {command_line()}")
    print(f"{len(queries)} SciFact queries, k={args.k}, index {args.db}")
    print("| path | wall p50 ms | wall p95 ms | wall p50 ratio | CPU p50 ms | CPU p50 ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, figure in figures.items():
        ratio = figure["wall"]["p50"] / reference["wall"]["p50"]
        cpu_ratio = figure["cpu"]["p50"] / reference["cpu"]["p50"]
        print(
            f"| {name} | {figure['wall']['p50']:.2f} | {figure['wall']['p95']:.2f} | "
            f"{ratio:.3f} | {figure['cpu']['p50']:.2f} | {cpu_ratio:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
