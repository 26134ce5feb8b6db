"""Validation checks in the fine-tune loop: how many, where, and whether the start is one."""

from __future__ import annotations

import math
import random

import pytest
import torch

from inference.model.intent_bert import IntentBert
from inference.model.tokenizer import load_tokenizer
from training.loop import (
    FitConfig,
    Targets,
    fit,
    multitask_loss,
    spaced_checks,
    tokenize,
    total_steps,
)


def config(epochs: float, batch_size: int = 16, **kw) -> FitConfig:
    return FitConfig(epochs=epochs, max_steps=kw.pop("max_steps", None), batch_size=batch_size,
                     learning_rate=2e-3, warmup_ratio=0.1, weight_decay=0.0, eval_every=None,
                     patience=kw.pop("patience", 3), seed=0, progress=False, **kw)


def checks_of(n_rows: int, cfg: FitConfig, per_epoch: int) -> list[int]:
    """The steps `fit` validates at: every `eval_every` steps and the final one."""
    every, total = spaced_checks(n_rows, cfg, per_epoch), total_steps(n_rows, cfg)
    return sorted(set(range(every, total + 1, every)) | {total})


@pytest.mark.parametrize(("n_rows", "epochs", "per_epoch"), [
    (4609, 1.8, 1), (4609, 2.0, 2), (1350, 1.0, 1), (1350, 1.0, 2), (300, 3.0, 1),
    (100, 0.5, 1), (16, 1.0, 4),
])
def test_checks_are_evenly_spaced_and_the_last_is_the_final_step(
        n_rows: int, epochs: float, per_epoch: int) -> None:
    cfg = config(epochs)
    checks = checks_of(n_rows, cfg, per_epoch)
    total = total_steps(n_rows, cfg)
    assert checks[-1] == total
    wanted = max(1, round(total / math.ceil(n_rows / 16) * per_epoch))
    assert len(checks) == min(wanted, total)
    gaps = [b - a for a, b in zip([0, *checks], checks, strict=False)]
    assert max(gaps) - min(gaps) <= max(gaps) // 2 + 1  # no check a few steps after another


def test_the_default_run_checks_once_an_epoch_not_twice_at_the_end() -> None:
    # 4,609 training windows, 16 a step, 1.8 epochs: 521 steps, checked at 261 and 521 (the
    # old spacing, every 144 steps, checked at 576 and again at 578).
    assert checks_of(4609, config(1.8), 1) == [261, 521]


def tiny_task():
    rng = random.Random(0)
    words = {0: "cart", 1: "search", 2: "broken"}
    rows = [(k, f"view: item {rng.randint(1, 99)} | {words[k]} {rng.randint(1, 99)}")
            for k in (rng.randrange(3) for _ in range(120))]
    tokens = tokenize(load_tokenizer(), [t for _, t in rows], 32)
    k = torch.tensor([k for k, _ in rows])
    return tokens, Targets(k, k, (k == 2).float())


@pytest.mark.parametrize("initial_check", [True, False])
def test_the_starting_weights_are_validated_only_when_asked(initial_check: bool) -> None:
    tokens, targets = tiny_task()
    torch.manual_seed(0)
    model = IntentBert.tiny(len(load_tokenizer()))
    result = fit(model, tokens[:100], targets.rows(range(100)), tokens[100:],
                 targets.rows(range(100, 120)), config(2.0, initial_check=initial_check),
                 multitask_loss)
    steps = [h["step"] for h in result.history]
    assert steps == ([0, 7, 14] if initial_check else [7, 14])
    assert result.best_step in steps and result.best_val_loss == min(
        h["val_loss"] for h in result.history)
