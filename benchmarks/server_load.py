"""Latency of `edge-colbert serve` under 10 concurrent clients, side by side with
`Index.search` in-process, in one run.

The same SciFact queries go, in order:

1. to ``Index.search`` in this process, one at a time (the reference);
2. to ``SearchService.search`` in this process (the search plus the highlights, what the
   server computes per request), after timing the highlights both ways (encoding the hits
   again, or reading their stored vectors) on ``--highlight-queries`` queries;
3. to ``Index.search`` from ``--clients`` threads at once (what concurrency alone costs on
   these cores);
4. over HTTP to a real ``edge-colbert serve`` (uvicorn on 127.0.0.1) from ``--clients``
   threads at once, with ``highlight=false`` and then with the highlights the page shows.

Every phase reports p50/p95 latency per request and requests per second. The phases take
turns (``--rounds``, a slice of the queries each), so that the machine's load changing
during the run weighs on all of them alike. ``--build`` first
indexes SciFact into ``--db`` (documents as ``title + " " + text``) when it is not there.

    python benchmarks/server_load.py --db /tmp/scifact.db --build --requests 20
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import available_cores, latency_ms, machine_description, run_header
from benchmarks.eval_scifact import DEFAULT_SCIFACT, load_dataset

logger = logging.getLogger("server_load")


def build(db: Path, data_dir: Path, limit: int | None) -> None:
    """Index SciFact (or its first ``limit`` documents) into ``db``."""
    from edge_colbert.index import Index

    data = load_dataset(data_dir)
    ids, texts = data.doc_ids[:limit], data.doc_texts[:limit]
    began = time.perf_counter()
    with Index(db) as index:
        for start in range(0, len(texts), 512):
            index.add(texts[start : start + 512], ids=ids[start : start + 512])
            print(f"  indexed {min(start + 512, len(texts))}/{len(texts)}", flush=True)
    print(f"built {db} ({len(texts)} documents) in {time.perf_counter() - began:.0f} s")


def timed_calls(
    call: Callable[[str], Any], queries: Sequence[str], clients: int
) -> tuple[list[float], float]:
    """Each query through ``call`` from ``clients`` threads; latencies (s) and wall time."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(query: str) -> None:
        began = time.perf_counter()
        call(query)
        spent = time.perf_counter() - began
        with lock:
            latencies.append(spent)

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, queries))
    return latencies, time.perf_counter() - began


def compare_highlights(index: Any, encoder: Any, queries: Sequence[str]) -> list[str]:
    """Matched words found by encoding the hits again (``highlight.match_spans``) against
    reading their stored vectors (``server.spans.hit_spans``): time and agreement."""
    from edge_colbert.highlight import match_spans
    from edge_colbert.server.spans import hit_spans

    encoded = stored = 0.0
    same = total = 0
    for query in queries:
        hits = index.search(query, 10)
        began = time.perf_counter()
        again = match_spans(encoder, query, [hit.text for hit in hits])
        middle = time.perf_counter()
        read = hit_spans(index, encoder, query, hits)
        encoded, stored = encoded + middle - began, stored + time.perf_counter() - middle
        same += sum(a == b for a, b in zip(again, read, strict=True))
        total += len(hits)
    line = (
        f"highlights of {total} hits ({len(queries)} queries): encoding the hits again "
        f"{encoded:.2f} s, stored vectors {stored:.2f} s ({encoded / max(stored, 1e-9):.1f}x); "
        f"the same words on {same} of {total} hits"
    )
    print("  " + line, flush=True)
    return [line]


def start_server(db: Path) -> tuple[subprocess.Popen[str], str]:
    """``edge-colbert serve DB --port 0``; returns the process and its URL once it answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_colbert", "-q", "serve", str(db), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"on (http://\S+/)", line)
    if not found:
        process.kill()
        raise SystemExit(f"the server did not start: {line!r} {process.communicate()[1]}")
    return process, found.group(1)


def http_search(url: str, k: int, highlight: bool) -> Callable[[str], Any]:
    def call(query: str) -> Any:
        params = urllib.parse.urlencode({"q": query, "k": k, "highlight": str(highlight).lower()})
        with urllib.request.urlopen(f"{url}api/search?{params}", timeout=300) as response:
            body = json.loads(response.read())
        if not body["hits"]:
            raise RuntimeError(f"no hits for {query!r}")
        return body

    return call


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="the index to serve")
    parser.add_argument("--build", action="store_true", help="index SciFact into --db first")
    parser.add_argument("--data", type=Path, default=DEFAULT_SCIFACT, help="SciFact folder")
    parser.add_argument("--limit", type=int, default=None, help="documents to build (all)")
    parser.add_argument("--clients", type=int, default=10, help="concurrent clients (10)")
    parser.add_argument("--requests", type=int, default=20, help="requests per client (20)")
    parser.add_argument("-k", type=int, default=10, help="hits per search (10)")
    parser.add_argument(
        "--highlight-queries", type=int, default=6, help="queries for the highlight comparison"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="turns the phases take, a slice each (4)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # SciFact claims longer than the query window are cut; that is expected here.
    logging.getLogger("edge_colbert.encoder").setLevel(logging.ERROR)

    if args.build and not args.db.exists():
        build(args.db, args.data, args.limit)
    queries = load_dataset(args.data).query_texts[: args.clients * args.requests]
    sequential = queries[: max(args.requests * 2, 20)]

    from edge_colbert.encoder import Encoder
    from edge_colbert.index import Index
    from edge_colbert.server.service import SearchService

    process, url = start_server(args.db)
    encoder = Encoder()
    index = Index(args.db, encoder=encoder, readonly=True)
    try:
        info = index.info()
        service = SearchService(index, encoder)
        service.search(queries[0], k=args.k)  # warm: model, file pages, prefilter
        http_search(url, args.k, True)(queries[0])  # warm the server the same way
        highlight_rows = compare_highlights(index, encoder, sequential[: args.highlight_queries])
        phases: list[tuple[str, int, Callable[[str], Any], Sequence[str]]] = [
            ("Index.search, in-process", 1, lambda q: index.search(q, args.k), sequential),
            (
                "SearchService.search (+ highlights), in-process",
                1,
                lambda q: service.search(q, k=args.k),
                sequential,
            ),
            (
                "Index.search, in-process threads",
                args.clients,
                lambda q: index.search(q, args.k),
                queries,
            ),
            (
                "HTTP /api/search highlight=false",
                args.clients,
                http_search(url, args.k, False),
                queries,
            ),
            (
                "HTTP /api/search (with highlights)",
                args.clients,
                http_search(url, args.k, True),
                queries,
            ),
        ]
        # The phases take turns, a slice each per round, so that a change in the machine's
        # load during the run weighs on all of them alike.
        latencies: dict[str, list[float]] = {name: [] for name, *_ in phases}
        walls = dict.fromkeys(latencies, 0.0)
        for round_number in range(args.rounds):
            for name, clients, call, pool in phases:
                share = pool[round_number :: args.rounds]
                spent, wall = timed_calls(call, share, clients)
                latencies[name] += spent
                walls[name] += wall
            print(f"  round {round_number + 1}/{args.rounds} done", flush=True)
    finally:
        index.close()
        process.terminate()
        process.communicate(timeout=60)
    rows = [
        (
            name,
            clients,
            latency_ms(latencies[name]),
            len(latencies[name]) / walls[name],
            len(latencies[name]),
        )
        for name, clients, _, _ in phases
    ]

    print()
    print("\n".join(run_header(machine_description(threads=available_cores()))))
    print(
        f"Index: {args.db.name}, {info['documents']} documents, {info['tokens']} tokens; "
        f"k={args.k}; SciFact queries; default search mode.\n"
    )
    print("\n".join(highlight_rows) + "\n")
    print("| path | clients | requests | p50 ms | p95 ms | requests/s |")
    print("|---|---|---|---|---|---|")
    for name, clients, latency, rate, count in rows:
        print(
            f"| {name} | {clients} | {count} | {latency['p50']:.1f} | {latency['p95']:.1f} "
            f"| {rate:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
