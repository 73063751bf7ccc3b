"""Document encoding speed: the runtime Encoder on an int8 export against PyLate float32.

Both encode the same SciFact documents (title + " " + text, truncated to the export's
document length, 256 by default) on the same number of threads, in one process. The
machine may be shared, so the two are measured in alternation (A, B, A, B, ...) and the
speed-up reported is the median of the per-round ratios, not the ratio of the medians.

    python benchmarks/encode_speed.py --model /tmp/minilm-int8 --fp32-model /tmp/minilm-fp32
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `edge_colbert` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks.pylate_model import build_pylate, default_checkpoint

logger = logging.getLogger("encode_speed")

DEFAULT_CORPUS = Path("/work/shared/data/scifact-dev/corpus.jsonl")


def load_documents(path: Path, n: int) -> list[str]:
    """The first ``n`` documents of a BEIR corpus file, as title + " " + text."""
    docs: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if len(docs) >= n:
                break
            row = json.loads(line)
            docs.append(f"{row.get('title', '')} {row.get('text', '')}".strip())
    return docs


def timed(encode: Any, docs: list[str]) -> float:
    """Seconds one call of ``encode(docs)`` takes (wall clock)."""
    start = time.perf_counter()
    encode(docs)
    return time.perf_counter() - start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="int8 model folder")
    parser.add_argument(
        "--fp32-model", type=Path, default=None,
        help="the same export with --quantize none (PyLate reads its projection there)",
    )  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, default=None, help="backbone for PyLate")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds, alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure both encoders in alternation and print docs/s, tokens/s and the ratio."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.corpus.is_file():
        print(f"error: {args.corpus} does not exist; SciFact is needed", file=sys.stderr)
        return 1
    common.pin_threads(args.threads)
    import torch

    from edge_colbert.encoder import Encoder

    torch.set_num_threads(args.threads)
    docs = load_documents(args.corpus, args.docs)
    encoder = Encoder(
        args.model, providers=["CPUExecutionProvider"], threads=args.threads,
        batch_size=args.batch,
    )  # fmt: skip
    pylate, _ = build_pylate(args.checkpoint or default_checkpoint(), args.model, args.fp32_model)
    tokens = sum(len(x.input_ids) for x in encoder.model_inputs(docs, kind="document"))

    def run_edge(texts: list[str]) -> None:
        encoder.encode_documents(texts)

    def run_pylate(texts: list[str]) -> None:
        with torch.inference_mode():
            pylate.encode(texts, is_query=False, batch_size=args.batch, convert_to_numpy=False)

    warm = docs[: args.batch]
    for _ in range(2):
        run_edge(warm)
        run_pylate(warm)
    edge_s: list[float] = []
    pylate_s: list[float] = []
    for i in range(args.rounds):
        # Alternate which goes first, so a burst of load elsewhere hits both alike.
        if i % 2 == 0:
            edge_s.append(timed(run_edge, docs))
            pylate_s.append(timed(run_pylate, docs))
        else:
            pylate_s.append(timed(run_pylate, docs))
            edge_s.append(timed(run_edge, docs))
    ratios = [p / e for e, p in zip(edge_s, pylate_s, strict=True)]
    edge_med, pylate_med = statistics.median(edge_s), statistics.median(pylate_s)
    print(f"{len(docs)} documents, {tokens} tokens, {args.threads} threads, batch {args.batch}")
    for name, sec in (("edge-colbert int8", edge_med), ("PyLate float32", pylate_med)):
        print(f"{name:>18}: {len(docs) / sec:7.1f} docs/s  {tokens / sec:9.0f} tokens/s")
    print(f"speed-up per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"speed-up (median of the rounds): {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
