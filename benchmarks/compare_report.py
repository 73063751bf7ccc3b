"""The markdown report of `compare_pylate.py`: the table, the ratios and the targets."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from benchmarks import common
from benchmarks.eval_scifact import Dataset

logger = logging.getLogger("compare_pylate")


def _fmt(value: float | None, spec: str = ".1f") -> str:
    """A number for the table, or a dash where the column has none."""
    return "-" if value is None or value != value else format(value, spec)


def _mib(nbytes: float) -> str:
    """Bytes as MiB with one decimal."""
    return f"{nbytes / (1 << 20):.1f} MiB"


def table(r: dict[str, dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """The comparison table in markdown and the speed-up ratios it reports."""
    cols = [
        ("edge", "edge_index", "edge_search"),
        ("pylate", "pylate_index", "pylate_search"),
        ("pylate_voyager", "pylate_voyager_index", "pylate_voyager_search"),
        ("numpy", "numpy_index", "numpy_search"),
    ]
    present = [(i, s) for _, i, s in cols]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn: Any) -> None:
        cells = []
        for index_key, search_key in present:
            try:
                cells.append(fn(r[index_key], r[search_key]))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("-")
        rows.append((label, cells))

    row("documents/s while indexing (encode + store)", lambda i, s: _fmt(i["docs"] / i["seconds"]))
    row(
        "documents per CPU-second while indexing (load-independent)",
        lambda i, s: _fmt(i["docs"] / i["cpu_seconds"]),
    )
    row(
        "document tokens/s (tokens kept after skiplist)",
        lambda i, s: _fmt(i["tokens"] / i["seconds"], ".0f"),
    )
    row(
        "query encoding p50 / p95 (ms)",
        lambda i, s: f"{s['query_encode']['p50']:.1f} / {s['query_encode']['p95']:.1f}",
    )
    row(
        "search p50 / p95 without encoding (ms)",
        lambda i, s: f"{s['search']['p50']:.2f} / {s['search']['p95']:.2f}",
    )
    row("nDCG@10", lambda i, s: _fmt(s["ndcg"], ".4f"))
    row("top-10 overlap with exhaustive MaxSim", lambda i, s: _fmt(s["overlap"], ".3f"))
    row(
        "index bytes per stored token (file / tokens)",
        lambda i, s: _fmt(i["file_bytes"] / i["tokens"]),
    )
    row("vector bytes (what search must score)", lambda i, s: _mib(i["vector_bytes"]))
    row("peak RSS while indexing, above model loaded", lambda i, s: _mib(i["memory"]["above_base"]))
    row(
        "peak RSS while searching, above model loaded", lambda i, s: _mib(s["memory"]["above_base"])
    )
    row("peak RSS while searching, whole process", lambda i, s: _mib(s["memory"]["peak"]))
    row(
        "peak RSS above model after the exhaustive check too",
        lambda i, s: _mib(s["memory_with_exhaustive"]["above_base"]),
    )
    head = (
        "| | edge-colbert (int8 ONNX, SQLite + prefilter) "
        "| PyLate fp32 PyTorch (encode + brute-force colbert_scores) "
        "| PyLate fp32 + Voyager index (HNSW candidates + exact rerank) "
        "| numpy brute-force MaxSim (fp32 vectors) |"
    )
    lines = [head, "|---" * (len(cols) + 1) + "|"] + [
        f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows
    ]
    ratios: dict[str, float] = {}

    def ratio(name: str, fn: Any) -> None:
        try:
            ratios[name] = float(fn())
        except (KeyError, ZeroDivisionError):
            logger.info("ratio %r left out: a phase is missing", name)

    def rate(phase: str, clock: str = "seconds") -> float:
        return float(r[phase]["docs"] / r[phase][clock])

    ratio("indexing docs/s, edge / PyLate", lambda: rate("edge_index") / rate("pylate_index"))
    ratio(
        "indexing docs per CPU-second, edge / PyLate",
        lambda: rate("edge_index", "cpu_seconds") / rate("pylate_index", "cpu_seconds"),
    )
    ratio(
        "indexing docs/s, edge / PyLate+Voyager",
        lambda: rate("edge_index") / rate("pylate_voyager_index"),
    )
    ratio(
        "indexing docs per CPU-second, edge / PyLate+Voyager",
        lambda: rate("edge_index", "cpu_seconds") / rate("pylate_voyager_index", "cpu_seconds"),
    )
    ratio(
        "query encoding p50, PyLate / edge",
        lambda: r["pylate_search"]["query_encode"]["p50"] / r["edge_search"]["query_encode"]["p50"],
    )
    ratio(
        "search p50, PyLate / edge",
        lambda: r["pylate_search"]["search"]["p50"] / r["edge_search"]["search"]["p50"],
    )
    ratio(
        "search p50, PyLate+Voyager / edge",
        lambda: r["pylate_voyager_search"]["search"]["p50"] / r["edge_search"]["search"]["p50"],
    )
    ratio(
        "search p50, numpy / edge",
        lambda: r["numpy_search"]["search"]["p50"] / r["edge_search"]["search"]["p50"],
    )
    ratio(
        "search peak above model / int8 vector bytes",
        lambda: r["edge_search"]["memory"]["above_base"] / r["edge_index"]["vector_bytes"],
    )
    return "\n".join(lines), ratios


def targets(r: dict[str, dict[str, Any]], ratios: dict[str, float]) -> list[str]:
    """Each target from the issues with the measured figure and whether it is met."""
    out = []

    def check(name: str, value: float | None, ok: bool | None, spec: str = ".3f") -> None:
        mark = "-" if ok is None else ("met" if ok else "**not met**")
        out.append(f"| {name} | {_fmt(value, spec)} | {mark} |")

    edge_i, edge_s = r.get("edge_index", {}), r.get("edge_search", {})
    speed = ratios.get("indexing docs/s, edge / PyLate")
    check("indexing >= 2.5x PyLate docs/s", speed, None if speed is None else speed >= 2.5, ".2f")
    p50 = edge_s.get("search", {}).get("p50")
    check("search p50 < 20 ms (ms)", p50, None if p50 is None else p50 < 20, ".2f")
    mem = ratios.get("search peak above model / int8 vector bytes")
    check(
        "search peak memory < 2x int8 vector bytes (ratio)",
        mem,
        None if mem is None else mem < 2,
        ".2f",
    )
    bpt = edge_i["file_bytes"] / edge_i["tokens"] if edge_i.get("tokens") else None
    check("index bytes per token <= 72", bpt, None if bpt is None else bpt <= 72, ".1f")
    ov = edge_s.get("overlap")
    check("prefilter top-10 overlap >= 0.95", ov, None if ov is None else ov >= 0.95)
    full = r.get("full384", {}).get("ndcg")
    nd = edge_s.get("ndcg")
    rel = nd / full - 1 if nd is not None and full else None
    check(
        "nDCG@10 within 1% of 384-d fp32 MaxSim (relative change)",
        rel,
        None if rel is None else rel >= -0.01,
        "+.4f",
    )
    dense = r.get("dense", {}).get("ndcg")
    check(
        "nDCG@10 above the dense embedding (edge - dense)",
        None if nd is None or dense is None else nd - dense,
        None if nd is None or dense is None else nd > dense,
        "+.4f",
    )
    return ["| target | measured | |", "|---|---|---|", *out]


def voyager_notes(r: dict[str, dict[str, Any]]) -> list[str]:
    """How the PyLate + Voyager column was set up, or a line saying it did not run."""
    index, search = r.get("pylate_voyager_index"), r.get("pylate_voyager_search")
    if not index and not search:
        return ["- not run (needs `pip install voyager`; see the log for why it was skipped)", ""]
    out = []
    if index:
        p = index.get("params", {})
        out.append(
            f"- index: `pylate.indexes.Voyager` with PyLate's defaults M={p.get('M', '-')}, "
            f"ef_construction={p.get('ef_construction', '-')}, "
            f"ef_search={p.get('ef_search', '-')} (embedding_size={p.get('dim', '-')}); "
            "files: " + ", ".join(f"{k} {_mib(v)}" for k, v in index.get("files", {}).items())
        )
        add, total = index.get("add_seconds"), index.get("seconds")
        if add is not None and total is not None:
            out.append(
                f"- indexing time: {total - add:.1f} s encoding, {add:.1f} s adding to the "
                "HNSW index and writing its files"
            )
    if search:
        p = search.get("params", {})
        reload = search.get("mapping_reload", {}).get("p50")
        out.append(
            f"- search: `pylate.retrieve.ColBERT`, k={p.get('k', '-')}, "
            f"k_token={p.get('k_token', '-')} (PyLate's default) HNSW neighbours per query "
            "token, then exact MaxSim over the candidates' vectors; PyLate reloads its two "
            f"id-mapping pickles from disk on every call ({_fmt(reload, '.1f')} ms of each "
            "search, median)"
        )
    return [*out, ""]


def markdown(
    args: argparse.Namespace, r: dict[str, dict[str, Any]], machine: dict[str, Any], data: Dataset
) -> str:
    """The whole comparison section for docs/benchmarks.md."""
    body, ratios = table(r)
    parity = r.get("parity", {})

    def ndcg(phase: str, key: str = "ndcg") -> str:
        return _fmt(r.get(phase, {}).get(key), ".4f")

    refs = [
        "- edge-colbert exhaustive MaxSim (int8 vectors, no prefilter): "
        + ndcg("edge_search", "ndcg_exhaustive"),
        "- MaxSim over the backbone's full 384-d float32 token vectors (PyLate, identity head): "
        + ndcg("full384"),
        "- dense bi-encoder (mean-pooled all-MiniLM-L6-v2, cosine): " + ndcg("dense"),
    ]
    same = [f"- projection given to PyLate: {parity.get('projection_source', '-')}"]
    for name in ("fp32", "int8"):
        if name in parity:
            p = parity[name]
            same.append(
                f"- PyLate vs edge-colbert {name} encoder, 32 documents + 32 queries: "
                f"per-token cosine mean {p['mean_cosine']:.5f}, min {p['min_cosine']:.5f}, "
                f"same kept tokens: {p['same_tokens']}"
            )
    setup = (
        f"{len(data.doc_ids)} documents (title + text, up to the model's {args.doc_maxlen} "
        f"tokens), {len(data.query_ids)} queries with judgements (`qrels/dev.tsv`). "
        f"Model folder: `{args.model}`."
    )
    return "\n".join(
        [
            "## edge-colbert vs PyLate on SciFact",
            "",
            setup,
            "",
            *common.run_header(machine),
            body,
            "",
            "Speed-up ratios, measured in this one run:",
            "",
            *[f"- {k}: {v:.2f}x" for k, v in ratios.items()],
            "",
            "PyLate + Voyager column:",
            "",
            *voyager_notes(r),
            "Quality references (nDCG@10 on the same documents and queries):",
            "",
            *refs,
            "",
            "Same weights:",
            "",
            *same,
            "",
            "Targets:",
            "",
            *targets(r, ratios),
            "",
        ]
    )
