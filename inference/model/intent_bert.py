"""IntentBert: a BERT encoder, mean pooling, and three linear heads (strength, type, churn);
optionally a feature tower that fuses the behaviour FEATURES row with the pooled text vector.

This file is the one definition of the architecture. It imports only torch, transformers,
safetensors and the sibling `heads` module, on purpose: export copies this file and `heads.py`
into every built `intent_bert` version, where Triton's python stub imports them without the
`inference` package. Keep it that way (no other `inference` imports).

A saved model directory holds:
- `model.safetensors`: the whole state dict (encoder + heads);
- `config.json`: the encoder's `BertConfig`;
- `heads.json`: label vocabularies, pooling and `max_length` (the tokenizer truncation length),
  and, with a tower, `features`: the FEATURES schema it was trained on (the versioned schema of
  streams/core/features.py, passed in by training: this file cannot import streams/), the
  normalisation and the tower's widths.

The feature tower (`n_features > 0`): each FEATURES column goes through sign(x)·log1p(|x|) (counts,
seconds and money are heavy-tailed), is standardised with the mean and scale fitted on the
training split (`fit_normalisation`; buffers in the state dict, so saved with the weights),
clipped to ±CLIP, and passes a small MLP whose output is concatenated with the pooled text
vector before the three heads. `n_features = 0` is the text-only network, parameter for
parameter the one saved before the tower existed, so older model directories load unchanged.
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
TOWER_WIDTHS = (64, 32)  # the feature tower's hidden and output widths
CLIP = 5.0  # normalised features are clipped to ±CLIP (a far outlier must not swamp the heads)
NORMALISATION = {"transform": "sign(x) * log1p(|x|)",
                 "standardise": "(t - mean) / scale, fitted on the training split",
                 "clip": CLIP}


class HeadOutputs(NamedTuple):
    """Per-row outputs of the three heads (logits or probabilities, depending on the caller)."""

    strength: torch.Tensor  # [b, len(STRENGTH_LABELS)]
    intent_type: torch.Tensor  # [b, len(INTENT_TYPE_LABELS)]
    churn: torch.Tensor  # [b]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors that the mask keeps (padding contributes nothing)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(torch.abs(x))


class FeatureTower(nn.Module):
    """Normalised FEATURES through a two-layer MLP."""

    def __init__(self, n_features: int, dropout: float):
        super().__init__()
        hidden, width = TOWER_WIDTHS
        # Identity until fit_normalisation: a fresh model is still well defined.
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, width), nn.GELU())

    def normalise(self, features: torch.Tensor) -> torch.Tensor:
        return ((signed_log1p(features) - self.mean) / self.scale).clamp(-CLIP, CLIP)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.normalise(features))


class IntentBert(nn.Module):
    def __init__(
        self,
        encoder_config: BertConfig,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        n_features: int = 0,
        feature_schema: dict[str, Any] | None = None,
    ):
        super().__init__()
        if not 0 < max_length <= encoder_config.max_position_embeddings:
            raise ValueError(
                f"max_length {max_length} outside 1..{encoder_config.max_position_embeddings}"
            )
        if n_features < 0:
            raise ValueError(f"n_features must be >= 0, got {n_features}")
        _check_schema(feature_schema, n_features)
        self.max_length = max_length
        self.n_features = n_features
        self.feature_schema = feature_schema
        # MiniLM was trained for mean pooling, so the unused BERT pooler is left out.
        self.encoder = BertModel(encoder_config, add_pooling_layer=False)
        hidden = encoder_config.hidden_size
        self.dropout = nn.Dropout(encoder_config.hidden_dropout_prob)
        if n_features:
            self.feature_tower = FeatureTower(n_features, encoder_config.hidden_dropout_prob)
            hidden += TOWER_WIDTHS[-1]
        self.strength_head = nn.Linear(hidden, len(STRENGTH_LABELS))
        self.intent_type_head = nn.Linear(hidden, len(INTENT_TYPE_LABELS))
        self.churn_head = nn.Linear(hidden, 1)

    # --- constructors ---------------------------------------------------------------------------

    @classmethod
    def from_base(cls, path: Path, *, max_length: int = DEFAULT_MAX_LENGTH, n_features: int = 0,
                  feature_schema: dict[str, Any] | None = None) -> Self:
        """Encoder weights from a BertModel checkpoint dir (all-MiniLM-L6-v2); fresh heads (and
        a fresh tower with `n_features`)."""
        path = Path(path)
        model = cls(BertConfig.from_json_file(path / ENCODER_CONFIG_FILE), max_length=max_length,
                    n_features=n_features, feature_schema=feature_schema)
        expected = model.encoder.state_dict()
        # The checkpoint also holds the BERT pooler, which this model does not use.
        state = {k: v for k, v in load_file(path / WEIGHTS_FILE).items() if k in expected}
        missing = expected.keys() - state.keys()
        if missing:
            raise ValueError(f"{path} lacks encoder weights, e.g. {sorted(missing)[:3]}")
        model.encoder.load_state_dict(state)
        return model

    @classmethod
    def tiny(cls, vocab_size: int, *, max_length: int = DEFAULT_MAX_LENGTH, n_features: int = 0,
             feature_schema: dict[str, Any] | None = None) -> Self:
        """A small random model for tests; it takes the shared MiniLM tokenizer's vocab size."""
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=512,
        )
        return cls(config, max_length=max_length, n_features=n_features,
                   feature_schema=feature_schema)

    def fit_normalisation(self, features: torch.Tensor) -> None:
        """Fit the tower's mean and scale on the training split's FEATURES rows [n, n_features]
        (a constant column gets scale 1: it normalises to 0)."""
        if not self.n_features:
            raise ValueError("this model has no feature tower")
        self._check_features(features, features.shape[0])
        transformed = signed_log1p(features.to(torch.float32))
        scale = transformed.std(dim=0, unbiased=False)
        self.feature_tower.mean.copy_(transformed.mean(dim=0))
        self.feature_tower.scale.copy_(torch.where(scale > 1e-6, scale, torch.ones_like(scale)))

    # --- inference --------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                features: torch.Tensor | None = None) -> HeadOutputs:
        """Logits: strength [b, 3], intent type [b, 6], churn [b]. `features` [b, n_features]
        (float) is required with a tower and ignored without one (a text-only network)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = self.dropout(mean_pool(hidden, attention_mask))
        if self.n_features:
            if features is None:
                raise ValueError(f"this model reads FEATURES ({self.n_features} columns) "
                                 "with the text; none given")
            self._check_features(features, input_ids.shape[0])  # not len(): export
            tower = self.feature_tower(features.to(pooled.dtype))
            pooled = torch.cat([pooled, tower], dim=-1)
        return HeadOutputs(
            strength=self.strength_head(pooled),
            intent_type=self.intent_type_head(pooled),
            churn=self.churn_head(pooled).squeeze(-1),
        )

    def probabilities(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      features: torch.Tensor | None = None) -> HeadOutputs:
        """Softmax over strength and over intent type; sigmoid of the churn logit."""
        logits = self(input_ids, attention_mask, features)
        return HeadOutputs(
            strength=logits.strength.softmax(dim=-1),
            intent_type=logits.intent_type.softmax(dim=-1),
            churn=logits.churn.sigmoid(),
        )

    def _check_features(self, features: torch.Tensor, rows: Any) -> None:
        if features.ndim != 2 or features.shape[1] != self.n_features \
                or features.shape[0] != rows:
            raise ValueError(f"FEATURES {tuple(features.shape)}: this model reads "
                             f"[{rows}, {self.n_features}]")

    # --- persistence --------------------------------------------------------------------------

    def heads_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "strength": list(STRENGTH_LABELS),
            "intent_type": list(INTENT_TYPE_LABELS),
            "churn": CHURN_LABEL,
            "pooling": "mean",
            "max_length": self.max_length,
        }
        if self.n_features:
            meta["features"] = {"n_features": self.n_features, "schema": self.feature_schema,
                                "normalisation": NORMALISATION, "tower": list(TOWER_WIDTHS),
                                "fusion": "concatenated with the pooled text vector"}
        return meta

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
        features = heads.get("features") or {}
        model = cls(config, max_length=int(heads["max_length"]),
                    n_features=int(features.get("n_features", 0)),
                    feature_schema=features.get("schema"))
        model.load_state_dict(load_file(directory / WEIGHTS_FILE))
        return model.eval()


def _check_schema(schema: dict[str, Any] | None, n_features: int) -> None:
    """A tower names the schema its columns follow: {"version", "features": [{"name", ...}]}."""
    if not n_features:
        if schema is not None:
            raise ValueError("a feature schema without a feature tower (n_features = 0)")
        return
    if schema is None:
        raise ValueError("a feature tower needs the feature schema its columns follow")
    columns = schema.get("features")
    if "version" not in schema or not isinstance(columns, list) or len(columns) != n_features:
        raise ValueError(f"feature schema {str(schema)[:80]}: need a version and "
                         f"{n_features} named features")


def _check_vocabularies(heads: dict[str, Any], directory: Path) -> None:
    """Refuse weights trained for other labels: their columns would be read as ours."""
    found = (tuple(heads.get("strength", ())), tuple(heads.get("intent_type", ())))
    if found != (STRENGTH_LABELS, INTENT_TYPE_LABELS):
        raise ValueError(
            f"{directory / HEADS_FILE} labels {found} differ from "
            f"{(STRENGTH_LABELS, INTENT_TYPE_LABELS)} (inference/heads.py)"
        )
