"""ONNX: trace the module, optimize the graph, quantize it.

BERT-like families are traced with the TorchScript exporter and an additive 4-D mask, which
gives the graph onnxruntime's transformer optimizer recognizes; other families go through
the dynamo exporter (transformers' mask code traces correctly there). The export of a
module changes its state, so a deep copy is traced and the original stays the reference.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from edge_colbert.errors import ExportError

from .reference import ColbertModule

logger = logging.getLogger(__name__)

OPSET = 17
OUTPUT = "embeddings"
LANGUAGE_INPUT = "language"
_TWO_GB = 2 * 1024**3 - 1024**2


def input_names(module: ColbertModule) -> list[str]:
    """The graph's inputs, in the module's argument order."""
    names = ["input_ids", "attention_mask"]
    if module.language:
        names.append(LANGUAGE_INPUT)
    return names


def _sample_args(module: ColbertModule) -> tuple[torch.Tensor, ...]:
    """Example inputs for tracing: batch 2, 16 tokens, one padded row."""
    ids = torch.full((2, 16), 5, dtype=torch.long)
    att = torch.ones_like(ids)
    att[1, 9:] = 0
    if module.language:
        return ids, att, torch.zeros(2, dtype=torch.long)
    return ids, att


def export_onnx(module: ColbertModule, path: Path) -> None:
    """Trace ``module`` to ``path`` with dynamic batch and token axes and opset 17+."""
    names = input_names(module)
    args = _sample_args(module)
    traced = copy.deepcopy(module).eval()
    if module.four_d_mask:
        axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in names[:2]}
        if module.language:
            axes[LANGUAGE_INPUT] = {0: "batch"}
        axes[OUTPUT] = {0: "batch", 1: "tokens"}
        torch.onnx.export(
            traced, args, str(path), input_names=names, output_names=[OUTPUT],
            dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    else:
        batch = torch.export.Dim("batch")
        tokens = torch.export.Dim("tokens", min=2, max=8192)
        shapes: list[dict[int, Any]] = [{0: batch, 1: tokens}, {0: batch, 1: tokens}]
        if module.language:
            shapes.append({0: batch})
        program = torch.onnx.export(
            traced, args, input_names=names, output_names=[OUTPUT],
            dynamic_shapes=tuple(shapes), opset_version=max(OPSET, 18), dynamo=True,
        )  # fmt: skip
        if program is None:
            raise ExportError("the dynamo exporter returned no program")
        program.save(str(path), external_data=_too_big(module))
    logger.info("traced the model to %s", path.name)


def _too_big(module: ColbertModule) -> bool:
    """Whether the weights exceed protobuf's 2 GB limit (then they go to external data)."""
    return sum(p.numel() * 4 for p in module.parameters()) > _TWO_GB


def _attention_scale_as_div(model: onnx.ModelProto) -> int:
    """Rewrite ``Softmax(Add(Mul(MatMul(q, k), s), mask))`` as ``Div(MatMul, 1 / s)``.

    transformers 5 scales the scores with a Mul where BERT used a Div. onnxruntime's
    FusionAttention looks for the first Mul parent of the Add as the mask, finds the scale
    instead and gives up, so attention is not fused; a Div restores the pattern it knows.
    Returns how many scales were rewritten.
    """
    from onnx import numpy_helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    inits = {t.name: t for t in graph.initializer}

    def scalar(name: str) -> float | None:
        if name in inits:
            value = numpy_helper.to_array(inits[name])
        elif name in producer and producer[name].op_type == "Constant":
            attrs = {a.name: a for a in producer[name].attribute}
            if "value" not in attrs:
                return None
            value = numpy_helper.to_array(attrs["value"].t)
        else:
            return None
        return float(value.reshape(-1)[0]) if value.size == 1 else None

    rewritten = 0
    for softmax in (n for n in graph.node if n.op_type == "Softmax"):
        add = producer.get(softmax.input[0])
        if add is None or add.op_type != "Add":
            continue
        for name in add.input:
            mul = producer.get(name)
            if mul is None or mul.op_type != "Mul" or len(mul.input) != 2:
                continue
            scores = producer.get(mul.input[0])
            scale = scalar(mul.input[1])
            if scores is None or scores.op_type != "MatMul" or not scale:
                continue
            # A fresh initializer: traced graphs share one Constant between layers.
            divisor = numpy_helper.from_array(
                np.array(1.0 / scale, dtype=np.float32), f"{mul.name or name}_divisor"
            )
            graph.initializer.append(divisor)
            mul.op_type = "Div"
            mul.input[1] = divisor.name
            rewritten += 1
    return rewritten


def optimize(src: Path, dst: Path, *, backbone: Any, bert_like: bool) -> dict[str, int]:
    """Fuse LayerNorm / GELU / attention (transformer optimizer for BERT-like graphs, else
    onnxruntime's extended level). Returns the fused-operator counts."""
    large = src.stat().st_size > _TWO_GB or (src.parent / (src.name + ".data")).exists()
    if bert_like:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        model = onnx.load(str(src))
        if _attention_scale_as_div(model):
            src = src.with_name(src.stem + ".div.onnx")
            onnx.save(model, str(src), save_as_external_data=large)
        del model
        config = backbone.config
        fusion = FusionOptions("bert")
        # The 2-D mask as given: correct for any mask, not only right-padded ones.
        fusion.use_raw_attention_mask(True)
        fused = optimize_model(
            str(src), model_type="bert", num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size), optimization_options=fusion, opt_level=1,
            use_gpu=False,
        )  # fmt: skip
        fused.save_model_to_file(str(dst), use_external_data_format=large)
        stats = {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(dst)
        if large:
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", dst.name + ".data"
            )
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        stats = {}
    logger.info("graph optimization: %s", stats or "onnxruntime extended level")
    return stats


def quantize_int8(src: Path, dst: Path) -> None:
    """Full dynamic int8 of every quantizable node (see :func:`.int8.quantize`)."""
    from .int8 import quantize

    quantize(src, dst)


def to_fp16(src: Path, dst: Path) -> None:
    """float16 weights and activations for GPUs; int64 inputs and the output stay as they are."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(dst))


def make_qdq(
    src: Path, dst: Path, samples: list[dict[str, np.ndarray]], shape: tuple[int, int]
) -> None:
    """Static QDQ int8 graph with fixed ``[batch, tokens]`` for NPUs, calibrated on samples."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = onnx.load(str(src))
    for tensor in model.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        for i, size in enumerate(shape[: len(dims)]):
            dims[i].ClearField("dim_param")
            dims[i].dim_value = size
    fixed = dst.with_suffix(".fixed.onnx")
    onnx.save(model, str(fixed))

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    try:
        quantize_static(
            str(fixed), str(dst), _Reader(), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )  # fmt: skip
    finally:
        fixed.unlink(missing_ok=True)
