"""Turn texts into ColBERT token vectors with HF tokenizers and onnxruntime.

The preprocessing reproduces the reference (Stanford ColBERT, PyLate 1.6) exactly:
texts are stripped (and lowercased when the manifest says so); a marker goes right after the
first token (counting toward the window, so the text is truncated to ``maxlen - 1`` tokens
with [SEP] kept last) or is prepended as text; queries are padded to ``query_maxlen`` with
[MASK] when the model does query expansion, those positions get attention 0 unless
``attend_to_expansion_tokens``, and every query position is returned; documents drop
padding and skiplist (punctuation) tokens after the model. Texts are run in batches of
similar length, padded only to the longest of the batch, and returned in input order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from edge_colbert.errors import InvalidInputError, ModelFolderError
from edge_colbert.manifest import (
    Manifest,
    Marker,
    folder_identity,
    inside_folder,
    load_manifest,
)
from edge_colbert.providers import ORT_ERRORS, create_session

logger = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]

# A text is cut before tokenizing to what the window can hold (see ``_window_text``); texts
# whose first characters yield too few tokens (long runs of whitespace or of characters the
# normalizer drops) are read further, doubling, up to this many characters.
MAX_SCAN_CHARS = 1 << 20

DEFAULT_MODEL_NAME = "all-minilm-l6-v2-colbert-64"
# The package that the top-level models/ folder installs as (pyproject.toml).
BUNDLED_MODELS_PACKAGE = "edge_colbert.models"
MODEL_ENV = "EDGE_COLBERT_MODEL"


def default_model_dir() -> Path:
    """The model used by ``Encoder()``: ``$EDGE_COLBERT_MODEL``, else the bundled folder.

    The bundled folder is a resource of ``edge_colbert.models`` (the top-level ``models/``,
    installed under that name by a wheel and an editable install alike), found through
    ``importlib.resources``. Thread-safe.
    """
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    from importlib import resources  # only Encoder() without a folder needs it

    try:
        bundled = resources.files(BUNDLED_MODELS_PACKAGE) / DEFAULT_MODEL_NAME
    except ModuleNotFoundError:
        bundled = None
    # onnxruntime and tokenizers open files by path, so the resource must be a folder on
    # disk (as pip installs it), not one inside a zip archive.
    if isinstance(bundled, Path) and bundled.is_dir():
        return bundled
    raise ModelFolderError(
        f"the bundled default model {DEFAULT_MODEL_NAME!r} is not installed; pass a model "
        f"folder (Encoder('models/<name>')), set {MODEL_ENV}, or make one with "
        "`edge-colbert export CHECKPOINT OUTDIR`."
    )


@dataclass(frozen=True)
class ModelInput:
    """One text as the graph sees it: token ids, attention mask, and which rows to return."""

    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]
    keep: npt.NDArray[np.bool_]


@dataclass
class _Tokens:
    """One text after tokenizing and truncation, before the marker and padding."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    full_length: int  # tokens before truncation, specials and marker included


class Encoder:
    """Encode queries and documents into L2-normalized float32 token vectors.

    Args:
        model_dir: a model folder made by ``edge-colbert export``; None for the default.
        providers: onnxruntime execution providers (None: the best available).
        threads: intra-op threads for onnxruntime (None: its default).
        language: default language for language-adapter models.
        batch_size: texts per forward pass.
        model_file: a graph of the folder other than the manifest's (e.g. ``model.fp16.onnx``).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        language: str | None = None,
        batch_size: int = 32,
        model_file: str | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.manifest: Manifest = load_manifest(self.model_dir)
        self.batch_size = batch_size
        self._tokenizer = _load_tokenizer(self.model_dir / "tokenizer.json")
        self._front, self._back = _special_layout(self._tokenizer)
        self._longest_token = self._check_token_ids()
        graph = inside_folder(self.model_dir, model_file or self.manifest.model_file, "model_file")
        if not graph.is_file():
            raise ModelFolderError(
                f"{self.model_dir} has no graph {graph.name}; its graphs are "
                f"{', '.join([self.manifest.model_file, *self.manifest.variants.values()])}."
            )
        self._session = create_session(graph, providers, threads=threads)
        self.providers: list[str] = list(self._session.get_providers())
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._fixed = self._fixed_shape(graph)
        self._check_graph(graph)
        self._language = self._resolve_language(language, None)
        self._skip = np.array(sorted(set(self.manifest.skiplist_ids)), dtype=np.int64)
        self._identity = folder_identity(self.manifest, self.model_dir)

    @property
    def dim(self) -> int:
        """Dimension of the token vectors."""
        return self.manifest.dim

    @property
    def identity(self) -> str:
        """The model's identity, as an index records it: name, dimension, the graph's
        SHA-256 prefix and a hash of the document preprocessing (see
        :func:`~edge_colbert.manifest.folder_identity`)."""
        return self._identity

    @property
    def legacy_identity(self) -> str | None:
        """The identity indexes written before the preprocessing hash recorded (see
        :attr:`~edge_colbert.manifest.Manifest.legacy_identity`)."""
        return self.manifest.legacy_identity

    def __repr__(self) -> str:
        return f"Encoder({str(self.model_dir)!r}, {self.identity}, providers={self.providers})"

    def encode_queries(self, texts: Sequence[str], *, language: str | None = None) -> list[Vectors]:
        """Query vectors: ``[query_maxlen, dim]`` each with query expansion, else ``[n, dim]``."""
        inputs = self.model_inputs(texts, kind="query")
        return self._run(inputs, self._resolve_language(language, self._language))

    def encode_documents(
        self, texts: Sequence[str], *, language: str | None = None
    ) -> list[Vectors]:
        """Document vectors ``[kept tokens, dim]``: padding and skiplist tokens removed."""
        inputs = self.model_inputs(texts, kind="document")
        return self._run(inputs, self._resolve_language(language, self._language))

    def model_inputs(
        self, texts: Sequence[str], *, kind: Literal["query", "document"]
    ) -> list[ModelInput]:
        """What the graph sees for each text, before batching: ids, attention, kept rows.

        Queries with expansion are padded to ``query_maxlen`` with the mask token here;
        batching later pads only with attention 0 and drops those rows.
        """
        m = self.manifest
        if kind == "query":
            marker, maxlen = m.query_marker, m.query_maxlen
        elif kind == "document":
            marker, maxlen = m.document_marker, m.doc_maxlen
        else:
            raise InvalidInputError(f"kind must be 'query' or 'document', got {kind!r}")
        out = []
        for tokens in self._tokenize(texts, marker, maxlen, kind, cut=True):
            ids = tokens.ids
            if marker.insert == "after_cls" and marker.token_id is not None:
                ids = [ids[0], marker.token_id, *ids[1:]]
            n = len(ids)
            expand = kind == "query" and m.do_query_expansion
            width = maxlen if expand else n
            input_ids = np.full(width, m.mask_token_id, dtype=np.int64)
            input_ids[:n] = ids
            attention = np.zeros(width, dtype=np.int64)
            attention[: width if expand and m.attend_to_expansion_tokens else n] = 1
            keep = np.ones(width, dtype=bool)
            if kind == "document" and self._skip.size:
                keep = ~np.isin(input_ids, self._skip)
            out.append(ModelInput(input_ids=input_ids, attention_mask=attention, keep=keep))
        return out

    def document_token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character span in ``text`` of each row :meth:`encode_documents` returns for it.

        Specials ([CLS], [SEP]) and the marker get ``(0, 0)``.
        """
        marker = self.manifest.document_marker
        (tokens,) = self._tokenize(
            [text], marker, self.manifest.doc_maxlen, "document", warn=False, cut=True
        )
        stripped = text.strip()
        lead = len(text) - len(text.lstrip())
        # Map positions of the processed text (prefix + lowercased) back to ``text``.
        chars = [i for i, c in enumerate(stripped) for _ in (c.lower() if self._lower else c)]
        prefix = len(marker.text) if marker.insert == "text_prefix" else 0
        spans: list[tuple[int, int]] = []
        for token_id, (start, end) in zip(tokens.ids, tokens.offsets, strict=True):
            if token_id in self.manifest.skiplist_ids:
                continue
            if end <= prefix or start == end:
                spans.append((0, 0))
            else:
                first = chars[max(start, prefix) - prefix]
                last = chars[min(end - prefix, len(chars)) - 1]
                spans.append((lead + first, lead + last + 1))
        if marker.insert == "after_cls":
            spans.insert(1, (0, 0))
        return spans

    def count_document_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text before truncation, specials and marker included.

        The whole text is tokenized (that is the point): pass chunks, not whole files.
        """
        m = self.manifest
        tokens = self._tokenize(texts, m.document_marker, m.doc_maxlen, "document", warn=False)
        return [t.full_length for t in tokens]

    @property
    def _lower(self) -> bool:
        return self.manifest.lowercase

    def _tokenize(
        self,
        texts: Sequence[str],
        marker: Marker,
        maxlen: int,
        kind: str,
        *,
        warn: bool = True,
        cut: bool = False,
    ) -> list[_Tokens]:
        """Tokenize and truncate so that specials + marker + tokens fit in ``maxlen``.

        With ``cut``, each text is first cut to what the window can hold (see
        :meth:`_window_text`), so a 50 MB text costs what its first few thousand characters
        cost; ``full_length`` then counts only the tokens of what was read.
        """
        if isinstance(texts, str):
            raise InvalidInputError(f"pass a list of {kind} texts, not one string")
        prepared = []
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(
                    f"{kind} {position} is {type(text).__name__}, not str; pass text strings"
                )
            cleaned = text.strip()
            if not cleaned:
                raise InvalidInputError(
                    f"{kind} {position} is empty or only whitespace; drop it before encoding"
                )
            if self._lower:
                cleaned = cleaned.lower()
            if marker.insert == "text_prefix":
                cleaned = marker.text + cleaned
            prepared.append(cleaned)
        extra = 1 if marker.insert == "after_cls" else 0
        budget = maxlen - extra - self._front - self._back
        if budget <= 0:
            raise ModelFolderError(
                f"{kind} window {maxlen} leaves no room for text after the special tokens; "
                "re-export with a larger max length."
            )
        if cut:
            encodings = [self._window_text(text, budget) for text in prepared]
        else:
            encodings = self._encode(prepared)
        out = []
        truncated = 0
        for encoding in encodings:
            ids, offsets = list(encoding.ids), list(encoding.offsets)
            full = len(ids) + extra
            content = len(ids) - self._front - self._back
            if content > budget:
                truncated += 1
                keep = list(range(self._front + budget)) + list(
                    range(len(ids) - self._back, len(ids))
                )
                ids = [ids[i] for i in keep]
                offsets = [offsets[i] for i in keep]
            out.append(_Tokens(ids=ids, offsets=offsets, full_length=full))
        if truncated and warn:
            logger.warning(
                "%d of %d %s texts were longer than the %d-token window and were truncated; "
                "split long texts into chunks (edge-colbert index does) to encode all of them",
                truncated,
                len(prepared),
                kind,
                maxlen,
            )
        return out

    def _encode(self, texts: list[str]) -> list[Any]:
        """``encode_batch`` with specials, a tokenizer panic turned into a model-folder error.

        A tokenizer.json whose regex backtracks too far makes the Rust side panic; pyo3 raises
        that as ``PanicException``, a ``BaseException`` that ``except Exception`` misses.
        """
        try:
            return list(self._tokenizer.encode_batch(texts, add_special_tokens=True))
        except BaseException as error:
            mapped = _panic_error(error, self.model_dir / "tokenizer.json")
            if mapped is None:
                raise
            raise mapped from error

    def _window_text(self, text: str, budget: int) -> Any:
        """The encoding of the start of ``text`` that holds its first ``budget`` tokens.

        A token covers at most ``longest`` characters (the tokenizer's longest token), so the
        first ``budget + 1`` tokens lie within ``(budget + 1) * longest`` characters of text
        that makes tokens. The cut goes back to a whitespace so that no word is split (its
        tokens are then those of the whole text); when too few tokens come out (runs of
        whitespace or of characters the normalizer drops), twice as much is read, up to
        :data:`MAX_SCAN_CHARS`.
        """
        limit = (budget + 2) * self._longest_token + 16
        while True:
            if len(text) <= limit:
                return self._encode([text])[0]
            end = limit
            space = max(text.rfind(" ", limit // 2, limit), text.rfind("\n", limit // 2, limit))
            if space > 0:
                end = space
            encoding = self._encode([text[:end]])[0]
            if len(encoding.ids) - self._front - self._back > budget or limit >= MAX_SCAN_CHARS:
                return encoding
            limit *= 2

    def _check_token_ids(self) -> int:
        """Refuse manifest token ids outside the tokenizer's vocabulary; return the length
        in characters of the longest token (for :meth:`_window_text`)."""
        m = self.manifest
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        size = max(len(vocab), max(vocab.values(), default=-1) + 1)
        named = {
            "mask_token_id": m.mask_token_id,
            "pad_token_id": m.pad_token_id,
            "query_marker.token_id": m.query_marker.token_id,
            "document_marker.token_id": m.document_marker.token_id,
            "the largest skiplist id": max(m.skiplist_ids, default=None),
        }
        for key, value in named.items():
            if value is not None and not 0 <= value < size:
                raise ModelFolderError(
                    f"{self.model_dir}: {key} is {value}, outside the tokenizer's "
                    f"vocabulary of {size} tokens; the manifest and tokenizer.json do not "
                    "belong together. Re-export the model."
                )
        return max((len(token) for token in vocab), default=1)

    def _run(self, inputs: list[ModelInput], language: int | None) -> list[Vectors]:
        """Run the graph in length-sorted batches and return kept rows in input order.

        A graph with static shapes (the NPU export) gets exactly its ``[rows, tokens]``:
        every text padded to its token count, batches filled up with padding rows. The
        attention mask keeps padding out of every real token's vectors.
        """
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i].input_ids), reverse=True)
        results: list[Vectors] = [np.zeros((0, self.dim), dtype=np.float32)] * len(inputs)
        step = self._fixed[0] if self._fixed else self.batch_size
        for start in range(0, len(order), step):
            batch = [inputs[i] for i in order[start : start + step]]
            height, width = self._fixed or (len(batch), max(len(x.input_ids) for x in batch))
            input_ids = np.full((height, width), self.manifest.pad_token_id, dtype=np.int64)
            attention = np.zeros((height, width), dtype=np.int64)
            for row, item in enumerate(batch):
                input_ids[row, : len(item.input_ids)] = item.input_ids
                attention[row, : len(item.attention_mask)] = item.attention_mask
            vectors = self._forward(input_ids, attention, language)
            for row, (i, item) in enumerate(zip(order[start:], batch, strict=False)):
                rows = vectors[row, : len(item.keep)][item.keep]
                results[i] = np.ascontiguousarray(rows)
        return results

    def _forward(
        self, input_ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64], language: int | None
    ) -> Vectors:
        """One forward pass: float32 vectors, L2-normalized again (fp16 graphs round)."""
        feeds: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        name = self.manifest.language_input
        if name is not None and name in self._input_names:
            feeds[name] = np.full(input_ids.shape[0], language or 0, dtype=np.int64)
        try:
            (output,) = self._session.run([self.manifest.output], feeds)
        except ORT_ERRORS as error:
            raise ModelFolderError(
                f"{self.model_dir}: the graph failed on a batch of shape {input_ids.shape} "
                f"({str(error).splitlines()[0]}); re-export the model."
            ) from error
        vectors = np.asarray(output, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
        normalized: Vectors = vectors / np.maximum(norms, np.float32(1e-12))
        return normalized

    def _fixed_shape(self, graph: Path) -> tuple[int, int] | None:
        """``(rows, tokens)`` of a graph with static input shapes, else None.

        NPU execution providers (QNN, some OpenVINO devices) compile one shape, so the
        ``--target npu`` export fixes it. Every text must fit in its tokens.

        Raises:
            ModelFolderError: the fixed token count is below the manifest's query or
                document length, so some texts could not be encoded.
        """
        shapes = [i.shape for i in self._session.get_inputs() if i.name == "input_ids"]
        shape = shapes[0] if shapes else []  # no input_ids: _check_graph says what is wrong
        if len(shape) != 2 or not all(isinstance(d, int) and d > 0 for d in shape):
            return None
        rows, tokens = int(shape[0]), int(shape[1])
        m = self.manifest
        longest = max(m.query_maxlen, m.doc_maxlen)
        if tokens < longest:
            raise ModelFolderError(
                f"{graph} takes fixed inputs of {tokens} tokens, but the manifest allows "
                f"{longest} (query_maxlen {m.query_maxlen}, doc_maxlen {m.doc_maxlen}); "
                "re-export it with --target npu from the same settings."
            )
        return rows, tokens

    def _check_graph(self, graph: Path) -> None:
        """Refuse a graph whose inputs, output name or dimension differ from the manifest."""
        m = self.manifest
        wanted = {"input_ids", "attention_mask"}
        if m.language_input is not None:
            wanted.add(m.language_input)
        missing = sorted(wanted - self._input_names)
        unknown = sorted(self._input_names - wanted - {"token_type_ids"})
        if missing or unknown:
            raise ModelFolderError(
                f"{graph} has inputs {sorted(self._input_names)} but the manifest needs "
                f"{sorted(wanted)}; the graph and manifest do not belong together. Re-export."
            )
        outputs = {o.name: o for o in self._session.get_outputs()}
        if m.output not in outputs:
            raise ModelFolderError(
                f"{graph} has no output {m.output!r} (outputs: {', '.join(outputs)}); re-export."
            )
        # One forward pass at the longest window the manifest allows: the graph must accept
        # it (a position table shorter than the window fails here, with the folder named,
        # not in the middle of an index run), and it gives the output's width.
        rows, tokens = self._fixed or (1, max(m.query_maxlen, m.doc_maxlen))
        ids = np.full((rows, tokens), m.pad_token_id, dtype=np.int64)
        probe = self._forward(ids, np.ones_like(ids), 0)
        width = int(probe.shape[-1]) if probe.ndim == 3 else None
        if probe.ndim != 3 or probe.shape[:2] != (rows, tokens):
            raise ModelFolderError(
                f"{graph} returns {m.output!r} of shape {probe.shape} for input ids of shape "
                f"{(rows, tokens)}; expected [rows, tokens, {m.dim}]. Re-export the model."
            )
        if width != m.dim:
            raise ModelFolderError(
                f"{graph} outputs {width}-d vectors but the manifest says dim {m.dim}; "
                "the graph and manifest do not belong together. Re-export the model."
            )

    def _resolve_language(self, language: str | None, fallback: int | None) -> int | None:
        """Index of ``language`` in the manifest's languages (None: ``fallback``, else the
        manifest's default language). None for a model without language adapters."""
        m = self.manifest
        if not m.languages:
            if language is not None:
                raise InvalidInputError(
                    f"model {m.name} has no language adapters; leave language unset "
                    f"(got {language!r})"
                )
            return None
        if language is None:
            if fallback is not None:
                return fallback
            language = m.default_language or m.languages[0]
        if language not in m.languages:
            raise InvalidInputError(
                f"language {language!r} is not one of the model's languages: "
                f"{', '.join(m.languages)}"
            )
        return m.languages.index(language)


def _panic_error(error: BaseException, path: Path) -> ModelFolderError | None:
    """A tokenizer's Rust panic as :class:`ModelFolderError`; None for any other error."""
    if type(error).__name__ != "PanicException":
        return None
    first = str(error).splitlines()[0] if str(error) else "panic"
    return ModelFolderError(
        f"{path} crashed while tokenizing ({first}); the tokenizer is damaged or crafted "
        "(e.g. a regex that backtracks without end). Copy the folder again or re-export."
    )


def _load_tokenizer(path: Path) -> Tokenizer:
    """Load ``tokenizer.json`` with padding and truncation off (the encoder does both)."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises plain Exception for a bad file
        raise ModelFolderError(
            f"{path} cannot be loaded by the tokenizers library ({error}); the file is "
            "damaged or from an incompatible version. Copy the folder again or re-export."
        ) from error
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _special_layout(tokenizer: Tokenizer) -> tuple[int, int]:
    """How many special tokens the post-processor puts before and after the text."""
    probe = "a b c"
    try:
        bare = tokenizer.encode(probe, add_special_tokens=False).ids
        full = tokenizer.encode(probe, add_special_tokens=True).ids
    except BaseException as error:
        mapped = _panic_error(error, Path("tokenizer.json"))
        if mapped is None:
            raise
        raise mapped from error
    for front in range(len(full) - len(bare) + 1):
        if full[front : front + len(bare)] == bare:
            return front, len(full) - len(bare) - front
    raise ModelFolderError(
        "tokenizer.json's post-processor does not wrap the text in special tokens as "
        "expected; re-export the model."
    )
