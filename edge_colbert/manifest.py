"""Read, validate and write a model folder's manifest, ``edge_colbert.json``.

The manifest is the contract between the export step and the runtime: it says everything
the runtime needs to reproduce the reference preprocessing (markers, lengths, query
expansion, skiplist) without the original checkpoint. See ``docs/model-folder.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from edge_colbert.errors import ModelFolderError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "edge_colbert.json"
FORMAT_NAME = "edge-colbert-model"
FORMAT_VERSION = 1

MarkerInsert = Literal["after_cls", "text_prefix", "none"]
_MARKER_INSERTS = ("after_cls", "text_prefix", "none")
_QUANTIZATIONS = ("none", "int8", "fp16", "qdq")

# Bounds on the manifest's numbers, so that a crafted manifest cannot make the runtime
# allocate gigabytes (``query_maxlen`` 10**9 once asked for 7.45 GiB) before the graph says
# no. No ColBERT checkpoint has a longer window or a wider vector; the encoder then checks
# the graph itself accepts its window (one probe forward pass at open).
MAX_WINDOW = 8192
MAX_DIM = 8192
MAX_TOKEN_ID = 2**31 - 1
MAX_SKIPLIST = 100_000


@dataclass(frozen=True)
class Marker:
    """How a query or document marker is added to the token sequence.

    ``after_cls``: the token ``token_id`` goes right after the first token ([CLS] or <s>), as
    Stanford ColBERT and PyLate do. ``text_prefix``: ``text`` is prepended to the raw text
    before tokenizing. ``none``: no marker.
    """

    insert: MarkerInsert = "none"
    text: str = ""
    token_id: int | None = None

    def __post_init__(self) -> None:
        if self.insert not in _MARKER_INSERTS:
            raise ModelFolderError(
                f"marker insert mode {self.insert!r} is unknown; expected one of "
                f"{', '.join(_MARKER_INSERTS)}. Re-export the model with this edge-colbert."
            )
        if self.insert == "after_cls" and self.token_id is None:
            raise ModelFolderError(
                "a marker inserted after [CLS] needs its token_id in the manifest; "
                "re-export the model."
            )


@dataclass(frozen=True)
class FileEntry:
    """A file of the model folder with its size and SHA-256."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to know about a model folder.

    Build one with :func:`load_manifest` (reads and validates ``edge_colbert.json``) or
    directly in the export step, then :func:`write_manifest`.
    """

    name: str
    dim: int
    query_maxlen: int
    doc_maxlen: int
    query_marker: Marker
    document_marker: Marker
    mask_token_id: int
    pad_token_id: int
    do_query_expansion: bool
    attend_to_expansion_tokens: bool
    skiplist_ids: tuple[int, ...]
    source_checkpoint: str = ""
    source_revision: str = ""
    source_format: str = ""
    backbone: str = ""
    native_dim: int | None = None
    dim_reduction: str = "none"
    lowercase: bool = False
    model_file: str = "model.onnx"
    inputs: tuple[str, ...] = ("input_ids", "attention_mask")
    output: str = "embeddings"
    languages: tuple[str, ...] = ()
    language_input: str | None = None
    default_language: str | None = None
    quantization: str = "none"
    variants: dict[str, str] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def fingerprint(self) -> str:
        """A short, stable id of the exported weights: the main graph's SHA-256 prefix.

        Variants of one export (fp16, QDQ) share it, since they encode the same model.
        ``"unchecked"`` when the manifest records no checksum (see :func:`folder_identity`).
        """
        entry = self.files.get(self.model_file)
        return entry.sha256[:12] if entry else "unchecked"

    def preprocessing_digest(self, tokenizer_sha256: str) -> str:
        """A short hash of everything besides the graph that shapes a stored vector.

        The document side only (window, marker, skiplist, case, inputs, output, languages)
        and the tokenizer's SHA-256: query settings (``query_maxlen``, expansion) may be
        tuned without re-indexing, since queries are always encoded by the current folder.
        """
        fields = {
            "dim": self.dim,
            "doc_maxlen": self.doc_maxlen,
            "document_marker": asdict(self.document_marker),
            "pad_token_id": self.pad_token_id,
            "skiplist_ids": sorted(set(self.skiplist_ids)),
            "lowercase": self.lowercase,
            "inputs": list(self.inputs),
            "output": self.output,
            "languages": list(self.languages),
            "language_input": self.language_input,
            "default_language": self.default_language,
            "tokenizer": tokenizer_sha256,
        }
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]

    @property
    def identity(self) -> str:
        """What an index records about the model that wrote it, and compares on open.

        The name, the dimension, the graph's SHA-256 prefix and :meth:`preprocessing_digest`,
        from the manifest's checksums. A manifest without them says ``unchecked`` here:
        :func:`folder_identity` hashes the files themselves, and is what an index records.
        """
        tokenizer = self.files.get("tokenizer.json")
        digest = self.preprocessing_digest(tokenizer.sha256 if tokenizer else "unchecked")
        return f"{self.name} ({self.dim}-d, {self.fingerprint}, {digest})"

    @property
    def legacy_identity(self) -> str | None:
        """The identity edge-colbert 0.x recorded (name, dimension, graph hash), accepted on
        opening an index written then; None when the manifest has no graph checksum, since
        such an identity never pinned a graph."""
        if self.model_file not in self.files:
            return None
        return f"{self.name} ({self.dim}-d, {self.fingerprint})"

    def to_json(self) -> dict[str, Any]:
        """The manifest as the JSON object stored in ``edge_colbert.json``."""
        data = asdict(self)
        data = {"format": FORMAT_NAME, **data}
        data["skiplist_ids"] = list(self.skiplist_ids)
        data["inputs"] = list(self.inputs)
        data["languages"] = list(self.languages)
        return data


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks so that large graphs do not fill memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_files(model_dir: Path, names: list[str]) -> dict[str, FileEntry]:
    """Checksums of the named files of a model folder, for the manifest's ``files``."""
    return {
        name: FileEntry(
            sha256=file_sha256(model_dir / name), bytes=(model_dir / name).stat().st_size
        )
        for name in names
    }


def folder_identity(manifest: Manifest, folder: Path) -> str:
    """The identity of a model folder: :attr:`Manifest.identity`, with the graph's and the
    tokenizer's SHA-256 computed from the files when the manifest records none.

    Two folders with one name and dimension but different graphs then never share an
    identity, so their vectors never mix in one index. Hashing the bundled 22 MB graph takes
    about 40 ms; a folder with checksums (every export) costs nothing more here, since
    :func:`load_manifest` has already verified them.
    """
    graph = manifest.files.get(manifest.model_file)
    tokenizer = manifest.files.get("tokenizer.json")
    graph_sha = graph.sha256 if graph else file_sha256(folder / manifest.model_file)
    tokenizer_sha = tokenizer.sha256 if tokenizer else file_sha256(folder / "tokenizer.json")
    digest = manifest.preprocessing_digest(tokenizer_sha)
    return f"{manifest.name} ({manifest.dim}-d, {graph_sha[:12]}, {digest})"


def inside_folder(folder: Path, name: str, field: str) -> Path:
    """``folder / name``, refused unless it stays inside ``folder`` (symbolic links followed).

    A manifest from elsewhere must not make the runtime load a graph, or hash and echo the
    size of a file, outside its own folder (``"model_file": "/etc/passwd"`` or ``../x``).

    Raises:
        ModelFolderError: the path is absolute, climbs out of the folder, or is empty.
    """
    root = folder.resolve()
    candidate = Path(name)
    if not name or candidate.is_absolute() or candidate.drive:
        raise ModelFolderError(
            f"{folder / MANIFEST_NAME}: {field} {name!r} is not a path inside the model "
            "folder; a manifest may only name files of its own folder. Re-export the model."
        )
    resolved = (root / candidate).resolve()
    if resolved != root and root not in resolved.parents:
        raise ModelFolderError(
            f"{folder / MANIFEST_NAME}: {field} {name!r} points outside the model folder "
            f"({resolved}); the folder was refused. Re-export the model."
        )
    return resolved


def write_manifest(manifest: Manifest, model_dir: str | Path) -> Path:
    """Write ``edge_colbert.json`` into ``model_dir`` and return its path."""
    path = Path(model_dir) / MANIFEST_NAME
    path.write_text(
        json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    return path


def _marker(data: Any, key: str) -> Marker:
    if data is None:
        return Marker()
    if not isinstance(data, dict):
        raise ModelFolderError(
            f"manifest field {key!r} must be an object, got {type(data).__name__}"
        )
    token_id = data.get("token_id")
    if token_id is not None and not _token_id(token_id):
        raise ModelFolderError(
            f"manifest field {key!r}: token_id must be a token id from 0 to {MAX_TOKEN_ID}, "
            f"got {token_id!r}; re-export the model."
        )
    return Marker(
        insert=data.get("insert", "none"),
        text=str(data.get("text", "")),
        token_id=token_id,
    )


def _require(data: dict[str, Any], key: str, kind: type, where: Path) -> Any:
    if key not in data:
        raise ModelFolderError(
            f"{where} lacks the field {key!r}; the folder was made by another tool or is "
            "damaged. Re-export it with `edge-colbert export`."
        )
    value = data[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ModelFolderError(
            f"{where}: field {key!r} must be {kind.__name__}, got {type(value).__name__} "
            f"({value!r}). Re-export the model."
        )
    return value


def _files(data: Any, where: Path) -> dict[str, FileEntry]:
    """The ``files`` table: name -> size and SHA-256, each entry checked."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ModelFolderError(f"{where}: field 'files' must be an object; re-export the model.")
    files = {}
    for name, entry in data.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("bytes"), int)
        ):
            raise ModelFolderError(
                f"{where}: the checksum entry of {name!r} needs 'sha256' (text) and 'bytes' "
                "(integer); the manifest is damaged. Re-export the model."
            )
        files[str(name)] = FileEntry(sha256=entry["sha256"], bytes=entry["bytes"])
    return files


def parse_manifest(data: Any, where: Path) -> Manifest:
    """Validate a decoded manifest object and build a :class:`Manifest`.

    Raises:
        ModelFolderError: for any missing, mistyped or out-of-range field.
    """
    try:
        return _parse_manifest(data, where)
    except (TypeError, ValueError, AttributeError) as error:
        # Optional fields are converted leniently; a value that cannot be converted at all
        # (``"native_dim": "wide"``) means the file was edited by hand or is damaged.
        raise ModelFolderError(
            f"{where} has a field of the wrong type ({error}); re-export the model."
        ) from error


def _optional_int(data: dict[str, Any], key: str, where: Path) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFolderError(
            f"{where}: field {key!r} must be an integer or null, got {value!r}; re-export."
        )
    return value


def _token_id(value: Any) -> bool:
    """Whether ``value`` can be a token id: an integer that fits an int64 tensor and a vocab."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_ID


_DEFAULT_INPUTS = ("input_ids", "attention_mask")
_T = TypeVar("_T")


def _field(where: Path, key: str, convert: Callable[[], _T]) -> _T:
    """Convert one optional field, naming it if its value has the wrong shape."""
    try:
        return convert()
    except (TypeError, ValueError, AttributeError) as error:
        raise ModelFolderError(
            f"{where}: field {key!r} has the wrong type or shape ({error}); re-export the model."
        ) from error


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"expected a list of strings, got {type(value).__name__}")
    return tuple(str(item) for item in value)


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


def _parse_manifest(data: Any, where: Path) -> Manifest:
    if not isinstance(data, dict):
        raise ModelFolderError(f"{where} must hold a JSON object; re-export the model.")
    if data.get("format") != FORMAT_NAME:
        raise ModelFolderError(
            f"{where} is not an edge-colbert manifest (format={data.get('format')!r}); "
            "make a model folder with `edge-colbert export CHECKPOINT OUTDIR`."
        )
    version = _require(data, "format_version", int, where)
    if version > FORMAT_VERSION:
        raise ModelFolderError(
            f"{where} has format version {version}, newer than the {FORMAT_VERSION} this "
            "edge-colbert reads; upgrade edge-colbert (pip install -U edge-colbert)."
        )
    dim = _require(data, "dim", int, where)
    query_maxlen = _require(data, "query_maxlen", int, where)
    doc_maxlen = _require(data, "doc_maxlen", int, where)
    for key, value, most in (
        ("dim", dim, MAX_DIM),
        ("query_maxlen", query_maxlen, MAX_WINDOW),
        ("doc_maxlen", doc_maxlen, MAX_WINDOW),
    ):
        if not 0 < value <= most:
            raise ModelFolderError(
                f"{where}: {key} must be between 1 and {most}, got {value}; re-export."
            )
    quantization = str(data.get("quantization", "none"))
    if quantization not in _QUANTIZATIONS:
        raise ModelFolderError(
            f"{where}: quantization {quantization!r} is unknown; expected one of "
            f"{', '.join(_QUANTIZATIONS)}."
        )
    files = _files(data.get("files"), where)
    skiplist = _require(data, "skiplist_ids", list, where)
    if len(skiplist) > MAX_SKIPLIST or not all(_token_id(i) for i in skiplist):
        raise ModelFolderError(
            f"{where}: skiplist_ids must be at most {MAX_SKIPLIST} token ids (integers from 0 "
            f"to {MAX_TOKEN_ID}); re-export."
        )
    for key in ("mask_token_id", "pad_token_id"):
        if not _token_id(_require(data, key, int, where)):
            raise ModelFolderError(
                f"{where}: {key} must be a token id from 0 to {MAX_TOKEN_ID}, got "
                f"{data[key]!r}; re-export."
            )
    return Manifest(
        name=str(_require(data, "name", str, where)),
        dim=dim,
        query_maxlen=query_maxlen,
        doc_maxlen=doc_maxlen,
        query_marker=_field(
            where, "query_marker", lambda: _marker(data.get("query_marker"), "query_marker")
        ),
        document_marker=_field(
            where,
            "document_marker",
            lambda: _marker(data.get("document_marker"), "document_marker"),
        ),
        mask_token_id=_require(data, "mask_token_id", int, where),
        pad_token_id=_require(data, "pad_token_id", int, where),
        do_query_expansion=_require(data, "do_query_expansion", bool, where),
        attend_to_expansion_tokens=_require(data, "attend_to_expansion_tokens", bool, where),
        skiplist_ids=tuple(skiplist),
        source_checkpoint=str(data.get("source_checkpoint", "")),
        source_revision=str(data.get("source_revision", "")),
        source_format=str(data.get("source_format", "")),
        backbone=str(data.get("backbone", "")),
        native_dim=_optional_int(data, "native_dim", where),
        dim_reduction=str(data.get("dim_reduction", "none")),
        lowercase=bool(data.get("lowercase", False)),
        model_file=str(data.get("model_file", "model.onnx")),
        inputs=_field(where, "inputs", lambda: _strings(data.get("inputs", _DEFAULT_INPUTS))),
        output=str(data.get("output", "embeddings")),
        languages=_field(where, "languages", lambda: _strings(data.get("languages", ()))),
        language_input=None if data.get("language_input") is None else str(data["language_input"]),
        default_language=(
            None if data.get("default_language") is None else str(data["default_language"])
        ),
        quantization=quantization,
        variants=_field(where, "variants", lambda: _string_map(data.get("variants") or {})),
        files=files,
        extra=_field(where, "extra", lambda: dict(data.get("extra") or {})),
        format_version=version,
    )


def load_manifest(model_dir: str | Path, *, verify_checksums: bool = True) -> Manifest:
    """Read and validate a model folder's manifest.

    Checks that the folder, the manifest, the graph and ``tokenizer.json`` exist, that the
    manifest is well formed and not from a newer format, and (by default) that every file
    listed in it still has the recorded size and SHA-256.

    Raises:
        ModelFolderError: with what is wrong and how to fix it.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ModelFolderError(
            f"model folder {folder} does not exist or is not a folder; pass a folder made by "
            "`edge-colbert export`, or nothing for the bundled default model."
        )
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ModelFolderError(
            f"{folder} has no {MANIFEST_NAME}, so it is not an edge-colbert model folder; "
            "make one with `edge-colbert export CHECKPOINT OUTDIR`."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFolderError(
            f"{path} is not valid JSON ({error}); re-export the model."
        ) from error
    manifest = parse_manifest(data, path)
    inside_folder(folder, manifest.model_file, "model_file")
    for variant, name in manifest.variants.items():
        inside_folder(folder, name, f"variant {variant!r}")
    for name in manifest.files:
        inside_folder(folder, name, "files entry")
    for name in (manifest.model_file, "tokenizer.json"):
        if not (folder / name).is_file():
            raise ModelFolderError(
                f"{folder} lacks {name}; the folder is incomplete. Copy it again or re-export."
            )
    if verify_checksums:
        verify_files(manifest, folder)
    return manifest


def verify_files(manifest: Manifest, folder: Path) -> None:
    """Check the size and SHA-256 of every file the manifest lists."""
    for name, entry in manifest.files.items():
        file = inside_folder(folder, name, "files entry")
        if not file.is_file():
            if name == manifest.model_file or name == "tokenizer.json":
                raise ModelFolderError(
                    f"{folder} lacks {name}; copy the folder again or re-export."
                )
            logger.debug("optional file %s listed in the manifest is absent", name)
            continue
        size = file.stat().st_size
        if size != entry.bytes:
            raise ModelFolderError(
                f"{file} is {size} bytes but the manifest records {entry.bytes}: the file is "
                "truncated or was replaced. Copy the model folder again or re-export it."
            )
        if file_sha256(file) != entry.sha256:
            raise ModelFolderError(
                f"{file} does not match the SHA-256 in {MANIFEST_NAME}: the file is damaged "
                "or was replaced. Copy the model folder again or re-export it."
            )
