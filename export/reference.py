"""The torch side: the exported module and the reference preprocessing around it.

``ColbertModule`` is exactly what goes into the graph: backbone, every Dense layer, L2
normalization. ``encode`` prepares text the way PyLate 1.6.0 does (strip, optional
lowercase, truncate to max length minus the marker, pad queries to the max length with the
expansion token, insert the marker after the first token, skiplist on documents) and runs
the module, so the export can be checked against it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .checkpoint import Checkpoint
from .head import DenseLayer

# Families whose eager attention takes a ready additive 4-D mask unchanged; tracing with it
# gives the classic BERT mask pattern instead of transformers' mask-building code.
FOUR_D_MASK_FAMILIES = ("bert", "roberta", "xlm-roberta", "xmod", "electra", "camembert")


class ColbertModule(nn.Module):
    """(input_ids, attention_mask[, language]) -> L2-normalized token vectors."""

    def __init__(
        self, backbone: nn.Module, head: Sequence[DenseLayer], *, four_d_mask: bool, language: bool
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.ModuleList(head)
        self.four_d_mask = four_d_mask
        self.language = language
        params = inspect.signature(backbone.forward).parameters
        self.token_types = "token_type_ids" in params and bool(
            getattr(backbone.config, "type_vocab_size", 0)
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        language: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token vectors ``[batch, tokens, dim]``, unit length."""
        mask: torch.Tensor = attention_mask
        if self.four_d_mask:
            # Additive mask as BERT built it before transformers 5: 0 to attend, min to skip.
            mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(
                torch.float32
            ).min
        kwargs = {"input_ids": input_ids, "attention_mask": mask}
        if self.token_types:
            kwargs["token_type_ids"] = torch.zeros_like(input_ids)
        if self.language and language is not None:
            kwargs["lang_ids"] = language
        hidden = self.backbone(**kwargs)[0]
        for layer in self.head:
            hidden = layer(hidden)
        return nn.functional.normalize(hidden, p=2.0, dim=-1)


def build_module(ckpt: Checkpoint) -> ColbertModule:
    """The exportable module of a loaded checkpoint."""
    return ColbertModule(
        ckpt.backbone,
        ckpt.head,
        four_d_mask=ckpt.backbone_type in FOUR_D_MASK_FAMILIES,
        language=bool(ckpt.languages),
    ).eval()


def prepare(
    ckpt: Checkpoint, texts: Sequence[str], *, is_query: bool
) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """Token ids, attention mask and per-text kept-row masks, as PyLate prepares them."""
    s = ckpt.settings
    marker = s.query_marker if is_query else s.document_marker
    maxlen = s.query_maxlen if is_query else s.doc_maxlen
    after_cls = marker.insert == "after_cls"
    budget = maxlen - 1 if after_cls else maxlen
    rows = []
    for text in texts:
        cleaned = text.strip().lower() if s.lowercase else text.strip()
        if marker.insert == "text_prefix":
            cleaned = marker.text + cleaned
        rows.append(ckpt.tokenizer(cleaned, truncation=True, max_length=budget)["input_ids"])
    expand = is_query and s.do_query_expansion
    width = budget if expand else max(len(r) for r in rows)
    ids = torch.full((len(rows), width), s.mask_token_id, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        att[i, : len(row)] = 1
    if after_cls:
        col = torch.full((len(rows), 1), int(marker.token_id or 0), dtype=torch.long)
        ids = torch.cat([ids[:, :1], col, ids[:, 1:]], dim=1)
        att = torch.cat([att[:, :1], torch.ones_like(col), att[:, 1:]], dim=1)
    keep: list[np.ndarray] = []
    skip = torch.tensor(list(s.skiplist_ids) or [-1])
    for i in range(len(rows)):
        if expand:
            keep.append(np.ones(ids.shape[1], dtype=bool))
        elif is_query:
            keep.append(att[i].bool().numpy())
        else:
            keep.append((att[i].bool() & ~torch.isin(ids[i], skip)).numpy())
    if expand and s.attend_to_expansion_tokens:
        att = torch.ones_like(att)
    return ids, att, keep


@torch.no_grad()
def encode(
    module: ColbertModule,
    ckpt: Checkpoint,
    texts: Sequence[str],
    *,
    is_query: bool,
    language: int = 0,
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Reference vectors ``[kept tokens, dim]`` per text (float32, unit length)."""
    out: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        ids, att, keep = prepare(ckpt, chunk, is_query=is_query)
        lang = torch.full((ids.shape[0],), language, dtype=torch.long) if module.language else None
        vectors = module(ids, att, lang).float().numpy()
        out.extend(vectors[i][keep[i]] for i in range(len(chunk)))
    return out
