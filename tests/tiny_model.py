"""A tiny ColBERT-shaped model folder, built in milliseconds without torch, for tests.

``build_tiny_model`` writes a complete model folder: a WordPiece ``tokenizer.json``, a small
ONNX graph made with ``onnx.helper`` and the manifest. The graph is a real (if tiny)
contextual encoder: token + position embeddings, one single-head softmax attention step whose
keys are masked by ``attention_mask`` (so every output depends on the other tokens and on the
mask), a linear projection to ``dim`` and L2 normalization. Its weights are seeded and also
saved as ``<folder>.weights.npz`` beside (not inside) the model folder, so that
``reference_forward`` can run the same math in plain numpy as an independent check of the
runtime.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from edge_colbert.manifest import Manifest, Marker, checksum_files, write_manifest

SPECIALS = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCTUATION = list(string.punctuation)
# Added tokens for the ``text_prefix`` marker mode (as mxbai-edge-colbert's "[Q] "/"[D] ").
PREFIX_TOKENS = ["[Q]", "[D]"]

_COMMON_WORDS = """
the of and to a in is it you that he was for on are with as his they be at one have this
from or had by hot word but what some we can out other were all there when up use your how
said an each she which do their time if will way about many then them write would like so
these her long make thing see him two has look more day could go come did number sound no
most people my over know water than call first who may down side been now find any new work
part take get place made live where after back little only round man year came show every
good me give our under name very through just form sentence great think say help low line
differ turn cause much mean before move right boy old too same tell does set three want air
well also play small end put home read hand port large spell add even land here must big
high such follow act why ask men change went light kind off need house picture try us again
animal point mother world near build self earth father head stand own page should country
found answer school grow study still learn plant cover food sun four between state keep eye
never last let thought city tree cross farm hard start might story saw far sea draw left late
run while press close night real life few north open seem together next white children begin
got walk example ease paper group always music those both mark often letter until mile river
car feet care second book carry took science eat room friend began idea fish mountain stop
once base hear horse cut sure watch color face wood main enough plain girl usual young ready
above ever red list though feel talk bird soon body dog family direct pose leave song measure
door product black short numeral class wind question happen complete ship area half rock
order fire south problem piece told knew pass since top whole king space heard best hour
better true during hundred five remember step early hold west ground interest reach fast verb
sing listen six table travel less morning ten simple several vowel toward war lay against
pattern slow center love person money serve appear road map rain rule govern pull cold notice
voice unit power town fine certain fly fall lead cry dark machine note wait plan figure star
box noun field rest correct able pound done beauty drive stood contain front teach week final
gave green oh quick develop ocean warm free minute strong special mind behind clear tail
produce fact street inch multiply nothing course stay wheel full force blue object decide
surface deep moon island foot system busy test record boat common gold possible plane stead
dry wonder laugh thousand ago ran check game shape equate miss brought heat snow tire bring
yes distant fill east paint language among cell protein gene cancer patient risk study data
"""
WORDS = _COMMON_WORDS.split()
SUBWORDS = ["##s", "##es", "##ed", "##ing", "##ly", "##er", "##est", "##al", "##ion", "##tion"]
SUBWORDS += [f"##{c}" for c in string.ascii_lowercase]
LETTERS = list(string.ascii_lowercase)
DIGITS = list(string.digits)


def vocabulary() -> list[str]:
    """The tiny WordPiece vocabulary, in id order (``[PAD]`` is 0, ``[unused0]`` is 1)."""
    vocab: list[str] = []
    for token in SPECIALS + PUNCTUATION + DIGITS + LETTERS + WORDS + SUBWORDS:
        if token not in vocab:
            vocab.append(token)
    return vocab


def _make_tokenizer(lowercase: bool) -> Tokenizer:
    """A BERT-style WordPiece tokenizer over :func:`vocabulary`, plus the prefix tokens."""
    vocab = {token: i for i, token in enumerate(vocabulary())}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens(SPECIALS + PREFIX_TOKENS)
    return tokenizer


def _weights(
    vocab_size: int,
    max_positions: int,
    hidden: int,
    dim: int,
    *,
    token_type_ids: bool,
    n_languages: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Seeded random weights, scaled so that the attention is neither flat nor one-hot."""
    rng = np.random.default_rng(seed)

    def mat(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    weights = {
        "tok_emb": mat(vocab_size, hidden),
        "pos_emb": mat(max_positions, hidden, scale=0.3),
        "wq": mat(hidden, hidden, scale=hidden**-0.5),
        "wk": mat(hidden, hidden, scale=hidden**-0.5),
        "wv": mat(hidden, hidden, scale=hidden**-0.5),
        "wo": mat(hidden, dim, scale=hidden**-0.5),
    }
    if token_type_ids:
        weights["type_emb"] = mat(2, hidden, scale=0.3)
    if n_languages:
        weights["lang_emb"] = mat(n_languages, hidden, scale=0.5)
    return weights


def _graph(
    weights: dict[str, np.ndarray],
    *,
    hidden: int,
    dim: int,
    token_type_ids: bool,
    language_input: str | None,
    fixed_shape: tuple[int, int] | None = None,
) -> onnx.ModelProto:
    """The ONNX graph: embeddings, one masked attention step, projection, L2 normalization.

    ``fixed_shape`` gives every input static ``[rows, tokens]`` dims, as an NPU export has.
    """
    nodes = []
    rows_dim: str | int = fixed_shape[0] if fixed_shape else "batch"
    batch_tokens: list[str | int] = list(fixed_shape) if fixed_shape else ["batch", "tokens"]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, batch_tokens),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, batch_tokens),
    ]
    init = [numpy_helper.from_array(v, name=k) for k, v in weights.items()]
    init += [
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero_i"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one_i"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one_f"),
        numpy_helper.from_array(np.array(-1e4, dtype=np.float32), "neg_big"),
        numpy_helper.from_array(np.array(hidden**-0.5, dtype=np.float32), "inv_sqrt_h"),
    ]
    n = helper.make_node
    nodes += [
        n("Gather", ["tok_emb", "input_ids"], ["x_tok"]),
        n("Shape", ["input_ids"], ["shape"]),
        n("Gather", ["shape", "one_i"], ["n_tokens"], axis=0),
        n("Range", ["zero_i", "n_tokens", "one_i"], ["positions"]),
        n("Gather", ["pos_emb", "positions"], ["x_pos"]),
        n("Add", ["x_tok", "x_pos"], ["x0"]),
    ]
    last = "x0"
    if token_type_ids:
        inputs.append(
            helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, batch_tokens)
        )
        nodes += [
            n("Gather", ["type_emb", "token_type_ids"], ["x_type"]),
            n("Add", [last, "x_type"], ["x1"]),
        ]
        last = "x1"
    if language_input is not None:
        inputs.append(helper.make_tensor_value_info(language_input, TensorProto.INT64, [rows_dim]))
        nodes += [
            n("Gather", ["lang_emb", language_input], ["x_lang"]),
            n("Unsqueeze", ["x_lang", "axis1"], ["x_lang3"]),
            n("Add", [last, "x_lang3"], ["x2"]),
        ]
        last = "x2"
    nodes += [
        n("MatMul", [last, "wq"], ["q"]),
        n("MatMul", [last, "wk"], ["k"]),
        n("MatMul", [last, "wv"], ["v"]),
        n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        n("MatMul", ["q", "kt"], ["scores_raw"]),
        n("Mul", ["scores_raw", "inv_sqrt_h"], ["scores_scaled"]),
        n("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        n("Sub", ["one_f", "mask_f"], ["inv_mask"]),
        n("Mul", ["inv_mask", "neg_big"], ["bias2"]),
        n("Unsqueeze", ["bias2", "axis1"], ["bias"]),
        n("Add", ["scores_scaled", "bias"], ["scores"]),
        n("Softmax", ["scores"], ["probs"], axis=-1),
        n("MatMul", ["probs", "v"], ["context"]),
        n("Add", [last, "context"], ["h"]),
        n("Tanh", ["h"], ["h_act"]),
        n("MatMul", ["h_act", "wo"], ["proj"]),
        n("LpNormalization", ["proj"], ["embeddings"], axis=-1, p=2),
    ]
    output = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [*batch_tokens, dim])
    graph = helper.make_graph(nodes, "tiny_colbert", inputs, [output], initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _marker(mode: str, token_id: int, text: str) -> Marker:
    """The manifest marker for ``mode``: after [CLS] (by id), a text prefix, or none."""
    if mode == "after_cls":
        return Marker(insert="after_cls", text=text, token_id=token_id)
    if mode == "text_prefix":
        return Marker(insert="text_prefix", text=("[Q] " if token_id == 1 else "[D] "))
    if mode == "none":
        return Marker()
    raise ValueError(f"unknown marker mode {mode!r}")


def weights_path(model_dir: Path) -> Path:
    """Where the builder saves the weights of ``model_dir`` (beside it, not inside)."""
    return model_dir.parent / f"{model_dir.name}.weights.npz"


def build_tiny_model(
    out_dir: Path,
    *,
    dim: int = 16,
    hidden: int = 24,
    seed: int = 0,
    query_maxlen: int = 16,
    doc_maxlen: int = 24,
    do_query_expansion: bool = True,
    attend_to_expansion_tokens: bool = False,
    query_marker: str = "after_cls",
    lowercase: bool = False,
    name: str = "tiny-colbert",
    tokenizer_lowercase: bool = True,
    token_type_ids: bool = False,
    languages: Sequence[str] = (),
    manifest_dim: int | None = None,
    fixed_shape: tuple[int, int] | None = None,
) -> Path:
    """Write a complete tiny model folder at ``out_dir`` and return it.

    ``query_marker`` ("after_cls", "text_prefix" or "none") sets the insert mode of both
    markers. ``lowercase`` is the manifest flag (the runtime lowercases);
    ``tokenizer_lowercase`` is whether the tokenizer's normalizer lowercases by itself.
    ``token_type_ids`` adds that graph input; ``languages`` makes an adapter-style model with
    a ``language`` input (an index into ``languages``). ``manifest_dim`` records a different
    ``dim`` in the manifest than the graph has, to test that the runtime refuses it.
    ``fixed_shape`` makes the graph's inputs static ``[rows, tokens]`` (an NPU-style graph).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _make_tokenizer(tokenizer_lowercase)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    language_input = "language" if languages else None
    weights = _weights(
        vocab_size,
        max(query_maxlen, doc_maxlen) + 8,
        hidden,
        dim,
        token_type_ids=token_type_ids,
        n_languages=len(languages),
        seed=seed,
    )
    # Any: numpy 2's stubs match a **dict of arrays against savez's allow_pickle: bool.
    arrays: dict[str, Any] = dict(weights)
    np.savez(weights_path(out_dir), **arrays)
    graph = _graph(
        weights,
        hidden=hidden,
        dim=dim,
        token_type_ids=token_type_ids,
        language_input=language_input,
        fixed_shape=fixed_shape,
    )
    onnx.save(graph, str(out_dir / "model.onnx"))

    def tid(token: str) -> int:
        found = tokenizer.token_to_id(token)
        if found is None:
            raise KeyError(token)
        return int(found)

    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_type_ids else [])
    manifest = Manifest(
        name=name,
        dim=dim if manifest_dim is None else manifest_dim,
        query_maxlen=query_maxlen,
        doc_maxlen=doc_maxlen,
        query_marker=_marker(query_marker, tid("[unused0]"), "[unused0]"),
        document_marker=_marker(query_marker, tid("[unused1]"), "[unused1]"),
        mask_token_id=tid("[MASK]"),
        pad_token_id=tid("[PAD]"),
        do_query_expansion=do_query_expansion,
        attend_to_expansion_tokens=attend_to_expansion_tokens,
        skiplist_ids=tuple(tid(p) for p in PUNCTUATION),
        source_checkpoint="tests/tiny_model.py",
        source_format="synthetic",
        backbone="tiny-attention",
        native_dim=dim,
        lowercase=lowercase,
        inputs=tuple(inputs),
        languages=tuple(languages),
        language_input=language_input,
        default_language=languages[0] if languages else None,
        files=checksum_files(out_dir, ["model.onnx", "tokenizer.json"]),
    )
    write_manifest(manifest, out_dir)
    return out_dir


def reference_forward(
    model_dir: Path,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    *,
    token_type_ids: np.ndarray | None = None,
    language: np.ndarray | None = None,
) -> np.ndarray:
    """The tiny graph's math in plain numpy, from the saved weights: ``[batch, tokens, dim]``."""
    w = dict(np.load(weights_path(Path(model_dir))))
    ids = np.asarray(input_ids, dtype=np.int64)
    mask = np.asarray(attention_mask, dtype=np.float32)
    x = w["tok_emb"][ids] + w["pos_emb"][np.arange(ids.shape[1])][None]
    if token_type_ids is not None:
        x = x + w["type_emb"][np.asarray(token_type_ids, dtype=np.int64)]
    if language is not None:
        x = x + w["lang_emb"][np.asarray(language, dtype=np.int64)][:, None, :]
    hidden = x.shape[-1]
    scores = (x @ w["wq"]) @ np.swapaxes(x @ w["wk"], 1, 2) * hidden**-0.5
    scores = scores + ((1.0 - mask) * -1e4)[:, None, :]
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    h = np.tanh(x + probs @ (x @ w["wv"]))
    out = h @ w["wo"]
    return np.asarray(out / np.linalg.norm(out, axis=-1, keepdims=True), dtype=np.float32)
