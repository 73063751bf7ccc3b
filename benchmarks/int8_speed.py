"""int8 against float32, family by family: nodes left float32, accuracy and encode speed.

For each family the export step reads (Stanford BERT, PyLate BERT, ModernBERT, XLM-R,
XMOD), a random checkpoint is built (tests/export_fixtures.py; default 3 layers, 96 wide,
a 24-d Dense head) and exported twice from the same checkpoint: ``--quantize none`` and
``--quantize int8`` (accuracy-aware: export/int8.py). Both graphs then encode the same
documents through the runtime Encoder, in alternation (fp32, int8, fp32, ...) on the same
thread count, and the table gives the median time of each and the median of the per-round
ratios. Needs the export extra and the test fixtures' packages (bash .ci/install-export-deps).

    python benchmarks/int8_speed.py --seed 0 --docs 200 --rounds 5
    python benchmarks/int8_speed.py --checkpoint <all-MiniLM-L6-v2 folder> --docs 100
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "tests"):  # export_fixtures.py sits in tests/
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

logger = logging.getLogger("int8_speed")

FAMILIES = ("stanford-bert", "pylate-bert", "pylate-modernbert", "pylate-xlm-roberta", "xmod")


def build(family: str, folder: Path, seed: int, hidden: int, layers: int) -> Path:
    """A random checkpoint of ``family`` in ``folder``."""
    import export_fixtures as fx

    heads = 3 if hidden % 3 == 0 else 2
    if family == "stanford-bert":
        return fx.make_stanford(folder, seed, hidden=hidden, layers=layers, heads=heads)
    backbone = {"pylate-bert": "bert", "pylate-modernbert": "modernbert",
                "pylate-xlm-roberta": "xlm-roberta", "xmod": "xmod"}[family]  # fmt: skip
    return fx.make_pylate(
        folder, backbone, seed, hidden=hidden, layers=layers, heads=heads, single_dense=24
    )


def documents(n: int) -> list[str]:
    """``n`` passages of the export's built-in calibration set (repeated if needed)."""
    from edge_colbert_export.reduce import shipped_calibration_texts

    passages = shipped_calibration_texts()[1]
    return [passages[i % len(passages)] for i in range(n)]


def alternate(
    encoders: Mapping[str, Callable[[list[str]], Any]], docs: list[str], rounds: int
) -> dict[str, list[float]]:
    """Seconds per round of each encoder, measured in alternation after one warm-up."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for encode in encoders.values():
        encode(docs[:8])
    for _ in range(rounds):
        for name, encode in encoders.items():
            start = time.perf_counter()
            encode(docs)
            times[name].append(time.perf_counter() - start)
    return times


def measure(family: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Export ``family`` twice and time both graphs."""
    from edge_colbert.encoder import Encoder
    from edge_colbert.manifest import load_manifest
    from edge_colbert_export import export_model

    if args.checkpoint is not None:
        checkpoint = args.checkpoint
    else:
        checkpoint = build(family, work / family, args.seed, args.hidden, args.layers)
    fp32 = export_model(checkpoint, work / f"{family}-fp32", dim="native", quantize="none")
    started = time.perf_counter()
    int8 = export_model(checkpoint, work / f"{family}-int8", dim="native", quantize="int8")
    export_seconds = time.perf_counter() - started
    record = load_manifest(int8).extra["int8"]
    docs = documents(args.docs)
    options: dict[str, Any] = {"providers": ["CPUExecutionProvider"], "threads": args.threads}
    encoders = {
        "fp32": Encoder(fp32, **options).encode_documents,
        "int8": Encoder(int8, **options).encode_documents,
    }
    times = alternate(encoders, docs, args.rounds)
    ratios = [a / b for a, b in zip(times["fp32"], times["int8"], strict=True)]
    return {
        "family": family,
        "float32": f"{len(record['float32_nodes'])}/{record['quantizable_nodes']}",
        "full_cos": record["full_int8_min_cosine"],
        "cos": record["min_cosine"],
        "fp32_ms": 1000 * statistics.median(times["fp32"]) / len(docs),
        "int8_ms": 1000 * statistics.median(times["int8"]) / len(docs),
        "speedup": statistics.median(ratios),
        "export_s": export_seconds,
        "nodes": ", ".join(record["float32_nodes"]) or "-",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated")
    parser.add_argument(
        "--checkpoint", type=Path, default=None,
        help="a real checkpoint folder instead of the random families (e.g. all-MiniLM-L6-v2)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=96, help="backbone width")
    parser.add_argument("--layers", type=int, default=3, help="backbone depth")
    parser.add_argument("--docs", type=int, default=200, help="documents per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print one row per family: float32 nodes, cosines, ms per document, speed-up."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rows = []
    families = [args.checkpoint.name] if args.checkpoint else args.families.split(",")
    with tempfile.TemporaryDirectory(prefix="int8-speed-") as tmp:
        for family in families:
            rows.append(measure(family, args, Path(tmp)))
            logger.warning("%s done", family)
    made = (
        f"checkpoint {args.checkpoint}"
        if args.checkpoint
        else f"random checkpoints: {args.layers} layers, {args.hidden} wide, 24-d head, seed "
        f"{args.seed}"
    )
    print(f"{made}; {args.docs} documents x {args.rounds} rounds, {args.threads} thread(s)")
    print(
        f"{'family':<20} {'fp32 nodes':>10} {'full int8 cos':>13} {'int8 cos':>8} "
        f"{'fp32 ms/doc':>11} {'int8 ms/doc':>11} {'int8 speed-up':>13} {'export s':>8}"
    )
    for r in rows:
        print(
            f"{r['family']:<20} {r['float32']:>10} {r['full_cos']:>13.4f} {r['cos']:>8.4f} "
            f"{r['fp32_ms']:>11.3f} {r['int8_ms']:>11.3f} {r['speedup']:>12.2f}x "
            f"{r['export_s']:>8.1f}"
        )
    for r in rows:
        print(f"{r['family']}: float32 nodes: {r['nodes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
