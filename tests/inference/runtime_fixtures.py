"""Held-out data and a briefly trained tiny model for the runtime tests.

An untrained random encoder gives almost the same probabilities to every text, so int8's
rounding flips near-ties and the quality bar (rightly) refuses it; a few hundred steps of
training give the heads real margins, as a trained model has."""

from __future__ import annotations

import torch
from torch import nn

from inference.model.intent_bert import IntentBert
from inference.model.quality import HeldOut
from inference.model.tokenizer import encode, load_tokenizer
from streams.core.features import N_FEATURES, feature_schema
from training.data.simulator import SimConfig, simulate
from training.data.windows import build_splits, targets_of, worker_session_policy


def simulated_held_out(users: int, seed: int) -> HeldOut:
    """Labelled session windows of `users` simulated users (about 11 per user)."""
    windows = build_splits(simulate(users, SimConfig(seed=seed)), worker_session_policy(),
                           seed=seed, fractions=(0.0, 0.0, 1.0))["test"]
    return HeldOut([x.text for x in windows], targets_of(windows),
                   features=[list(x.features) for x in windows])


def trained_tiny(steps: int = 120, seed: int = 0, *, tower: bool = False) -> IntentBert:
    """The tiny model fitted for `steps` batches of 32 on other users than any held-out set
    (with a feature tower reading their FEATURES rows when `tower`)."""
    torch.manual_seed(seed)
    tokenizer = load_tokenizer()
    data = simulated_held_out(120, seed=1000 + seed)
    features = torch.tensor(data.features, dtype=torch.float32)
    if tower:
        model = IntentBert.tiny(len(tokenizer), n_features=N_FEATURES,
                                feature_schema=feature_schema())
        model.fit_normalisation(features)
    else:
        model = IntentBert.tiny(len(tokenizer))
    labels = {head: torch.tensor(y) for head, y in data.labels.items()}
    all_ids, all_mask = encode(tokenizer, data.texts, max_length=model.max_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(data.texts), (32,), generator=generator)
        width = int(all_mask[rows].sum(dim=1).max())  # trim the padding shared by the batch
        logits = model(all_ids[rows, :width], all_mask[rows, :width],
                       features[rows] if tower else None)
        loss = (nn.functional.cross_entropy(logits.strength, labels["strength"][rows])
                + nn.functional.cross_entropy(logits.intent_type, labels["intent_type"][rows])
                + nn.functional.binary_cross_entropy_with_logits(
                    logits.churn, labels["churn"][rows].float()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
