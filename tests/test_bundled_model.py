"""The bundled default model: it loads with no argument, and its model card agrees with it."""

from __future__ import annotations

import re

import pytest

from edge_colbert.encoder import MODEL_ENV, Encoder, default_model_dir
from edge_colbert.manifest import load_manifest


def test_default_model_loads_and_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_ENV, raising=False)
    encoder = Encoder(providers=["CPUExecutionProvider"], threads=1)
    assert encoder.dim == 64
    (query,) = encoder.encode_queries(["what keeps my notes safe?"])
    (doc,) = encoder.encode_documents(["SQLite keeps the whole index in one file."])
    assert query.shape[1] == doc.shape[1] == 64
    # No [MASK] expansion for this model: a query keeps its own tokens only.
    assert query.shape[0] < load_manifest(encoder.model_dir).query_maxlen


def test_model_card_states_what_the_manifest_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_ENV, raising=False)
    folder = default_model_dir()
    manifest = load_manifest(folder)
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert manifest.source_checkpoint in card and manifest.source_revision in card
    assert "Apache-2.0" in card
    settings = re.search(r"--dim (\d+) --quantize (\w+)", card)
    assert settings is not None
    assert (int(settings[1]), settings[2]) == (manifest.dim, manifest.quantization)
    assert f"--query-maxlen {manifest.query_maxlen}" in card
    assert f"--doc-maxlen {manifest.doc_maxlen}" in card
    assert manifest.do_query_expansion is ("--no-query-expansion" not in card)
