"""export_model: checkpoint -> verified model folder, written atomically.

Everything is built in a temporary folder beside OUTDIR and moved into place only after
every graph has been checked against the torch reference, so a failed export leaves
nothing half-written.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_colbert.errors import ExportError
from edge_colbert.manifest import Manifest, checksum_files, write_manifest

from . import graph
from .checkpoint import Checkpoint, load_checkpoint
from .head import fold_projection, slice_matryoshka
from .int8 import INT8_MAX_SCORE_ERROR, Int8Plan, Score, accurate_int8
from .recipes import find_recipe
from .reference import FOUR_D_MASK_FAMILIES, build_module, encode, prepare
from .verify import check_graph, compare_graph

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("int8", "fp16", "none")


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A local folder, or a hub id already in the local Hugging Face cache."""
    folder = Path(checkpoint).expanduser()
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(checkpoint), local_files_only=False))
    except Exception as error:
        raise ExportError(
            f"checkpoint {checkpoint!s} is not a local folder and could not be fetched from "
            f"the Hugging Face hub ({type(error).__name__}); download it and pass the folder"
        ) from error


def calibration_texts(calibration: str | Path | None) -> tuple[list[str], list[str]]:
    """(queries, documents) for fitting a projection: a file of passages, one per
    paragraph (first sentence doubles as a query), or the built-in set."""
    from .reduce import default_calibration_texts

    if calibration is None:
        return default_calibration_texts()
    path = Path(calibration)
    if not path.is_file():
        raise ExportError(f"calibration file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    docs = [" ".join(b.split()) for b in text.split("\n\n") if b.strip()]
    if len(docs) < 8:
        docs = [line.strip() for line in text.splitlines() if line.strip()]
    if len(docs) < 8:
        raise ExportError(f"calibration file {path} has {len(docs)} passages; give at least 8")
    queries = [d.split(". ")[0][:200] for d in docs]
    return queries, docs


def apply_dim_policy(
    ckpt: Checkpoint,
    dim: int | str,
    recipe: dict[str, Any],
    calibration: str | Path | None,
    seed: int,
) -> tuple[int, str]:
    """Slice, keep or fit-and-fold the head to ``dim``; returns (dim, how)."""
    native = ckpt.native_dim
    if dim == "native" or dim == native:
        return native, "none"
    wanted = int(dim)
    if wanted < 1:
        raise ExportError(f"--dim must be positive or 'native', got {dim}")
    if native < wanted:
        logger.warning(
            "the head is %d-d, narrower than --dim %d: keeping %d", native, wanted, native
        )
        return native, "none"
    if wanted in (recipe.get("matryoshka_dims") or []) and ckpt.head:
        slice_matryoshka(ckpt.head, wanted)
        return wanted, "matryoshka"
    from .reduce import fit_projection

    queries, docs = calibration_texts(calibration)
    module = build_module(ckpt)
    q_vecs = encode(module, ckpt, queries, is_query=True)
    d_vecs = encode(module, ckpt, docs, is_query=False)
    projection = fit_projection(q_vecs, d_vecs, wanted, seed=seed)
    how = fold_projection(ckpt.head, np.asarray(projection), native)
    logger.info("fitted a %d -> %d projection on %d texts (%s)", native, wanted, len(docs), how)
    return wanted, "fitted"


def _sample_texts() -> tuple[list[str], list[str]]:
    """Queries and documents for the checks: a slice of the calibration set."""
    from .reduce import default_calibration_texts

    queries, docs = default_calibration_texts()
    return queries[:8], docs[:12]


def export_model(
    checkpoint: str | Path,
    outdir: str | Path,
    *,
    dim: int | str = 64,
    quantize: str = "int8",
    target: str | None = None,
    calibration: str | Path | None = None,
    trust_remote_code: bool = False,
    name: str | None = None,
    fp16_variant: bool = False,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    seed: int = 0,
    source_id: str | None = None,
    source_revision: str = "",
) -> Path:
    """Export ``checkpoint`` to the model folder ``outdir`` and return its path.

    ``overrides`` take the CLI's settings (query_prefix, document_prefix, query_length,
    document_length, do_query_expansion, attend_to_expansion_tokens). ``source_id`` and
    ``source_revision`` are what the manifest records as the source (default: the
    ``checkpoint`` argument), for a checkpoint exported from a local copy of a hub model.
    """
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    if target not in (None, "cpu", "npu"):
        raise ExportError(f"--target must be cpu or npu, got {target!r}")
    out = Path(outdir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; choose another folder or --overwrite")
    folder = resolve_checkpoint(checkpoint)
    recipe = find_recipe(str(checkpoint)) or find_recipe(folder.name) or {}
    ckpt = load_checkpoint(
        folder, recipe=recipe, overrides=overrides, trust_remote_code=trust_remote_code
    )
    final_dim, reduction = apply_dim_policy(ckpt, dim, recipe, calibration, seed)
    expected = recipe.get("expected_dim")
    if expected and dim == 64 and final_dim != expected:
        logger.warning("recipe expects %s-d output, got %d", expected, final_dim)
    module = build_module(ckpt)
    queries, docs = _sample_texts()
    language = ckpt.default_language
    lang_index = ckpt.languages.index(language) if language else 0
    ref_q = encode(module, ckpt, queries, is_query=True, language=lang_index)
    ref_d = encode(module, ckpt, docs, is_query=False, language=lang_index)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        raw = work / "raw" / "model.onnx"
        raw.parent.mkdir()
        graph.export_onnx(module, raw)
        fused = graph.optimize(
            raw, work / "model.onnx", backbone=ckpt.backbone,
            bert_like=ckpt.backbone_type in FOUR_D_MASK_FAMILIES,
        )  # fmt: skip
        shutil.rmtree(raw.parent)
        _save_tokenizer(ckpt, work)
        source = source_id or checkpoint
        base = _manifest(ckpt, source, name or out.name, final_dim, reduction, module)
        base = replace(base, source_revision=source_revision)
        checks: dict[str, Any] = {"fused_ops": fused}

        def verify(file: str, exact: bool, **fix: str) -> None:
            names = [file, "tokenizer.json"]
            _write(base, work, file, "none", {}, names)
            checks[file] = check_graph(
                work, file, queries, docs, ref_q, ref_d, exact=exact, language=language, **fix
            )

        verify("model.onnx", True)
        variants: dict[str, str] = {}
        if fp16_variant or quantize == "fp16":
            graph.to_fp16(work / "model.onnx", work / "model.fp16.onnx")
            verify("model.fp16.onnx", False)
            variants["fp16"] = "model.fp16.onnx"
        if target == "npu":
            _qdq(ckpt, module, work, docs)
            # The Encoder pads every text to the graph's fixed shape, so the NPU graph is
            # checked like any other (on the CPU provider: same graph, same QDQ arithmetic).
            verify(
                "model.qdq.onnx",
                False,
                fix="leave out --target npu (static int8 does not suit this model).",
            )
            variants["qdq"] = "model.qdq.onnx"
        if quantize == "int8":
            plan = _int8(base, work, queries, docs, ref_q, ref_d, language)
            verify("model.int8.onnx", False)
            base.extra["int8"] = plan.manifest_record()
            (work / "model.int8.onnx").replace(work / "model.onnx")
        elif quantize == "fp16":
            (work / "model.fp16.onnx").replace(work / "model.onnx")
            variants.pop("fp16")
        files = ["model.onnx", "tokenizer.json", *variants.values()]
        files += [p.name for p in work.glob("*.data")]
        base.extra["checks"] = checks
        _write(base, work, "model.onnx", quantize, variants, files)
        if out.exists():
            shutil.rmtree(out)
        work.replace(out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    logger.info("wrote %s (%d-d, %s)", out, final_dim, quantize)
    return out


def _int8(
    base: Manifest, work: Path, queries: list[str], docs: list[str],
    ref_q: list[np.ndarray], ref_d: list[np.ndarray], language: str | None,
) -> Int8Plan:  # fmt: skip
    """``model.int8.onnx``: dynamic int8, with the nodes it bends too far left float32."""

    def score(graph_file: Path) -> Score:
        _write(base, work, graph_file.name, "none", {}, [graph_file.name, "tokenizer.json"])
        got = compare_graph(work, graph_file.name, queries, docs, ref_q, ref_d, language=language)
        cosine = min(got["query_min_cosine"], got["document_min_cosine"])
        # int8 must keep every query's top 3, not only top-1 and most of the top 3.
        kept = got["ranking_kept"] and got["top3_kept"]
        why = got["ranking"] if not got["ranking_kept"] else got["top3"]
        return Score(cosine, kept, why, got["max_score_error"])

    return accurate_int8(
        work / "model.onnx", work / "model.int8.onnx", score, max_score_error=INT8_MAX_SCORE_ERROR
    )


def _save_tokenizer(ckpt: Checkpoint, work: Path) -> None:
    """tokenizer.json with truncation and padding off (the runtime does both)."""
    backend = ckpt.tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    backend.save(str(work / "tokenizer.json"))


def _manifest(
    ckpt: Checkpoint, source: str | Path, name: str, dim: int, reduction: str, module: Any
) -> Manifest:
    """The manifest fields that do not depend on which graph is written."""
    s = ckpt.settings
    return Manifest(
        name=name, dim=dim, query_maxlen=s.query_maxlen, doc_maxlen=s.doc_maxlen,
        query_marker=s.query_marker, document_marker=s.document_marker,
        mask_token_id=s.mask_token_id, pad_token_id=s.pad_token_id,
        do_query_expansion=s.do_query_expansion,
        attend_to_expansion_tokens=s.attend_to_expansion_tokens,
        skiplist_ids=s.skiplist_ids, source_checkpoint=str(source),
        source_format=ckpt.source_format, backbone=ckpt.backbone_type,
        native_dim=ckpt.native_dim, dim_reduction=reduction, lowercase=s.lowercase,
        inputs=tuple(graph.input_names(module)[:2]), output=graph.OUTPUT,
        languages=tuple(ckpt.languages),
        language_input=graph.LANGUAGE_INPUT if ckpt.languages else None,
        default_language=ckpt.default_language, extra={},
    )  # fmt: skip


def _write(
    base: Manifest, work: Path, model_file: str, quantization: str,
    variants: dict[str, str], files: list[str],
) -> None:  # fmt: skip
    """Write the manifest for ``model_file`` with checksums of ``files``."""
    from dataclasses import replace

    manifest = replace(
        base, model_file=model_file, quantization=quantization, variants=variants,
        files=checksum_files(work, files),
    )  # fmt: skip
    write_manifest(manifest, work)


def _qdq(ckpt: Checkpoint, module: Any, work: Path, docs: list[str]) -> None:
    """The NPU graph: fixed [1, doc_maxlen] shapes, calibrated on document samples."""
    length = ckpt.settings.doc_maxlen
    samples = []
    for text in docs:
        ids, att, _ = prepare(ckpt, [text], is_query=False)
        pad = length - ids.shape[1]
        feed = {
            "input_ids": np.pad(
                ids.numpy(), ((0, 0), (0, pad)), constant_values=ckpt.settings.pad_token_id
            ),
            "attention_mask": np.pad(att.numpy(), ((0, 0), (0, pad))),
        }
        if module.language:
            feed[graph.LANGUAGE_INPUT] = np.zeros(1, dtype=np.int64)
        samples.append(feed)
    graph.make_qdq(work / "model.onnx", work / "model.qdq.onnx", samples, (1, length))
