"""Recognize a checkpoint's format and load it as a backbone, a head and reference settings.

Formats: Stanford ColBERT (``HF_ColBERT`` config, ``linear.weight``, ``artifact.metadata``),
PyLate / sentence-transformers ColBERT (``modules.json`` with Dense modules), plain
sentence-transformers bi-encoders and plain Hugging Face encoders (no head: a projection
is fitted). Remote-code backbones load only with ``trust_remote_code``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_colbert.errors import ExportError

from .head import DenseLayer, dense_from_weight, load_dense_folder
from .settings import (
    Settings,
    marker_for,
    mask_token_id,
    pylate_skiplist,
    stanford_skiplist,
)

logger = logging.getLogger(__name__)

SUPPORTED_FORMATS = (
    "Stanford ColBERT (config.json with HF_ColBERT + linear.weight + artifact.metadata)",
    "PyLate / sentence-transformers ColBERT (modules.json with Transformer + Dense modules)",
    "sentence-transformers bi-encoder (modules.json without Dense: a projection is fitted)",
    "Hugging Face encoder folder (config.json + weights: a projection is fitted)",
)
_PYLATE_DEFAULTS: dict[str, Any] = {
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 180,
    "do_query_expansion": True,
    "attend_to_expansion_tokens": False,
}


@dataclass
class Checkpoint:
    """A loaded checkpoint: what the graph computes and how text is prepared for it."""

    backbone: nn.Module
    head: list[DenseLayer]
    tokenizer: Any
    settings: Settings
    source_format: str
    backbone_type: str
    native_dim: int
    languages: list[str] = field(default_factory=list)
    default_language: str | None = None


def _json(path: Path) -> dict[str, Any]:
    """Read a JSON object file, or {} when it is absent."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def detect_format(folder: Path) -> str:
    """``stanford``, ``pylate``, ``sentence-transformers`` or ``hf``; else ExportError."""
    config = _json(folder / "config.json")
    modules = folder / "modules.json"
    if modules.is_file():
        entries = json.loads(modules.read_text(encoding="utf-8"))
        if any(str(e.get("type", "")).endswith("Dense") for e in entries):
            return "pylate"
        return "sentence-transformers"
    if (config.get("architectures") or [None])[0] == "HF_ColBERT":
        return "stanford"
    if config.get("model_type") or config.get("auto_map"):
        return "hf"
    raise ExportError(
        f"{folder} is not a checkpoint format edge-colbert can export. Supported: "
        + "; ".join(SUPPORTED_FORMATS)
    )


def _load_backbone(folder: Path, trust_remote_code: bool) -> nn.Module:
    """The backbone in float32 with eager attention (flash attention cannot be traced)."""
    from transformers import AutoConfig, AutoModel

    config_data = _json(folder / "config.json")
    if config_data.get("auto_map") and not trust_remote_code:
        raise ExportError(
            f"{folder} needs its own model code (auto_map in config.json); run the export "
            "again with --trust-remote-code if you trust that code."
        )
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    for flag in ("use_flash_attn", "use_flash_attention"):
        if hasattr(config, flag):
            setattr(config, flag, False)
    kwargs: dict[str, Any] = {"config": config, "trust_remote_code": trust_remote_code}
    try:
        model = AutoModel.from_pretrained(folder, attn_implementation="eager", **kwargs)
    except (ValueError, TypeError) as error:
        logger.info("eager attention not selectable (%s); loading with the default", error)
        model = AutoModel.from_pretrained(folder, **kwargs)
    loaded: nn.Module = model.float().eval()
    return loaded


def _tokenizer(folder: Path, trust_remote_code: bool) -> Any:
    """The checkpoint's fast tokenizer (tokenizer.json is what the runtime reads)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{folder} has no fast tokenizer (tokenizer.json); it cannot be exported")
    return tokenizer


def _pick(key: str, *sources: dict[str, Any], default: Any = None) -> Any:
    """First value set for ``key`` among ``sources``."""
    for source in sources:
        if source.get(key) is not None:
            return source[key]
    return default


def load_checkpoint(
    folder: Path,
    *,
    recipe: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
) -> Checkpoint:
    """Load ``folder``; settings come from CLI ``overrides``, then the checkpoint, then the
    ``recipe``, then PyLate's defaults (plain encoders: no markers, no expansion)."""
    recipe = recipe or {}
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    if recipe.get("trust_remote_code") and not trust_remote_code:
        raise ExportError(
            f"{folder.name} runs its own model code; run the export again with "
            "--trust-remote-code if you trust that code."
        )
    fmt = detect_format(folder)
    rec = dict(recipe.get("settings") or {})
    transformer_dir = folder
    head: list[DenseLayer] = []
    ckpt: dict[str, Any] = {}
    skip_words: list[str] | None = None
    lowercase = False
    if fmt in ("pylate", "sentence-transformers"):
        entries = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        transformer_dir = folder / str(entries[0].get("path", ""))
        bert_cfg = _json(transformer_dir / "sentence_bert_config.json")
        lowercase = bool(bert_cfg.get("do_lower_case", False))
        for entry in entries[1:]:
            if str(entry.get("type", "")).endswith("Dense"):
                head.append(load_dense_folder(folder / str(entry["path"])))
        if fmt == "pylate":
            ckpt = _json(folder / "config_sentence_transformers.json")
            skip_words = ckpt.get("skiplist_words")
    tokenizer = _tokenizer(transformer_dir, trust_remote_code)
    backbone = _load_backbone(transformer_dir, trust_remote_code)
    config: Any = backbone.config
    if fmt == "stanford":
        head.append(dense_from_weight(_stanford_linear(folder)))
        meta = _json(folder / "artifact.metadata")
        ckpt = {
            "query_prefix": meta.get("query_token_id") or "[unused0]",
            "document_prefix": meta.get("doc_token_id") or "[unused1]",
            "query_length": meta.get("query_maxlen"),
            "document_length": meta.get("doc_maxlen"),
            "attend_to_expansion_tokens": meta.get("attend_to_mask_tokens"),
        }
    colbert = fmt in ("pylate", "stanford")
    defaults = dict(_PYLATE_DEFAULTS)
    if not colbert:
        max_pos = int(getattr(config, "max_position_embeddings", 512))
        seq = int(_json(transformer_dir / "sentence_bert_config.json").get("max_seq_length", 256))
        defaults.update(query_prefix="", document_prefix="", do_query_expansion=False)
        defaults["document_length"] = min(seq, max_pos)
    q_text = _pick("query_prefix", cli, ckpt, rec, defaults)
    d_text = _pick("document_prefix", cli, ckpt, rec, defaults)
    strict = colbert and "query_prefix" not in cli
    expansion = bool(_pick("do_query_expansion", cli, ckpt, rec, defaults))
    attend = bool(_pick("attend_to_expansion_tokens", cli, ckpt, rec, defaults)) and expansion
    skiplist = (
        stanford_skiplist(tokenizer)
        if fmt == "stanford"
        else pylate_skiplist(tokenizer, skip_words)
    )
    settings = Settings(
        query_maxlen=int(_pick("query_length", cli, ckpt, rec, defaults)),
        doc_maxlen=int(_pick("document_length", cli, ckpt, rec, defaults)),
        query_marker=marker_for(tokenizer, q_text, strict=strict),
        document_marker=marker_for(
            tokenizer, d_text, strict=colbert and "document_prefix" not in cli
        ),
        mask_token_id=mask_token_id(tokenizer),
        pad_token_id=int(
            tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else mask_token_id(tokenizer)
        ),
        do_query_expansion=expansion,
        attend_to_expansion_tokens=attend,
        skiplist_ids=skiplist,
        lowercase=lowercase,
    )
    native = head[-1].out_features if head else int(config.hidden_size)
    languages = [str(x) for x in getattr(config, "languages", None) or []]
    default_language = rec.get("default_language") or getattr(config, "default_language", None)
    if languages and default_language not in languages:
        default_language = languages[0]
    return Checkpoint(
        backbone=backbone,
        head=head,
        tokenizer=tokenizer,
        settings=settings,
        source_format="sentence-transformers" if fmt == "sentence-transformers" else fmt,
        backbone_type=str(getattr(config, "model_type", "")),
        native_dim=native,
        languages=languages,
        default_language=default_language if languages else None,
    )


def _stanford_linear(folder: Path) -> torch.Tensor:
    """The Stanford projection ``linear.weight`` from the checkpoint's weights."""
    if (folder / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), framework="pt", device="cpu") as f:
            if "linear.weight" in f.keys():  # noqa: SIM118 - safe_open has no __contains__
                weight: torch.Tensor = f.get_tensor("linear.weight")
                return weight
    if (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        if "linear.weight" in state:
            return torch.as_tensor(state["linear.weight"])
    raise ExportError(f"{folder} is an HF_ColBERT checkpoint without linear.weight in its weights")
