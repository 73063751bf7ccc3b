"""How open, search, memory and file size grow with the collection: 10k, 100k, 1M passages.

The documents are replicated from real SciFact token vectors of the bundled model, with
noise (see :class:`Replicated`), so that a million of them need no encoding. Vectors go in
through the public ``Index.add`` with a stand-in encoder that returns the precomputed
vectors of each text (the ``Index`` has no public method to add vectors).

One index file grows 10k -> 100k -> 1M (incremental adds, with the centroid retraining the
index does by itself, outside the write lock); after each stage a fresh subprocess opens it
(timed), searches with ``search_vectors``, with and without the prefilter, and a second
fresh subprocess runs the prefiltered searches without SQLite's memory map. Every stage is
its own subprocess, so each peak memory figure is its own. At 1M documents the build takes
about 19 CPU-minutes and one exhaustive search (the overlap reference) about 13 CPU-s:
``--overlap-queries`` bounds how many run. Each stage's figures are kept in
``WORK/results.json``; ``--from-results`` writes the tables again from it.

``--index FILE`` measures an index file an earlier run built (one size, nothing is built
or written to it), e.g. after a change to the search path. ``--reference FILE`` takes the
exhaustive top-10s from a JSON cache (made by one batched pass over the stored vectors if
absent: :func:`benchmarks.prefilter_sweep.exact_top10`), so the overlap covers every query
and the ``--overlap-queries`` exhaustive searches only time the exhaustive search.

    python benchmarks/scaling.py [--sizes 10000 100000 1000000] [--max-tokens 32]
        [--queries 30] [--overlap-queries 30] [--codec residual2] [--out docs/benchmarks.md]
    python benchmarks/scaling.py --index WORK/scaling.db --sizes 1000000 --max-tokens 32
        --queries 30 --overlap-queries 3 --reference WORK/exact.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `edge_colbert` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common

logger = logging.getLogger("scaling")

DIM = 64
BATCH_DOCS = 1000  # generation and add() unit; stage sizes must be multiples of it
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "edge-colbert-scifact-vectors.npz"
PROGRESS_BATCHES = 50  # log the build's progress every 50,000 documents


# ---------------------------------------------------------------- replicated collection


@dataclass
class Replicated:
    """Documents replicated from real SciFact token vectors (the bundled model's), with noise.

    Document ``i`` is SciFact document ``i mod 5,183``: its first token kept, each other
    token kept with probability ``keep``, Gaussian noise of Euclidean norm about ``noise``
    added to every vector, re-normalised. Copies of one abstract thus differ as paraphrases
    would, and the vectors keep the real model's geometry (the [CLS]/[D] tokens every
    document shares, frequent-word regions). Queries are SciFact's own query vectors.
    Document ``i`` is the same in every run (seeded by ``[seed, i]``).
    """

    cache: Path
    seed: int = 0
    noise: float = 0.3
    keep: float = 0.85
    max_tokens: int = 0  # > 0: each copy cut to its first max_tokens tokens

    def __post_init__(self) -> None:
        from benchmarks.prefilter_sweep import scifact_collection

        self.docs, self.query_vectors = scifact_collection(self.cache)

    def batch(self, index: int) -> list[npt.NDArray[np.float32]]:
        """The token vectors of documents ``index * BATCH_DOCS`` to ``(index + 1) * BATCH_DOCS``."""
        out = []
        for doc in range(index * BATCH_DOCS, (index + 1) * BATCH_DOCS):
            rng = np.random.default_rng([self.seed, doc])
            base = self.docs[doc % len(self.docs)]
            if self.max_tokens > 0:
                base = base[: self.max_tokens]
            kept = np.less(rng.random(base.shape[0]), self.keep)
            kept[0] = True
            x = base[kept] + rng.standard_normal((int(kept.sum()), DIM)) * (
                self.noise / np.sqrt(DIM)
            )
            out.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
        return out

    def queries(self, count: int) -> list[npt.NDArray[np.float32]]:
        """The first ``count`` SciFact query vectors."""
        return self.query_vectors[:count]


class PrecomputedEncoder:
    """Stands in for ``Encoder`` inside ``Index.add``: returns vectors given beforehand.

    Texts are ``doc-<n>`` labels; :meth:`give` registers their vectors, and
    ``encode_documents`` hands them back. It has the attributes ``Index`` reads from an
    encoder (``identity``, ``dim``, ``manifest.name``) and nothing else.
    """

    @dataclass(frozen=True)
    class _Manifest:
        name: str = "synthetic-64"
        languages: tuple[str, ...] = ("en",)

    def __init__(self) -> None:
        self.manifest = self._Manifest()
        self.dim = DIM
        self.identity = "synthetic-64 (64-d, precomputed)"
        self._pending: dict[str, npt.NDArray[np.float32]] = {}

    def give(self, texts: Sequence[str], vectors: Sequence[npt.NDArray[np.float32]]) -> None:
        """Register the vectors that ``encode_documents`` will return for ``texts``."""
        self._pending = dict(zip(texts, vectors, strict=True))

    def encode_documents(self, texts: Sequence[str]) -> list[npt.NDArray[np.float32]]:
        """The registered vectors of ``texts``, in order."""
        return [self._pending[t] for t in texts]

    def encode_queries(self, texts: Sequence[str]) -> list[npt.NDArray[np.float32]]:
        """Queries are never text here; they come through ``search_vectors``."""
        raise NotImplementedError("the scaling benchmark searches with search_vectors only")


# ---------------------------------------------------------------- phases


def phase_build(args: argparse.Namespace) -> dict[str, Any]:
    """Grow the index from ``--start`` to ``--size`` documents; time, memory, file size."""
    from edge_colbert import Index

    gen = Replicated(args.cache, args.seed, args.noise, max_tokens=args.max_tokens)
    encoder = PrecomputedEncoder()
    db = args.work / "scaling.db"
    meter = common.PeakMeter()
    meter.start()
    clock = common.Stopwatch()
    settings: dict[str, Any] = {}
    if args.codec:
        settings["codec"] = args.codec
    if args.pool_factor:
        settings["pool_factor"] = args.pool_factor
    index = Index(db, encoder=encoder, **settings)  # type: ignore[arg-type]
    encoded = 0  # tokens before pooling: the bytes per token divides by these
    generate, generate_cpu = 0.0, 0.0  # making the vectors is not indexing: kept apart
    for done, block in enumerate(range(args.start // BATCH_DOCS, args.size // BATCH_DOCS), 1):
        made = common.Stopwatch()
        labels = [f"doc-{block * BATCH_DOCS + i}" for i in range(BATCH_DOCS)]
        vectors = gen.batch(block)
        encoded += sum(len(v) for v in vectors)
        encoder.give(labels, vectors)
        wall, used = made.stop()
        generate, generate_cpu = generate + wall, generate_cpu + used
        index.add(labels, ids=labels)
        if done % PROGRESS_BATCHES == 0:  # a long stage shows it is alive, and how fast
            elapsed = time.perf_counter() - clock.wall - generate
            logger.info(
                "%d documents, %.0f s adding, %.0f docs/s in this stage (%.0f s generating)",
                args.start + done * BATCH_DOCS,
                elapsed,
                done * BATCH_DOCS / elapsed,
                generate,
            )
    seconds, cpu = clock.stop()
    info = index.info()
    index.close()
    return {
        "added": args.size - args.start,
        "seconds": seconds - generate,
        "cpu_seconds": cpu - generate_cpu,
        "generate_seconds": generate,
        "encoded_tokens": encoded,
        "info": info,
        "file_bytes": common.file_bytes(db),
        "memory": meter.report(),
    }


def _resident() -> dict[str, int]:
    """This process's resident bytes by kind, from /proc/self/status: ``anon`` (heap,
    arrays) and ``file`` (mapped file pages: the index file's memory-mapped pages, shared
    with the OS page cache and given back under memory pressure). Zeros off Linux."""
    found = {"anon": 0, "file": 0}
    status = Path("/proc/self/status")
    if not status.exists():
        return found
    for line in status.read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            found[key[3:].lower()] = int(value.split()[0]) * 1024
    return found


def phase_search(args: argparse.Namespace) -> dict[str, Any]:
    """Open time, prefiltered search latency and memory, then the exhaustive reference.

    The prefiltered searches (all ``--queries``) run first, under their own memory meter
    (started before the open): that peak is the search's own. The exhaustive searches,
    which read every stored vector, run afterwards on the first ``--overlap-queries`` under
    a second meter, and give the top-10 overlap. With ``--no-mmap`` the file is read
    without SQLite's memory map and only the prefiltered searches run.
    """
    from edge_colbert import Index

    gen = Replicated(args.cache, args.seed, args.noise, max_tokens=args.max_tokens)
    queries = gen.queries(args.queries)
    meter = common.PeakMeter()
    meter.start()
    before = _resident()
    clock = common.Stopwatch()
    index = Index(
        _db(args),
        encoder=PrecomputedEncoder(),  # type: ignore[arg-type]
        readonly=True,
        mmap=not args.no_mmap,
    )
    open_seconds, open_cpu = clock.stop()
    open_memory = meter.report()
    clock = common.Stopwatch()
    index.search_vectors(queries[0], k=10)
    first_seconds, _ = clock.stop()
    for q in queries[:3]:
        index.search_vectors(q, k=10)  # warm-up
    times: dict[str, list[float]] = {"prefilter": [], "exhaustive": []}
    cpu: dict[str, list[float]] = {"prefilter": [], "exhaustive": []}
    tops: dict[str, list[list[str]]] = {"prefilter": [], "exhaustive": []}
    checked = queries[: args.overlap_queries] if args.overlap_queries else queries
    if args.no_mmap:
        checked = []  # this run measures the prefiltered search's memory without the map
    for mode, batch in (("prefilter", queries), ("exhaustive", checked)):
        if mode == "exhaustive":
            memory = meter.report()
            # The map's pages stay resident: the growth of mapped-file pages is the file.
            resident = {kind: size - before[kind] for kind, size in _resident().items()}
            meter = common.PeakMeter()
            meter.start()
        for q in batch:
            started, started_cpu = time.perf_counter(), time.process_time()
            hits = index.search_vectors(q, k=10, exhaustive=mode == "exhaustive")
            times[mode].append(time.perf_counter() - started)
            cpu[mode].append(time.process_time() - started_cpu)
            tops[mode].append([h.id for h in hits])
        logger.info("%s: %d searches done", mode, len(batch))
    exhaustive_memory = meter.report()
    pairs = zip(tops["prefilter"][: len(checked)], tops["exhaustive"], strict=True)
    overlaps = [common.overlap_at_k(found, exact) for found, exact in pairs]
    if args.reference and not args.no_mmap:
        reference = _reference_ids(args, queries, index)
        for exact, theirs in zip(reference, tops["exhaustive"], strict=False):
            if exact != theirs:  # the cache must say what the index's own exhaustive says
                logger.warning("reference top-10 %s differs from exhaustive %s", exact, theirs)
        overlaps = [
            common.overlap_at_k(found, exact)
            for found, exact in zip(tops["prefilter"], reference, strict=True)
        ]
    index.close()
    return {
        "open_ms": open_seconds * 1000,
        "open_cpu_ms": open_cpu * 1000,
        "open_memory": open_memory,
        "first_search_ms": first_seconds * 1000,
        "search": common.latency_ms(times["prefilter"]),
        "search_cpu": common.latency_ms(cpu["prefilter"]),
        "search_exhaustive_cpu": common.latency_ms(cpu["exhaustive"]),
        "search_exhaustive": common.latency_ms(times["exhaustive"]),
        "overlap": float(np.mean(overlaps)) if overlaps else float("nan"),
        "overlap_queries": len(overlaps),
        "mmap": not args.no_mmap,
        "memory": memory,
        "resident_growth": resident,
        "exhaustive_memory": exhaustive_memory,
    }


# ---------------------------------------------------------------- report and command line


def _db(args: argparse.Namespace) -> Path:
    """The index file measured: ``--index``, else the one the run grows in ``--work``."""
    return Path(args.index) if args.index else args.work / "scaling.db"


def _reference_ids(args: argparse.Namespace, queries: list[Any], index: Any) -> list[list[str]]:
    """The exhaustive top-10 ids of ``queries`` from the ``--reference`` cache (made if
    absent, by one batched pass over the stored vectors)."""
    from benchmarks.prefilter_sweep import exact_top10

    rowids = exact_top10(_db(args), queries, args.reference)
    docs = index.store.documents(sorted({r for top in rowids for r in top}))
    return [[docs[r].id for r in top] for top in rowids]


def phase_reuse(args: argparse.Namespace) -> dict[str, Any]:
    """The build row of an existing file (``--index``): what it holds, nothing timed."""
    from edge_colbert import Index

    with Index(_db(args), encoder=PrecomputedEncoder(), readonly=True) as index:  # type: ignore[arg-type]
        info = index.info()
    if info["documents"] != args.size:
        raise SystemExit(
            f"{_db(args)} holds {info['documents']} documents, not --sizes {args.size}"
        )
    return {"added": 0, "reused": True, "info": info, "file_bytes": common.file_bytes(_db(args))}


def _code_bytes(info: dict[str, Any]) -> int:
    """Bytes of the stored tokens' codes alone: 64 int8 codes a token, or a residual
    token's uint16 centroid id and its packed bits (18 bytes at 2 bits, 34 at 4)."""
    codec = str(info.get("codec", "int8"))
    per_token = 2 + DIM * int(codec[-1]) // 8 if codec.startswith("residual") else DIM
    return int(info["tokens"]) * per_token


def _mib(value: float | None) -> str:
    """Bytes as whole MiB, or a dash when the run did not measure it."""
    return "-" if value is None else f"{value / (1 << 20):.0f} MiB"


def report(rows: list[dict[str, Any]], args: argparse.Namespace, machine: dict[str, Any]) -> str:
    """The scaling section for docs/benchmarks.md: build, search and memory tables."""
    settings = ", ".join(
        f"{name} {value}"
        for name, value in (("codec", args.codec), ("pool factor", args.pool_factor))
        if value
    )
    lines = [
        "## Scaling: replicated SciFact vectors",
        "",
        "Documents replicated from SciFact's real token vectors (the bundled model): document "
        f"i is abstract i mod 5,183 with {1 - 0.85:.0%} of its tokens dropped and noise of norm "
        f"{args.noise} added (re-normalised)"
        + (f", cut to its first {args.max_tokens} tokens" if args.max_tokens else "")
        + f", so no encoding is needed; {args.queries} SciFact "
        "queries, k = 10, searched with `search_vectors` (no query encoding). One file grown "
        "stage by stage through `Index.add` (with the retraining the index does by itself)"
        + (f", {settings}" if settings else ", the library's default settings")
        + "; each stage and each search run is its own process.",
        "",
        *common.run_header(machine),
        "| documents | stored tokens | file size | bytes / token | centroids "
        "| add time for the stage | docs/s | add CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    encoded = 0  # tokens before pooling, all stages so far: bytes per token divides by them
    for r in rows:
        b, info = r["build"], r["build"]["info"]
        encoded += b.get("encoded_tokens", 0)
        if b.get("reused"):  # measured on a file an earlier run built: nothing was timed
            lines.append(
                f"| {r['size']:,} | {info['tokens']:,} | {_mib(b['file_bytes'])} "
                f"| {b['file_bytes'] / info['tokens']:.1f} (stored tokens) "
                f"| {info['centroids']:,} | (file reused) | - | - |"
            )
            continue
        lines.append(
            f"| {r['size']:,} | {info['tokens']:,} | {_mib(b['file_bytes'])} "
            f"| {b['file_bytes'] / (encoded or info['tokens']):.1f} "
            f"| {info['centroids']:,} | {b['seconds']:.0f} s | {b['added'] / b['seconds']:.0f} "
            f"| {b['cpu_seconds']:.0f} |"
        )
    lines += [
        "",
        "| documents | open ms (CPU ms) | first search ms | search p50 / p95 ms "
        "| search CPU p50 / p95 ms | exhaustive p50 / p95 ms | exhaustive CPU p50 ms "
        "| top-10 overlap (queries) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["search"]
        lines.append(
            f"| {r['size']:,} | {s['open_ms']:.0f} ({s['open_cpu_ms']:.0f}) "
            f"| {s['first_search_ms']:.0f} | {s['search']['p50']:.1f} / {s['search']['p95']:.1f} "
            f"| {s['search_cpu']['p50']:.1f} / {s['search_cpu']['p95']:.1f} "
            f"| {s['search_exhaustive']['p50']:.0f} / {s['search_exhaustive']['p95']:.0f} "
            f"| {s['search_exhaustive_cpu']['p50']:.0f} "
            f"| {s['overlap']:.3f} ({s['overlap_queries']}) |"
        )
    lines += [
        "",
        "| documents | stored codes | peak RSS: open + prefiltered searches (memory map) "
        "| ... of it mapped file pages | same without the map | peak RSS: exhaustive searches |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, plain = r["search"], r.get("search_nommap")
        lines.append(
            f"| {r['size']:,} | {_mib(_code_bytes(r['build']['info']))} "
            f"| {_mib(s['memory']['above_base'])} "
            f"| {_mib(s.get('resident_growth', {}).get('file'))} "
            f"| {_mib(plain['memory']['above_base'] if plain else None)} "
            f"| {_mib(s['exhaustive_memory']['above_base'])} |"
        )
    lines += [
        "",
        "Peak RSS is measured above the process's resident memory just before it "
        "(interpreter and libraries loaded), by resetting the kernel's high-water mark: once "
        "from before the open through the prefiltered searches, once more over the "
        "exhaustive searches alone (they read every stored vector). The pages of the file "
        "that SQLite's memory map reads count in it (the file-pages column: their growth from "
        "before the open to the end of the prefiltered searches); the no-map run opens the "
        "file with `mmap=False` in a process of its own and runs the prefiltered searches "
        "only.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="SciFact vectors of the bundled model (.npz; encoded once if absent)",
    )
    p.add_argument("--noise", type=float, default=0.3, help="noise norm added to each copy")
    p.add_argument(
        "--max-tokens", type=int, default=0, help="cut each copy to this many tokens (0: whole)"
    )
    p.add_argument("--queries", type=int, default=100, help="prefiltered searches timed")
    p.add_argument(
        "--codec",
        help="the Index's codec when the file is created (int8, residual4, residual2; "
        "default: the library's)",
    )
    p.add_argument(
        "--pool-factor",
        type=int,
        default=0,
        help="the Index's token pooling when the file is created (0: the library's default)",
    )
    p.add_argument(
        "--overlap-queries",
        type=int,
        default=0,
        help="exhaustive searches for the top-10 overlap: the first N queries (0: all); "
        "one costs about 10 s at 1M documents",
    )
    p.add_argument("--threads", type=int, default=common.available_cores())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, help="folder for the index file (default: temporary)")
    p.add_argument("--out", type=Path, help="append/replace the section in this markdown file")
    p.add_argument(
        "--from-results",
        type=Path,
        help="write the table from a results.json that an earlier run left in its --work "
        "folder, without running anything (the other options must match that run's)",
    )
    p.add_argument(
        "--index",
        type=Path,
        help="measure this existing file (built by an earlier run; one size) instead of "
        "building one; it is opened read-only",
    )
    p.add_argument(
        "--reference",
        type=Path,
        help="JSON cache of the exhaustive top-10s (made if absent): the overlap covers "
        "every query, and --overlap-queries exhaustive searches only time the exhaustive",
    )
    p.add_argument("--phase", choices=("build", "search"), help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--no-mmap", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.index and not args.phase and len(args.sizes) != 1:
        p.error("--index measures one file: give its size as the one --sizes value")
    if any(s % BATCH_DOCS for s in args.sizes) or sorted(args.sizes) != args.sizes:
        p.error(f"--sizes must be increasing multiples of {BATCH_DOCS}")
    return args


def replace_section(page: str, section: str, head: str) -> str:
    """``page`` with the section that starts at ``head`` replaced by ``section``."""
    if head not in page:
        return page.rstrip() + "\n\n" + section
    before, _, rest = page.partition(head)
    nxt = rest.find("\n## ")
    return before + section + (rest[nxt:] if nxt >= 0 else "\n")


def main(argv: list[str] | None = None) -> int:
    """Grow the index stage by stage, search after each stage, print the table."""
    args = parse_args(argv)
    common.pin_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.phase:
        result = phase_build(args) if args.phase == "build" else phase_search(args)
        common.write_result(args.result, result)
        return 0
    if args.from_results:
        rows = json.loads(args.from_results.read_text())
        # The table names the command of the run that measured it, not this rewrite.
        if "--from-results" in sys.argv:
            at = sys.argv.index("--from-results")
            del sys.argv[at : at + 2]
        return write_report(rows, args)
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-colbert-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    if not args.index:
        (work / "scaling.db").unlink(missing_ok=True)
    base = ["--work", str(work), "--seed", str(args.seed), "--queries", str(args.queries),
            "--cache", str(args.cache), "--noise", str(args.noise),
            "--max-tokens", str(args.max_tokens),
            "--overlap-queries", str(args.overlap_queries),
            "--codec", args.codec or "", "--pool-factor", str(args.pool_factor)]  # fmt: skip
    if args.index:
        base += ["--index", str(args.index)]
    if args.reference:
        base += ["--reference", str(args.reference)]
    rows, start = [], 0
    script = Path(__file__).resolve()
    for size in args.sizes:
        stage = [*base, "--start", str(start), "--size", str(size)]
        if args.index:
            build = phase_reuse(argparse.Namespace(**{**vars(args), "size": size}))
        else:
            build = common.run_phase(script, "build", stage, work / "logs")
        search = common.run_phase(script, "search", stage, work / "logs")
        plain = common.run_phase(script, "search", [*stage, "--no-mmap"], work / "logs")
        rows.append({"size": size, "build": build, "search": search, "search_nommap": plain})
        print(f"{size}: build {build}\n{size}: search {search}\n{size}: {plain}", flush=True)
        # Kept after every stage: the table can be written again (--from-results) from a
        # run that stopped part-way, or with another layout, without rerunning it.
        (work / "results.json").write_text(json.dumps(rows, default=float))
        start = size
    return write_report(rows, args)


def write_report(rows: list[dict[str, Any]], args: argparse.Namespace) -> int:
    """Print the table of ``rows`` and, with ``--out``, put it into that markdown file."""
    text = report(rows, args, common.machine_description(args.threads))
    print(text)
    if args.out:
        page = args.out.read_text() if args.out.exists() else "# Benchmarks\n"
        args.out.write_text(replace_section(page, text, "## Scaling: replicated SciFact vectors"))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
