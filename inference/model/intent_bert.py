"""IntentBert: a BERT encoder, mean pooling, and three linear heads (strength, type, churn).

This file is the one definition of the architecture. It imports only torch, transformers,
safetensors and the sibling `heads` module, on purpose: export copies this file and `heads.py`
into every built `intent_bert` version, where Triton's python stub imports them without the
`inference` package. Keep it that way (no other `inference` imports).

A saved model directory holds:
- `model.safetensors`: the whole state dict (encoder + heads);
- `config.json`: the encoder's `BertConfig`;
- `heads.json`: label vocabularies, pooling and `max_length` (the tokenizer truncation length).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple, Self

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertConfig, BertModel

try:  # a built version: artifacts/intentbert/heads.py, copied beside this file by export
    from .heads import CHURN_LABEL, INTENT_TYPE_LABELS, STRENGTH_LABELS
except ImportError:  # in the repository: inference/heads.py
    from inference.heads import CHURN_LABEL, INTENT_TYPE_LABELS, STRENGTH_LABELS

WEIGHTS_FILE = "model.safetensors"
ENCODER_CONFIG_FILE = "config.json"
HEADS_FILE = "heads.json"
DEFAULT_MAX_LENGTH = 128


class HeadOutputs(NamedTuple):
    """Per-row outputs of the three heads (logits or probabilities, depending on the caller)."""

    strength: torch.Tensor  # [b, len(STRENGTH_LABELS)]
    intent_type: torch.Tensor  # [b, len(INTENT_TYPE_LABELS)]
    churn: torch.Tensor  # [b]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors that the mask keeps (padding contributes nothing)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class IntentBert(nn.Module):
    def __init__(self, encoder_config: BertConfig, *, max_length: int = DEFAULT_MAX_LENGTH):
        super().__init__()
        if not 0 < max_length <= encoder_config.max_position_embeddings:
            raise ValueError(
                f"max_length {max_length} outside 1..{encoder_config.max_position_embeddings}"
            )
        self.max_length = max_length
        # MiniLM was trained for mean pooling, so the unused BERT pooler is left out.
        self.encoder = BertModel(encoder_config, add_pooling_layer=False)
        hidden = encoder_config.hidden_size
        self.dropout = nn.Dropout(encoder_config.hidden_dropout_prob)
        self.strength_head = nn.Linear(hidden, len(STRENGTH_LABELS))
        self.intent_type_head = nn.Linear(hidden, len(INTENT_TYPE_LABELS))
        self.churn_head = nn.Linear(hidden, 1)

    # --- constructors ---------------------------------------------------------------------------

    @classmethod
    def from_base(cls, path: Path, *, max_length: int = DEFAULT_MAX_LENGTH) -> Self:
        """Encoder weights from a BertModel checkpoint dir (all-MiniLM-L6-v2); fresh heads."""
        path = Path(path)
        model = cls(BertConfig.from_json_file(path / ENCODER_CONFIG_FILE), max_length=max_length)
        expected = model.encoder.state_dict()
        # The checkpoint also holds the BERT pooler, which this model does not use.
        state = {k: v for k, v in load_file(path / WEIGHTS_FILE).items() if k in expected}
        missing = expected.keys() - state.keys()
        if missing:
            raise ValueError(f"{path} lacks encoder weights, e.g. {sorted(missing)[:3]}")
        model.encoder.load_state_dict(state)
        return model

    @classmethod
    def tiny(cls, vocab_size: int, *, max_length: int = DEFAULT_MAX_LENGTH) -> Self:
        """A small random model for tests; it takes the shared MiniLM tokenizer's vocab size."""
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=512,
        )
        return cls(config, max_length=max_length)

    # --- inference --------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> HeadOutputs:
        """Logits: strength [b, 3], intent type [b, 6], churn [b]."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = self.dropout(mean_pool(hidden, attention_mask))
        return HeadOutputs(
            strength=self.strength_head(pooled),
            intent_type=self.intent_type_head(pooled),
            churn=self.churn_head(pooled).squeeze(-1),
        )

    def probabilities(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> HeadOutputs:
        """Softmax over strength and over intent type; sigmoid of the churn logit."""
        logits = self(input_ids, attention_mask)
        return HeadOutputs(
            strength=logits.strength.softmax(dim=-1),
            intent_type=logits.intent_type.softmax(dim=-1),
            churn=logits.churn.sigmoid(),
        )

    # --- persistence --------------------------------------------------------------------------

    def heads_metadata(self) -> dict[str, Any]:
        return {
            "strength": list(STRENGTH_LABELS),
            "intent_type": list(INTENT_TYPE_LABELS),
            "churn": CHURN_LABEL,
            "pooling": "mean",
            "max_length": self.max_length,
        }

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, directory / WEIGHTS_FILE, metadata={"format": "pt"})
        self.encoder.config.to_json_file(directory / ENCODER_CONFIG_FILE)
        heads = json.dumps(self.heads_metadata(), indent=2) + "\n"
        (directory / HEADS_FILE).write_text(heads, encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: Path) -> Self:
        """A saved model, in eval mode, on CPU."""
        directory = Path(directory)
        heads = json.loads((directory / HEADS_FILE).read_text(encoding="utf-8"))
        _check_vocabularies(heads, directory)
        config = BertConfig.from_json_file(directory / ENCODER_CONFIG_FILE)
        model = cls(config, max_length=int(heads["max_length"]))
        model.load_state_dict(load_file(directory / WEIGHTS_FILE))
        return model.eval()


def _check_vocabularies(heads: dict[str, Any], directory: Path) -> None:
    """Refuse weights trained for other labels: their columns would be read as ours."""
    found = (tuple(heads.get("strength", ())), tuple(heads.get("intent_type", ())))
    if found != (STRENGTH_LABELS, INTENT_TYPE_LABELS):
        raise ValueError(
            f"{directory / HEADS_FILE} labels {found} differ from "
            f"{(STRENGTH_LABELS, INTENT_TYPE_LABELS)} (inference/heads.py)"
        )
