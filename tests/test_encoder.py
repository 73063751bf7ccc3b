"""The encoder reproduces the reference preprocessing and the graph's math, text by text."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from tiny_model import build_tiny_model, reference_forward
from tokenizers import Tokenizer

from edge_colbert.encoder import MODEL_ENV, Encoder, default_model_dir
from edge_colbert.errors import InvalidInputError, ModelFolderError
from edge_colbert.manifest import checksum_files, load_manifest, write_manifest

CPU = ["CPUExecutionProvider"]
DOCS = [
    "the water is cold",
    "what is a cell? Cancer risk, in patients: study data!",
    "a",
    "the sun and the moon and the sea and the river were all there",
    "once upon a time",
]


def _encoder(folder: Path, **kwargs: object) -> Encoder:
    return Encoder(folder, providers=CPU, threads=1, **kwargs)  # type: ignore[arg-type]


def _raw_ids(model_dir: Path, text: str) -> list[int]:
    """The tokenizer's own ids for ``text`` ([CLS] ... [SEP]), untruncated."""
    return list(Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text).ids)


def _expected_rows(
    model_dir: Path, ids: np.ndarray, mask: np.ndarray, keep: np.ndarray
) -> np.ndarray:
    return np.asarray(reference_forward(model_dir, ids[None], mask[None])[0][keep])


def test_query_marker_after_cls_and_expansion_with_mask_tokens(
    tiny_encoder: Encoder, tiny_model_dir: Path
) -> None:
    m = tiny_encoder.manifest
    raw = _raw_ids(tiny_model_dir, "the water is cold")
    (item,) = tiny_encoder.model_inputs(["the water is cold"], kind="query")
    n = len(raw) + 1
    expected = [raw[0], m.query_marker.token_id, *raw[1:]] + [m.mask_token_id] * (
        m.query_maxlen - n
    )
    assert item.input_ids.tolist() == expected
    assert item.attention_mask.tolist() == [1] * n + [0] * (m.query_maxlen - n)
    (vectors,) = tiny_encoder.encode_queries(["the water is cold"])
    assert vectors.shape == (m.query_maxlen, m.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_document_marker_after_cls(tiny_encoder: Encoder, tiny_model_dir: Path) -> None:
    raw = _raw_ids(tiny_model_dir, "the water is cold")
    (item,) = tiny_encoder.model_inputs(["the water is cold"], kind="document")
    assert item.input_ids.tolist() == [
        raw[0],
        tiny_encoder.manifest.document_marker.token_id,
        *raw[1:],
    ]
    assert item.attention_mask.all() and item.keep.all()


def test_expanded_real_tokens_equal_the_unexpanded_query_when_masks_get_no_attention(
    tmp_path: Path,
) -> None:
    text = ["what is the risk of cancer"]
    plain = _encoder(build_tiny_model(tmp_path / "plain", do_query_expansion=False))
    expanded = _encoder(build_tiny_model(tmp_path / "expanded"))
    attending = _encoder(build_tiny_model(tmp_path / "attending", attend_to_expansion_tokens=True))
    (short,) = plain.encode_queries(text)
    (long,) = expanded.encode_queries(text)
    (attended,) = attending.encode_queries(text)
    n = len(_raw_ids(tmp_path / "plain", text[0])) + 1
    assert short.shape == (n, 16)  # without expansion only the real tokens come back
    assert long.shape == attended.shape == (16, 16)
    np.testing.assert_allclose(long[:n], short, atol=1e-5)
    assert np.abs(attended[:n] - short).max() > 1e-2
    (item,) = attending.model_inputs(text, kind="query")
    assert item.attention_mask.all()


def test_documents_drop_skiplist_tokens_after_the_model(
    tiny_encoder: Encoder, tiny_model_dir: Path
) -> None:
    text = "cancer, risk; data!"
    (item,) = tiny_encoder.model_inputs([text], kind="document")
    punctuation = set(tiny_encoder.manifest.skiplist_ids)
    assert sum(i in punctuation for i in item.input_ids.tolist()) == 3
    (vectors,) = tiny_encoder.encode_documents([text])
    assert vectors.shape == (len(item.input_ids) - 3, 16)
    # The punctuation was seen by the model (it shapes the other vectors) and dropped after.
    full = reference_forward(tiny_model_dir, item.input_ids[None], item.attention_mask[None])[0]
    np.testing.assert_allclose(vectors, full[item.keep], atol=1e-5)


def test_runtime_matches_numpy_reference(tiny_encoder: Encoder, tiny_model_dir: Path) -> None:
    for kind, encode in (
        ("query", tiny_encoder.encode_queries),
        ("document", tiny_encoder.encode_documents),
    ):
        inputs = tiny_encoder.model_inputs(DOCS, kind=kind)  # type: ignore[arg-type]
        for item, got in zip(inputs, encode(DOCS), strict=True):
            want = _expected_rows(tiny_model_dir, item.input_ids, item.attention_mask, item.keep)
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_long_texts_are_truncated_with_one_warning(
    tiny_encoder: Encoder, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    long = "the water is cold and the sun is hot " * 5
    texts = [long, "short text", long + "again"]
    with caplog.at_level(logging.WARNING, logger="edge_colbert.encoder"):
        vectors = tiny_encoder.encode_documents(texts)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 of 3" in warnings[0].getMessage() and "chunk" in warnings[0].getMessage()
    item = tiny_encoder.model_inputs([long], kind="document")[0]
    raw = _raw_ids(tiny_model_dir, long)
    assert len(item.input_ids) == tiny_encoder.manifest.doc_maxlen
    assert item.input_ids[-1] == raw[-1]  # [SEP] stays last
    assert item.input_ids[2:-1].tolist() == raw[1 : tiny_encoder.manifest.doc_maxlen - 2]
    assert vectors[0].shape[0] == tiny_encoder.manifest.doc_maxlen
    assert tiny_encoder.count_document_tokens(texts)[0] == len(raw) + 1
    # Queries are cut to the query window the same way.
    (query,) = tiny_encoder.model_inputs([long], kind="query")
    assert len(query.input_ids) == 16 and query.input_ids[-1] == raw[-1]


def test_lowercase_flag_lowercases_before_a_case_sensitive_tokenizer(tmp_path: Path) -> None:
    lowering = _encoder(
        build_tiny_model(tmp_path / "low", lowercase=True, tokenizer_lowercase=False)
    )
    cased = _encoder(build_tiny_model(tmp_path / "cased", tokenizer_lowercase=False))
    upper, lower = lowering.encode_documents(["The WATER is Cold", "the water is cold"])
    np.testing.assert_allclose(upper, lower, atol=1e-6)
    upper, lower = cased.encode_documents(["The WATER is Cold", "the water is cold"])
    assert upper.shape != lower.shape or np.abs(upper - lower).max() > 1e-2


def test_length_bucketed_batches_equal_one_at_a_time(tiny_model_dir: Path) -> None:
    batched = _encoder(tiny_model_dir, batch_size=2)
    texts = [*DOCS, "the water is cold " * 8, "b c", "science"]
    for encode, single in (
        (batched.encode_documents, batched.encode_documents),
        (batched.encode_queries, batched.encode_queries),
    ):
        together = encode(texts)
        assert len(together) == len(texts)
        for text, got in zip(texts, together, strict=True):
            np.testing.assert_allclose(got, single([text])[0], atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3])
def test_fixed_shape_graph_pads_every_text_to_its_shape(tmp_path: Path, rows: int) -> None:
    """An NPU-style graph with static [rows, tokens] inputs gives the dynamic graph's vectors."""
    dynamic = _encoder(build_tiny_model(tmp_path / "dynamic"))
    fixed = _encoder(build_tiny_model(tmp_path / "fixed", fixed_shape=(rows, 24)))
    queries = ["cold water", "what is a cell?", "the moon"]
    for want, got in zip(
        dynamic.encode_queries(queries) + dynamic.encode_documents(DOCS),
        fixed.encode_queries(queries) + fixed.encode_documents(DOCS),
        strict=True,
    ):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_fixed_shape_shorter_than_the_manifest_lengths_is_refused(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "short", fixed_shape=(1, 8))
    with pytest.raises(ModelFolderError, match=r"fixed inputs of 8 tokens.*doc_maxlen 24"):
        _encoder(folder)


def test_document_token_spans_align_with_rows(tiny_model_dir: Path, tmp_path: Path) -> None:
    encoders = [
        _encoder(tiny_model_dir),
        _encoder(build_tiny_model(tmp_path / "prefix", query_marker="text_prefix")),
        _encoder(build_tiny_model(tmp_path / "low", lowercase=True, tokenizer_lowercase=False)),
    ]
    text = "  Cancer risk, in the PATIENTS data.  "
    for encoder in encoders:
        spans = encoder.document_token_spans(text)
        (vectors,) = encoder.encode_documents([text])
        assert len(spans) == vectors.shape[0]
        words = [text[a:b].lower() for a, b in spans if b > a]
        assert words == ["cancer", "risk", "in", "the", "patient", "s", "data"]
        assert spans[0] == (0, 0) and spans[-1] == (0, 0)
    assert encoders[0].document_token_spans(text)[1] == (0, 0)  # the marker


def test_text_prefix_marker_is_tokenized_with_the_text(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "prefix", query_marker="text_prefix")
    encoder = _encoder(folder)
    (query,) = encoder.model_inputs(["cold water"], kind="query")
    (doc,) = encoder.model_inputs(["cold water"], kind="document")
    assert query.input_ids[: len(_raw_ids(folder, "[Q] cold water"))].tolist() == _raw_ids(
        folder, "[Q] cold water"
    )
    assert doc.input_ids.tolist() == _raw_ids(folder, "[D] cold water")


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["fine", ""], "document 1 is empty"),
        (["fine", "ok", " \n\t "], "document 2 is empty"),
        (["fine", None], "document 1 is NoneType"),
        ([3], "document 0 is int"),
        ("a bare string", "not one string"),
    ],
)
def test_bad_inputs_are_refused_with_their_position(
    tiny_encoder: Encoder, texts: object, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        tiny_encoder.encode_documents(texts)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        tiny_encoder.encode_queries(texts)  # type: ignore[arg-type]


def test_empty_list_gives_empty_result(tiny_encoder: Encoder) -> None:
    assert tiny_encoder.encode_documents([]) == [] and tiny_encoder.encode_queries([]) == []


def test_bad_batch_size_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match="batch_size"):
        _encoder(tiny_model_dir, batch_size=0)


def test_token_type_ids_are_fed_as_zeros(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "tt", token_type_ids=True)
    encoder = _encoder(folder)
    (item,) = encoder.model_inputs(["cold water"], kind="document")
    (got,) = encoder.encode_documents(["cold water"])
    want = reference_forward(
        folder, item.input_ids[None], item.attention_mask[None], token_type_ids=np.zeros((1, 5))
    )[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_language_input_for_adapter_models(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "xmod", languages=("en_XX", "de_DE"))
    encoder = _encoder(folder)
    (item,) = encoder.model_inputs(["cold water"], kind="document")
    ids, mask = item.input_ids[None], item.attention_mask[None]
    (english,) = encoder.encode_documents(["cold water"])
    (german,) = encoder.encode_documents(["cold water"], language="de_DE")
    np.testing.assert_allclose(
        english, reference_forward(folder, ids, mask, language=np.array([0]))[0], atol=1e-5
    )
    np.testing.assert_allclose(
        german, reference_forward(folder, ids, mask, language=np.array([1]))[0], atol=1e-5
    )
    (default_german,) = _encoder(folder, language="de_DE").encode_documents(["cold water"])
    np.testing.assert_allclose(default_german, german, atol=1e-6)
    with pytest.raises(InvalidInputError, match="en_XX, de_DE"):
        encoder.encode_queries(["cold water"], language="fr_FR")
    with pytest.raises(InvalidInputError, match="no language adapters"):
        _encoder(build_tiny_model(tmp_path / "plain")).encode_documents(["a"], language="en_XX")


def test_graph_dimension_must_match_the_manifest(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "m", manifest_dim=32)
    with pytest.raises(ModelFolderError, match=r"16-d.*dim 32"):
        _encoder(folder)


def _replace_and_rechecksum(folder: Path, name: str, content: bytes) -> None:
    """Overwrite a file and record its new checksum, so only the content is wrong."""
    (folder / name).write_bytes(content)
    manifest = load_manifest(folder, verify_checksums=False)
    files = checksum_files(folder, ["model.onnx", "tokenizer.json"])
    write_manifest(type(manifest)(**{**manifest.__dict__, "files": files}), folder)


def test_unparseable_graph_says_to_re_export(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "m")
    _replace_and_rechecksum(folder, "model.onnx", b"not a protobuf at all" * 10)
    with pytest.raises(ModelFolderError, match=r"[Rr]e-export"):
        _encoder(folder)


def test_unloadable_tokenizer_is_a_model_folder_error(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "m")
    _replace_and_rechecksum(folder, "tokenizer.json", b'{"version": "1.0", "model": 3}')
    with pytest.raises(ModelFolderError, match=r"tokenizer\.json"):
        _encoder(folder)


def test_damaged_graph_is_refused_by_checksum(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "m")
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match="SHA-256"):
        _encoder(folder)


def test_model_file_picks_a_variant_and_a_missing_one_is_named(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "m")
    (folder / "model.copy.onnx").write_bytes((folder / "model.onnx").read_bytes())
    a = _encoder(folder).encode_documents(["cold water"])[0]
    b = _encoder(folder, model_file="model.copy.onnx").encode_documents(["cold water"])[0]
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ModelFolderError, match=r"model\.fp16\.onnx"):
        _encoder(folder, model_file="model.fp16.onnx")


def test_default_model_comes_from_the_environment(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODEL_ENV, str(tiny_model_dir))
    assert default_model_dir() == tiny_model_dir
    encoder = Encoder(providers=CPU)
    assert encoder.model_dir == tiny_model_dir
    assert encoder.identity == load_manifest(tiny_model_dir).identity
    assert encoder.identity.startswith("tiny-colbert (16-d, ")


@pytest.mark.export
@pytest.mark.slow
def test_preprocessing_matches_pylate(tmp_path: Path) -> None:
    """Token ids and attention masks equal PyLate 1.6's, for queries and documents."""
    pytest.importorskip("pylate", reason="the parity check needs the export extra (pylate)")
    import torch
    from pylate import models
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = build_tiny_model(tmp_path / "m")
    hf = tmp_path / "hf"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"),
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        pad_token="[PAD]",
        unk_token="[UNK]",
    )
    tokenizer.save_pretrained(hf)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(hf)
    reference = models.ColBERT(
        model_name_or_path=str(hf),
        query_prefix="[unused0]",
        document_prefix="[unused1]",
        query_length=16,
        document_length=24,
        device="cpu",
        embedding_size=16,
    )
    assert sorted(reference.skiplist) == sorted(load_manifest(folder).skiplist_ids)
    texts = ["the water is cold", "Cancer, risk! " * 10, "  a  ", "What IS a cell?"]
    attending = build_tiny_model(tmp_path / "attending", attend_to_expansion_tokens=True)
    for attend, model_dir in ((False, folder), (True, attending)):
        reference.attend_to_expansion_tokens = attend
        encoder = _encoder(model_dir)
        for kind in ("query", "document"):
            want = reference.tokenize(texts, is_query=kind == "query", pad=False)
            for row, item in enumerate(encoder.model_inputs(texts, kind=kind)):
                n = len(item.input_ids)
                assert want["input_ids"][row, :n].tolist() == item.input_ids.tolist()
                assert want["attention_mask"][row, :n].tolist() == item.attention_mask.tolist()
                assert not want["attention_mask"][row, n:].any()
