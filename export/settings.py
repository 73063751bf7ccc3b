"""Preprocessing settings (markers, lengths, expansion, skiplist) as the reference sets them.

PyLate and Stanford ColBERT agree on the procedure; where they take values from differs
(``config_sentence_transformers.json`` versus ``artifact.metadata``). The defaults below are
PyLate 1.6.0's: prefixes ``[Q] ``/``[D] ``, 32/180 tokens, expansion on, no attention to
expansion tokens, skiplist ``string.punctuation``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from edge_colbert.errors import ExportError
from edge_colbert.manifest import Marker


@dataclass
class Settings:
    """What the runtime needs to reproduce the reference preprocessing."""

    query_maxlen: int
    doc_maxlen: int
    query_marker: Marker
    document_marker: Marker
    mask_token_id: int
    pad_token_id: int
    do_query_expansion: bool
    attend_to_expansion_tokens: bool
    skiplist_ids: tuple[int, ...]
    lowercase: bool = False


def marker_for(tokenizer: Any, text: str | None, *, strict: bool) -> Marker:
    """The marker for a prefix: a single token goes in after [CLS] by id, as PyLate does.

    ``strict`` (checkpoint settings): a prefix that is not one token of the vocabulary is an
    error, because PyLate would add a fresh, untrained token for it. Otherwise (a user's
    choice for a plain encoder) such text becomes a text prefix.
    """
    if text is None or text == "" or text.lower() == "none":
        return Marker()
    token_id = tokenizer.convert_tokens_to_ids(text)
    unk = tokenizer.unk_token_id
    if token_id is not None and (token_id != unk or text == tokenizer.unk_token):
        return Marker(insert="after_cls", text=text, token_id=int(token_id))
    if strict:
        raise ExportError(
            f"the marker {text!r} is not a token of the checkpoint's tokenizer; a PyLate "
            "checkpoint saves its marker tokens. Pass --query-marker/--document-marker to choose."
        )
    return Marker(insert="text_prefix", text=text)


def pylate_skiplist(tokenizer: Any, words: list[str] | None) -> tuple[int, ...]:
    """PyLate's skiplist: ``convert_tokens_to_ids`` of each word (unknown -> the unk id)."""
    chosen = list(string.punctuation) if words is None else words
    return tuple(sorted({int(tokenizer.convert_tokens_to_ids(word)) for word in chosen}))


def stanford_skiplist(tokenizer: Any) -> tuple[int, ...]:
    """Stanford ColBERT's skiplist: each punctuation symbol and its first token id."""
    ids = set()
    for symbol in string.punctuation:
        encoded = tokenizer.encode(symbol, add_special_tokens=False)
        if encoded:
            ids.add(int(encoded[0]))
    return tuple(sorted(ids))


def mask_token_id(tokenizer: Any) -> int:
    """The expansion token: [MASK], else EOS, as PyLate picks it."""
    for candidate in (tokenizer.mask_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if candidate is not None:
            return int(candidate)
    raise ExportError("the tokenizer has no [MASK], EOS or pad token to expand queries with")
