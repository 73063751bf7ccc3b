"""Dynamic int8 that keeps the reference: the most sensitive nodes stay float32.

Full dynamic int8 (every MatMul, Gather and fused attention with a weight) suits some
graphs and bends others too far: a random ModernBERT's smallest per-token cosine falls to
0.07-0.76, mostly from its embedding table, and random BERTs lose ranking through the head.
An int8 graph is accepted when, on the calibration sample, every token keeps
:data:`INT8_MIN_COSINE`, the ranking holds (the caller's ``measure``; the export asks every
query's top 3) and, as the export asks, every score stays within
:data:`INT8_MAX_SCORE_ERROR`.
When full int8 fails, each candidate node is quantized alone and scored; the nodes that
hurt most stay float32, the fewest such found by a doubling search and then a bisection
over the sensitivity order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edge_colbert.errors import ExportError

logger = logging.getLogger(__name__)

# An int8 graph must keep every token vector this close to the reference (smallest per-token
# cosine over the calibration sample), besides the ranking. The bundled MiniLM's full int8
# graph measures 0.979; graphs below 0.95 come from nodes int8 does not suit.
INT8_MIN_COSINE = 0.95
# What the export also asks (accurate_int8's max_score_error): every MaxSim score of the
# sample (mean over query tokens, 0..1) within this of the reference, so that documents whose
# reference scores differ by more than twice this cannot swap. Without it, random ModernBERT
# and XMOD checkpoints kept the sample's ranking yet swapped a top-1 on other texts (score
# gaps 0.010 and 0.002). Its cost on a real model: full int8 moves all-MiniLM-L6-v2's scores
# by up to 0.019, and this bound keeps 23 of its 25 nodes float32 (1.03x the fp32 speed).
INT8_MAX_SCORE_ERROR = 1e-3
# Node types onnxruntime's dynamic quantization rewrites when they carry a weight.
QUANTIZED_OP_TYPES = frozenset({"MatMul", "Gemm", "Gather", "Attention", "EmbedLayerNormalization"})


@dataclass(frozen=True)
class Score:
    """How close a graph stays to the reference on the calibration sample."""

    min_cosine: float
    ranking_kept: bool
    ranking: str
    max_score_error: float = 0.0

    def acceptable(
        self, min_cosine: float = INT8_MIN_COSINE, max_score_error: float | None = None
    ) -> bool:
        """Ranking kept, every token vector at least ``min_cosine`` from the reference and,
        when ``max_score_error`` is given, every score within it."""
        return (
            self.ranking_kept
            and self.min_cosine >= min_cosine
            and (max_score_error is None or self.max_score_error <= max_score_error)
        )


@dataclass
class Int8Plan:
    """What the int8 step did: the nodes left float32 and what each trial measured."""

    candidates: list[str]
    float32_nodes: list[str]
    full_int8: Score
    final: Score
    trials: int
    min_cosine: float = INT8_MIN_COSINE
    max_score_error: float | None = None
    sensitivity: dict[str, float] = field(default_factory=dict)

    def manifest_record(self) -> dict[str, Any]:
        """The manifest's ``extra.int8`` (docs/model-folder.md)."""
        return {
            "min_cosine_required": self.min_cosine,
            "max_score_error_allowed": self.max_score_error,
            "min_cosine": self.final.min_cosine,
            "max_score_error": self.final.max_score_error,
            "ranking": self.final.ranking,
            "full_int8_min_cosine": self.full_int8.min_cosine,
            "full_int8_max_score_error": self.full_int8.max_score_error,
            "full_int8_ranking_kept": self.full_int8.ranking_kept,
            "quantizable_nodes": len(self.candidates),
            "float32_nodes": list(self.float32_nodes),
            "trials": self.trials,
        }


def name_nodes(path: Path) -> None:
    """Give every unnamed node a unique name (excluding a node from int8 goes by name)."""
    model = onnx.load(str(path), load_external_data=False)
    taken = {node.name for node in model.graph.node if node.name}
    changed = False
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            changed = True
    if changed:
        # Weights kept in external data stay where they are: only the graph is rewritten.
        onnx.save(model, str(path))


def candidate_nodes(path: Path) -> list[str]:
    """Names of the nodes dynamic int8 would quantize: the quantized types with a weight."""
    model = onnx.load(str(path), load_external_data=False)
    weights = {tensor.name for tensor in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in QUANTIZED_OP_TYPES and any(name in weights for name in node.input)
    ]


def quantize(
    src: Path,
    dst: Path,
    *,
    exclude: Sequence[str] = (),
    only: Sequence[str] | None = None,
) -> None:
    """Dynamic int8: per-channel signed weights, full range (VNNI and ARM dot-product
    kernels take s8 weights without the saturation that needs reduce_range on plain AVX2).
    ``exclude`` stay float32; ``only``, when given, are the only nodes quantized."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), per_channel=True, reduce_range=False, weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude), nodes_to_quantize=list(only) if only else None,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )  # fmt: skip


def accurate_int8(
    src: Path,
    dst: Path,
    measure: Callable[[Path], Score],
    *,
    min_cosine: float = INT8_MIN_COSINE,
    max_score_error: float | None = None,
) -> Int8Plan:
    """Write to ``dst`` the int8 graph of ``src`` with the fewest float32 nodes (along the
    sensitivity order) whose ``measure`` (a graph file scored against the reference) keeps
    the ranking and a smallest per-token cosine of ``min_cosine`` (and, if given, moves no
    score by more than ``max_score_error``).

    Raises ExportError when only the all-float32 graph passes (then int8 gains nothing).
    """
    name_nodes(src)
    candidates = candidate_nodes(src)
    quantize(src, dst)
    full = measure(dst)
    trials = 1
    bar = (min_cosine, max_score_error)
    if full.acceptable(*bar):
        logger.info("full int8 kept the reference (smallest cosine %.4f)", full.min_cosine)
        return Int8Plan(candidates, [], full, full, trials, *bar)
    logger.info(
        "full int8: smallest cosine %.4f, %s; measuring %d nodes one by one",
        full.min_cosine, full.ranking, len(candidates),
    )  # fmt: skip
    sensitivity: dict[str, float] = {}
    for node in candidates:
        quantize(src, dst, only=[node])
        sensitivity[node] = measure(dst).min_cosine
        trials += 1
    order = sorted(candidates, key=lambda node: sensitivity[node])

    def passes(count: int) -> Score:
        nonlocal trials
        quantize(src, dst, exclude=order[:count])
        trials += 1
        return measure(dst)

    # Doubling, then bisection between the last failing and the first passing count.
    failing, count = 0, 1
    while count < len(order) and not passes(count).acceptable(*bar):
        failing, count = count, min(2 * count, len(order))
    passing = count
    while passing - failing > 1:
        middle = (failing + passing) // 2
        if passes(middle).acceptable(*bar):
            passing = middle
        else:
            failing = middle
    if passing >= len(order):
        raise ExportError(
            f"no int8 graph keeps the reference: full int8 reaches a smallest per-token cosine "
            f"of {full.min_cosine:.4f} ({full.ranking}), and every one of its "
            f"{len(order)} quantizable nodes had to stay float32; use --quantize none or fp16. "
            "Nothing was written."
        )
    final = passes(passing)
    if not final.acceptable(*bar):  # the bisection's last trial was another count
        raise ExportError(f"int8 with {passing} float32 nodes no longer passes ({final.ranking})")
    kept = order[:passing]
    logger.info(
        "int8 keeps %d of %d nodes float32 (%s): smallest cosine %.4f, %s",
        len(kept), len(candidates), ", ".join(kept), final.min_cosine, final.ranking,
    )  # fmt: skip
    return Int8Plan(candidates, kept, full, final, trials, *bar, sensitivity)
